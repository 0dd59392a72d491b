"""board.sim.printer: the ESC/POS decoder on everything the renderer and python-escpos emit, on
random bytes and on split input; the real status bytes; the emulated device on a real pty (raw,
stable path, power, unplug, speed/back-pressure, control dicts, PNG)."""

from __future__ import annotations

import io
import os
import select
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from board.sim.printer import EmulatedPrinter, EscPosDecoder, Slip
from c_ext import posio
from drivers.printer.profiles import get_profile, import_escpos
from drivers.printer.render import render, status_query
from firmware.ports import Align, Cut, Document, Feed, Image, TextLine

FEED_LINES_BEFORE_CUT = 6  # python-escpos cut() feeds 6 lines first


def gradient(width: int, height: int) -> bytes:
    return bytes((x * 7 + y * 13) % 256 for y in range(height) for x in range(width))


def kitchen_sink(columns: int) -> Document:
    """Every kind of block and style the renderer has, in changing order."""
    blocks: list[object] = []
    for align in Align:
        for bold in (False, True):
            for double in (False, True):
                blocks.append(TextLine(f"{align.value[:1]}{int(bold)}{int(double)} ok", align, bold, double))
                blocks.append(TextLine(f"中文 {align.value} 金额", align, bold, double))
    blocks += [TextLine(""), TextLine("x" * columns), TextLine("宽" * (columns // 2)), Feed(0), Feed(2),
               Image(gradient(50, 30), 50, 30), Feed(1), Image(gradient(16, 5), 16, 5, dither=False), Feed(1),
               Cut(partial=False), TextLine("after the cut", Align.RIGHT), Cut()]
    return Document(blocks=tuple(blocks))  # type: ignore[arg-type]


def expected_text_lines(doc: Document) -> list[list[str]]:
    """What text mode must print, slip by slip."""
    slips: list[list[str]] = [[]]
    for block in doc.blocks:
        if isinstance(block, TextLine):
            slips[-1].append(block.text)
        elif isinstance(block, Feed):
            slips[-1] += [""] * block.lines
        elif isinstance(block, Image):
            slips[-1].append(f"[image {384}x{block.height}]")
        elif isinstance(block, Cut):
            slips[-1] += [""] * FEED_LINES_BEFORE_CUT
            slips.append([])
    return slips[:-1]


def decode(data: bytes, profile: str = "58mm", pieces: list[int] | None = None) -> EscPosDecoder:
    decoder = EscPosDecoder(profile)
    cuts = sorted({p % (len(data) + 1) for p in pieces or []})
    start = 0
    for cut in [*cuts, len(data)]:
        assert decoder.feed(data[start:cut]) == b""
        start = cut
    return decoder


# ---- the decoder on what the renderer emits -----------------------------------------------------------


def test_text_mode_kitchen_sink_decodes_with_every_attribute() -> None:
    doc = kitchen_sink(32)
    decoder = decode(b"".join(render(doc, "58mm")))
    assert decoder.unknown_commands == []
    assert [slip.lines for slip in decoder.slips] == expected_text_lines(doc)
    assert [slip.cut for slip in decoder.slips] == ["full", "partial"]
    printed = [r for r in decoder.slips[0].records if r.image is None and r.text]
    sent = [b for b in doc.blocks if isinstance(b, TextLine) and b.text]
    for record, line in zip(printed, sent, strict=False):
        assert (record.text, record.align, record.bold, record.double) == \
               (line.text, line.align.value, line.bold, line.double)
        assert record.chinese == (not line.text.isascii())
    assert decoder.current.records == []


@pytest.mark.parametrize("profile", ["58mm", "80mm"])
def test_raster_mode_kitchen_sink_is_pictures_only(profile: str) -> None:
    doc = kitchen_sink(get_profile(profile).columns)
    decoder = decode(b"".join(render(doc, profile, mode="raster")), profile)
    assert decoder.unknown_commands == []
    assert len(decoder.slips) == 2
    for slip in decoder.slips:
        pictures = [r for r in slip.records if r.image is not None]
        assert len(pictures) == 1 and pictures[0].image is not None
        assert pictures[0].image.width == get_profile(profile).dots
        assert [line for line in slip.lines if not line.startswith("[image ")] == [""] * FEED_LINES_BEFORE_CUT


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=40))
def test_any_chunking_decodes_the_same(pieces: list[int]) -> None:
    data = b"".join(render(kitchen_sink(32), "58mm"))
    whole, split = decode(data), decode(data, pieces=pieces)
    assert [s.records for s in split.slips] == [s.records for s in whole.slips]
    assert split.unknown_commands == []


