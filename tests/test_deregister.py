"""Deregistration (注销) end to end: the happy path to an unbound terminal at the simulator, the
backup verified and restored by the CLI in a separate process, refusals that change nothing, and
a real terminal process SIGKILLed before each step, ending "nothing changed" or "fully
deregistered", never in between, with no card data left in the terminal's files.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import close_open_key_stores

from board.sim.cards import TEST_CARDS
from firmware.app.core import lifecycle
from firmware.app.services import deregister
from firmware.engine.deregistration import Lifecycle, Step, startup_plan
from firmware.journal import wipe
from firmware.ui.core import StartOp
from tests.helpers import (
    PASSWORD,
    REPO,
    TID,
    TMK,
    VAULT_KEY,
    TerminalProcess,
    copy_terminal,
    provision,
    run,
    sale,
    start_sim,
    terminal,
    token_of,
)
from tests.p11kit import pointing_at

CARDS = ("cup_credit", "cup_debit", "visa")
SECRETS = [c.pan.encode() for c in TEST_CARDS.values()] + [c.track2.encode() for c in TEST_CARDS.values()]


# SOFTHSM2_CONF is the process's and the module takes one store at a time: the kill cases run in
# threads, so one of them at a time looks into its token.
TOKEN_LOOK = threading.Lock()

def _journal_rows(data_dir: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{data_dir / 'journal.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _state(data_dir: Path) -> dict[str, str]:
    return dict(_journal_rows(data_dir, "SELECT name, value FROM terminal_state"))


def _file_bytes(data_dir: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(data_dir.rglob("*"))
            if p.is_file() and not any(str(p.relative_to(data_dir)).startswith(s) for s in skip)}


def _assert_no_card_data(data_dir: Path, old_keys: dict[str, bytes]) -> None:
    for name, blob in _file_bytes(data_dir).items():
        for secret in SECRETS:
            assert secret not in blob, f"card data readable in {name}"
        for key_name, key in old_keys.items():
            assert key not in blob, f"the old {key_name} is still in {name}"


def _fully_deregistered(data_dir: Path, sim: Any, old_keys: dict[str, bytes]) -> None:
    st = _state(data_dir)
    assert st["lifecycle"] == "DEREGISTERED" and st["dereg_step"] == "UNBOUND_VERIFIED", st
    assert not (data_dir / "keys" / "tmk.key").exists()
    with TOKEN_LOOK, pointing_at(token_of(data_dir)):  # the token stays, empty (its PIN file is shredded)
        store = token_of(data_dir).open()
        try:
            keys = store.status()
        finally:
            store.close()
    assert keys.tmk_check is None and not keys.vault_key, keys
    assert not (data_dir / "keys" / "token.pin").exists()
    assert not (data_dir / "settings.json.history").exists()
    assert (data_dir / "DEREGISTERED").exists()
    assert _journal_rows(data_dir, "SELECT COUNT(*) FROM txn WHERE pan_enc IS NOT NULL") == [(0,)]
    assert sim.ledger.terminal_status(TID).status == "unbound"
    _assert_no_card_data(data_dir, old_keys)


def _totals(db: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT batch, kind, state, COUNT(*), SUM(amount) FROM txn "
                            "GROUP BY batch, kind, state ORDER BY 1, 2, 3").fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A provisioned terminal with three settled sales (real journal, real simulator)."""
    base = tmp_path_factory.mktemp("dereg_template")
    sim = start_sim(base)
    data = provision(base / "term", sim.port)

    async def go() -> None:
        t = await terminal(data)
        try:
            for i, card in enumerate(CARDS):
                assert (await sale(t, 1234 + i * 100, card=card)).status == "approved"
            assert (await t.settle(PASSWORD)).status == "settled"
        finally:
            await t.close()

    run(go())
    close_open_key_stores()  # the template's token is not the test's
    sim.stop()
    return data


