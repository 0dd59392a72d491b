"""The updates service's rules against a real terminal: its journal file, the acquirer simulator
on loopback TCP, the one operation lock. The update agent is an in-process stand-in (FakeAgent):
RAUC needs a booted A/B system, which this host is not; the real rauc is the lead's QEMU image
test, and the driver's own parsing is tests/test_updates_rauc.py."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from helpers import record_in_state, run, sale, terminal
from updatekit import bundle_file, stand_in

from firmware.app.services import updates
from firmware.engine.model import PendingDraft
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind
from firmware.i18n import text
from firmware.ports import SlotInfo
from firmware.ui.core import StartOp


def _audit(t) -> list[tuple[str, str, str]]:
    return [(action, detail, outcome) for _at, _who, action, detail, outcome in t.journal.audit_lines()
            if action.startswith("firmware update")][::-1]


def _keypad(t, op: str, lang: str = "en", **kw):
    return updates.run_op(t, StartOp(op, **kw), lang, 16)


def test_a_checked_bundle_is_installed_and_the_restart_asked(data_dir, sim, monkeypatch) -> None:
    monkeypatch.setattr(updates, "RESTART_DELAY_S", 0.0)

    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in(slots=(
            SlotInfo("A", "1.0.0", "good", True, True), SlotInfo("B", None, "good", False, False)))
        try:
            path = bundle_file(data_dir)
            found = await _keypad(t, "update_sources")
            assert [i["path"] for i in found.items] == [path]
            checked = await _keypad(t, "update_check", path=path)
            assert checked.message_key == "upd_confirm" and checked.items[0]["version"] == "1.1.0"
            assert checked.detail == "Install version 1.1.0? Now running 1.0.0"  # the booted slot's
            steps: list[tuple[str, int | None, bool]] = []
            t.progress = lambda step, done=None, total=None, cancellable=True: steps.append(
                (step, done, cancellable))
            done = await _keypad(t, "update_install", "zh_CN", path=path, reference="1.1.0",
                                 authorised=True)
            assert (done.status, done.message_key, done.detail) == (
                "done", "upd_restarting", "正在重启进入版本1.1.0")
            assert agent.installed == [path] and agent.reboots == 0  # the answer goes out first
            await asyncio.sleep(0.05)
            assert agent.reboots == 1
            # CANCEL counts while the file is checked, never once the write began
            assert steps[0] == ("upd_checking", None, True)
            assert [s for s in steps[1:] if s[2]] == [] and steps[-1] == ("upd_writing", 100, False)
            assert t.status()["notice"] == "Update installed: restarting"
            assert [(a, o) for a, _d, o in _audit(t)] == [
                ("firmware update: checked", "confirm asked"),
                ("firmware update: install", "started"),
                ("firmware update: install", "installed, restart asked")]
        finally:
            await t.close()
    run(go())


def _owed(t, state: TxnState) -> None:
    draft = PendingDraft(TxnKind.SALE, 500, "156", "6222020000000000012", "622202******0012",
                         False, "swipe", False, "01", "0501", "101010")
    record_in_state(t.journal, draft, state)


@pytest.mark.parametrize(("state", "en", "zh"), [
    (TxnState.REVERSAL_DUE, "1 reversal(s) pending", "1笔冲正未完成"),
    (TxnState.ADVICE_DUE, "1 advice(s) not sent", "1笔通知未上送"),
])
def test_refused_while_the_host_is_owed_a_message(data_dir, sim, state, en, zh) -> None:
    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in()
        try:
            sim.stop()  # the backlog must stay owed: nothing answers it
            _owed(t, state)
            path = bundle_file(data_dir)
            for lang, words in (("en", en), ("zh_CN", zh)):
                out = await _keypad(t, "update_install", lang, path=path, reference="1.1.0",
                                    authorised=True)
                assert out.status == "refused" and words in out.detail, out
            assert out.detail == f"不能升级:{zh};未作任何更改"
            assert agent.installed == [] and agent.reboots == 0
            assert _audit(t)[-1][0] == "firmware update: refused" and en in _audit(t)[-1][1]
        finally:
            await t.close()
    run(go())


def test_refused_while_the_batch_is_open_too_long(data_dir, sim) -> None:
    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in()
        try:
            assert (await sale(t, 1234)).status == "approved"
            path = bundle_file(data_dir)
            ok = await _keypad(t, "update_check", path=path)
            assert ok.status == "done"  # a sale of a minute ago does not stop it
            db = sqlite3.connect(t.journal.path)
            db.execute("UPDATE txn SET created_at = ?", (time.time() - 25 * 3600,))
            db.commit()
            db.close()
            out = await _keypad(t, "update_install", path=path, reference="1.1.0", authorised=True)
            assert out.status == "refused" and "batch open 25 h (limit 24 h): settle first" in out.detail
            t.settings["transactions"]["update_max_batch_hours"] = 48
            assert (await _keypad(t, "update_check", path=path)).status == "done"
            assert agent.installed == []
        finally:
            await t.close()
    run(go())


@pytest.mark.parametrize(("name", "key", "words"), [
    ("other-board.raucb", "upd_wrong_board", "for another terminal model (posfw-rpi)"),
    ("tampered.raucb", "upd_bad_bundle", "not a valid signed update"),
])
def test_a_bundle_for_another_board_or_badly_signed_is_refused(data_dir, sim, name, key, words) -> None:
    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in()
        try:
            path = bundle_file(data_dir, name)
            out = await _keypad(t, "update_install", path=path, reference="1.1.0", authorised=True)
            assert (out.status, out.message_key) == ("refused", key) and words in out.detail
            assert agent.installed == [] and _audit(t)[-1][2] == "nothing changed"
        finally:
            await t.close()
    run(go())


def test_a_file_not_on_the_stick_or_in_export_is_refused(data_dir, sim, tmp_path) -> None:
    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in()
        try:
            elsewhere = tmp_path / "posfw-1.1.0.raucb"
            elsewhere.write_bytes(b"bundle")
            out = await _keypad(t, "update_check", path=str(elsewhere))
            assert out.message_key == "upd_bad_path" and str(data_dir / "export") in out.lines[0]
            sneaky = str(data_dir / "export" / ".." / "journal.db")
            assert (await _keypad(t, "update_check", path=sneaky)).message_key == "upd_bad_path"
            assert agent.installed == [] and agent.status_calls == 0
        finally:
            await t.close()
    run(go())


def test_a_version_other_than_the_one_confirmed_is_refused(data_dir, sim) -> None:
    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in()
        try:
            out = await _keypad(t, "update_install", path=bundle_file(data_dir), reference="1.0.9",
                                authorised=True)
            assert out.message_key == "upd_wrong_version" and "version 1.1.0, not 1.0.9" in out.detail
            assert agent.installed == []
        finally:
            await t.close()
    run(go())


def test_cancel_before_the_write_begins_changes_nothing(data_dir, sim) -> None:
    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in(on_info=lambda: t.cancel("keypad"))
        try:
            out = await _keypad(t, "update_install", path=bundle_file(data_dir), reference="1.1.0",
                                authorised=True)
            assert (out.status, out.detail) == ("cancelled", "Update cancelled: nothing changed")
            assert agent.installed == [] and agent.reboots == 0
            assert _audit(t)[-1][::2] == ("firmware update: cancelled", "nothing changed")
        finally:
            await t.close()
    run(go())


def test_a_failed_install_changes_nothing_and_asks_no_restart(data_dir, sim) -> None:
    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in(install_error="No space left on device")
        try:
            out = await _keypad(t, "update_install", path=bundle_file(data_dir), reference="1.1.0",
                                authorised=True)
            assert (out.status, out.message_key) == ("failed", "upd_failed")
            assert out.detail.startswith("Update failed: nothing changed; the terminal runs version")
            assert "No space left" in out.lines[0] and agent.reboots == 0
            assert _audit(t)[-1][2] == "failed, nothing changed"
        finally:
            await t.close()
    run(go())


def test_the_keypad_install_needs_the_supervisor(data_dir, sim) -> None:
    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in()
        try:
            out = await _keypad(t, "update_install", path=bundle_file(data_dir), reference="1.1.0")
            assert out.message_key == "password_wrong" and agent.installed == []
        finally:
            await t.close()
    run(go())


def test_a_board_without_updates_says_so(data_dir, sim) -> None:
    async def go() -> None:
        t = await terminal(data_dir)  # the sim board: update_agent "none"
        try:
            for lang, words in (("en", "Updates are not available on this board"),
                                ("zh_CN", "本机不支持固件升级")):
                out = await _keypad(t, "update_sources", lang)
                assert out.status == "refused" and text(out.message_key, lang) == words
            status = await _keypad(t, "firmware_status")
            assert status.lines[1] == "Updates are not available on this board"
        finally:
            await t.close()
    run(go())


# -- the first start of a new slot ---------------------------------------------------------

NEW_B = (SlotInfo("A", None, "good", False, False),
         SlotInfo("B", "1.1.0", "good", True, True, activated="2026-12-07T22:00:00Z #1"))


def test_the_first_start_of_a_new_slot_marks_it_good_after_its_health_check(data_dir, sim) -> None:
    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in(slots=NEW_B)
        try:
            said = await updates.confirm_at_startup(t)
            assert said == "B passed its health check" and agent.marked == ["good"]
            assert _audit(t)[-1] == ("firmware update: health check", "slot B version 1.1.0: journal, "
                                     "host and printer answer", "passed, marked good")
            # any later start: the attempts given back, nothing else (no echo, no audit)
            lines = len(t.journal.audit_lines())
            t.echo = None  # a call would fail the test
            assert await updates.confirm_at_startup(t) is None
            assert agent.marked == ["good", "good"] and len(t.journal.audit_lines()) == lines
            words = (await _keypad(t, "firmware_status", "zh_CN")).lines
            assert words[1:] == ("分区A:出厂,正常", "分区B:1.1.0,正常,运行中,下次启动", "分区B自检通过")
        finally:
            await t.close()
    run(go())


def test_a_failed_health_check_does_not_mark_good_says_why_and_restarts(
        data_dir, sim, monkeypatch) -> None:
    monkeypatch.setattr(updates, "HEALTH_RESTART_S", 0.0)

    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in(slots=NEW_B)
        try:
            sim.stop()  # the host does not answer the echo
            said = await updates.confirm_at_startup(t)
            assert said == "no answer from the host" and agent.marked == []
            assert _audit(t)[-1][::2] == ("firmware update: health check",
                                          "failed, not marked good, restart asked")
            assert t.status()["notice"] == "The update failed its health check: restarting"
            lines = (await _keypad(t, "firmware_status")).lines
            assert lines[-1] == ("B failed its health check (no answer from the host): restarting; "
                                 "the previous firmware returns after failed starts")
            await asyncio.sleep(0.05)  # the restart, once the screen has said why
            assert agent.reboots == 1 and agent.marked == []
        finally:
            await t.close()
    run(go())


def test_back_on_the_old_slot_after_a_fallback_says_so_once(data_dir, sim) -> None:
    fell_back = (SlotInfo("A", None, "good", True, True),
                 SlotInfo("B", "1.1.0", "bad", False, False, activated="2026-12-07T22:00:00Z #1"))

    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in(slots=fell_back)
        try:
            said = await updates.confirm_at_startup(t)
            assert said == "Fallback: B failed its boot attempts; running A"
            assert agent.marked == ["good"]  # A, which runs, keeps its boot attempts
            assert await updates.confirm_at_startup(t) is None  # said once, not at every start
            status = await updates.ecr_op(t, "firmware_status", {})
            assert status["booted"] == "A" and status["boots_next"] == "A"
            assert status["why"] == "Fallback: B failed its boot attempts; running A"
            assert [s["state"] for s in status["slots"]] == ["good", "bad"]
        finally:
            await t.close()
    run(go())


def test_an_ordinary_start_gives_the_attempts_back_and_asks_the_host_nothing(data_dir, sim) -> None:
    factory = (SlotInfo("A", None, "good", True, True), SlotInfo("B", None, "good", False, False))

    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in(slots=factory)
        try:
            called: list[str] = []

            async def echo():
                called.append("echo")
                return True, 0.0, "00"
            t.echo = echo
            assert await updates.confirm_at_startup(t) is None
            # the factory slot's attempts given back at every start; no echo, no audit
            assert called == [] and agent.marked == ["good"] and _audit(t) == []
        finally:
            await t.close()
    run(go())


def test_blockers_are_checked_before_the_file(data_dir, sim) -> None:
    """The rules come first: a refusal never reads the stick (rauc info can take minutes)."""
    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in()
        try:
            sim.stop()
            _owed(t, TxnState.REVERSAL_DUE)
            await _keypad(t, "update_check", path=bundle_file(data_dir))
            assert agent.status_calls == 0
        finally:
            await t.close()
    run(go())


def test_the_ecr_update_takes_the_password_then_installs(data_dir, sim, monkeypatch) -> None:
    monkeypatch.setattr(updates, "RESTART_DELAY_S", 0.0)
    from helpers import PASSWORD

    async def go() -> None:
        t = await terminal(data_dir)
        t.update_agent = agent = stand_in()
        try:
            path = bundle_file(data_dir)
            wrong = await updates.ecr_op(t, "update", {"path": path, "password": "000000"})
            assert wrong["ok"] is False and agent.installed == []
            checked = await updates.ecr_op(t, "update", {"path": path, "password": PASSWORD,
                                                         "check": True})
            assert checked["ok"] and checked["version"] == "1.1.0" and agent.installed == []
            done = await updates.ecr_op(t, "update", {"path": path, "password": PASSWORD,
                                                      "version": "1.1.0"})
            assert done == {"ok": True, "result": "done", "message": "Restarting into version 1.1.0"}
            await asyncio.sleep(0.05)
            assert agent.installed == [path] and agent.reboots == 1
        finally:
            await t.close()
    asyncio.run(go())


def test_update_and_firmware_status_over_the_ecr_link(data_dir, sim, monkeypatch) -> None:
    """The ops through the ECR server on loopback TCP: the protocol's field checks included."""
    monkeypatch.setattr(updates, "RESTART_DELAY_S", 0.0)
    from ecrkit import Link, ecr_terminal
    from helpers import PASSWORD

    async def go() -> None:
        async with ecr_terminal(data_dir) as (t, server):
            t.update_agent = agent = stand_in()
            path = bundle_file(data_dir)
            link = Link(server.port)
            try:
                status = await asyncio.to_thread(link.ask, op="firmware_status")
                assert status["ok"] and status["booted"] == "A" and status["available"] is True
                assert status["message"].startswith("Firmware ")
                assert "Slot B: 1.0.0, good" in status["message"]
                bad = await asyncio.to_thread(link.ask, op="update", path=path, password=PASSWORD,
                                              version="x" * 65)
                assert bad["ok"] is False and agent.installed == []  # the field check refused it
                checked = await asyncio.to_thread(link.ask, op="update", path=path, password=PASSWORD,
                                                  check=True)
                assert (checked["ok"], checked["version"]) == (True, "1.1.0")
                done = await asyncio.to_thread(link.ask, op="update", path=path, password=PASSWORD,
                                               version="1.1.0")
                assert (done["ok"], done["message"]) == (True, "Restarting into version 1.1.0")
                await asyncio.sleep(0.05)  # the restart is asked just after the reply
                assert agent.installed == [path] and agent.reboots == 1
                refused = await asyncio.to_thread(link.ask, op="update", path="/etc/passwd",
                                                  password=PASSWORD)
                assert refused["ok"] is False and "USB stick or the export folder" in refused["message"]
            finally:
                link.close()
    asyncio.run(go())