def test_image_comes_back_as_the_same_pixels() -> None:
    gray = gradient(64, 40)
    decoder = decode(b"".join(render(Document(blocks=(Image(gray, 64, 40),)), "58mm")))
    (record,) = [r for r in decoder.slips[0].records if r.image is not None]
    assert record.image is not None and (record.image.width, record.image.height) == (384, 40)
    expected = posio.floyd_steinberg(gray, 64, 40)
    for y in range(40):
        for x in range(64):
            want = bool(expected[y * 8 + x // 8] & (0x80 >> (x % 8)))
            assert record.image.pixel(160 + x, y) == want  # centred: 20 bytes of margin


# ---- the decoder on what python-escpos emits and on garbage ---------------------------------------------


def escpos_output(calls: list[tuple[str, tuple[object, ...], dict[str, object]]]) -> bytes:
    dummy = import_escpos().Dummy()
    dummy.profile = get_profile("58mm").escpos_capabilities()
    for name, args, kwargs in calls:
        getattr(dummy, name)(*args, **kwargs)
    return bytes(dummy.output)


def test_python_escpos_commands_are_taken() -> None:
    picture = PILImage.new("1", (100, 30), 1)
    data = escpos_output([
        ("hw", ("INIT",), {}), ("hw", ("SELECT",), {}), ("hw", ("RESET",), {}),
        ("set", (), {"align": "center", "bold": True, "double_width": True, "double_height": True,
                     "underline": 1, "font": "a", "density": 3, "invert": True, "smooth": True,
                     "flip": False}),
        ("text", ("Hello\n",), {}), ("set_with_default", (), {}),
        ("line_spacing", (30,), {}), ("line_spacing", (), {}), ("charcode", ("CP850",), {}),
        ("text", ("Grüße\n",), {}), ("print_and_feed", (2,), {}), ("ln", (1,), {}),
        ("control", ("CR",), {}), ("control", ("HT",), {}), ("control", ("LF",), {}),
        ("cashdraw", (2,), {}), ("buzzer", (), {}), ("panel_buttons", (False,), {}),
        ("image", (picture,), {"center": True}), ("image", (picture,), {"impl": "bitImageColumn"}),
        ("qr", ("hello",), {"native": True}), ("barcode", ("4006381333931", "EAN13"), {}),
        ("cut", (), {"feed": False}), ("text", ("x\n",), {}), ("cut", (), {"mode": "PART"}),
    ])
    decoder = decode(data)
    texts = [line for slip in decoder.slips for line in slip.lines]
    assert "Hello" in texts and "Grüße" in texts and "x" in texts
    assert "[image 384x30]" in texts  # python-escpos centres by padding to the paper width
    assert [s.cut for s in decoder.slips] == ["partial", "partial"]  # cut(feed=False) is GS V B 0
    # Only the pictures the emulator does not draw are left over, each recorded with its bytes.
    assert {u.data[:2] for u in decoder.unknown_commands} == {b"\x1b*", b"\x1d("}
    assert all(u.reason.endswith("not drawn by the emulator)") for u in decoder.unknown_commands)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_never_raise_and_unknowns_keep_their_bytes(data: bytes) -> None:
    decoder = EscPosDecoder("58mm")
    replies = decoder.feed(data)
    replies += decoder.feed(b"\n")  # whatever the garbage was, the printer still prints
    assert all(r & 0x93 == 0x12 for r in replies)
    for unknown in decoder.unknown_commands:
        assert unknown.data and unknown.data in data + b"\n" and unknown.reason


# Commands whose header says how many bytes follow: garbage that forms one swallows that many
# bytes, text included, as a real printer does (test_counted_command_swallows_its_bytes).
COUNTED_COMMANDS = (b"\x1dv", b"\x1d(", b"\x1dk", b"\x1d*", b"\x1b*")


def without_counted_commands(data: bytes) -> bytes:
    while any(prefix in data for prefix in COUNTED_COMMANDS):
        for prefix in COUNTED_COMMANDS:
            data = data.replace(prefix, b"")
    return data


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300).map(without_counted_commands),
       text=st.text(alphabet="abc 中文", min_size=1, max_size=10))
def test_after_garbage_a_resync_and_init_print_clean_text(data: bytes, text: str) -> None:
    decoder = EscPosDecoder("58mm")
    decoder.feed(data)
    # A sender resynchronising sends NULs first: enough to complete any fixed-length command the
    # garbage began (ESC W has the longest, 8 argument bytes).
    decoder.feed(bytes(10) + b"\n\x1b@" + render(Document(blocks=(TextLine(text),)), "58mm")[1])
    assert decoder.pending == b""
    printed = [r.text for s in [*decoder.slips, decoder.current] for r in s.records]
    assert printed[-1] == text


