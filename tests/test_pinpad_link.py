"""The encrypting PIN pad over the reader link (docs/reader-link.md, "PIN pad"): the terminal's
side (drivers/keystore/pinpad.py PinPadKeys over drivers/reader/serial_link.py) against the
emulated reader's PIN pad (board/sim/reader.py + board/sim/pinpad.py) on real pseudo-terminals.

The key ceremony (a TR-31 block under the pad's KBPK, its check value), sign-on keys from a
field 62 the acquirer's way (a check-value mismatch keeps the old keys), the PIN block against
psec's ISO 9564 format 0 of the typed PIN under the PIK, the MAC cipher and track blocks against
MemoryKeyStore, CANCEL and timeouts (exactly one answer per `J`), the busy rule, garbage on the
line, a reader without a PIN pad, and the PIN never crossing the link (the traffic is captured
through a relay pty) nor reaching the pad's files or the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import threading
import tty
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from psec import tr31
from psec.des import decrypt_tdes_ecb, encrypt_tdes_ecb
from psec.pinblock import decode_pinblock_iso_0, encode_pinblock_iso_0

from board.sim.pinpad import KEYS_FILE
from board.sim.reader import EmulatedReader
from drivers.keystore.memory import MemoryKeyStore
from drivers.keystore.pinpad import PinPadKeys
from drivers.reader import link_protocol as lp
from drivers.reader.serial_link import SerialLinkReader
from firmware.host.keys import WorkingKeys, build_signon_keys, check_value, generate_working_keys
from firmware.ports import (
    HostKeys,
    KeyCheckFailed,
    KeyMissing,
    KeyStoreError,
    KeyStoreUnavailable,
    PinCancelled,
    PinEntered,
    PinPad,
    PinSkipped,
    PinTimedOut,
    WrappedKey,
)
from tests.test_reader_link import RawTerminal

T = TypeVar("T")

PAN = "6222021000000000017"
# Twelve digits, so no random hex in a keys file or ciphertext on the line can hold them by chance.
PIN = "739146208537"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[EmulatedReader]:
    em = EmulatedReader(link_dir=tmp_path / "devices").start()
    yield em
    em.stop()


def drive(em: EmulatedReader | Path,
          scenario: Callable[[SerialLinkReader, PinPadKeys], Awaitable[T]], **options: Any) -> T:
    """scenario(reader driver, its PIN pad) on a fresh event loop; both closed after."""
    path = em.device_path if isinstance(em, EmulatedReader) else em

    async def main() -> T:
        driver = SerialLinkReader(str(path), **options)
        pad = PinPadKeys(driver)
        try:
            return await scenario(driver, pad)
        finally:
            await pad.close()
            await driver.close()

    return asyncio.run(main())


async def until(em: EmulatedReader, predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    assert await asyncio.to_thread(em.wait_until, predicate, timeout), "condition not reached"


def tmk_block(em: EmulatedReader, tmk: bytes = TMK) -> str:
    """The ceremony's side: the TMK as a TR-31 block under the pad's own KBPK."""
    return tr31.wrap(em.pinpad.kbpk, "B0000K0TD00N0000", tmk)


def field62_keys(keys: WorkingKeys, tmk: bytes = TMK, mak_check: str = "first8") -> list[WrappedKey]:
    """Field 62 as the acquirer builds it (firmware.host.keys), cut into the store's entries."""
    raw = bytes.fromhex(build_signon_keys(keys, tmk, mak_check))
    roles = ("PIK", "MAK", "TDK")[: len(raw) // 20]
    return [WrappedKey(role, raw[i * 20:i * 20 + 16], raw[i * 20 + 16:i * 20 + 20],
                       check_first8=(role == "MAK" and mak_check == "first8"))
            for i, role in enumerate(roles)]


def memory_store(tmp_path: Path, tmk: bytes = TMK) -> MemoryKeyStore:
    keys_dir = tmp_path / "memkeys"
    keys_dir.mkdir(exist_ok=True)
    fd = os.open(keys_dir / "tmk.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, tmk.hex().encode())
    os.close(fd)
    return MemoryKeyStore(keys_dir)


async def signed_on(em: EmulatedReader, pad: PinPadKeys, keys: WorkingKeys) -> None:
    assert await pad.load_tmk_tr31(tmk_block(em)) == check_value(TMK).hex().upper()
    await pad.install_working_keys(field62_keys(keys))


async def type_on_pad(em: EmulatedReader, keys: str) -> bool:
    await until(em, lambda: em.pin_entry_running)
    return await asyncio.to_thread(em.pin_keys, keys)


# ---- the contract ----------------------------------------------------------------------------


def test_pinpad_keys_is_the_boards_host_keys_and_pin_pad(reader):
    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        assert isinstance(pad, HostKeys) and isinstance(pad, PinPad)
        with pytest.raises(KeyStoreError, match="PIN pad encrypts the PIN; the keypad PIN path is "
                                                 "for the sim board only"):
            await pad.encrypt_pin(PIN, PAN)
        return reader.commands_of(lp.PINPAD) + reader.commands_of(lp.PIN_ENTRY)

    assert drive(reader, scenario) == []  # the refusal costs no frame: no PIN ever goes out


# ---- key ceremony -----------------------------------------------------------------------------


def test_tr31_tmk_load_answers_its_check_value(reader):
    other_tmk = bytes.fromhex("00112233445566778899AABBCCDDEEFF")

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        before = await pad.pad_status()
        cv = await pad.load_tmk_tr31(tmk_block(reader))
        after = await pad.pad_status()
        await pad.install_working_keys(field62_keys(generate_working_keys(with_tdk=False)))
        # A new TMK drops the working keys wrapped under the old one, in the pad and here.
        new_cv = await pad.load_tmk_tr31(tmk_block(reader, other_tmk))
        return before, cv, after, new_cv, pad.has_working_key("PIK"), await pad.pad_status()

    before, cv, after, new_cv, pik_here, last = drive(reader, scenario)
    assert not before.has_tmk and before.tmk_check is None and before.working_keys == ()
    assert cv == check_value(TMK).hex().upper() == after.tmk_check and after.has_tmk
    assert new_cv == check_value(other_tmk).hex().upper() == last.tmk_check
    assert not pik_here and last.working_keys == ()


def test_tmk_block_under_another_kbpk_or_for_another_use_is_refused_in_words(reader):
    stranger = tr31.wrap(bytes.fromhex("13" * 16), "B0000K0TD00N0000", TMK)
    a_pin_key = tr31.wrap(reader.pinpad.kbpk, "B0000P0TB00N0000", TMK)
    encrypt_only = tr31.wrap(reader.pinpad.kbpk, "B0000K0TE00N0000", TMK)

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await pad.load_tmk_tr31(tmk_block(reader))
        errors = []
        for block in (stranger, a_pin_key, "B0096K0TD00N0000" + "0" * 80, encrypt_only):
            with pytest.raises(KeyStoreError) as info:
                await pad.load_tmk_tr31(block)
            errors.append(str(info.value))
        return errors, await pad.pad_status()

    errors, status = drive(reader, scenario)
    assert "does not open under this PIN pad's key-block protection key" in errors[0]
    assert "usage P0" in errors[1] and "usage K0" in errors[1]
    assert "does not open" in errors[2]
    assert "mode E" in errors[3] and "mode B or D" in errors[3]
    assert status.tmk_check == check_value(TMK).hex().upper()  # the good TMK stayed


# ---- working keys --------------------------------------------------------------------------


@pytest.mark.parametrize("mak_check", ["first8", "full16"])
def test_working_keys_from_field62_install_with_their_check_values(reader, mak_check):
    keys = generate_working_keys(with_tdk=True)

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await pad.load_tmk_tr31(tmk_block(reader))
        await pad.install_working_keys(field62_keys(keys, mak_check=mak_check))
        return [pad.has_working_key(r) for r in ("PIK", "MAK", "TDK")], await pad.pad_status()

    held, status = drive(reader, scenario)
    assert held == [True, True, True] and status.working_keys == ("PIK", "MAK", "TDK")


def test_a_check_value_mismatch_keeps_the_old_keys(reader, tmp_path):
    old, new = generate_working_keys(with_tdk=False), generate_working_keys(with_tdk=False)
    broken = field62_keys(new)
    broken[1] = WrappedKey("MAK", broken[1].wrapped, bytes(4), check_first8=True)
    data = bytes(range(16))

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, old)
        with pytest.raises(KeyCheckFailed) as info:
            await pad.install_working_keys(broken)  # the PIK before the bad MAK is good
        mem = memory_store(tmp_path)
        await mem.install_working_keys(field62_keys(old))
        entry = asyncio.create_task(pad.enter_pin(PAN, "PIN", timeout=20, allow_empty=False))
        await type_on_pad(reader, PIN + "E")
        return (info.value, await pad.mac_cipher(data, double=False, chain=False),
                await mem.mac_cipher(data, double=False, chain=False), pad.has_working_key("MAK"),
                await entry)

    error, pad_mac, old_mac, held, entered = drive(reader, scenario)
    assert isinstance(entered, PinEntered)  # under the old PIK, not the new one
    assert decrypt_tdes_ecb(old.pik + old.pik[:8], entered.block) == encode_pinblock_iso_0(PIN, PAN)
    assert error.role == "MAK" and error.expected == bytes(4)
    assert error.got == check_value(new.mak[:8])  # what the pad decrypted: the new MAK's
    assert "kept its old keys" in str(error)
    assert pad_mac == old_mac and held  # the old MAK still answers


def test_working_keys_need_a_tmk(reader):
    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        with pytest.raises(KeyMissing, match="no terminal master key"):
            await pad.install_working_keys(field62_keys(generate_working_keys(with_tdk=False)))
        with pytest.raises(KeyMissing, match="no MAK: sign on first"):
            await pad.mac_cipher(bytes(8), double=False, chain=False)
        with pytest.raises(KeyMissing, match="no PIK: sign on first"):
            await pad.enter_pin(PAN, "PIN?", timeout=5, allow_empty=False)

    drive(reader, scenario)


def test_forget_and_destroy(reader):
    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, generate_working_keys(with_tdk=True))
        pad.forget_working_keys()
        forgotten_here = pad.has_working_key("PIK")
        await until(reader, lambda: any(c.args.get("op") == lp.PAD_FORGET
                                        for c in reader.commands_of(lp.PINPAD)))  # F went out
        after_forget = await pad.pad_status()
        await pad.install_working_keys(field62_keys(generate_working_keys(with_tdk=False)))
        destroyed = await pad.destroy_keys()
        return forgotten_here, after_forget, destroyed, await pad.pad_status(), pad.key_status()

    forgotten_here, after_forget, destroyed, status, key_status = drive(reader, scenario)
    assert not forgotten_here and after_forget.working_keys == () and after_forget.has_tmk
    assert [line.split(" (in ")[0] for line in destroyed] == [
        "terminal master key", "PIN key (PIK)", "MAC key (MAK)"]
    assert not status.has_tmk and status.working_keys == ()
    assert key_status.kind == "pinpad" and key_status.tmk_check is None
    saved = (reader.link_dir / KEYS_FILE).read_text()
    assert '"tmk": null' in saved and '"working": {}' in saved


