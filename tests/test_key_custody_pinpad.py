"""Key custody on a board with an encrypting PIN pad (key_store "pinpad", board sim-pinpad): the
TMK and the working keys in the PIN pad of the card reader (the emulated reader's pad, on a real
pty), the card-vault key in a SoftHSM2 token. The key ceremony's TR-31 block goes to the pad,
which opens it under its own KBPK; at start the pad's TMK check value is compared with the
provisioning record; a reader that is not there, or a pad without the TMK, is service mode in
words; deregistration erases the pad's keys and the token's and names each on its report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chipkit import emulated_reader
from helpers import PASSWORD, TMK, VAULT_KEY, provision, run
from test_provision import deregistered_token, filled_template
from test_provision_token import files_holding, secrets_of, token_status

from board.sim.reader import EmulatedReader
from firmware.app.core import custody
from firmware.app.core.terminal import AppConfig
from firmware.app.provision import ProvisionRefused, tmk_check_value
from firmware.app.provision import provision as provision_again
from firmware.app.services import deregister
from firmware.app.split_keys import SplitKeyStore
from firmware.app.terminal import Terminal

BOARD = "sim-pinpad"


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[EmulatedReader]:
    yield from emulated_reader(tmp_path / "devices")


@pytest.fixture
def pad_dir(tmp_path: Path, sim, reader: EmulatedReader, monkeypatch) -> Path:
    """A PIN pad terminal: the TMK in the reader's pad (by a TR-31 block under the pad's KBPK),
    the card-vault key in the token, the record."""
    monkeypatch.setenv("SOFTHSM2_CONF", "")
    data = provision(tmp_path / "terminal", sim.port, key_store="pinpad")
    reader.pinpad._load_tmk(reader.pinpad.wrap_tmk(TMK))  # the pad's own ceremony
    return data


async def _open(data: Path, reader: EmulatedReader | None) -> tuple[dict[str, Any], Terminal]:
    t = Terminal(AppConfig(data_dir=data, board=BOARD,
                           reader_path=str(reader.device_path) if reader else ""))
    await t.open()
    try:
        return t.status(), t
    finally:
        await t.close()


def test_a_pin_pad_board_checks_the_pads_master_key_and_keeps_the_vault_key_in_the_token(
        pad_dir: Path, reader: EmulatedReader) -> None:
    status, t = run(_open(pad_dir, reader))
    assert status["service_mode"] is None, status
    assert isinstance(t.key_store, SplitKeyStore)
    lines = status["key_store"]
    assert f"Master key check value {tmk_check_value(TMK)}" in lines, lines
    assert any(line.startswith("Keys: the PIN pad of the card reader") for line in lines), lines
    assert not any("working key is decrypted" in line for line in lines), lines  # not the token's job
    assert "Card-data key present" in lines
    assert any("SoftHSM" in line for line in lines), lines


@pytest.mark.parametrize("fault", ["no reader", "no TMK in the pad", "another TMK in the pad"])
def test_a_pin_pad_problem_is_service_mode_in_words(fault: str, pad_dir: Path,
                                                    reader: EmulatedReader) -> None:
    words = {"no reader": "no such reader is connected",
             "no TMK in the pad": "no terminal master key in",
             "another TMK in the pad": "TMK check value mismatch"}[fault]
    if fault == "no TMK in the pad":
        reader.pinpad.key_command("D", b"")  # the pad erases its keys (the destroy operation)
    elif fault == "another TMK in the pad":
        reader.pinpad._load_tmk(reader.pinpad.wrap_tmk(bytes.fromhex("00112233445566778899AABBCCDDEEFF")))
    status, t = run(_open(pad_dir, None if fault == "no reader" else reader))
    assert status["service_mode"] is not None and words in status["service_mode"], status
    assert t.journal is None and t.service_notice == "service_keys"


def test_the_ceremony_block_goes_to_the_pin_pad_and_its_check_value_is_recorded(
        tmp_path: Path, reader: EmulatedReader, monkeypatch) -> None:
    monkeypatch.setenv("SOFTHSM2_CONF", "")
    data = deregistered_token(tmp_path / "terminal")
    from helpers import write_token_pin_file

    write_token_pin_file(data)
    given = json.loads(filled_template(tmp_path / "merchant.json").read_text())
    block = reader.pinpad.wrap_tmk(TMK)  # under the pad's KBPK, which never leaves the pad
    with pytest.raises(ProvisionRefused, match="no --kbpk-file"):
        provision_again(data, None, given, board=BOARD, tr31=block, kbpk=bytearray(16),
                        reader_path=str(reader.device_path))
    with pytest.raises(ProvisionRefused, match="never a PIN pad's"):
        provision_again(data, TMK.hex(), given, board=BOARD, reader_path=str(reader.device_path))
    report: list[Any] = []
    provision_again(data, None, given, board=BOARD, tr31=block,
                    reader_path=str(reader.device_path), report=report)
    check = tmk_check_value(TMK)
    assert report[0].tmk_check == check
    record = custody.read_record(data)
    assert record is not None and (record.tmk_check, record.key_store, record.method) == (
        check, "pinpad", "pinpad tr31")
    assert reader.pinpad.tmk_check is not None and reader.pinpad.tmk_check.hex().upper() == check
    status = token_status(data)
    assert status.tmk_check is None and status.vault_key  # the token: the vault key only
    assert files_holding(data, secrets_of(TMK)) == {}


def test_deregistration_erases_the_pads_keys_and_the_tokens_and_names_each(
        pad_dir: Path, reader: EmulatedReader) -> None:
    (pad_dir / "export").mkdir()

    async def go() -> dict[str, Any]:
        t = Terminal(AppConfig(data_dir=pad_dir, board=BOARD, reader_path=str(reader.device_path)))
        await t.start()
        try:
            return await deregister.ecr_op(t, "deregister", {"password": PASSWORD,
                                                              "path": str(pad_dir / "export")})
        finally:
            await t.close()

    reply = run(go())
    assert reply["ok"], reply
    report = " ".join(line.strip() for line in reply["report"])
    assert "card-data key (token object posfw-vault) destroyed" in report, report
    assert "terminal master key (in" in report and "destroyed" in report, report
    assert reader.pinpad.tmk_check is None  # the pad holds no TMK any more
    status = token_status(pad_dir)
    assert not status.vault_key
    assert files_holding(pad_dir, secrets_of(TMK, VAULT_KEY)) == {}