def test_counted_command_swallows_its_bytes() -> None:
    decoder = EscPosDecoder("58mm")
    decoder.feed(b"\x1dv0\x00\x02\x00\x03\x00" + b"abc\n")
    assert decoder.pending == b"\x1dv0\x00\x02\x00\x03\x00abc\n"  # 6 pixel bytes due, 4 came
    decoder.feed(b"xyok\n")
    assert decoder.current.lines == ["[image 16x3]", "ok"]


@pytest.mark.parametrize(("data", "recorded", "reason"), [
    (b"\x1dv0\x00\xff\x00\x01\x00", b"\x1dv0\x00\xff\x00\x01\x00", "does not fit this printer"),
    (b"\x1dv1", b"\x1dv", "only GS v 0"),
    (b"\x1b\x7f", b"\x1b\x7f", "ESC 0x7F is not a command"),
    (b"\x1b\x01", b"\x1b", "0x1B followed by control byte 0x01"),
    (b"\x1d\xfe", b"\x1d\xfe", "GS 0xFE is not a command"),
    (b"\x1dV\x07", b"\x1dV\x07", "cut mode 7"),
    (b"\x07", b"\x07", "control byte 0x07"),
    (b"\x10\x04\x09", b"\x10\x04\x09", "n must be 1, 2, 3 or 4"),
])
def test_bad_commands_are_recorded_in_words(data: bytes, recorded: bytes, reason: str) -> None:
    decoder = EscPosDecoder("58mm")
    decoder.feed(data + b"after\n")
    assert decoder.unknown_commands[0].data == recorded
    assert reason in decoder.unknown_commands[0].reason
    assert decoder.current.lines[-1].endswith("after")  # what follows the bad command still prints


def test_multibyte_text_split_across_reads_and_broken_sequences() -> None:
    decoder = EscPosDecoder("58mm")
    data = b"\x1c&" + "金额".encode("gb18030") + b"\x1c.\n"
    for i in range(len(data)):
        decoder.feed(data[i:i + 1])
    decoder.feed(b"\x1c&\xd6\n")  # half a character, then the line ends
    assert decoder.current.lines == ["金额", "\ufffd"]


def test_overlong_line_wraps_as_the_printer_would() -> None:
    decoder = EscPosDecoder("58mm")
    decoder.feed(b"y" * 40 + b"\n\x1d!\x11" + b"z" * 20 + b"\n")
    assert decoder.current.lines == ["y" * 32, "y" * 8, "z" * 16, "z" * 4]


def test_esc_bang_sets_size_and_emphasis() -> None:
    decoder = EscPosDecoder("58mm")
    decoder.feed(b"\x1b!\x38big\n\x1b!\x00small\n")
    big, small = decoder.current.records
    assert (big.bold, big.width_mult, big.height_mult) == (True, 2, 2)
    assert (small.bold, small.width_mult, small.height_mult) == (False, 1, 1)


@pytest.mark.parametrize(("state", "replies"), [
    ({}, [0x12, 0x12, 0x12]),
    ({"paper_out": True}, [0x1A, 0x32, 0x7E]),
    ({"cover_open": True}, [0x1A, 0x16, 0x12]),
    ({"paper_near_end": True}, [0x12, 0x12, 0x1E]),
])
def test_status_bytes_are_the_real_ones(state: dict[str, bool], replies: list[int]) -> None:
    decoder = EscPosDecoder("58mm")
    for name, value in state.items():
        setattr(decoder, name, value)
    assert list(decoder.feed(status_query(1) + status_query(2) + status_query(4))) == replies


def test_paper_out_after_lines_discards_the_rest() -> None:
    decoder = EscPosDecoder("58mm")
    decoder.lines_until_paper_out = 2
    decoder.feed(b"one\ntwo\nthree\n\x1dV\x01")
    assert decoder.current.lines == ["one", "two"] and decoder.paper_out and decoder.slips == []
    assert decoder.lines_discarded == 1


# ---- the device on a real pty ---------------------------------------------------------------------------


@pytest.fixture
def printer(tmp_path: Path):
    device = EmulatedPrinter(tmp_path).start()
    yield device
    device.stop()


