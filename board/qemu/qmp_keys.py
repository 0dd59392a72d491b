"""PC keys typed on the host console -> QMP send-key commands for the QEMU guest's keyboard.

Owns the one table firmware Key -> QEMU qcode (with the Linux key code each qcode produces in
the guest) for the `qemu` key map, and turning terminal bytes into QMP commands.
"""

from __future__ import annotations

from typing import Any

from evdev import ecodes

from drivers.keypad.terminal_keypad import TerminalKeyParser
from firmware.ports import Key

# firmware Key -> (QMP qcode, the Linux KEY_* name QEMU turns that qcode into in the guest).
# QEMU's qcode -> Linux mapping is its keycodemapdb table (qcode "ret" is KEY_ENTER, "dot" is
# KEY_DOT, "esc" is KEY_ESC, digits "0".."9" are the number row). Each key gets the qcode that
# the drivers/keypad/keymaps.py "qemu" map reads as that key; tests/test_qmp_keys.py checks it.
KEY_QCODES: dict[Key, tuple[str, str]] = {
    **{Key(str(n)): (str(n), f"KEY_{n}") for n in range(10)},
    Key.D00: ("d", "KEY_D"),  # Linux has no "00" key; the pc/qemu maps read D as double zero
    Key.DOT: ("dot", "KEY_DOT"),
    Key.ENTER: ("ret", "KEY_ENTER"),
    Key.CANCEL: ("esc", "KEY_ESC"),
    Key.CLEAR: ("backspace", "KEY_BACKSPACE"),
    Key.UP: ("up", "KEY_UP"),
    Key.DOWN: ("down", "KEY_DOWN"),
    Key.F1: ("f1", "KEY_F1"),
    Key.F2: ("f2", "KEY_F2"),
    Key.F3: ("f3", "KEY_F3"),
    Key.F4: ("f4", "KEY_F4"),
    Key.MENU: ("f10", "KEY_F10"),
}


def qcode(key: Key) -> str:
    return KEY_QCODES[key][0]


def linux_code(key: Key) -> int:
    """The evdev key code the guest's keyboard reports for this firmware key's qcode."""
    return int(ecodes.ecodes[KEY_QCODES[key][1]])


def send_key_command(key: Key, hold_time_ms: int = 50) -> dict[str, Any]:
    """The QMP command pressing and releasing this key on the guest's keyboard."""
    return {"execute": "send-key",
            "arguments": {"keys": [{"type": "qcode", "data": qcode(key)}], "hold-time": hold_time_ms}}


class KeyForwarder:
    """Terminal bytes (as TerminalKeypad reads them) -> QMP send-key commands, in order.

    Bytes that are no key are counted (parser.ignored), never sent; a lone Esc is held until
    flush() (the caller's Esc timeout), exactly as the terminal keypad does.
    """

    def __init__(self) -> None:
        self.parser = TerminalKeyParser()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return [send_key_command(key) for key in self.parser.feed(data)]

    def flush(self) -> list[dict[str, Any]]:
        return [send_key_command(key) for key in self.parser.flush()]
