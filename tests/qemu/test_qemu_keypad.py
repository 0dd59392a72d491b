"""The qemu board's keypad end to end: every key code of the `qemu` key map, sent on the host as a
QMP send-key, reaches the firmware's own keypad driver in the guest (board/qemu/keyprobe.py, built
by firmware.app's factory) through the real kernel input stack as the key the map names.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

# Each test boots a kernel under TCG: only `make qemu-test` (QEMU_TESTS=1) runs them, never plain pytest.
if os.environ.get("QEMU_TESTS") != "1":
    pytest.skip("QEMU board tests run with `make qemu-test` (QEMU_TESTS=1)", allow_module_level=True)

from evdev import ecodes
from guestkit import guest_fixture, image_fixture  # noqa: F401 - the fixtures "guest", "image"

from board.qemu.guest import Guest
from board.qemu.keyprobe import DONE, KEY, READY
from board.qemu.qmp_keys import KEY_QCODES
from drivers.keypad.keymaps import keymap
from firmware.app.boards import PROFILES
from firmware.ports import Key

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

# Linux KEY_* name -> the QEMU qcode (QAPI QKeyCode) that QEMU's keycodemapdb table turns into that
# code on the guest's keyboard. Written from QEMU's qcode names, independently of qmp_keys.py, so
# that every code of the map (both digit rows, both Enters, Delete, M...) gets a qcode of its own.
LINUX_QCODES: dict[str, str] = {
    **{f"KEY_{n}": str(n) for n in range(10)},  # the number row
    **{f"KEY_KP{n}": f"kp_{n}" for n in range(10)},  # the numeric keypad
    **{f"KEY_{c.upper()}": c for c in "abcdefghijklmnopqrstuvwxyz"},
    **{f"KEY_F{n}": f"f{n}" for n in range(1, 13)},
    "KEY_DOT": "dot",
    "KEY_KPDOT": "kp_decimal",
    "KEY_ENTER": "ret",
    "KEY_KPENTER": "kp_enter",
    "KEY_ESC": "esc",
    "KEY_BACKSPACE": "backspace",
    "KEY_DELETE": "delete",
    "KEY_UP": "up",
    "KEY_DOWN": "down",
    "KEY_LEFTSHIFT": "shift",
}

SEED = 20261122  # the shuffled order is the same on every run, so a failure can be replayed
HOLD_MS = 50  # send-key's hold time (Guest.send_key's default)
# QEMU queues a send-key as press, hold, release, hold for each of its keys, and a send-key made
# while that queue runs waits behind it. So the next key goes out only once the previous one's queue
# has drained, plus a gap, or its latency would be QEMU's queue, not the input stack's.
GAP_S = 0.02
ARRIVAL_TIMEOUT_S = 2.0  # per key; a key not seen by then is reported by the final comparison
# Shift held with a key the map knows: the map leaves modifiers unmapped, so the key is unchanged.
SHIFT_CHORDS: list[tuple[tuple[str, ...], Key]] = [
    (("shift", "1"), Key.D1),  # "!" on a PC, still 1 on the terminal
    (("shift", "m"), Key.MENU),
]


def linux_names(code: int) -> list[str]:
    names = ecodes.KEY.get(code, f"code {code}")  # evdev gives a list where a code has aliases
    return names if isinstance(names, list) else [names]


def qcode_for(code: int) -> str | None:
    return next((LINUX_QCODES[n] for n in linux_names(code) if n in LINUX_QCODES), None)


def missing_qcodes(key_map: Mapping[int, Key]) -> list[str]:
    return ["/".join(linux_names(code)) for code in key_map if qcode_for(code) is None]


def board_keymap() -> dict[int, Key]:
    """The map the firmware reads the qemu board's keys with (what firmware.app passes EvdevKeypad)."""
    return keymap(PROFILES["qemu"].keymap)


def test_every_code_of_the_qemu_map_has_a_qcode_agreeing_with_qmp_keys() -> None:
    missing = missing_qcodes(board_keymap())
    if missing:
        pytest.fail(f"no QEMU qcode for these codes of the qemu key map: {', '.join(missing)}")
    # The lookup really reports a code it cannot send (so the check above can fail).
    assert missing_qcodes({ecodes.ecodes["KEY_PROG1"]: Key.F1}) == ["KEY_PROG1"]
    # The host console forwarder's one-qcode-per-Key table says the same as this one.
    for key, (qcode, linux_name) in KEY_QCODES.items():
        assert LINUX_QCODES.get(linux_name) == qcode, f"{key}: qmp_keys sends {qcode!r} for {linux_name}"


