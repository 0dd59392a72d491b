"""Turns raw evdev key events into KeyPresses: key map, contact bounce, auto-repeat rules.

Pure: no I/O, no clock of its own (the event's timestamp is the time), and no logging at
all, because PIN digits pass through here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from firmware.ports import Key, KeyPress

# Theory of operation. Each mapped key code is either up or down.
#   press (value 1)    up -> down and a KeyPress, unless it comes within debounce_ms of the
#                      same key's last release (contact bounce) or the key is already down
#                      (a second press without a release): then it is dropped and counted.
#   release (value 0)  down -> up; remembers the time for the bounce check. Never a KeyPress.
#   repeat (value 2)   the kernel's auto-repeat of a held key. Only keys in repeat_keys repeat
#                      (ENTER and CANCEL never do, so holding ENTER cannot confirm twice), only
#                      once the key has been down repeat_delay_ms, and at most one per
#                      repeat_interval_ms whatever the kernel's rate; flagged repeat=True.
# Unmapped codes are dropped and counted (once per press, not per repeat); events of other
# types (EV_SYN, EV_MSC scan codes, EV_LED) are ignored, except SYN_DROPPED: the kernel lost
# events, perhaps a release, so every key is taken as up again rather than left stuck down.

# Linux input event constants (linux/input-event-codes.h); stable kernel ABI, and this
# module stays importable where evdev is not.
EV_SYN = 0x00
EV_KEY = 0x01
SYN_DROPPED = 3
KEY_RELEASE, KEY_PRESS, KEY_REPEAT = 0, 1, 2

DEFAULT_REPEAT_KEYS = frozenset({Key.CLEAR, Key.UP, Key.DOWN})
NEVER_REPEAT = frozenset({Key.ENTER, Key.CANCEL})


@dataclass
class _KeyState:
    down: bool = False
    pressed_at: float = 0.0  # the accepted press, for the repeat delay
    last_emitted_at: float = 0.0  # press or repeat last handed out, for the repeat interval
    released_at: float | None = None


class KeyDecoder:
    """Feed it every event from one input device; it returns a KeyPress or None."""

    def __init__(
        self,
        keymap: Mapping[int, Key],
        *,
        debounce_ms: float = 30,
        repeat_keys: Iterable[Key] = DEFAULT_REPEAT_KEYS,
        repeat_delay_ms: float = 500,
        repeat_interval_ms: float = 100,
    ) -> None:
        if debounce_ms < 0 or repeat_delay_ms < 0 or repeat_interval_ms < 0:
            raise ValueError("debounce_ms, repeat_delay_ms and repeat_interval_ms must not be negative")
        wanted = frozenset(repeat_keys)
        refused = wanted & NEVER_REPEAT
        if refused:
            names = ", ".join(sorted(k.name for k in refused))
            raise ValueError(f"{names} may never auto-repeat: a held key must not confirm or cancel twice")
        self._keymap = dict(keymap)
        self._debounce_s = debounce_ms / 1000
        self._repeat_keys = wanted
        self._repeat_delay_s = repeat_delay_ms / 1000
        self._repeat_interval_s = repeat_interval_ms / 1000
        self._states: dict[int, _KeyState] = {}
        self.unmapped = 0  # presses of codes the key map does not know
        self.bounced = 0  # presses dropped as contact bounce or as a press without a release

    def __repr__(self) -> str:
        # Deliberately no key state: what is held down could be a PIN digit.
        return f"KeyDecoder(keys={len(self._keymap)}, unmapped={self.unmapped}, bounced={self.bounced})"

    def feed(self, ev_type: int, code: int, value: int, timestamp: float) -> KeyPress | None:
        """One event; timestamp in seconds on the time.monotonic() clock."""
        if ev_type == EV_SYN:
            if code == SYN_DROPPED:
                for state in self._states.values():
                    state.down = False
            return None
        if ev_type != EV_KEY:
            return None
        key = self._keymap.get(code)
        if key is None:
            if value == KEY_PRESS:
                self.unmapped += 1
            return None
        state = self._states.setdefault(code, _KeyState())
        if value == KEY_PRESS:
            return self._press(key, state, timestamp)
        if value == KEY_RELEASE:
            state.down = False
            state.released_at = timestamp
            return None
        if value == KEY_REPEAT:
            return self._repeat(key, state, timestamp)
        return None  # no other values exist for EV_KEY; ignore rather than guess

    def _press(self, key: Key, state: _KeyState, now: float) -> KeyPress | None:
        bouncing = state.released_at is not None and now - state.released_at < self._debounce_s
        if state.down or bouncing:
            # Still count it as down so its release and any held repeats pair up as usual.
            state.down = True
            self.bounced += 1
            return None
        state.down = True
        state.pressed_at = state.last_emitted_at = now
        return KeyPress(key, now)

    def _repeat(self, key: Key, state: _KeyState, now: float) -> KeyPress | None:
        if key not in self._repeat_keys or not state.down:
            return None
        if now - state.pressed_at < self._repeat_delay_s:
            return None
        if now - state.last_emitted_at < self._repeat_interval_s:
            return None
        state.last_emitted_at = now
        return KeyPress(key, now, repeat=True)