def open_host(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    return fd


def read_exact(fd: int, count: int, timeout: float = 2.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if ready:
            out += os.read(fd, count - len(out))
    return out


def test_device_path_raw_status_and_printing(printer: EmulatedPrinter) -> None:
    assert printer.path.is_symlink() and os.readlink(printer.path).startswith("/dev/pts/")
    fd = open_host(printer.path)
    try:
        os.write(fd, b"\x1b@Hi\r\n\x1dV\x00" + status_query(4))
        assert read_exact(fd, 1) == b"\x12"  # only the status reply: no echo of what was sent
        assert printer.wait_for(lambda p: len(p.slips) == 1)
        assert printer.slips[0].lines == ["Hi"] and printer.bytes_received == 12
        assert read_exact(fd, 1, timeout=0.1) == b""
    finally:
        os.close(fd)


def test_power_off_drops_data_and_stays_silent(printer: EmulatedPrinter) -> None:
    fd = open_host(printer.path)
    try:
        printer.power_off()
        os.write(fd, b"lost\n" + status_query(1))
        assert printer.wait_for(lambda p: p.bytes_received == 8)
        assert read_exact(fd, 1, timeout=0.2) == b""
        printer.power_on()
        os.write(fd, status_query(1) + b"kept\n")
        assert read_exact(fd, 1) == b"\x12"
        assert printer.wait_for(lambda p: p.current.lines == ["kept"])
    finally:
        os.close(fd)


def test_unplug_hangs_up_and_replug_gives_a_new_pty(printer: EmulatedPrinter) -> None:
    fd = open_host(printer.path)
    first = os.readlink(printer.path)
    try:
        printer.unplug()
        assert not printer.path.exists()
        with pytest.raises(OSError):
            os.write(fd, b"x")
        printer.replug()
        assert printer.path.exists()
        with open(printer.path, "r+b", buffering=0) as port:
            port.write(status_query(1))
            assert read_exact(port.fileno(), 1) == b"\x12"
        assert os.readlink(printer.path) != first or printer.plugged
    finally:
        os.close(fd)


def test_slow_printer_pushes_back_on_the_writer(printer: EmulatedPrinter) -> None:
    rate = 20_000
    printer.set_speed(rate)
    fd = open_host(printer.path)
    try:
        written = 0
        started = time.monotonic()
        while True:  # fill the pty: the writer must meet EAGAIN
            try:
                written += os.write(fd, b"a" * 1024)
            except BlockingIOError:
                break
        assert time.monotonic() - started < 1.0  # the kernel buffer filled, not the printer's
        assert printer.bytes_received < written
        t0, got0 = time.monotonic(), printer.bytes_received
        assert printer.wait_for(lambda p: p.bytes_received >= got0 + rate // 2, timeout=3)
        measured = (printer.bytes_received - got0) / (time.monotonic() - t0)
        assert 0.5 * rate < measured < 1.5 * rate
        printer.set_speed(None)
        assert printer.wait_for(lambda p: p.bytes_received == written, timeout=3)
    finally:
        os.close(fd)


def test_control_dicts(printer: EmulatedPrinter) -> None:
    assert printer.control("paper_out_after", lines=0) == {"ok": True, **printer.state()}
    assert printer.state()["paper_out"] is True
    assert printer.control("load_paper")["paper_out"] is False
    assert printer.control("open_cover")["cover_open"] is True
    assert printer.control("set_speed", bytes_per_second=-1) == {
        "ok": False, "error": "set_speed: speed must be a positive number of bytes per second, not -1"}
    assert printer.control("paper_out_after", pages=3)["ok"] is False
    answer = printer.control("fly")
    assert answer["ok"] is False and "unknown printer command 'fly'" in answer["error"]
    assert printer.control("slips") == {"ok": True, "slips": [{"lines": [], "cut": None}]}


def test_garbage_and_noise_controls(printer: EmulatedPrinter) -> None:
    fd = open_host(printer.path)
    try:
        printer.garbage_status(0xFF, times=1)
        os.write(fd, status_query(1) + status_query(1))
        assert read_exact(fd, 2) == b"\xff\x12"
        printer.send_noise(b"\x13boot")
        assert read_exact(fd, 5) == b"\x13boot"
    finally:
        os.close(fd)


def test_slip_png(tmp_path: Path) -> None:
    decoder = decode(b"".join(render(kitchen_sink(32), "58mm")))
    slip: Slip = decoder.slips[0]
    png = slip.png_bytes()
    picture = PILImage.open(io.BytesIO(png))
    assert picture.width == 384 and picture.height > 24 * len(slip.records)
    assert picture.convert("L").getextrema() == (0, 255)
    slip.save_png(tmp_path / "slip.png")
    assert (tmp_path / "slip.png").read_bytes() == png
