"""Provisioning and deregistration on a board whose keys live in a PKCS#11 token (SoftHSM2 under
the data directory, tests/p11kit.py): the key ceremony's TR-31 block becomes a non-extractable
token object and no clear key or KBPK byte is left in any file (the token's own files included);
a development data directory's key files move into the token (its journal's card numbers stay
readable) and are destroyed; a failure at any step leaves the token empty and the files as they
were; deregistration destroys the token's objects and names each on its report.

In process (the sim board's profile switched to its token here), real tokens, real files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    PASSWORD,
    TMK,
    TOKEN_PIN,
    VAULT_KEY,
    open_journal,
    provision,
    run,
    token_of,
    write_token_pin_file,
)
from p11kit import pointing_at, softhsm_env
from test_provision import deregistered_token, filled_template, life, tree

from board.sim.kld import tmk_block
from firmware.app import boards
from firmware.app.core import custody
from firmware.app.core.terminal import AppConfig
from firmware.app.provision import provision as provision_again
from firmware.app.provision import tmk_check_value
from firmware.app.services import deregister
from firmware.app.terminal import Terminal
from firmware.engine.deregistration import Lifecycle

KBPK = bytes.fromhex("89ABCDEF01234567FEDCBA9876543210")
PAN = "6222021234567890"


@pytest.fixture(autouse=True)
def _token_board(monkeypatch) -> None:
    monkeypatch.setitem(boards.PROFILES, "sim", dataclasses.replace(boards.PROFILES["sim"],
                                                                    key_store="pkcs11"))
    monkeypatch.setenv("SOFTHSM2_CONF", "")  # each terminal points it at its own token


def secrets_of(*keys: bytes) -> dict[str, bytes]:
    found = {}
    for i, key in enumerate(keys):
        found |= {f"key {i} raw": key, f"key {i} hex": key.hex().upper().encode(),
                  f"key {i} hex lower": key.hex().encode()}
    return found


def files_holding(root: Path, needles: dict[str, bytes]) -> dict[str, list[str]]:
    return {str(p.relative_to(root)): hits for p in sorted(root.rglob("*")) if p.is_file()
            and (hits := [name for name, needle in needles.items() if needle in p.read_bytes()])}


def token_status(data: Path) -> Any:
    with pointing_at(token_of(data)):
        store = token_of(data).open()
        try:
            return store.status()
        finally:
            store.close()


def given(tmp: Path) -> dict[str, Any]:
    return json.loads(filled_template(tmp / "merchant.json").read_text())


def test_the_ceremony_block_becomes_a_token_object_and_no_file_holds_a_clear_key(
        tmp_path: Path) -> None:
    data = deregistered_token(tmp_path / "terminal")
    write_token_pin_file(data)
    report: list[Any] = []
    provision_again(data, None, given(tmp_path), tr31=tmk_block(KBPK, TMK),
                    kbpk=bytearray(KBPK), report=report)
    check = tmk_check_value(TMK)
    assert report[0].tmk_check == check and "SoftHSM" in report[0].where
    assert custody.read_record(data).tmk_check == check
    assert custody.read_record(data).key_store == "pkcs11"
    status = token_status(data)
    assert status.tmk_check == check and status.vault_key
    assert not (data / "keys" / "tmk.key").exists() and not (data / "keys" / "card.key").exists()
    assert life(data) == Lifecycle.ACTIVE.value
    # the TMK and the KBPK in no file, the token's object store (keys/tokens/) included
    assert any(p.is_file() for p in (data / "keys" / "tokens").rglob("*.object"))
    assert files_holding(data, secrets_of(TMK, KBPK)) == {}


def test_a_development_data_directory_moves_its_keys_into_the_token_and_its_card_numbers_stay_readable(
        tmp_path: Path) -> None:
    data = tmp_path / "terminal"
    provision(data, 5800, key_store="memory")
    journal = open_journal(data, key_store="memory")  # the development key files of before
    try:
        from helpers import record_in_state

        from firmware.engine.model import PendingDraft
        from firmware.engine.states import TxnState
        from firmware.host.messages import TxnKind

        draft = PendingDraft(TxnKind.SALE, 100, "156", PAN, "622202******7890", False, "swipe",
                             False, "01", "1201", "101010")
        record = record_in_state(journal, draft, TxnState.APPROVED)
    finally:
        journal.close()
    card_key = (data / "keys" / "card.key").read_bytes()
    softhsm_env(data / "keys", set_env=False)  # the board's token, blank
    write_token_pin_file(data)
    report: list[Any] = []
    provision_again(data, TMK.hex(), given(tmp_path), report=report)
    assert not (data / "keys" / "card.key").exists() and not (data / "keys" / "tmk.key").exists()
    assert "the development card-data key keys/card.key moved into the token" in report[0].notes
    assert "the development card-data key file keys/card.key was destroyed" in report[0].notes
    journal = open_journal(data)
    try:
        assert journal.decrypt_pan(record.id) == PAN  # sealed under the file, read in the token
    finally:
        journal.close()
    assert files_holding(data, secrets_of(TMK, card_key)) == {}


def steps_on_a_token(tmp_path: Path) -> list[str]:
    seen: list[str] = []
    data = deregistered_token(tmp_path / "recorded")
    write_token_pin_file(data)
    provision_again(data, TMK.hex(), given(tmp_path), step_hook=seen.append)
    assert "keys" in seen and seen[-2:] == ["journal", "commit"]
    return seen


def test_a_failure_at_any_step_leaves_the_token_empty_and_every_file_as_it_was(tmp_path: Path) -> None:
    for step in steps_on_a_token(tmp_path)[:-1]:
        data = deregistered_token(tmp_path / step.replace(" ", "-"))
        write_token_pin_file(data)
        before = tree(data)

        def fail(at: str, step: str = step) -> None:
            if at == step:
                raise OSError(28, "No space left on device")

        with pytest.raises(OSError):
            provision_again(data, TMK.hex(), given(tmp_path), step_hook=fail)
        assert tree(data) == before, step
        status = token_status(data)
        assert status.tmk_check is None and not status.vault_key, (step, status)
        assert life(data) == Lifecycle.DEREGISTERED.value


def test_deregistration_destroys_the_token_objects_and_names_each_on_the_report(
        tmp_path: Path, sim) -> None:
    data = provision(tmp_path / "terminal", sim.port, key_store="pkcs11")
    (data / "export").mkdir()

    async def go() -> dict[str, Any]:
        t = Terminal(AppConfig(data_dir=data))
        await t.start()
        try:
            return await deregister.ecr_op(t, "deregister", {"password": PASSWORD,
                                                              "path": str(data / "export")})
        finally:
            await t.close()

    reply = run(go())
    assert reply["ok"] and reply["lifecycle"] == "DEREGISTERED", reply
    report = " ".join(line.strip() for line in reply["report"])
    assert "terminal master key (token object posfw-tmk) destroyed" in report, report
    assert "card-data key (token object posfw-vault) destroyed" in report, report
    status = token_status(data)  # the token stays, empty, for the next provisioning
    assert status.tmk_check is None and not status.vault_key, status
    assert not (data / "keys" / "token.pin").exists()  # shredded with the key files
    assert (data / "keys" / "softhsm2.conf").exists()  # where the token is: no secret
    assert files_holding(data, secrets_of(TMK, VAULT_KEY, TOKEN_PIN.encode())) == {}


def test_make_runs_first_start_makes_a_token_and_a_var_of_before_moves_into_it(tmp_path: Path) -> None:
    """board/sim/devrun.py: a new var/ gets a SoftHSM2 token (softhsm2-util) with the dev TMK and
    a card-vault key; a second start changes nothing; a var/ of before (the dev key files, a
    journal sealed under keys/card.key) moves its keys into a new token and loses the files."""
    from board.sim.devrun import DEV_TMK
    from board.sim.devrun import provision as dev_provision

    fresh = tmp_path / "var" / "terminal"
    done = dev_provision(fresh, 5800, board="sim")
    assert any("SoftHSM2 token 'posfw'" in line for line in done), done
    assert "the dev TMK in the token" in done and "a card-vault key in the token" in done
    assert dev_provision(fresh, 5800, board="sim") == []  # idempotent
    store = open_store_quietly(fresh)
    assert store.tmk_check == tmk_check_value(bytes.fromhex(DEV_TMK)) and store.vault_key
    assert custody.read_record(fresh).tmk_check == store.tmk_check

    old = tmp_path / "old" / "terminal"
    dev_provision(old, 5800, board="qemu-pcsc")  # the development key files, as make run made them
    journal = open_journal(old, board="qemu-pcsc")
    try:
        from helpers import record_in_state

        from firmware.engine.model import PendingDraft
        from firmware.engine.states import TxnState
        from firmware.host.messages import TxnKind

        record = record_in_state(journal, PendingDraft(
            TxnKind.SALE, 100, "156", PAN, "622202******7890", False, "swipe", False, "01", "1201",
            "101010"), TxnState.APPROVED)
    finally:
        journal.close()
    card_key = (old / "keys" / "card.key").read_bytes()
    done = dev_provision(old, 5800, board="sim")
    assert "the dev card-data key file moved into the token" in done, done
    assert not (old / "keys" / "card.key").exists() and not (old / "keys" / "tmk.key").exists()
    journal = open_journal(old)
    try:
        assert journal.decrypt_pan(record.id) == PAN
    finally:
        journal.close()
    assert files_holding(old, secrets_of(bytes.fromhex(DEV_TMK), card_key)) == {}


def open_store_quietly(data: Path) -> Any:
    from helpers import open_store

    store = open_store(data)
    try:
        return store.status()
    finally:
        store.close()