# ---- MAC and track blocks against the development store ------------------------------------------


def test_mac_cipher_and_track_blocks_equal_memory_keystore(reader, tmp_path):
    keys = generate_working_keys(with_tdk=True)
    # Longer than one frame's 232 bytes, so CBC chains across pieces.
    long_data = bytes((i * 7) & 0xFF for i in range(8 * 70))
    block = bytes.fromhex("0123456789ABCDEF")

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, keys)
        mem = memory_store(tmp_path)
        await mem.install_working_keys(field62_keys(keys))
        pairs = []
        for data in (bytes(8), long_data):
            for double in (False, True):
                for chain in (False, True):
                    pairs.append((await pad.mac_cipher(data, double=double, chain=chain),
                                  await mem.mac_cipher(data, double=double, chain=chain)))
        pairs.append((await pad.encrypt_track_block(block), await mem.encrypt_track_block(block)))
        return pairs

    pairs = drive(reader, scenario)
    assert len(pairs) == 9
    for got, want in pairs:
        assert got == want
    # The chained long one really is CBC under the MAK (not ECB per piece).
    assert pairs[7][0][-8:] != encrypt_tdes_ecb(keys.mak + keys.mak[:8], long_data[-8:])


# ---- PIN entry -----------------------------------------------------------------------------------