def _fresh(template: Path, tmp: Path) -> tuple[Path, Any]:
    sim = start_sim(tmp)
    data = tmp / "term"
    copy_terminal(template, data)
    settings = json.loads((data / "settings.json").read_text())
    settings["comms"]["port"] = sim.port
    (data / "settings.json").write_text(json.dumps(settings))
    (data / "export").mkdir(exist_ok=True)
    return data, sim


def _keys(data: Path) -> dict[str, bytes]:
    """What must not outlive the deregistration in any file: the key files' contents (the
    token's PIN, the provisioning record; not the token's configuration, which stays: wipe.KEEP)
    and the clear values of the keys in the token (the tests' TMK and card-vault key)."""
    found = {p.name: p.read_bytes() for p in (data / "keys").iterdir()
             if p.is_file() and p.name not in wipe.KEEP}
    return found | {"TMK": TMK, "TMK hex": TMK.hex().encode(), "TMK HEX": TMK.hex().upper().encode(),
                    "card-vault key": VAULT_KEY}


def test_happy_path_unbound_backup_verified_and_restored(template: Path, tmp_path: Path) -> None:
    data, sim = _fresh(template, tmp_path)
    old_keys = _keys(data)
    before = _totals(data / "journal.db")

    async def go() -> tuple[Any, Any, Any]:
        t = await terminal(data)
        try:
            check = await deregister.run_op(t, StartOp("deregister_check"), "en", 16)
            path = next(i["path"] for i in check.items if i["path"].endswith("export"))
            done = await deregister.run_op(
                t, StartOp("deregister", path=path, authorised=True), "en", 16)
            again = await deregister.ecr_op(t, "deregister", {"password": PASSWORD, "path": path})
            refused = lifecycle.refusal(t)
            return check, done, (again, refused)
        finally:
            await t.close()

    check, done, (again, refused) = run(go())
    assert check.status == "done", check
    assert done.status == "done", done
    assert any("DEREGISTERED" in line for line in done.lines)
    assert again["result"] == "refused" and again["lifecycle"] == "DEREGISTERED"
    assert refused is not None and refused.status == "refused"
    _fully_deregistered(data, sim, old_keys)
    backup_dir = Path(done.detail)
    assert backup_dir.is_dir() and backup_dir.parent == data / "export"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    verify = subprocess.run([sys.executable, "-m", "firmware.journal.backup", "verify", str(backup_dir)],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "backup verified: 3 transactions" in verify.stdout
    restored = tmp_path / "restored.db"
    res = subprocess.run([sys.executable, "-m", "firmware.journal.backup", "restore", str(backup_dir),
                          str(restored)], capture_output=True, text=True, env=env, cwd=REPO, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _totals(restored) == before and sum(row[3] for row in before) == 3
    # a damaged export is caught by the same separate script
    csv = backup_dir / "transactions.csv"
    csv.write_bytes(csv.read_bytes().replace(b"1234", b"1235", 1))
    bad = subprocess.run([sys.executable, "-m", "firmware.journal.backup", "verify", str(backup_dir)],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=30)
    assert bad.returncode == 1 and "transactions.csv: SHA-256 does not match" in bad.stdout
    sim.stop()


def test_refused_with_pending_items_changes_nothing(template: Path, tmp_path: Path) -> None:
    data, sim = _fresh(template, tmp_path)

    async def go() -> tuple[Any, ...]:
        t = await terminal(data)
        try:
            first = await sale(t, 500)
            assert first.status == "approved", (first, t.service_problem)  # an unsettled batch
            snapshot = _file_bytes(data, skip=("journal.db", "terminal.log", "export"))
            check = await deregister.ecr_op(t, "deregister_check", {})
            blocked = await deregister.ecr_op(t, "deregister", {"password": PASSWORD,
                                                                     "path": str(data / "export")})
            wrong = await deregister.ecr_op(t, "deregister", {"password": "999999",
                                                                   "path": str(data / "export")})
            unauthorised = await deregister.run_op(t, StartOp("deregister", path="x"), "en", 16)
            assert (await t.settle(PASSWORD)).status == "settled"
            no_dir = await deregister.ecr_op(t, "deregister", {"password": PASSWORD,
                                                                    "path": str(tmp_path / "nowhere")})
            # Any directory the terminal can write is not enough: only the offered ones.
            not_offered = await deregister.ecr_op(t, "deregister", {"password": "999999",
                                                                         "path": str(tmp_path)})
            tries = [line for line in t.journal.audit_lines(50)
                     if line[2] == "password for deregistration"]
            return check, blocked, wrong, unauthorised, (no_dir, not_offered, tries), snapshot
        finally:
            await t.close()

    check, blocked, wrong, unauthorised, (no_dir, not_offered, tries), snapshot = run(go())
    assert check["result"] == "refused" and check["items"][0]["kind"] == "dereg_item_batch", check
    assert check["items"][0]["action"] == "settle"
    assert blocked["result"] == "refused" and "unsettled" in blocked["detail"], blocked
    assert wrong == {"ok": False, "result": "refused", "message": wrong["message"]}
    assert unauthorised.status == "refused"
    for refused in (no_dir, not_offered):
        assert refused["result"] == "refused", refused
        assert refused["message"].startswith("Deregistration refused: back up only to a directory")
        assert refused["detail"] == f"offered: {data / 'export'}", refused
    assert len(tries) == 2  # blocked and wrong: a path refused spends no password try
    assert _state(data)["lifecycle"] == "ACTIVE" and "dereg_step" not in _state(data)
    assert _file_bytes(data, skip=("journal.db", "terminal.log", "export")) == snapshot
    assert sim.ledger.terminal_status(TID).status == "bound"
    assert _journal_rows(data, "SELECT COUNT(*) FROM txn WHERE pan_enc IS NULL") == [(0,)]
    sim.stop()


def test_the_wipe_destroys_the_card_key_first_and_leaves_no_settings_meta_or_log(
        template: Path, tmp_path: Path) -> None:
    import logging

    data, sim = _fresh(template, tmp_path)
    (data / "settings.json.meta").write_text('{"saved_at": 1, "reason": "provisioned MID 1234"}')
    (data / "terminal.log").write_text("INFO posfw.app: TID 12345678 MID 123456789012345 sale 1234\n")
    (data / "terminal.log.1").write_text("INFO posfw.app: an older rotated log\n")
    handler = logging.FileHandler(data / "terminal.log", encoding="utf-8")  # held open, as the app's
    handler.setFormatter(logging.Formatter("%(message)s"))
    seen: list[tuple[str, bool, bool, int]] = []
    running: list[Any] = []

    def watch(action: object) -> None:
        step = getattr(action, "step", "")
        if step.startswith("WIPE:"):
            keys = running[0].key_store.status()  # the terminal's own store, as it sees it
            seen.append((step, keys.vault_key, keys.tmk_check is not None,
                         _journal_rows(data, "SELECT COUNT(*) FROM txn WHERE pan_enc IS NOT NULL")[0][0]))

    async def go() -> dict[str, Any]:
        t = await terminal(data)
        running.append(t)
        t.fault_hook = watch
        try:
            return await deregister.ecr_op(t, "deregister", {"password": PASSWORD,
                                                                  "path": str(data / "export")})
        finally:
            await t.close()

    try:
        reply = run(go())
        handler.emit(logging.makeLogRecord({"msg": "after the wipe"}))
    finally:
        handler.close()
        sim.stop()
    assert reply["ok"], reply
    # The card-data key goes before anything else, while the encrypted PANs are still there.
    assert [s[0] for s in seen] == ["WIPE:card_key", "WIPE:keys", "WIPE:card_data", "WIPE:settings",
                                    "WIPE:log"]
    assert seen[0][1:] == (True, True, 3)  # before the key part: the keys and the PANs there
    assert seen[1][1:] == (False, False, 3)  # after it: the vault key and the TMK gone, PANs not yet
    assert not (data / "settings.json.meta").exists() and not (data / "terminal.log.1").exists()
    assert (data / "terminal.log").read_bytes() == b"after the wipe\n"  # emptied, written on from 0
    report = "\n".join(reply["report"])
    assert "The card-data key was destroyed first" in " ".join(reply["report"]), report
    keys = reply["report"][reply["report"].index("KEYS DESTROYED") + 1:reply["report"].index("WIPED")]
    destroyed = " ".join(line.strip() for line in keys)  # the store's lines, wrapped at words
    assert "terminal master key (token object posfw-tmk) destroyed" in destroyed, report
    assert "card-data key (token object posfw-vault) destroyed" in destroyed, report


@pytest.mark.parametrize(("lang", "words"), [
    ("en", "The card-data key was destroyed first"), ("zh_CN", "卡数据密钥已最先销毁")])
def test_the_report_says_the_card_key_went_first(lang: str, words: str) -> None:
    from firmware.printing.dereg_slip import as_text, dereg_report

    doc = dereg_report(lang=lang, columns=32, tid=TID, mid="123456789012345", at=0.0,
                       backup_dir="/media/usb0/posfw", backup_txns=3, steps=["WIPED"],
                       wiped={"card_key": 1, "keys": 1, "card_data": 3, "settings": 4, "log": 1},
                       host_unbound=True)
    lines = as_text(doc)
    assert all(len(line) <= 32 for line in lines)
    assert words in (" ".join(lines) if lang == "en" else "".join(lines))  # wrapped at words


def test_a_person_resuming_after_the_wipe_gives_the_password_start_up_needs_none(
        template: Path, tmp_path: Path) -> None:
    data, sim = _fresh(template, tmp_path)

    def host_goes_away(action: object) -> None:
        if getattr(action, "step", "") == Step.DEREGISTERED.value:
            sim.add_fault("refuse")  # the host stops answering right after the wipe

    async def go() -> tuple[Any, ...]:
        t = await terminal(data)
        t.fault_hook = host_goes_away
        try:
            first = await deregister.ecr_op(t, "deregister", {"password": PASSWORD,
                                                                  "path": str(data / "export")})
        finally:
            await t.close()
        t = await terminal(data)  # start-up tries to finish on its own: the host is still away
        try:
            after_start = _state(data)["dereg_step"]
            sim.clear_faults()
            check = await deregister.run_op(t, StartOp("deregister_check"), "en", 16)
            keypad = await deregister.run_op(t, StartOp("deregister", path=""), "en", 16)
            factory = await deregister.ecr_op(t, "deregister", {"password": "000000", "path": ""})
            wrong = await deregister.ecr_op(t, "deregister", {"password": "999999", "path": ""})
            still = _state(data)["dereg_step"]
            done = await deregister.ecr_op(t, "deregister", {"password": PASSWORD, "path": ""})
            again = await deregister.ecr_op(t, "deregister", {"password": "", "path": ""})
            return first, after_start, check, keypad, factory, wrong, still, done, again
        finally:
            await t.close()

    try:
        first, after_start, check, keypad, factory, wrong, still, done, again = run(go())
    finally:
        sim.stop()
    assert first["result"] == "failed" and after_start == still == "WIPED", (first, after_start)
    assert (check.status, check.message_key) == ("done", "dereg_resume")
    assert keypad.status == "refused" and keypad.message_key == "password_wrong"
    for refused in (factory, wrong):  # the wiped settings' factory password opens nothing
        assert refused["result"] == "refused" and refused["message"] == "Wrong supervisor password"
    assert done["ok"] and done["lifecycle"] == "DEREGISTERED", done
    assert again["result"] == "refused" and again["message"] == "The terminal is already deregistered"
    assert "dereg_supervisor" not in _state(data)  # the kept hash goes with the last step


def test_startup_plan_rules() -> None:
    assert startup_plan(Lifecycle.ACTIVE, None).resume == ()
    for step in (Step.CHECKS, Step.BACKUP, Step.VERIFIED, Step.SIGNED_OFF):
        assert startup_plan(Lifecycle.ACTIVE, step).roll_back
    plan = startup_plan(Lifecycle.DEREGISTERING, Step.WIPING)
    assert not plan.roll_back and plan.resume[0] is Step.WIPED
    assert startup_plan(Lifecycle.DEREGISTERED, Step.UNBOUND_VERIFIED).resume == ()


class _Proc(TerminalProcess):
    """The terminal process through tests/dereg_entry.py (board.sim.firmware with a killable Terminal)."""

    def __init__(self, data_dir: Path, kill_at: str = "") -> None:
        super().__init__(data_dir, ["--ecr-serial", "", "--printer", "", "--reader", ""],
                         module="tests.dereg_entry", env={"POSFW_KILL_AT_STEP": kill_at})


KILL_POINTS = [s.value for s in Step] + ["WIPE:card_key", "WIPE:keys", "WIPE:card_data",
                                         "WIPE:settings", "WIPE:log"]
BEFORE_WIPE = {"CHECKS", "BACKUP", "VERIFIED", "SIGNED_OFF", "WIPING"}
FINANCIAL = [{"op": "sale", "amount": 100, "card": "cup_credit"}, {"op": "balance", "card": "cup_credit"},
             {"op": "preauth", "amount": 100, "card": "cup_credit"},
             {"op": "void", "voucher": "000001", "password": PASSWORD},
             {"op": "refund", "amount": 100, "orig_rrn": "000000000001", "orig_date": "0101",
              "card": "cup_credit", "password": PASSWORD},
             {"op": "settle", "password": PASSWORD}]


def _kill_case(template: Path, tmp: Path, kill_at: str) -> str:
    tmp.mkdir()
    data, sim = _fresh(template, tmp)
    old_keys = _keys(data)
    watched = ("keys", "settings.json", "settings.json.history")
    before = _file_bytes(data, skip=("journal.db", "terminal.log", "export", "ready", "stderr",
                                      "keys/tokens"))
    proc = _Proc(data, kill_at)
    try:
        proc.start()
        with pytest.raises((ConnectionError, OSError)):
            proc.request(op="deregister", password=PASSWORD, path=str(data / "export"))
        assert proc.proc is not None and proc.proc.wait(10) == -9, f"not killed at {kill_at}"
        proc.kill()
        proc = _Proc(data)
        proc.start()  # resume_at_startup has run before the ECR link is ready
        if kill_at in BEFORE_WIPE:
            st = _state(data)
            assert st["lifecycle"] == "ACTIVE" and "dereg_step" not in st, (kill_at, st)
            after = _file_bytes(data, skip=("journal.db", "terminal.log", "export", "ready", "stderr",
                                      "keys/tokens"))
            assert {k: v for k, v in after.items() if k.startswith(watched)} == {
                k: v for k, v in before.items() if k.startswith(watched)}, kill_at
            assert _journal_rows(data, "SELECT COUNT(*) FROM txn WHERE pan_enc IS NULL") == [(0,)]
            assert sim.ledger.terminal_status(TID).status == "bound"
            with TOKEN_LOOK, pointing_at(token_of(data)):  # the token's keys untouched (its files are the
                store = token_of(data).open()  # token's business: it counts its changes there)
                try:
                    keys = store.status()
                finally:
                    store.close()
            assert keys.tmk_check is not None and keys.vault_key, (kill_at, keys)
            assert proc.request(op="balance", card="cup_credit")["result"] != "refused"
            return "nothing changed"
        _fully_deregistered(data, sim, old_keys)
        for req in FINANCIAL:
            reply = proc.request(**req)
            assert reply["result"] == "refused" and not reply["ok"], (kill_at, req, reply)
        return "fully deregistered"
    finally:
        proc.kill()
        sim.stop()


def test_sigkill_at_each_step_ends_unchanged_or_fully_deregistered(template: Path, tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(KILL_POINTS, pool.map(
            lambda k: _kill_case(template, tmp_path / k.replace(":", "_"), k), KILL_POINTS), strict=True))
    assert {k for k, v in results.items() if v == "nothing changed"} == BEFORE_WIPE, results
