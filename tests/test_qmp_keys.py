"""The qemu board's PC-key -> QMP qcode table against the guest's `qemu` key map."""

from __future__ import annotations

import pytest
from evdev import ecodes

from board.qemu.qmp_keys import KEY_QCODES, KeyForwarder, linux_code, qcode, send_key_command
from drivers.keypad.keymaps import KEYMAPS
from firmware.ports import Key

QEMU_MAP = KEYMAPS["qemu"]


def test_every_firmware_key_has_a_qcode() -> None:
    assert set(KEY_QCODES) == set(Key)


@pytest.mark.parametrize("key", list(Key))
def test_qcode_linux_code_maps_back_to_the_same_key(key: Key) -> None:
    code = linux_code(key)
    names = ecodes.KEY[code]  # evdev gives a list where codes have aliases
    assert KEY_QCODES[key][1] in (names if isinstance(names, list) else [names])
    assert QEMU_MAP.get(code) == key, f"{key} -> {qcode(key)!r} -> {KEY_QCODES[key][1]}"


def test_qcodes_are_distinct() -> None:
    codes = [q for q, _ in KEY_QCODES.values()]
    assert len(codes) == len(set(codes))


def test_send_key_command_shape() -> None:
    assert send_key_command(Key.ENTER) == {
        "execute": "send-key",
        "arguments": {"keys": [{"type": "qcode", "data": "ret"}], "hold-time": 50}}


@pytest.mark.parametrize(("typed", "key"), [
    (b"7", Key.D7), (b".", Key.DOT), (b"d", Key.D00), (b"\r", Key.ENTER), (b"\x7f", Key.CLEAR),
    (b"\x1b[A", Key.UP), (b"\x1b[B", Key.DOWN), (b"\x1bOP", Key.F1), (b"\x1b[14~", Key.F4),
    (b"\x1b[21~", Key.MENU), (b"m", Key.MENU), (b"\x1b[3~", Key.CLEAR), (b"\x1bOp", Key.D0),
])
def test_terminal_bytes_become_the_right_qcode(typed: bytes, key: Key) -> None:
    forwarder = KeyForwarder()
    commands = forwarder.feed(typed) + forwarder.flush()
    assert commands == [send_key_command(key)]
    # and that qcode, in the guest, is the same firmware key again
    assert QEMU_MAP[linux_code(key)] == key


def test_lone_escape_is_cancel_only_after_flush_and_garbage_is_not_sent() -> None:
    forwarder = KeyForwarder()
    assert forwarder.feed(b"\x1b") == []
    assert forwarder.flush() == [send_key_command(Key.CANCEL)]
    assert forwarder.feed(b"x\x01\x1b[99~5") == [send_key_command(Key.D5)]
    assert forwarder.parser.ignored == 3