def test_service_mode_refuses_updates(data_dir, sim) -> None:
    """A journal this firmware refuses (newer, breaking): nothing owed can be checked and no
    password either, so no update runs, from the keypad or the ECR link."""
    from firmware.app.core.terminal import AppConfig
    from firmware.app.terminal import Terminal
    from firmware.journal.schema import SCHEMA_VERSION
    from firmware.journal.store import Journal
    from firmware.journal.vault import CardVault

    Journal.open(data_dir / "journal.db", CardVault(b"k" * 32)).close()
    db = sqlite3.connect(data_dir / "journal.db")
    db.executemany("UPDATE journal_compat SET value = ? WHERE name = ?",
                   ((SCHEMA_VERSION + 1, "min_reader"), (SCHEMA_VERSION + 1, "schema")))
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()

    async def go() -> None:
        t = Terminal(AppConfig(data_dir=data_dir, printer_path="", reader_path=""))
        await t.open()
        t.update_agent = agent = stand_in()
        try:
            assert t.journal is None
            reply = await updates.ecr_op(t, "update", {"path": bundle_file(data_dir), "password": "x"})
            assert reply["ok"] is False and reply["message"] == text("service_mode")
            out = await _keypad(t, "update_check", path=bundle_file(data_dir))
            assert out.message_key == "service_mode"
            assert agent.installed == [] and agent.status_calls == 0
        finally:
            await t.close()
    asyncio.run(go())
