"""Deregistration and the key store: the wipe destroys the store's objects before the card numbers
are cleared and its report lists each one; a store that cannot be reached is said on the report
in words and the rest of the wipe and the host's steps still run; a wipe cut before its key part
is finished at the next start, which opens the store only to destroy what is left in it.

Real terminals in process, the real journal and files, the acquirer simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import PASSWORD, TID, open_store, run, terminal
from test_deregister import _fresh, _journal_rows, _state, template  # noqa: F401 - the fixture

from firmware.app.services import deregister
from firmware.ports import KeyStoreUnavailable


def _report(reply: dict[str, Any]) -> str:
    return " ".join(line.strip() for line in reply["report"])


def test_a_key_store_that_cannot_be_reached_is_said_on_the_report_and_the_wipe_goes_on(
        template: Path, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    data, sim = _fresh(template, tmp_path)

    async def go() -> dict[str, Any]:
        t = await terminal(data)
        assert t.key_store is not None

        def gone() -> list[str]:
            raise KeyStoreUnavailable("the key token 'posfw' is not present")

        t.key_store.destroy_all = gone  # type: ignore[method-assign]  # the token pulled out
        try:
            return await deregister.ecr_op(t, "deregister", {"password": PASSWORD,
                                                                  "path": str(data / "export")})
        finally:
            await t.close()

    try:
        reply = run(go())
        unbound = sim.ledger.terminal_status(TID).status
    finally:
        sim.stop()
    assert reply["ok"] and reply["lifecycle"] == "DEREGISTERED", reply
    report = _report(reply)
    assert ("key store NOT reached, its keys not destroyed: the key token 'posfw' is not "
            "present") in report, report
    assert _state(data)["dereg_step"] == "UNBOUND_VERIFIED"  # the host's steps ran
    assert _journal_rows(data, "SELECT COUNT(*) FROM txn WHERE pan_enc IS NOT NULL") == [(0,)]
    assert not (data / "settings.json").exists()
    assert unbound == "unbound"
    audit = " ".join(str(r) for r in _journal_rows(data, "SELECT detail FROM audit"))
    assert "key store NOT reached" in audit  # and the audit keeps it


def test_a_wipe_cut_before_its_key_part_destroys_the_keys_at_the_next_start(
        template: Path, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    """The power goes after the DEREGISTERED marker, before the key part: the next start is a
    wiped terminal (no checks, no journal of money) that still opens its store, and the resume
    destroys the keys and lists them."""
    data, sim = _fresh(template, tmp_path)

    class PowerCut(Exception):
        pass

    def cut(action: object) -> None:
        if getattr(action, "step", "") == "WIPE:card_key":
            raise PowerCut

    async def go() -> tuple[Any, Any, Any]:
        t = await terminal(data)
        t.fault_hook = cut
        try:
            await deregister.ecr_op(t, "deregister", {"password": PASSWORD,
                                                      "path": str(data / "export")})
        except PowerCut:
            pass
        finally:
            await t.close()
        keys = open_store(data)  # the terminal closed: its token, as the cut left it
        try:
            status = keys.status()
        finally:
            keys.close()
        before = status.tmk_check is not None, status.vault_key
        t = await terminal(data)  # resume_at_startup finishes the wipe and the host's steps
        try:
            status = t.key_store.status() if t.key_store is not None else None
            return before, status, t.status()
        finally:
            await t.close()

    try:
        before, status, after = run(go())
    finally:
        sim.stop()
    assert before == (True, True)  # cut before the key part: the keys were all still there
    assert status is not None and status.tmk_check is None and not status.vault_key, status
    st = _state(data)
    assert st["dereg_step"] == "UNBOUND_VERIFIED", st
    assert "terminal master key" in st["dereg_keys"] and "destroyed" in st["dereg_keys"], st
    assert after["service_mode"] is None  # a deregistered terminal is not a broken one