def keys_on_console(console: str) -> list[str]:
    """What the probe printed after KEYPROBE-KEY, in order (the serial console ends lines in CR LF)."""
    lines = (line.strip() for line in console.splitlines())
    return [line.removeprefix(KEY).strip() for line in lines if line.startswith(KEY + " ")]


def wait_for_key_count(guest: Guest, count: int, timeout: float) -> float | None:
    """time.monotonic() when the console holds `count` keys; None if it did not within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(keys_on_console(guest.console())) >= count:
            return time.monotonic()
        time.sleep(0.002)  # a fine poll: the figure reported is the latency
    return None


def test_every_qemu_key_code_arrives_as_its_firmware_key_through_the_firmware_keypad(
        guest: Guest) -> None:
    key_map = board_keymap()
    missing = missing_qcodes(key_map)
    if missing:
        pytest.fail(f"no QEMU qcode for these codes of the qemu key map: {', '.join(missing)}")
    presses: list[tuple[tuple[str, ...], Key, str]] = [
        ((str(qcode_for(code)),), key, "/".join(linux_names(code))) for code, key in key_map.items()]
    random.Random(SEED).shuffle(presses)
    presses += [(chord, key, "+".join(chord)) for chord, key in SHIFT_CHORDS]

    guest.start(f"{VENV_PYTHON} -m board.qemu.keyprobe --count {len(presses)} --timeout 60",
                cwd=str(REPO))
    ready = guest.wait_for(READY, timeout=60)
    device = re.search(rf"{READY} (\S+)", guest.console())
    sent_at = time.monotonic()
    latencies: dict[str, float] = {}
    for index, (qcodes, _key, label) in enumerate(presses):
        if guest.process is None or guest.process.poll() is not None:
            break  # the probe already had its count (a doubled key): the comparison below says so
        pressed = time.monotonic()
        guest.send_key(*qcodes, hold_ms=HOLD_MS)
        arrived = wait_for_key_count(guest, index + 1, ARRIVAL_TIMEOUT_S)
        if arrived is not None and len(qcodes) == 1:  # a chord's key waits out Shift's hold first
            latencies[label] = arrived - pressed
        time.sleep(max(0.0, pressed + 2 * len(qcodes) * HOLD_MS / 1000 + GAP_S - time.monotonic()))
    all_sent = time.monotonic() - sent_at
    status = guest.wait_exit(timeout=30)
    console = guest.console()

    expected = [key.name for _, key, _ in presses]
    got = keys_on_console(console)
    wrong = [f"{label}: expected {want}, got {have}"
             for (_, _, label), want, have in zip(presses, expected, got, strict=False) if want != have]
    assert got == expected, (f"{len(got)} keys read for {len(expected)} sent; first differences: "
                             f"{wrong[:5]}; console tail:\n{console[-1500:]}")
    done = re.search(rf"{DONE} keys=(\d+) unmapped=(\d+) bounced=(\d+) overflowed=(\d+) timed_out=(\d)",
                     console)
    assert done is not None, f"no {DONE} line; console tail:\n{console[-1500:]}"
    # Every Shift reached the decoder (and was dropped as unmapped), so the chords were real chords.
    assert done.groups() == (str(len(presses)), str(len(SHIFT_CHORDS)), "0", "0", "0")
    assert status == 0

    figures = sorted(latencies.values())
    print(f"\n[qemu] keyprobe ready {ready:.1f} s after start on {device.group(1) if device else '?'}; "
          f"{len(presses)} keys ({len(key_map)} codes of the qemu map + {len(SHIFT_CHORDS)} Shift "
          f"chords, seed {SEED}) sent and read in {all_sent:.1f} s")
    slowest = max(latencies, key=latencies.__getitem__)
    print(f"[qemu] send-key -> KEYPROBE-KEY on the console (single keys): median "
          f"{statistics.median(figures) * 1000:.0f} ms, max {figures[-1] * 1000:.0f} ms ({slowest})")
