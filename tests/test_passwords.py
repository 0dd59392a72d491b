"""Supervisor passwords: the rule every new password must pass (one function for the ECR link,
the keypad and provisioning), the lockout per source with one ceiling for all, kept in the
journal across a restart (a real process killed with SIGKILL), the words while locked, and no
scrypt hash on the event loop."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from helpers import PASSWORD, TerminalProcess, provision, run, terminal

from firmware.app.services import settings as settings_service
from firmware.security import ALL, CEILING_FACTOR
from firmware.settings import model
from firmware.settings.model import FACTORY_PASSWORD, password_problem, verify_password
from firmware.ui import core as ui

TRIVIAL = [
    ("111111", "password_rule_one_digit"), ("999999999999", "password_rule_one_digit"),
    ("123456", "password_rule_run"), ("0123456789", "password_rule_run"),
    ("987654", "password_rule_run"), ("654321", "password_rule_run"),
    ("890123", "password_rule_run"), ("789012345", "password_rule_run"),  # wrapping runs
    ("321098", "password_rule_run"), ("109876", "password_rule_run"),
    (FACTORY_PASSWORD, "password_rule_factory"),
    ("12345", "password_rule_digits"), ("1234567890123", "password_rule_digits"),
    ("24681a", "password_rule_digits"), ("２４６８１０", "password_rule_digits"),  # full-width
    ("", "password_rule_digits"),
]
GOOD = [PASSWORD, "135790", "314159", "120986", "112233", "13579246"]


@pytest.mark.parametrize(("password", "rule"), TRIVIAL)
def test_trivial_passwords_are_refused_by_the_rule_they_break(password, rule):
    assert password_problem(password) == rule
    assert model.password_words(rule, "en").startswith("The new password")
    assert "新密码" in model.password_words(rule, "zh_CN")


@pytest.mark.parametrize("password", GOOD)
def test_passwords_that_are_not_trivial_pass(password):
    assert password_problem(password) is None


def test_the_dev_password_of_make_run_and_the_tests_passes_the_rule():
    from board.sim.devrun import DEV_PASSWORD

    assert DEV_PASSWORD == PASSWORD and password_problem(DEV_PASSWORD) is None


def test_ecr_set_password_refuses_a_trivial_one_in_words_and_keeps_the_old(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            run_ = await t.set_password(PASSWORD, "890123", "ecr tcp 127.0.0.1")
            factory_ = await t.set_password(PASSWORD, FACTORY_PASSWORD, "ecr")
            t.settings["display"]["language"] = "zh_CN"
            zh = await t.set_password(PASSWORD, "111111", "ecr")
            return run_, factory_, zh, t.settings, t.journal.audit_lines(20)
        finally:
            await t.close()

    run_, factory_, zh, settings, audit = run(go())
    from firmware.app.frontends.ecr_replies import result_payload

    assert (run_.status, run_.message_key) == ("refused", "password_rule_run")
    assert result_payload(run_)["message"].startswith("The new password may not be a run")
    assert factory_.message_key == "password_rule_factory"
    assert "同一数字" in result_payload(zh, "zh_CN")["message"]
    assert verify_password(PASSWORD, settings["security"]["supervisor_hash"])
    stored = json.loads((data_dir / "settings.json").read_text())
    assert verify_password(PASSWORD, stored["security"]["supervisor_hash"])
    refusals = [(line[1], line[3]) for line in audit if line[2] == "password change"]
    assert ("ecr tcp 127.0.0.1", "password_rule_run") in refusals


def test_keypad_change_password_refuses_a_trivial_one_in_the_screen_language(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            t.settings["display"]["language"] = "zh_CN"
            refused = await settings_service.run(t, ui.ChangePassword("987654"))
            done = await settings_service.run(t, ui.ChangePassword("135790"))
            return refused, done, t.settings
        finally:
            await t.close()

    refused, done, settings = run(go())
    assert not refused.ok and "连续数字" in next(iter(refused.problems.values()))
    assert done.ok and verify_password("135790", settings["security"]["supervisor_hash"])


# -- the lockout --------------------------------------------------------------------------

async def _wrong(t, source: str, times: int) -> None:
    for _ in range(times):
        assert not await t.check_password("111111", "void", source)


def test_five_wrong_from_one_till_lock_that_till_only(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            await _wrong(t, "ecr tcp 10.0.0.7", 5)
            till = await t.check_password(PASSWORD, "void", "ecr tcp 10.0.0.7")
            keypad = await t.check_password(PASSWORD, "void", "keypad")
            other = await t.check_password(PASSWORD, "void", "ecr serial /dev/ttyS3")
            return till, keypad, other, t.password_refused("ecr tcp 10.0.0.7"), t.journal.audit_lines(20)
        finally:
            await t.close()

    till, keypad, other, key, audit = run(go())
    assert not till and keypad and other
    assert key == "password_locked_5m"
    locks = [line for line in audit if line[2] == "password lock"]
    assert [(line[1], line[4]) for line in locks] == [("ecr tcp 10.0.0.7", "locked 5 min")]
    assert ("ecr tcp 10.0.0.7", "password for void", "refused") in [
        (line[1], line[2], line[4]) for line in audit]


def test_the_ceiling_across_sources_locks_everyone_the_keypad_too(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            tries = t.password_guard.max_tries
            for peer in range(CEILING_FACTOR):  # each peer stops one short of its own lock
                await _wrong(t, f"ecr tcp 10.0.0.{peer}", tries - 1)
            left_before = t.password_guard.seconds_left("keypad")
            await _wrong(t, f"ecr tcp 10.0.1.{CEILING_FACTOR}", CEILING_FACTOR)
            keypad = await t.check_password(PASSWORD, "settlement", "keypad")
            return left_before, keypad, t.password_guard.seconds_left("keypad")
        finally:
            await t.close()

    left_before, keypad, left_after = run(go())
    assert left_before == 0.0
    assert not keypad and 0 < left_after <= 300


def test_a_lock_survives_a_sigkill_and_the_till_is_told_how_long_it_lasts(tmp_path, sim):
    data_dir = provision(tmp_path / "terminal", sim.port)
    proc = TerminalProcess(data_dir)
    proc.start()
    try:
        wrong = [proc.request(op="settle", password="111111") for _ in range(5)]
        locked = proc.request(op="settle", password=PASSWORD)
        proc.kill()  # a power loss
        proc.start()
        after_restart = proc.request(op="settle", password=PASSWORD)
    finally:
        proc.kill()
    assert [w["message"] for w in wrong[:4]] == ["Wrong supervisor password"] * 4
    assert wrong[4]["message"] == "Supervisor password locked - 5 min left"  # the 5th locks
    assert locked["result"] == "refused"
    assert locked["message"] == "Supervisor password locked - 5 min left"
    assert after_restart["result"] == "refused"
    assert after_restart["message"] in ("Supervisor password locked - 5 min left",
                                        "Supervisor password locked - 4 min left")


def test_the_lock_words_in_chinese(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            await _wrong(t, "ecr", 5)
            return t.password_refused("ecr"), t.password_refused("keypad")
        finally:
            await t.close()

    locked, keypad = run(go())
    from firmware.i18n import text

    assert text(locked, "zh_CN") == "主管密码已锁定 - 还剩5分钟"
    assert keypad == "password_wrong"


def test_the_lock_row_is_in_the_journal_and_the_ceiling_row_counts_every_source(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            await _wrong(t, "keypad", 2)
            await _wrong(t, "ecr", 1)
            return dict((r[0], r[1]) for r in t.journal.read(
                "SELECT source, wrong FROM password_lock"))
        finally:
            await t.close()

    assert run(go()) == {"keypad": 2, "ecr": 1, ALL: 3}


# -- hashes off the event loop ------------------------------------------------------------

def test_no_password_hash_runs_on_the_event_loop(tmp_path, sim, monkeypatch):
    """scrypt on the loop's thread would freeze the LCD, the ECR link and CANCEL for 50-120 ms."""
    on_loop: list[str] = []
    real = model.hashlib.scrypt

    def watched(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop.append(threading.current_thread().name)
        except RuntimeError:
            pass  # a worker thread: fine
        return real(*args, **kwargs)

    monkeypatch.setattr(model.hashlib, "scrypt", watched)
    data_dir = provision(tmp_path / "terminal", sim.port)
    (data_dir / "settings.json").unlink()  # first start: factory defaults are hashed

    async def go():
        t = await terminal(data_dir)
        try:
            await t.check_password(FACTORY_PASSWORD, "password change", "keypad")
            changed = await t.set_password(FACTORY_PASSWORD, "135790", "ecr")
            await settings_service.run(t, ui.ChangePassword(PASSWORD))
            await settings_service.run(t, ui.FactoryDefaults())
            return changed
        finally:
            await t.close()

    assert run(go()).status == "approved"
    assert on_loop == []