def test_pin_block_is_iso0_of_the_typed_pin_under_the_pik(reader):
    keys = generate_working_keys(with_tdk=False)

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, keys)
        entry = asyncio.create_task(pad.enter_pin(PAN, "请输入密码\nAMOUNT 12.00", timeout=20,
                                                  allow_empty=False))
        # A CLEAR in the middle: only what follows it counts.
        assert await type_on_pad(reader, "999C" + PIN + "E")
        return await entry, reader.commands_of(lp.PIN_ENTRY)

    result, j_commands = drive(reader, scenario)
    assert isinstance(result, PinEntered) and len(result.block) == 8
    assert "block=8 bytes" in repr(result) and result.block.hex() not in repr(result).lower()
    clear = decrypt_tdes_ecb(keys.pik + keys.pik[:8], result.block)
    assert clear == encode_pinblock_iso_0(PIN, PAN)
    assert decode_pinblock_iso_0(clear, PAN) == PIN
    assert j_commands[0].args["prompt"] == "请输入密码\nAMOUNT 12.00"


def test_cancel_from_the_terminal_gets_exactly_one_cancelled_answer(reader):
    keys = generate_working_keys(with_tdk=False)

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, keys)
        entry = asyncio.create_task(pad.enter_pin(PAN, "PIN", timeout=30, allow_empty=False))
        await until(reader, lambda: reader.pin_entry_running)
        await asyncio.to_thread(reader.pin_keys, "12")
        await pad.cancel_pin()
        result = await entry
        # Keys typed after the cancel do nothing; the pad is idle and answers a new entry.
        late = await asyncio.to_thread(reader.pin_keys, "34E")
        again = asyncio.create_task(pad.enter_pin(PAN, "PIN", timeout=30, allow_empty=False))
        await type_on_pad(reader, PIN + "E")
        return result, late, await again, drv.stats.stray_replies

    result, late, again, stray = drive(reader, scenario)
    assert isinstance(result, PinCancelled) and late is False
    assert isinstance(again, PinEntered)
    assert stray == 0  # one `j` per `J`: none left over
    q = reader.commands_of(lp.PIN_CANCEL)
    assert len(q) == 1 and q[0].args == {"was_running": True}


