"""Key custody on a board with an encrypting PIN pad (key_store "pinpad", board sim-pinpad): the
TMK and the working keys in the PIN pad of the card reader (the emulated reader's pad, on a real
pty), the card-vault key in a SoftHSM2 token. The key ceremony's TR-31 block goes to the pad,
which opens it under its own KBPK; at start the pad's TMK check value is compared with the
provisioning record; a reader that is not there, or a pad without the TMK, is service mode in
words; deregistration erases the pad's keys and the token's and names each on its report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chipkit import emulated_reader
from helpers import PASSWORD, TMK, VAULT_KEY, provision, run
from helpers import TID as TID_
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


# -- the PIN typed on the PIN pad ------------------------------------------------------------

async def _pad_terminal(data: Path, reader: EmulatedReader) -> Terminal:
    t = Terminal(AppConfig(data_dir=data, board=BOARD, reader_path=str(reader.device_path)))
    await t.start()
    assert t.service_problem is None, t.service_problem
    assert t.link is not None and t.link.has_keys  # signed on: the working keys are in the pad
    return t


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    from chipkit import until

    await until(predicate, timeout=timeout, what=what)


def _pad_sale(data: Path, reader: EmulatedReader, card: str, *, keys: str | None,
              cancel_on_terminal: bool = False, pin_sent: str | None = None) -> Any:
    """A sale whose card comes through the reader; the cardholder types `keys` on the pad (or
    the cashier presses CANCEL on the terminal). Returns the result, the steps the LCD was told
    and the field 52 the host got."""
    from helpers import WireSpy

    from firmware.app.core.contract import OperatorInput
    from firmware.engine.model import TxnRequest
    from firmware.host.messages import TxnKind

    steps: list[str] = []

    async def go() -> tuple[Any, list[str], list[str]]:
        t = await _pad_terminal(data, reader)
        spy = WireSpy(t)
        try:
            t._step = lambda step, *_, **__: steps.append(step)  # type: ignore[method-assign]
            task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 2345),
                                                   OperatorInput(pin=pin_sent)))
            await _until(lambda: reader.armed, "the terminal armed the reader")
            reader.swipe(card)
            await _until(lambda: reader.pin_entry_running, "the PIN pad asked for the PIN")
            if cancel_on_terminal:
                t.cancel("keypad")
                await _until(lambda: not reader.pin_entry_running, "the pad's entry ended")
            else:
                assert keys is not None and reader.pin_keys(keys)
            result = await asyncio.wait_for(task, 30)
            blocks = [m.fields["52"] for m in spy.sent if "52" in m.fields]
            return result, steps, blocks
        finally:
            await t.close()

    return run(go())


def test_a_pin_sale_on_a_pin_pad_board_takes_the_pin_on_the_pad_and_forwards_its_block(
        pad_dir: Path, reader: EmulatedReader, sim) -> None:
    """The LCD says "Enter PIN on the PIN pad", the cardholder types on the pad, the host gets
    the pad's block in field 52 (it decrypts it under its PIK and checks the PIN: approved); a
    PIN that came with the request (a sim till's) is not used."""
    result, steps, blocks = _pad_sale(pad_dir, reader, "cup_debit", keys="123456E",
                                      pin_sent="999999")
    assert result.status == "approved", result
    assert "pin_pad" in steps and "pin" not in steps, steps
    assert len(blocks) == 1 and len(bytes.fromhex(blocks[0])) == 8
    assert [r.amount for r in sim.ledger.rows(TID_)] == [2345]


@pytest.mark.parametrize("who", ["the pad's CANCEL", "the terminal's CANCEL"])
def test_cancel_on_the_pad_or_on_the_terminal_cancels_the_sale_before_anything_is_sent(
        who: str, pad_dir: Path, reader: EmulatedReader, sim) -> None:
    result, _, blocks = _pad_sale(pad_dir, reader, "cup_debit",
                                      keys="12X" if who == "the pad's CANCEL" else None,
                                      cancel_on_terminal=who == "the terminal's CANCEL")
    assert result.status == "cancelled", result
    assert blocks == [] and sim.ledger.rows(TID_) == []  # no 0200 left
    assert not reader.pin_entry_running


@pytest.mark.parametrize(("lang", "words"), [("en", "Enter PIN on the PIN pad"),
                                             ("zh_CN", "请在密码键盘上输入密码")])
def test_the_lcd_words_for_the_pad_exist_in_both_languages(lang: str, words: str) -> None:
    from firmware.ui.texts import CATALOG

    assert CATALOG["step_pin_pad"][1 if lang == "zh_CN" else 0] == words


def test_a_chip_cards_online_pin_is_typed_on_the_pad(pad_dir: Path, reader: EmulatedReader,
                                                     sim) -> None:
    """The chip kernel asks for the online PIN: the pad asks the cardholder, the kernel gets
    "entered", field 52 is the pad's block, the host checks the PIN: approved."""
    from helpers import WireSpy

    from firmware.app.core.contract import OperatorInput
    from firmware.engine.model import TxnRequest
    from firmware.host.messages import TxnKind

    async def go() -> tuple[Any, list[str]]:
        t = await _pad_terminal(pad_dir, reader)
        spy = WireSpy(t)
        try:
            task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 2345), OperatorInput()))
            await _until(lambda: reader.armed, "the terminal armed the reader")
            reader.insert_chip("cup-debit")
            await _until(lambda: reader.pin_entry_running, "the PIN pad asked for the PIN")
            assert reader.pin_keys("123456E")
            result = await asyncio.wait_for(task, 30)
            return result, [m.fields["52"] for m in spy.sent if "52" in m.fields]
        finally:
            await t.close()

    result, blocks = run(go())
    assert result.status == "approved" and result.record.entry_mode == "chip", result
    assert len(blocks) == 1
    assert [r.amount for r in sim.ledger.rows(TID_)] == [2345]
