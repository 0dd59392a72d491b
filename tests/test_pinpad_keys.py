"""The emulated PIN pad's secure memory and keys (board/sim/pinpad.py), the PIN pad bodies of the
reader link (drivers/reader/link_protocol.py), and the ways a PIN is typed on the sim pad: the
control port, the peripherals command line (a real subprocess over TCP on 127.0.0.1) and the dev
console's hot keys.

The keys file is 0600, made with a fresh KBPK on first start and refused in words when open to
others or damaged; keys survive a reader restart, a running entry does not; the dev commands print
the KBPK the ceremony wraps under and a TMK block the pad then loads; the PIN digits are wiped
when an entry ends and never shown (the display shows stars).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from psec import tr31
from psec.des import decrypt_tdes_ecb
from psec.pinblock import encode_pinblock_iso_0

from board.sim.control import ControlClient
from board.sim.pinpad import KEYS_FILE, EmulatedPinPad, PinPadError, check_value
from board.sim.reader import EmulatedReader
from drivers.keystore.pinpad import PinPadKeys
from drivers.reader import link_protocol as lp
from drivers.reader.serial_link import SerialLinkReader
from firmware.host.keys import WorkingKeys, build_signon_keys, generate_working_keys
from firmware.ports import KeyStoreUnavailable, PinEntered, WrappedKey

REPO = Path(__file__).resolve().parent.parent
PAN = "6222021000000000017"
PIN = "739146208537"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PIK = bytes.fromhex("A1A2A4A7A8ABADAEB0B3B5B6B9BABCBF")


def field62(keys, tmk: bytes = TMK) -> list[WrappedKey]:
    raw = bytes.fromhex(build_signon_keys(keys, tmk, "first8"))
    roles = ("PIK", "MAK", "TDK")[: len(raw) // 20]
    return [WrappedKey(r, raw[i * 20:i * 20 + 16], raw[i * 20 + 16:i * 20 + 20], r == "MAK")
            for i, r in enumerate(roles)]


@pytest.fixture
def pad(tmp_path: Path) -> EmulatedPinPad:
    return EmulatedPinPad(tmp_path / KEYS_FILE)


def loaded(pad: EmulatedPinPad) -> EmulatedPinPad:
    assert pad.key_command(lp.PAD_LOAD_TMK, pad.wrap_tmk(TMK).encode())[0] == lp.PadStatus.OK
    keys = WorkingKeys(pik=PIK, mak=generate_working_keys(with_tdk=False).mak)
    assert pad.key_command(lp.PAD_INSTALL, lp.install_args(field62(keys))) == b"\x00"
    return pad


# ---- the keys file ---------------------------------------------------------------------------


def test_first_start_makes_a_0600_keys_file_with_a_kbpk_and_nothing_else(pad, tmp_path):
    path = tmp_path / KEYS_FILE
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    data = json.loads(path.read_text())
    assert "TEST ONLY" in data["warning"]
    assert bytes.fromhex(data["kbpk"]) == pad.kbpk and len(pad.kbpk) == 16
    assert data["tmk"] is None and data["working"] == {}
    assert EmulatedPinPad(path).kbpk == pad.kbpk  # the same pad next time
    assert EmulatedPinPad(tmp_path / "other.json").kbpk != pad.kbpk  # each pad its own


def test_keys_survive_a_restart_and_are_checked_on_load(pad, tmp_path):
    loaded(pad)
    again = EmulatedPinPad(tmp_path / KEYS_FILE)
    assert again.tmk_check == check_value(TMK) and again.roles == ("PIK", "MAK")
    path = tmp_path / KEYS_FILE
    os.chmod(path, 0o644)
    with pytest.raises(PinPadError, match=r"open to others \(mode 644\); run chmod 600"):
        EmulatedPinPad(path)
    os.chmod(path, 0o600)
    path.write_text('{"kbpk": "00"}')
    with pytest.raises(PinPadError, match="wrong length; delete it"):
        EmulatedPinPad(path)
    path.write_text("not json")
    with pytest.raises(PinPadError, match="damaged; delete it"):
        EmulatedPinPad(path)


def test_a_reader_whose_pad_file_is_open_to_others_does_not_start(tmp_path):
    (tmp_path / KEYS_FILE).write_text("{}")
    os.chmod(tmp_path / KEYS_FILE, 0o640)
    from board.sim.reader import ReaderControlError

    with pytest.raises(ReaderControlError, match="open to others"):
        EmulatedReader(link_dir=tmp_path).start()


def test_dev_commands_print_the_kbpk_and_wrap_a_tmk_it_loads(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nice", "-n", "19", sys.executable, "-m", "board.sim.pinpad", *args,
                               "--dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                              timeout=60, check=True)

    kbpk = bytes.fromhex(run("kbpk").stdout.strip())
    block = run("wrap-tmk", TMK.hex()).stdout.strip()
    pad = EmulatedPinPad(tmp_path / KEYS_FILE)
    assert pad.kbpk == kbpk
    assert tr31.unwrap(kbpk, block)[1] == TMK  # the ceremony can check it with the printed KBPK
    assert pad.key_command(lp.PAD_LOAD_TMK, block.encode()) == b"\x00" + check_value(TMK)
    status = json.loads(run("status").stdout)
    assert status["tmk_check"] == check_value(TMK).hex().upper() and status["working_keys"] == []
    assert kbpk.hex().upper() not in json.dumps(status)


# ---- PIN entry on the pad ------------------------------------------------------------------


def test_digits_are_wiped_when_an_entry_ends_and_never_shown(pad):
    loaded(pad)
    req = lp.PinEntryRequest(PAN, "PIN", 30, False)
    assert pad.start_entry(req, now=0.0) is None
    entry = pad._entry
    assert entry is not None
    for digit in PIN + "99":  # 14 digits: the 13th and 14th are ignored
        assert pad.press(digit) is None
    digits = entry.digits
    assert bytes(digits) == PIN.encode()
    assert pad.display == "PIN\n" + "*" * 12 and PIN not in repr(pad) + repr(entry)
    body = pad.press("ENTER")
    assert body is not None and body[0] == lp.PadStatus.OK
    assert decrypt_tdes_ecb(PIK + PIK[:8], body[1:]) == encode_pinblock_iso_0(PIN, PAN)
    assert digits == bytearray() and pad._entry is None and pad.display == "(idle)"
    # CLEAR wipes too; ENTER with 1..3 digits waits; the timeout ends it.
    assert pad.start_entry(req, now=100.0) is None
    digits = pad._entry.digits
    for key in ("1", "2", "CLEAR", "4", "5", "6", "ENTER"):
        assert pad.press(key) is None
    assert bytes(digits) == b"456" and pad.entries_refused_enter == 1
    assert pad.expire(now=129.9) is None
    assert pad.expire(now=130.0) == lp.pad_reply_body(lp.PadStatus.TIMED_OUT)
    assert digits == bytearray()
    with pytest.raises(ValueError, match="has no key 'A'"):
        pad.press("A")


def test_power_down_loses_the_entry_not_the_keys(tmp_path):
    em = EmulatedReader(link_dir=tmp_path).start()
    try:
        async def scenario():
            drv = SerialLinkReader(str(em.device_path), reconnect_window_s=5)
            keys = PinPadKeys(drv)
            try:
                await keys.load_tmk_tr31(em.pinpad.wrap_tmk(TMK))
                await keys.install_working_keys(field62(generate_working_keys(with_tdk=True)))
                entry = asyncio.create_task(keys.enter_pin(PAN, "PIN", timeout=30, allow_empty=False))
                assert await asyncio.to_thread(em.wait_until, lambda: em.pin_entry_running)
                await asyncio.to_thread(em.disconnect)
                with pytest.raises(KeyStoreUnavailable, match="hung up during a PIN entry"):
                    await entry
                await asyncio.to_thread(em.reconnect)
                return await keys.pad_status(), keys.has_working_key("TDK")
            finally:
                await keys.close()
                await drv.close()

        status, tdk = asyncio.run(scenario())
        assert status.has_tmk and status.working_keys == ("PIK", "MAK", "TDK") and tdk
        assert not status.entry_running
    finally:
        em.stop()


# ---- the link bodies -----------------------------------------------------------------------------


def test_pin_pad_bodies_round_trip_and_refuse_what_breaks_the_rules():
    keys = [WrappedKey("PIK", bytes(range(16)), b"\x01\x02\x03\x04"),
            WrappedKey("MAK", bytes(16), b"\xaa\xbb\xcc\xdd", check_first8=True)]
    assert lp.parse_install(lp.install_args(keys)) == keys
    with pytest.raises(lp.LinkError, match="appears twice"):
        lp.parse_install(lp.install_args([keys[0], keys[0]]))
    with pytest.raises(lp.LinkError):
        lp.install_args([WrappedKey("KEK", bytes(16), bytes(4))])
    args = lp.mac_args(bytes(232), iv=bytes(8), double=True, chain=False)
    assert lp.parse_mac(args) == (True, False, bytes(8), bytes(232))
    for bad in (bytes(240), bytes(7), b""):
        with pytest.raises(lp.LinkError):
            lp.mac_args(bad, iv=bytes(8), double=False, chain=True)
    with pytest.raises(lp.LinkError, match="zeros unless chained"):
        lp.mac_args(bytes(8), iv=b"\x01" * 8, double=False, chain=False)
    # A prompt too long for the link is cut at a character boundary, never inside one.
    body = lp.pin_entry_body(PAN, "请输入密码" * 10, 30.2, True)
    req = lp.parse_pin_entry(body)
    assert req.pan == PAN and req.timeout_s == 31 and req.allow_empty
    assert req.prompt == "请输入密码" * 6 + "请输" and len(req.prompt.encode()) <= lp.PROMPT_MAX
    assert PAN not in repr(req)
    status = lp.parse_pad_status(lp.pad_status_data(True, b"\x12\x34\x56\x78", ("PIK", "TDK"), True))
    assert (status.tmk_check, status.working_keys, status.entry_running) == ("12345678", ("PIK", "TDK"), True)
    assert lp.parse_pad_status(b"\x00").tmk_check is None
    for bad in (b"", b"\x01", b"\x20", b"\x00\x00"):
        with pytest.raises(lp.LinkError):
            lp.parse_pad_status(bad)
    failed = lp.parse_pad_reply(lp.check_failed_body("MAK", b"\x00" * 4, b"\x11" * 4))
    assert (failed.role, failed.expected, failed.got) == ("MAK", bytes(4), b"\x11" * 4)
    assert lp.COMMAND_NAMES[lp.PIN_ENTRY] == "PIN entry"
    # No letter taken twice, and none whose reply would be the NAK's.
    assert len(lp.COMMANDS) == len({c.lower() for c in lp.COMMANDS}) and "N" not in lp.COMMANDS
    assert not lp.COMMANDS & lp.EVENTS


# ---- typing on the sim pad: control port, command line, console ------------------------------------


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[object, int]]:
    from board.sim.peripherals import Peripherals, serve

    devices = Peripherals(tmp_path / "devices", echo=False).start()
    server = serve(devices, 0)
    try:
        yield devices, server.server_address[1]
    finally:
        server.shutdown()
        devices.stop()


def _entry_typed_by(devices, type_pin, pin: str = PIN) -> PinEntered:
    """A PIN entry on the shop's reader, typed by type_pin(); its block checked against `pin`."""
    reader: EmulatedReader = devices.reader  # type: ignore[attr-defined]
    keys = WorkingKeys(pik=PIK, mak=generate_working_keys(with_tdk=False).mak)

    async def scenario():
        drv = SerialLinkReader(str(reader.device_path))
        pad = PinPadKeys(drv)
        try:
            await pad.load_tmk_tr31(reader.pinpad.wrap_tmk(TMK))
            await pad.install_working_keys(field62(keys))
            entry = asyncio.create_task(pad.enter_pin(PAN, "PIN", timeout=60, allow_empty=False))
            assert await asyncio.to_thread(reader.wait_until, lambda: reader.pin_entry_running)
            await type_pin()
            return await entry
        finally:
            await pad.close()
            await drv.close()

    result = asyncio.run(scenario())
    assert isinstance(result, PinEntered)
    assert decrypt_tdes_ecb(PIK + PIK[:8], result.block) == encode_pinblock_iso_0(pin, PAN)
    return result