def test_cancel_on_raw_link_answers_j_then_q(reader):
    """The cancel rule byte for byte: `Q` ends the entry; its `J` gets one `j` (cancelled) before
    the `q`; a repeat of that `J` gets the same `j` again, never a second entry."""

    async def setup(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, generate_working_keys(with_tdk=False))

    drive(reader, setup)
    cancelled = lp.Message("j", 40, lp.pad_reply_body(lp.PadStatus.CANCELLED,
                                                      words="cancelled by the terminal"))
    raw = RawTerminal(reader.device_path)
    try:
        body = lp.pin_entry_body(PAN, "PIN", 30, False)
        raw.send(lp.encode("J", 40, body))
        assert reader.wait_until(lambda: reader.pin_entry_running)
        raw.send(lp.encode("J", 40, body))  # the driver's resend: no answer while typing
        assert reader.wait_until(lambda: len(reader.commands_of("J")) == 2)
        assert raw.command("Q", 41) == cancelled  # the entry's one answer comes first...
        assert raw.next() == lp.Message("q", 41, b"\x01")  # ...then the cancel's
        assert not reader.pin_entry_running
        # A resend of that J crossing the Q: the same `j` again, no new entry.
        assert raw.command("J", 40, body) == cancelled
        assert not reader.pin_entry_running
        assert raw.command("Q", 42) == lp.Message("q", 42, b"\x00")  # nothing running
        # An entry typed to its end: a repeat of its J (nothing between) gets the same block.
        raw.send(lp.encode("J", 43, body))
        assert reader.wait_until(lambda: reader.pin_entry_running)
        reader.pin_keys(PIN + "E")
        block = raw.next()
        assert block.type == "j" and block.seq == 43 and block.body[0] == lp.PadStatus.OK
        assert raw.command("J", 43, body) == block and not reader.pin_entry_running
        with pytest.raises(AssertionError, match="no frame"):
            raw.next(timeout_ms=200)  # and nothing more
        assert [c.repeat for c in reader.commands_of("J")] == [False, True, True, False, True]
    finally:
        raw.close()


