"""drivers/update/rauc.py against a stand-in `rauc` on PATH (tests/raucfake.py: rauc 1.8's
output and exit codes, transcribed; this host has no booted A/B system for the real rauc), run
as a real subprocess through asyncio the way the firmware runs it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import raucfake

from drivers.update.none import NoUpdates
from drivers.update.rauc import RaucAgent
from firmware.app import devices
from firmware.app.boards import profile
from firmware.ports import InstallProgress, UpdateAgent, UpdateError, UpdatesUnavailable


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def make(**state):
        state.setdefault("status", raucfake.status())
        bindir, calls = raucfake.install(tmp_path, state)
        monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
        monkeypatch.delenv("POSFW_RAUC", raising=False)
        monkeypatch.setenv("POSFW_REBOOT_REQUEST", str(tmp_path / "run" / "reboot-request"))
        return RaucAgent(), calls
    return make


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_status_names_both_slots_which_runs_and_which_boots_next(fake) -> None:
    agent, calls = fake(status=raucfake.status(booted="B", primary="rootfs.1", a_version="1.0.0"))
    st = asyncio.run(agent.status())
    assert st.compatible == "posfw-qemu-arm64"
    a, b = st.slots
    assert (a.name, a.version, a.state, a.booted, a.boots_next, a.activated) == (
        "A", "1.0.0", "good", False, False, None)
    assert (b.name, b.version, b.state, b.booted, b.boots_next) == ("B", "1.1.0", "good", True, True)
    assert b.activated == "2026-12-07T22:00:00Z #1"
    assert st.booted is b and st.next_boot is b and st.other("B") is a
    assert _calls(calls) == [["status", "--detailed", "--output-format=json"]]


def test_a_booted_field_holding_the_device_still_finds_the_slot(fake) -> None:
    raw = raucfake.status()
    raw["booted"] = "/dev/vda2"
    for entry in raw["slots"]:
        for value in entry.values():
            value["state"] = "inactive"
    agent, _ = fake(status=raw)
    assert asyncio.run(agent.status()).booted.name == "A"


# bundle_info runs against the real rauc and real bundles (good and bad): tests/test_image_bundle.py.


def test_install_reports_progress_and_when_the_write_begins(fake, tmp_path: Path) -> None:
    bundle = tmp_path / "b.raucb"
    bundle.write_bytes(b"bundle")
    agent, calls = fake()
    seen: list[InstallProgress] = []
    asyncio.run(agent.install(str(bundle), seen.append))
    assert [p.percent for p in seen] == [p for p, _ in raucfake.INSTALL_STEPS]
    assert seen[-1] == InstallProgress(100, "Installing done.", True)
    first_write = next(i for i, p in enumerate(seen) if p.writing)
    assert seen[first_write].step == "Updating slots"
    assert not any(p.writing for p in seen[:first_write])
    assert _calls(calls) == [["install", str(bundle)]]


def test_a_failed_install_says_rauc_s_reason(fake, tmp_path: Path) -> None:
    bundle = tmp_path / "b.raucb"
    bundle.write_bytes(b"bundle")
    agent, _ = fake(install_fail_at="Copying image to rootfs.1", install_error="No space left on device")
    with pytest.raises(UpdateError, match="the install failed: No space left on device"):
        asyncio.run(agent.install(str(bundle), lambda p: None))


def test_mark_good_and_bad_name_the_booted_slot(fake) -> None:
    agent, calls = fake()
    asyncio.run(agent.mark_good())
    asyncio.run(agent.mark_bad())
    assert _calls(calls) == [["status", "mark-good", "booted"], ["status", "mark-bad", "booted"]]


def test_status_failure_and_a_missing_rauc_are_words(fake, monkeypatch: pytest.MonkeyPatch) -> None:
    agent, _ = fake(status_error="rauc status: error retrieving slot status via D-Bus: no service")
    with pytest.raises(UpdateError, match="cannot be read: rauc status: error retrieving"):
        asyncio.run(agent.status())
    with pytest.raises(UpdateError, match="cannot be run"):
        asyncio.run(RaucAgent(rauc="/nonexistent/rauc").status())


def test_request_reboot_writes_the_request_file(fake, tmp_path: Path) -> None:
    agent, _ = fake()
    agent.request_reboot()
    assert "firmware update" in (tmp_path / "run" / "reboot-request").read_text()
    blocked = RaucAgent(reboot_request="/proc/posfw-no/reboot-request")
    with pytest.raises(UpdateError, match="switch the terminal off and on"):
        blocked.request_reboot()


def test_boards_pick_their_agent() -> None:
    assert isinstance(devices.make_update_agent(profile("qemu-arm64")), RaucAgent)
    for name in ("sim", "qemu", "rpi"):
        agent = devices.make_update_agent(profile(name))
        assert isinstance(agent, NoUpdates) and isinstance(agent, UpdateAgent) and not agent.available
    with pytest.raises(UpdatesUnavailable, match="not available on this board"):
        asyncio.run(NoUpdates().status())
