"""Benchmark: key press to updated display frame, on real pseudo-terminals.

Bytes for a key go into one pty -> TerminalKeypad -> the amount-entry screen -> Frame
-> TerminalDisplay on a second pty -> the redraw bytes read back. Also the painter's time per
frame (CaptureDisplay). Prints figures; `main()` returns them. No assertions.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `import drivers`, `import firmware` from the repo root

from drivers.display.capture import CaptureDisplay  # noqa: E402
from drivers.display.terminal import ERASE_TO_EOL, TerminalDisplay  # noqa: E402
from drivers.keypad.terminal_keypad import TerminalKeypad  # noqa: E402
from firmware.ports import Frame, Key  # noqa: E402
from firmware.settings.model import factory  # noqa: E402
from firmware.ui.core import KeyIn, UiContext  # noqa: E402
from firmware.ui.machine import build_ui  # noqa: E402

KEYS = 2000
WARMUP = 100
TARGET_MS = 5.0
ROWS, COLS = 4, 16
MAX_DIGITS = 7  # then as many CLEARs (the amount stays under the factory maximum)


class AmountEntry:
    """The real sale amount screen (firmware/ui, opened with F1 at idle) behind the screen
    machine, with a fixed context: each key returns the frame the LCD would show."""

    def __init__(self) -> None:
        self.ui = build_ui()
        self.ctx = UiContext(now=datetime(2026, 11, 22, 14, 30), mono=0.0, rows=ROWS, cols=COLS,
                             merchant_name="DEMO MERCHANT", link_up=True, paper="ok", settings=factory())
        self.ui.feed(KeyIn(Key.F1), self.ctx)

    def press(self, key: Key) -> Frame:
        return self.ui.feed(KeyIn(key), self.ctx).frame


def key_script(count: int, seed: int = 7) -> list[bytes]:
    """MAX_DIGITS digits (never a leading 0), then as many Backspaces: every key changes the
    amount on the screen, so every key redraws a row."""
    rnd = random.Random(seed)
    script: list[bytes] = []
    while len(script) < count:
        script.append(str(rnd.randrange(1, 10)).encode())
        script.extend(str(rnd.randrange(10)).encode() for _ in range(MAX_DIGITS - 1))
        script.extend(b"\x7f" for _ in range(MAX_DIGITS))
    return script[:count]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def key_to_frame(script: list[bytes]) -> list[float]:
    """Seconds from writing each key's bytes to having read its redraw back."""
    key_master, key_slave = os.openpty()
    lcd_master, lcd_slave = os.openpty()
    stream = open(lcd_slave, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 - closed below
    latencies: list[float] = []
    try:
        with TerminalKeypad(key_slave) as keypad:
            display = TerminalDisplay(ROWS, COLS, stream)
            screen = AmountEntry()
            display.show(screen.press(Key.CLEAR))
            os.read(lcd_master, 65536)  # the first full draw
            end_of_redraw = ERASE_TO_EOL.encode()
            for data in script:
                started = time.perf_counter()
                os.write(key_master, data)
                press = await keypad.next_key()
                display.show(screen.press(press.key))
                redraw = b""
                while not redraw.endswith(end_of_redraw):
                    redraw += os.read(lcd_master, 65536)
                latencies.append(time.perf_counter() - started)
            display.close()
    finally:
        stream.close()
        for fd in (key_master, key_slave, lcd_master, lcd_slave):
            os.close(fd)
    return latencies


def painter_times(script: list[bytes]) -> list[float]:
    display = CaptureDisplay(ROWS, COLS)
    screen = AmountEntry()
    keys = {b"\x7f": Key.CLEAR, **{str(n).encode(): Key(str(n)) for n in range(10)}}
    frames = [screen.press(keys[data]) for data in script]
    times: list[float] = []
    for frame in frames:
        started = time.perf_counter()
        display.show(frame)
        times.append(time.perf_counter() - started)
    return times


def report(name: str, seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds[WARMUP:]]
    median, p99 = statistics.median(ms), percentile(ms, 0.99)
    print(f"  {name:<38} median {median:7.3f} ms   p99 {p99:7.3f} ms   max {max(ms):7.3f} ms   "
          f"target/p99 {TARGET_MS / p99:6.1f}x")
    return {"median_ms": median, "p99_ms": p99, "max_ms": max(ms)}


def main() -> dict[str, Any]:
    script = key_script(KEYS + WARMUP)
    print(f"bench_keys: {KEYS} keys after {WARMUP} warm-up, {ROWS}x{COLS} LCD, target < {TARGET_MS} ms")
    print("  (the real amount-entry screen of firmware/ui through the screen machine)")
    figures: dict[str, Any] = {}
    latencies = asyncio.run(key_to_frame(script))
    for key, value in report("key -> TerminalDisplay redraw (2 ptys)", latencies).items():
        figures[f"terminal_{key}"] = value
    for key, value in report("CaptureDisplay.show (painter)", painter_times(script)).items():
        figures[f"painter_{key}"] = value

    from results import emit  # the recorder beside this script: run_all collects what it emits
    note = f"{KEYS} keys after {WARMUP} warm-up, {ROWS}x{COLS} LCD"
    emit("key_to_frame_p99_ms", figures["terminal_p99_ms"], "ms", group="bench_keys",
         target={"op": "<", "value": TARGET_MS, "of": "value"}, note=note + ", 2 ptys")
    emit("key_to_frame_median_ms", figures["terminal_median_ms"], "ms", group="bench_keys", note=note)
    emit("painter_p99_ms", figures["painter_p99_ms"], "ms", group="bench_keys", note=note)
    return figures


if __name__ == "__main__":
    main()
