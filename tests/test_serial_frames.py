"""The LCD mirror over real ptys: SerialFrameDisplay (guest side) -> lcd_mirror (host side)."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator

import pytest

from board.qemu.lcd_mirror import FrameLineReader, LcdMirror
from drivers.display import DisplayUnavailable
from drivers.display.serial_frames import (
    MAX_LINE_BYTES,
    FrameLineError,
    SerialFrameDisplay,
    decode_frame,
    encode_frame,
)
from drivers.display.terminal import INVERSE, NORMAL, TerminalDisplay
from firmware.ports import Frame, Icon


class Recorder:
    """A Display that keeps what it was shown (the mirror's drawing is tested separately)."""

    rows, cols = 4, 16

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.changed = threading.Condition()

    def show(self, frame: Frame) -> None:
        with self.changed:
            self.frames.append(frame)
            self.changed.notify_all()

    def close(self) -> None: ...

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Frame]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.frames) >= count, timeout), self.frames
            return list(self.frames)


class Pty:
    """A real pty: the display opens `path` (the slave), the mirror reads `master`. `slave` stays
    open until close_slave() (with no slave open the master reads EIO at once) and doubles as a
    second writer on the line, for garbage."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)

    def close_slave(self) -> None:
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1

    def close(self) -> None:
        self.close_slave()
        # A mirror thread still reading this master must end before the descriptor is closed:
        # the next test's openpty() reuses the number, and a thread between two reads would read
        # (steal) the next test's frames from it.
        for thread in MIRROR_THREADS:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a mirror thread did not end when its port went away"
        MIRROR_THREADS.clear()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


MIRROR_THREADS: list[threading.Thread] = []  # started by start_mirror, joined by Pty.close


@pytest.fixture
def pty_pair() -> Iterator[Pty]:
    pty = Pty()
    yield pty
    pty.close()


def start_mirror(master: int, display: Recorder | TerminalDisplay) -> tuple[LcdMirror, list[str]]:
    mirror = LcdMirror(display)
    ended: list[str] = []
    thread = threading.Thread(target=lambda: ended.append(mirror.run(master)), daemon=True)
    MIRROR_THREADS.append(thread)
    thread.start()
    return mirror, ended


CJK = Frame(rows=("金额 AMOUNT", "  123.45", "确认? ENTER", "取消 CANCEL"), inverse_row=2,
            icons=frozenset({Icon.LINK_UP, Icon.PAPER_OUT}))


def test_frame_round_trip_over_a_pty_with_cjk_and_the_inverse_row(pty_pair: Pty) -> None:
    master, path = pty_pair.master, pty_pair.path
    recorder = Recorder()
    mirror, _ = start_mirror(master, recorder)
    display = SerialFrameDisplay(path, rows=4, cols=16)
    try:
        plain = Frame(rows=("READY", "", "", ""))
        display.show(CJK)
        display.show(plain)
        assert recorder.wait_for(2) == [CJK, plain]
        assert mirror.reader.bad_lines == 0
    finally:
        display.close()


def test_rows_are_cut_to_the_lcd_width_at_a_cjk_cell_boundary(pty_pair: Pty) -> None:
    master, path = pty_pair.master, pty_pair.path
    recorder = Recorder()
    start_mirror(master, recorder)
    display = SerialFrameDisplay(path, rows=4, cols=5)
    try:
        display.show(Frame(rows=("金额金额", "abcdefgh", "", "")))
        assert recorder.wait_for(1)[0].rows == ("金额", "abcde", "", "")
    finally:
        display.close()


def test_mirror_draws_cjk_and_inverse_in_the_terminal(pty_pair: Pty) -> None:
    master, path = pty_pair.master, pty_pair.path
    screen = io.StringIO()
    mirror = LcdMirror(TerminalDisplay(4, 16, screen))
    display = SerialFrameDisplay(path, rows=4, cols=16)
    display.show(CJK)
    display.close()
    pty_pair.close_slave()  # the slave's last close: the mirror sees the port go away after the frame
    reason = mirror.run(master)
    drawn = screen.getvalue()
    assert f"{INVERSE}确认? ENTER" in drawn and NORMAL in drawn
    assert "金额 AMOUNT" in drawn and "[NET]" in drawn and "[NO-PAPER]" in drawn
    assert "went away" in reason and "1 frames shown, 0 bad lines" in reason


def test_garbage_lines_are_counted_in_words_and_good_frames_still_shown(pty_pair: Pty) -> None:
    master, path = pty_pair.master, pty_pair.path
    recorder = Recorder()
    mirror, _ = start_mirror(master, recorder)
    display = SerialFrameDisplay(path, rows=4, cols=16)
    raw = pty_pair.slave  # a second writer on the same (raw) line
    try:
        os.write(raw, b"\xff\xfe garbage\n{not json\n[1,2]\n"
                      b'{"rows":["a"],"inverse_row":3}\n{"rows":["a"],"icons":["disco"]}\n\n')
        display.show(CJK)
        assert recorder.wait_for(1) == [CJK]
        assert mirror.reader.bad_lines == 5
        assert "unknown icons disco" in mirror.reader.summary()
    finally:
        display.close()


def test_a_line_too_long_is_dropped_whole_and_the_next_frame_shown(pty_pair: Pty) -> None:
    master, path = pty_pair.master, pty_pair.path
    recorder = Recorder()
    mirror, _ = start_mirror(master, recorder)
    display = SerialFrameDisplay(path, rows=4, cols=16)
    raw = pty_pair.slave
    try:
        # Valid JSON, so only the length can make it bad; sent in pieces, so the limit holds mid-line.
        huge = encode_frame(Frame(rows=("x" * (3 * MAX_LINE_BYTES), "", "", "")))
        for start in range(0, len(huge), 1000):
            os.write(raw, huge[start:start + 1000])
        display.show(CJK)
        assert recorder.wait_for(1) == [CJK]
        assert mirror.reader.bad_lines == 1
        assert f"longer than {MAX_LINE_BYTES} bytes" in (mirror.reader.last_problem or "")
    finally:
        display.close()


def test_the_host_end_vanishing_is_a_display_error_in_words(pty_pair: Pty) -> None:
    master, path = pty_pair.master, pty_pair.path
    display = SerialFrameDisplay(path, rows=4, cols=16)
    display.show(CJK)
    received = b""
    while not received.endswith(b"\n"):
        received += os.read(master, 4096)
    assert decode_frame(received) == CJK
    pty_pair.close()  # the host end goes while the guest's display still has the port open
    with pytest.raises(DisplayUnavailable, match=r"LCD mirror port .* is gone"):
        display.show(CJK)
    display.close()
    with pytest.raises(DisplayUnavailable, match="cannot open"):
        SerialFrameDisplay(path, rows=4, cols=16)


def test_mirror_reports_the_guest_end_going_away_mid_line(pty_pair: Pty) -> None:
    recorder = Recorder()
    _, ended = start_mirror(pty_pair.master, recorder)
    os.write(pty_pair.slave, encode_frame(CJK) + b'{"rows":["cut')
    recorder.wait_for(1)
    pty_pair.close_slave()  # the guest side vanishes mid-line
    deadline = time.monotonic() + 5
    while not ended and time.monotonic() < deadline:  # a bounded poll: run() returns on its own
        time.sleep(0.01)
    assert ended, "the mirror did not notice the port going away"
    assert "went away" in ended[0] and "1 frames shown, 1 bad lines" in ended[0]
    assert "ended inside a line" in ended[0]


def test_decode_rejects_in_words() -> None:
    with pytest.raises(FrameLineError, match="not UTF-8"):
        decode_frame(b"\xff")
    with pytest.raises(FrameLineError, match="no 'rows'"):
        decode_frame(b'{"rows":[1]}')
    with pytest.raises(FrameLineError, match="inverse_row True"):
        decode_frame(b'{"rows":["a"],"inverse_row":true}')
    assert decode_frame(encode_frame(CJK)) == CJK


def test_reader_handles_a_frame_split_anywhere() -> None:
    data = encode_frame(CJK) * 3
    for cut in range(1, len(data), 7):
        reader = FrameLineReader()
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == [CJK] * 3
        assert reader.bad_lines == 0
