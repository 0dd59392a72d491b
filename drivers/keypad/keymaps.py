"""Per-board key maps: Linux evdev key code -> firmware Key.

A board profile names its map ("pc", "pos_keypad", "qemu"); keymap(name) returns it.
Codes come from evdev.ecodes, so a map reads like the keyboard it describes.
"""

from __future__ import annotations

from evdev import ecodes

from firmware.ports import Key

# Choices (the firmware has 22 keys; boards have different ones):
#
# pc (a PC keyboard; also the QEMU guest's keyboard):
#   digits        number row KEY_0..9 and numpad KEY_KP0..9
#   DOT           KEY_DOT and KEY_KPDOT
#   ENTER         KEY_ENTER and KEY_KPENTER
#   CANCEL        KEY_ESC
#   CLEAR         KEY_BACKSPACE and KEY_DELETE
#   UP / DOWN     the arrow keys KEY_UP / KEY_DOWN
#   F1..F4        KEY_F1..KEY_F4
#   MENU          KEY_F10 and KEY_M
#   00            KEY_D ("double zero"): Linux has no KEY_KP00 code, so a letter stands in.
#   Modifiers (Shift, Ctrl, Alt) are not mapped: Shift+1 is still 1, never "!".
#
# pos_keypad (a typical USB POS numeric keypad: the 17 numpad keys plus Backspace and Esc):
#   digits KEY_KP0..9, DOT KEY_KPDOT, ENTER KEY_KPENTER, CLEAR KEY_BACKSPACE, CANCEL KEY_ESC,
#   UP KEY_KPSLASH, DOWN KEY_KPASTERISK (the two keys above the 8/9 column, read as arrows),
#   MENU KEY_KPMINUS, 00 KEY_KPPLUS (the tall key, next to the digits, where money is typed).
#   Navigation and amount entry matter more on a checkout keypad than shortcuts, so F1..F4 are
#   not on this keypad (every F-key action is also reachable from MENU). KEY_NUMLOCK is left
#   unmapped: evdev reports KEY_KP* codes whatever the NumLock state.
#   Caution: keypads whose printed "00" key sends KEY_KP0 twice in a burst lose the second 0
#   to the decoder's contact-bounce filter (it cannot tell the burst from bounce); use KP+ as 00.
#
# qemu: the same as pc; keys reach the guest through QMP send-key on an emulated PC keyboard.

_DIGITS = (Key.D0, Key.D1, Key.D2, Key.D3, Key.D4, Key.D5, Key.D6, Key.D7, Key.D8, Key.D9)


def _codes(names_to_keys: dict[str, Key]) -> dict[int, Key]:
    return {ecodes.ecodes[name]: key for name, key in names_to_keys.items()}


PC: dict[int, Key] = _codes({
    **{f"KEY_{n}": key for n, key in enumerate(_DIGITS)},
    **{f"KEY_KP{n}": key for n, key in enumerate(_DIGITS)},
    "KEY_DOT": Key.DOT,
    "KEY_KPDOT": Key.DOT,
    "KEY_ENTER": Key.ENTER,
    "KEY_KPENTER": Key.ENTER,
    "KEY_ESC": Key.CANCEL,
    "KEY_BACKSPACE": Key.CLEAR,
    "KEY_DELETE": Key.CLEAR,
    "KEY_UP": Key.UP,
    "KEY_DOWN": Key.DOWN,
    "KEY_F1": Key.F1,
    "KEY_F2": Key.F2,
    "KEY_F3": Key.F3,
    "KEY_F4": Key.F4,
    "KEY_F10": Key.MENU,
    "KEY_M": Key.MENU,
    "KEY_D": Key.D00,
})

POS_KEYPAD: dict[int, Key] = _codes({
    **{f"KEY_KP{n}": key for n, key in enumerate(_DIGITS)},
    "KEY_KPDOT": Key.DOT,
    "KEY_KPENTER": Key.ENTER,
    "KEY_BACKSPACE": Key.CLEAR,
    "KEY_ESC": Key.CANCEL,
    "KEY_KPSLASH": Key.UP,
    "KEY_KPASTERISK": Key.DOWN,
    "KEY_KPMINUS": Key.MENU,
    "KEY_KPPLUS": Key.D00,
})

KEYMAPS: dict[str, dict[int, Key]] = {
    "pc": PC,
    "pos_keypad": POS_KEYPAD,
    "qemu": dict(PC),
}


def keymap(name: str) -> dict[int, Key]:
    """The key map a board profile names; a copy, so a caller cannot change the table."""
    try:
        return dict(KEYMAPS[name])
    except KeyError:
        raise ValueError(f"unknown key map {name!r}; known key maps: {', '.join(sorted(KEYMAPS))}") from None
