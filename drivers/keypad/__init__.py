"""Keypad drivers: per-board key maps, the pure evdev key decoder, and two Keypads.

evdev_keypad (a real input device, grabbed) and terminal_keypad (a tty, for development)
both implement firmware.ports.Keypad; this package owns the error they raise when gone.
"""

from __future__ import annotations


class KeypadUnavailable(OSError):
    """The keypad cannot be opened or vanished (unplugged, not a tty); the message says which."""