def test_control_port_and_command_line_type_on_the_pad(shop):
    devices, port = shop
    with ControlClient("127.0.0.1", port) as ctl:
        idle = ctl.request("pin_keys", device="reader", keys="1234E")
        with pytest.raises(Exception, match="the PIN pad has keys"):
            ctl.request("pin_keys", device="reader", keys="12#4")
        state = ctl.request("status", device="reader")
    assert idle == {"delivered": False, "note": "the PIN pad is not asking for a PIN: nothing was typed"}
    assert state["pinpad"]["display"] == "(idle)"

    async def by_command_line() -> None:
        done = await asyncio.to_thread(
            subprocess.run, ["nice", "-n", "19", sys.executable, "-m", "board.sim.peripherals",
                             "--port", str(port), "pin-keys", PIN + "E"],
            capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"delivered": True}

    _entry_typed_by(devices, by_command_line)


def test_console_hot_keys_type_the_cards_pin_or_cancel(shop):
    from board.sim.cards import TEST_CARDS
    from board.sim.console import CARD_ORDER, DevConsole

    devices, port = shop
    keypad_master, keypad_slave = os.openpty()
    card = next(i for i, name in enumerate(CARD_ORDER) if TEST_CARDS[name].pin)
    pin = TEST_CARDS[CARD_ORDER[card]].pin
    assert pin is not None

    async def press(key: str, says: str) -> None:
        console = DevConsole(4, 16, "sim", control_port=port, stream=io.StringIO(),
                             keypad_fd=keypad_slave)
        console.start()
        try:
            console.card_index = card
            console.hot_key(key)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while console.message != says:
                assert loop.time() < deadline, console.message
                await asyncio.sleep(0.01)
        finally:
            console.close()

    try:
        # `k`: the selected card's PIN and ENTER on the reader's PIN pad.
        _entry_typed_by(devices, lambda: press("k", "PIN typed on the PIN pad"), pin)
        # `x`: CANCEL on the pad; with no entry running the console says so.
        asyncio.run(press("x", "the PIN pad is not asking for a PIN"))
    finally:
        os.close(keypad_master)
        os.close(keypad_slave)