def test_cancelling_the_waiting_task_cancels_the_entry_on_the_pad(reader):
    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, generate_working_keys(with_tdk=False))
        entry = asyncio.create_task(pad.enter_pin(PAN, "PIN", timeout=30, allow_empty=False))
        await until(reader, lambda: reader.pin_entry_running)
        entry.cancel()
        with pytest.raises(asyncio.CancelledError):
            await entry
        await until(reader, lambda: not reader.pin_entry_running)
        await until(reader, lambda: bool(reader.commands_of(lp.PIN_CANCEL)))
        return await pad.pad_status()

    status = drive(reader, scenario)
    assert not status.entry_running


def test_cancel_on_the_pad_and_a_skipped_pin(reader):
    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, generate_working_keys(with_tdk=False))
        results = []
        for allow_empty, keys in ((False, "12X"), (True, "E"), (False, "E123E")):
            entry = asyncio.create_task(pad.enter_pin(PAN, "PIN", timeout=30, allow_empty=allow_empty))
            await type_on_pad(reader, keys)
            if keys == "E123E":
                # ENTER with nothing (not allowed) or with 3 digits: the pad waits for more.
                await asyncio.sleep(0.2)
                assert reader.pin_entry_running and not entry.done()
                await asyncio.to_thread(reader.pin_keys, "4E")
            results.append(await entry)
        return results

    first, second, third = drive(reader, scenario)
    assert isinstance(first, PinCancelled) and isinstance(second, PinSkipped)
    assert isinstance(third, PinEntered)


def test_pin_entry_times_out_on_the_pad(reader):
    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, generate_working_keys(with_tdk=False))
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await pad.enter_pin(PAN, "PIN", timeout=1, allow_empty=False)
        return result, loop.time() - start

    result, took = drive(reader, scenario)
    assert isinstance(result, PinTimedOut)
    assert 0.9 <= took < 2.0  # the pad's own timeout, not the terminal's grace
    assert reader.commands_of(lp.PIN_CANCEL) == []


def test_a_lost_timeout_answer_is_reported_by_the_terminal(reader):
    """The pad's `j` (timed out) is lost on the line: the terminal waits the grace, cancels the
    entry itself and reports the timeout; nothing hangs."""

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, generate_working_keys(with_tdk=False))
        entry = asyncio.create_task(pad.enter_pin(PAN, "PIN", timeout=1, allow_empty=False))
        await until(reader, lambda: reader.pin_entry_running)
        await until(reader, lambda: len(reader.commands_of(lp.PIN_ENTRY)) == 2)  # the resend
        await asyncio.to_thread(reader.drop_replies, 1)
        return await entry

    assert isinstance(drive(reader, scenario), PinTimedOut)
    assert len(reader.commands_of(lp.PIN_CANCEL)) == 1


def test_busy_rule_and_the_card_slot_stay_independent(reader):
    keys = generate_working_keys(with_tdk=False)

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, keys)
        entry = asyncio.create_task(pad.enter_pin(PAN, "PIN", timeout=30, allow_empty=False))
        await until(reader, lambda: reader.pin_entry_running)
        errors = []
        for attempt in (pad.install_working_keys(field62_keys(generate_working_keys(with_tdk=False))),
                        pad.load_tmk_tr31(tmk_block(reader)), pad.destroy_keys()):
            with pytest.raises(KeyStoreError) as info:
                await attempt
            errors.append(str(info.value))
        with pytest.raises(KeyStoreError, match="one entry at a time"):
            await pad.enter_pin(PAN, "PIN", timeout=30, allow_empty=False)
        mac = await pad.mac_cipher(bytes(8), double=False, chain=False)  # not a key change
        status = await pad.pad_status()
        # A card read arms and cancels as always while the cardholder types.
        read = asyncio.create_task(drv.read(magstripe=True, chip=False, timeout_s=10))
        await until(reader, lambda: reader.armed)
        read.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await read
        await type_on_pad(reader, PIN + "E")
        return errors, mac, status, await entry

    errors, mac, status, result = drive(reader, scenario)
    assert all("busy with a PIN entry" in e for e in errors)
    assert len(mac) == 8 and status.entry_running
    assert isinstance(result, PinEntered)
    assert decrypt_tdes_ecb(keys.pik + keys.pik[:8], result.block) == encode_pinblock_iso_0(PIN, PAN)


# ---- a damaged line, bad bodies, no PIN pad ------------------------------------------------------


def test_garbage_during_an_entry_loses_nothing(reader):
    keys = generate_working_keys(with_tdk=False)

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await signed_on(reader, pad, keys)
        entry = asyncio.create_task(pad.enter_pin(PAN, "PIN", timeout=30, allow_empty=False))
        await until(reader, lambda: reader.pin_entry_running)
        await asyncio.to_thread(reader.send_garbage, b"\x02\xff\x00noise\x03\x02\x05Yz")
        await asyncio.to_thread(reader.send_payload, b"j")  # no SEQ: dropped, counted
        await asyncio.to_thread(reader.pin_keys, PIN + "E")
        return await entry, drv.stats

    result, stats = drive(reader, scenario)
    assert isinstance(result, PinEntered)
    assert decrypt_tdes_ecb(keys.pik + keys.pik[:8], result.block) == encode_pinblock_iso_0(PIN, PAN)
    assert stats.bad_messages >= 1 and stats.noise_bytes + stats.bad_length + stats.truncated >= 1


def test_malformed_pin_pad_commands_are_nak_2_and_words(reader):
    raw = RawTerminal(reader.device_path)
    nak2 = bytes((lp.NakReason.BAD_BODY,))
    try:
        for seq, (cmd, body) in enumerate([
                ("Y", b""), ("Y", b"?"), ("Y", b"S\x00"), ("Y", b"M\x00" + bytes(8) + bytes(7)),
                ("Y", b"M\x04" + bytes(16)), ("Y", b"M\x00\x01" + bytes(7) + bytes(8)),
                ("Y", b"E" + bytes(7)), ("Y", b"I\x01PIN\x00" + bytes(19)), ("Y", b"T short"),
                ("J", b"\x00\x00\x00\x13" + PAN.encode()), ("J", b"\x00\x05\x00\x0c" + PAN[:12].encode()),
                ("J", b"\x00\x05\x02\x13" + PAN.encode()),
                ("J", b"\x00\x05\x00\x13" + PAN.encode() + b"\xff"),
                ("Q", b"x")], start=10):
            assert raw.command(cmd, seq, body) == lp.Message("n", seq, nak2), (cmd, body)
        assert not reader.pin_entry_running
        assert raw.command("Y", 30, b"S") == lp.Message("y", 30, b"\x00\x00")
    finally:
        raw.close()

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        with pytest.raises(KeyStoreError, match=r"PAN for a PIN block is 13\.\.19 digits"):
            await pad.enter_pin("1234", "PIN", timeout=5, allow_empty=False)
        with pytest.raises(KeyStoreError, match=r"timeout is 1\.\.300 s"):
            await pad.enter_pin(PAN, "PIN", timeout=301, allow_empty=False)
        with pytest.raises(KeyStoreError, match="multiple of 8"):
            await pad.mac_cipher(bytes(5), double=False, chain=False)
        with pytest.raises(KeyStoreError, match="8-byte block"):
            await pad.encrypt_track_block(bytes(9))

    drive(reader, scenario)


def test_a_damaged_answer_is_reported_in_words(reader):
    """A well-framed `y` whose body breaks the rules: a KeyStoreError in words, not a crash."""

    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        await asyncio.to_thread(reader.refuse, lp.PINPAD, int(lp.NakReason.BUSY))
        with pytest.raises(KeyStoreError, match="refused the status: busy"):
            await pad.pad_status()
        await asyncio.to_thread(reader.allow)
        return (await pad.pad_status()).has_tmk

    assert drive(reader, scenario) is False
    parsed = [lp.parse_pad_reply(b) for b in (b"\x00abc", b"\x07", b"\x04PIK" + bytes(8))]
    assert [p.status for p in parsed] == [lp.PadStatus.OK, lp.PadStatus.CANCELLED,
                                          lp.PadStatus.CHECK_FAILED]
    for bad in (b"", b"\x0a", b"\x04PIK" + bytes(3), b"\x04ABC" + bytes(8)):
        with pytest.raises(lp.LinkError):
            lp.parse_pad_reply(bad)


def test_a_reader_without_a_pin_pad_says_so(tmp_path):
    em = EmulatedReader(link_dir=tmp_path / "nopad", pinpad=False).start()
    try:
        async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
            errors = []
            for attempt in (pad.pad_status(), pad.load_tmk_tr31("B0096K0TD00N0000" + "0" * 80),
                            pad.enter_pin(PAN, "PIN", timeout=5, allow_empty=False),
                            pad.mac_cipher(bytes(8), double=False, chain=False)):
                with pytest.raises(KeyStoreUnavailable) as info:
                    await attempt
                errors.append(str(info.value))
            return errors, await drv.version()

        errors, version = drive(em, scenario)
        assert all("has no PIN pad" in e for e in errors), errors
        assert version == "posreader-sim 1.0"  # the reader itself is fine
        assert not (tmp_path / "nopad" / KEYS_FILE).exists()
    finally:
        em.stop()


def test_a_reader_from_before_the_pin_pad_frames_has_none(reader):
    async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
        for cmd in (lp.PINPAD, lp.PIN_ENTRY, lp.PIN_CANCEL):
            await asyncio.to_thread(reader.refuse, cmd, int(lp.NakReason.UNKNOWN_COMMAND))
        with pytest.raises(KeyStoreUnavailable, match="does not know the PIN pad commands"):
            await pad.pad_status()
        with pytest.raises(KeyStoreUnavailable, match="does not know the PIN pad commands"):
            await pad.enter_pin(PAN, "PIN", timeout=5, allow_empty=False)

    drive(reader, scenario)


# ---- the PIN never crosses the link --------------------------------------------------------------


class LinkTap:
    """A relay pty between the terminal and the emulated reader, recording every byte both ways
    (what a probe on the serial line would see)."""

    def __init__(self, reader_path: Path, link_dir: Path) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = link_dir / "tap-tty"
        self.path.symlink_to(os.ttyname(self._slave))
        self._device = os.open(reader_path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self._device)
        self.to_reader = bytearray()
        self.to_terminal = bytearray()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self.master, self._device, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for src, dst, log in ((self.master, self._device, self.to_reader),
                                  (self._device, self.master, self.to_terminal)):
                if src in ready:
                    data = os.read(src, 4096)
                    log += data
                    os.write(dst, data)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self.master, self._slave, self._device, self._stop_r, self._stop_w):
            os.close(fd)


def _pin_traces() -> list[bytes]:
    """Every form the PIN could take on a wire or in a file."""
    packed = bytes.fromhex(PIN)
    return [PIN.encode(), PIN.encode("utf-16-le"), packed, encode_pinblock_iso_0(PIN, PAN),
            " ".join(PIN).encode()]


def test_the_pin_never_crosses_the_link_nor_reaches_files_or_logs(reader, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    keys = generate_working_keys(with_tdk=True)
    tap = LinkTap(reader.device_path, tmp_path)
    try:
        async def scenario(drv: SerialLinkReader, pad: PinPadKeys):
            await signed_on(reader, pad, keys)
            results = []
            for _ in range(2):
                entry = asyncio.create_task(pad.enter_pin(PAN, "PIN", timeout=20, allow_empty=False))
                await type_on_pad(reader, PIN + "E")
                results.append(await entry)
            return results, await pad.pad_status()

        results, status = drive(tap.path, scenario)
    finally:
        tap.close()
    assert all(isinstance(r, PinEntered) for r in results) and status.working_keys
    traffic = bytes(tap.to_reader) + bytes(tap.to_terminal)
    # The capture is real: the PAN went to the pad and both encrypted blocks came back.
    assert PAN.encode() in tap.to_reader
    assert all(r.block in tap.to_terminal for r in results if isinstance(r, PinEntered))
    for trace in _pin_traces():
        assert trace not in traffic
    for path in tmp_path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for trace in _pin_traces():
                assert trace not in content, path
    assert PIN not in caplog.text and " ".join(PIN) not in caplog.text
    # Nor the clear keys, on the line or in the log (the pad's file holds them: TEST ONLY).
    for key in (TMK, keys.pik, keys.mak, keys.tdk):
        assert key is not None and key not in traffic and key.hex() not in caplog.text.lower()
    assert oct((reader.link_dir / KEYS_FILE).stat().st_mode & 0o777) == "0o600"
