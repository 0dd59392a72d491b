"""Display drivers: the painter's pixels, CaptureDisplay's PNGs and text, TerminalDisplay's
ANSI output read back through a small screen model (from a StringIO and from a real pty),
and LumaDisplay on luma.core's in-memory dummy device.

There is no /dev/fb0 or SPI here: the framebuffer and SPI factories are only checked to
fail naming the missing device.
"""

from __future__ import annotations

import io
import os
import re
import select
import time
import unicodedata
from pathlib import Path

import pytest
from luma.core.device import dummy
from PIL import Image, ImageChops

from drivers.display import DisplayUnavailable, fit_row, fitted_text
from drivers.display.capture import CaptureDisplay
from drivers.display.luma_backend import LumaDisplay, framebuffer, spi_lcd
from drivers.display.painter import ICON_TOP, INK, PAPER, FontMissing, Painter, icon_mask
from drivers.display.terminal import ICON_TAGS, TerminalDisplay
from firmware.ports import Frame, Icon, char_cells

ROWS, COLS = 4, 16  # the sim/qemu LCD: 128x64

ENGLISH = Frame(("SALE", "Amount", "          123.45", "ENTER to confirm"), inverse_row=0,
                icons=frozenset({Icon.LINK_UP, Icon.PAPER_OK}))
CHINESE = Frame(("消费", "金额:", "          123.45", "按确认键继续"), inverse_row=2,
                icons=frozenset({Icon.LINK_DOWN, Icon.REVERSAL_DUE}))


def blank(rows: int = ROWS) -> Frame:
    return Frame(("",) * rows)


def cell(image: Image.Image, row: int, col: int, cells: int = 1) -> Image.Image:
    return image.crop((col * 8, row * 16, (col + cells) * 8, row * 16 + 16))


def values(image: Image.Image) -> set[int]:
    return set(image.tobytes()) if image.mode != "1" else set(image.convert("L").tobytes())


# ---- grid rules ------------------------------------------------------------


def test_fit_row_cuts_at_a_cell_boundary_never_half_a_cjk_char() -> None:
    assert fitted_text("A" * 15 + "中文", 16) == "A" * 15
    assert fitted_text("中文中文中文中文中文", 16) == "中文中文中文中文"
    assert fitted_text("0123456789ABCDEFGHIJ", 16) == "0123456789ABCDEF"
    assert [cells for _, cells in fit_row("a中", 16)] == [1, 2]


def test_unprintable_characters_become_question_marks() -> None:
    assert fitted_text("A\x1b[2J\tB\u200b", 16) == "A?[2J?B?"


# ---- painter ---------------------------------------------------------------


def test_painter_image_is_1_bit_of_the_device_size() -> None:
    image = Painter(ROWS, COLS).paint(ENGLISH)
    assert (image.mode, image.size) == ("1", (128, 64))
    assert Painter(8, 21).paint(blank(8)).size == (168, 128)


def test_inverse_row_is_white_on_black() -> None:
    frame = Frame(("AB", "AB", "", ""), inverse_row=1)
    image = Painter(ROWS, COLS).paint(frame)
    assert values(cell(image, 1, 5)) == {INK}  # an empty cell of the inverse row: all black
    assert values(cell(image, 0, 5)) == {PAPER}  # of a normal row: all white
    normal, inverse = cell(image, 0, 0, 2), cell(image, 1, 0, 2)
    assert values(normal) == {INK, PAPER}
    assert ImageChops.invert(normal).tobytes() == inverse.tobytes()  # same glyphs, colours swapped


def test_cjk_character_takes_two_cells() -> None:
    painter = Painter(ROWS, COLS)
    image = painter.paint(Frame(("中A", "", "", "")))
    both = cell(image, 0, 0, 2)
    assert values(both.crop((0, 0, 8, 16))) == {INK, PAPER}
    assert values(both.crop((8, 0, 16, 16))) == {INK, PAPER}  # the right half has ink too
    lone_a = painter.paint(Frame(("  A", "", "", "")))
    assert cell(image, 0, 2).tobytes() == cell(lone_a, 0, 2).tobytes()  # A starts at cell 2


def test_text_beyond_the_width_is_cut_whole() -> None:
    painter = Painter(ROWS, COLS)
    cut = painter.paint(Frame(("A" * 15 + "中", "0123456789ABCDEFGHIJ", "", "")))
    assert values(cell(cut, 0, 15)) == {PAPER}  # no half of 中 in the last cell
    exact = painter.paint(Frame(("A" * 15, "0123456789ABCDEF", "", "")))
    assert cut.tobytes() == exact.tobytes()


def test_icons_sit_at_the_right_end_of_row_0_in_icon_order() -> None:
    painter = Painter(ROWS, COLS)
    frame = Frame(("X" * 16, "", "", ""), icons=frozenset({Icon.BUSY, Icon.LINK_UP}))
    image = painter.paint(frame)
    for col, icon in ((14, Icon.LINK_UP), (15, Icon.BUSY)):
        drawn = cell(image, 0, col)
        expected = Image.new("1", (8, 16), PAPER)
        expected.paste(INK, (0, ICON_TOP), icon_mask(icon))
        assert drawn.tobytes() == expected.tobytes(), icon
    plain = painter.paint(Frame(("X" * 16, "", "", "")))
    assert cell(image, 0, 0, 14).tobytes() == cell(plain, 0, 0, 14).tobytes()


def test_icons_are_distinct_8x8_glyphs() -> None:
    masks = {icon: icon_mask(icon).tobytes() for icon in Icon}
    assert len(set(masks.values())) == len(Icon)
    assert all(icon_mask(icon).size == (8, 8) for icon in Icon)


def test_icons_on_an_inverse_row_0_are_inverted_too() -> None:
    image = Painter(ROWS, COLS).paint(Frame(("TITLE", "", "", ""), inverse_row=0,
                                            icons=frozenset({Icon.LOCKED})))
    drawn = cell(image, 0, 15)
    expected = Image.new("1", (8, 16), INK)
    expected.paste(PAPER, (0, ICON_TOP), icon_mask(Icon.LOCKED))
    assert drawn.tobytes() == expected.tobytes()


def test_larger_device_gets_the_grid_scaled_and_centred() -> None:
    grid = Painter(ROWS, COLS).paint(ENGLISH)
    big = Painter(ROWS, COLS, (260, 130)).paint(ENGLISH)
    assert big.size == (260, 130)
    inner = big.crop((2, 1, 258, 129)).resize((128, 64), Image.Resampling.NEAREST)
    assert inner.tobytes() == grid.tobytes()


def test_grid_larger_than_the_device_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match=r"8 rows x 21 columns need 168x128 pixels; the device has 128x64"):
        Painter(8, 21, (128, 64))


@pytest.mark.parametrize(("frame", "message"), [
    (Frame(("a", "b", "c")), "frame has 3 rows; this display has 4"),
    (Frame(("a", "b", "c", "d", "e")), "frame has 5 rows; this display has 4"),
    (Frame(("a", "b", "c", "d"), inverse_row=4), r"inverse row 4 is outside the display's rows 0\.\.3"),
    (Frame(("a", "b", None, "d")), "row 2 is NoneType, not text"),  # type: ignore[arg-type]
])
def test_bad_frames_are_refused_in_words_and_lose_nothing(frame: Frame, message: str, tmp_path: Path) -> None:
    display = CaptureDisplay(ROWS, COLS, out_dir=tmp_path)
    display.show(ENGLISH)
    with pytest.raises(ValueError, match=message):
        display.show(frame)
    assert display.frames == [ENGLISH] and display.last_frame == ENGLISH
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame-0001.png"]


def test_missing_font_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(FontMissing, match="install the Debian package fonts-unifont"):
        Painter(ROWS, COLS, font_path=tmp_path / "no-such-font.otf")


# ---- CaptureDisplay --------------------------------------------------------


def test_capture_writes_a_png_per_frame_that_decodes_to_the_lcd_size(tmp_path: Path) -> None:
    display = CaptureDisplay(ROWS, COLS, out_dir=tmp_path / "shots")
    display.show(ENGLISH)
    display.show(CHINESE)
    files = sorted((tmp_path / "shots").iterdir())
    assert [f.name for f in files] == ["frame-0001.png", "frame-0002.png"]
    for f, frame in zip(files, (ENGLISH, CHINESE), strict=True):
        with Image.open(f) as png:
            assert png.format == "PNG" and png.size == (128, 64)
            assert png.convert("1").tobytes() == Painter(ROWS, COLS).paint(frame).tobytes()
    assert display.frames == [ENGLISH, CHINESE] and display.last_frame is CHINESE


def test_capture_text_english_and_chinese(tmp_path: Path) -> None:
    display = CaptureDisplay(ROWS, COLS)
    assert display.text() == "" and display.last_frame is None
    display.show(ENGLISH)
    assert display.text() == "SALE\nAmount\n          123.45\nENTER to confirm"
    display.show(Frame(("消费", "金额:", "一二三四五六七八九十", "")))
    assert display.text() == "消费\n金额:\n一二三四五六七八\n"
    saved = display.save_png(tmp_path / "zh.png")
    with Image.open(saved) as png:
        assert png.size == (128, 64)
    display.close()
    assert display.text().startswith("消费")  # still readable after close


def test_capture_png_for_the_rpi_grid(tmp_path: Path) -> None:
    display = CaptureDisplay(8, 21)
    display.show(Frame(("收银台 Checkout", *[f"line {i}" for i in range(1, 8)]), inverse_row=7))
    with Image.open(display.save_png(tmp_path / "rpi.png")) as png:
        assert png.size == (168, 128)


def test_capture_image_before_any_frame_says_so() -> None:
    with pytest.raises(LookupError, match="nothing has been shown"):
        _ = CaptureDisplay(ROWS, COLS).image


# ---- TerminalDisplay, read back -----------------------------------------------

ANSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")


class Screen:
    """Just enough of a VT100 to read TerminalDisplay back: CUP, SGR 0/7, EL, ED 2, cursor modes."""

    def __init__(self, lines: int = 24, columns: int = 80) -> None:
        self.columns = columns
        self.chars = [[" "] * columns for _ in range(lines)]
        self.inverse = [[False] * columns for _ in range(lines)]
        self.y = self.x = 0
        self.sgr_inverse = False
        self.cursor_visible = True
        self.moves = 0

    def feed(self, text: str) -> None:
        pos = 0
        for m in ANSI.finditer(text):
            self._text(text[pos:m.start()])
            self._control(m.group(1), m.group(2))
            pos = m.end()
        self._text(text[pos:])

    def _control(self, params: str, final: str) -> None:
        if final == "H":
            line, column = (int(p) for p in params.split(";"))
            self.y, self.x = line - 1, column - 1
            self.moves += 1
        elif final == "m":
            self.sgr_inverse = params == "7"
        elif final == "K":
            for x in range(self.x, self.columns):
                self.chars[self.y][x], self.inverse[self.y][x] = " ", False
        elif final == "J" and params == "2":
            self.chars = [[" "] * self.columns for _ in self.chars]
        elif final in "lh" and params == "?25":
            self.cursor_visible = final == "h"
        else:
            raise AssertionError(f"unexpected escape {params!r}{final}")

    def _text(self, text: str) -> None:
        for ch in text:
            assert unicodedata.category(ch)[0] != "C", f"control character {ch!r} reached the terminal"
            width = char_cells(ch)
            self.chars[self.y][self.x] = ch
            self.inverse[self.y][self.x] = self.sgr_inverse
            if width == 2:
                self.chars[self.y][self.x + 1] = ""  # the right half of a wide character
                self.inverse[self.y][self.x + 1] = self.sgr_inverse
            self.x += width

    def line(self, y: int) -> str:
        return "".join(self.chars[y]).rstrip()


def test_terminal_draws_a_boxed_lcd_with_the_inverse_row_and_icon_tags() -> None:
    out = io.StringIO()
    TerminalDisplay(ROWS, COLS, out).show(ENGLISH)
    screen = Screen()
    screen.feed(out.getvalue())
    assert [screen.line(y) for y in range(7)] == [
        "┌────────────────┐",
        "│SALE            │",
        "│Amount          │",
        "│          123.45│",
        "│ENTER to confirm│",
        "└────────────────┘",
        "[NET] [PAPER]",
    ]
    assert screen.inverse[1][1:17] == [True] * 16  # the whole inverse row, not the border
    assert not screen.inverse[1][0] and not screen.inverse[1][17] and not any(screen.inverse[2])
    assert not screen.cursor_visible


def test_terminal_cjk_takes_two_columns_and_the_border_stays_straight() -> None:
    out = io.StringIO()
    TerminalDisplay(ROWS, COLS, out).show(CHINESE)
    screen = Screen()
    screen.feed(out.getvalue())
    for y in range(1, 5):
        assert screen.chars[y][17] == "│", screen.line(y)
    assert screen.line(4) == "│按确认键继续    │"
    assert screen.chars[4][1:4] == ["按", "", "确"]  # each takes two columns
    assert screen.inverse[3][1:17] == [True] * 16
    assert screen.line(6) == "[NO-NET] [REV]"


def test_terminal_redraws_only_changed_rows() -> None:
    out = io.StringIO()
    display = TerminalDisplay(ROWS, COLS, out)
    screen = Screen()
    display.show(ENGLISH)
    screen.feed(out.getvalue())
    first_moves = screen.moves
    assert first_moves == 7  # every line once
    out.seek(0)
    out.truncate()
    display.show(Frame(("SALE", "Amount", "          123.46", "ENTER to confirm"), inverse_row=0,
                       icons=ENGLISH.icons))
    screen.feed(out.getvalue())
    assert screen.moves - first_moves == 1  # the amount row only
    assert screen.line(3) == "│          123.46│"
    out.seek(0)
    out.truncate()
    display.show(Frame(("SALE", "Amount", "          123.46", "ENTER to confirm"), inverse_row=0,
                       icons=ENGLISH.icons))
    assert out.getvalue() == ""  # nothing changed: nothing written
    display.show(Frame(ENGLISH.rows, inverse_row=1))  # inverse moves, icons go
    screen.feed(out.getvalue())
    assert screen.inverse[2][1] and not screen.inverse[1][1]
    assert screen.line(6) == ""


def test_terminal_escapes_in_text_cannot_drive_the_terminal() -> None:
    out = io.StringIO()
    TerminalDisplay(ROWS, COLS, out).show(Frame(("\x1b[2J\x07bell", "", "", "")))
    screen = Screen()
    screen.feed(out.getvalue())  # Screen refuses any control character in text
    assert screen.line(1) == "│?[2J?bell       │"


def test_terminal_close_puts_the_cursor_below_and_refuses_more_frames() -> None:
    out = io.StringIO()
    display = TerminalDisplay(ROWS, COLS, out, top=3, left=5)
    display.show(ENGLISH)
    display.close()
    screen = Screen()
    screen.feed(out.getvalue())
    assert screen.line(2) == "    ┌────────────────┐"
    assert screen.cursor_visible and (screen.y, screen.x) == (2 + 7, 0)
    with pytest.raises(ValueError, match="closed"):
        display.show(ENGLISH)


def test_terminal_display_over_a_real_pty() -> None:
    master, slave = os.openpty()
    try:
        stream = open(slave, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 - closed below
        display = TerminalDisplay(ROWS, COLS, stream)
        display.show(CHINESE)
        display.close()
        stream.close()
        data = b""
        deadline = time.monotonic() + 5
        while not data.endswith(b"\x1b[?25h"):
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"the pty gave only {data!r}"
            data += os.read(master, 65536)
    finally:
        os.close(master)
        os.close(slave)
    screen = Screen()
    screen.feed(data.decode("utf-8").replace("\r\n", "\n").replace("\n", ""))
    assert "".join(screen.chars[1][1:5]) == "消费"
    assert screen.inverse[3][5]


def test_icon_tags_are_short_and_one_per_icon() -> None:
    assert set(ICON_TAGS) == set(Icon) and all(len(tag) <= 8 for tag in ICON_TAGS.values())


# ---- LumaDisplay on luma.core's dummy device -------------------------------------


def test_luma_1_bit_device_gets_the_painter_image_with_ink_as_set_bits() -> None:
    device = dummy(width=128, height=64, mode="1")
    display = LumaDisplay(device)
    assert (display.rows, display.cols) == (4, 16)
    display.show(CHINESE)
    painted = Painter(ROWS, COLS).paint(CHINESE)
    assert device.image.size == (128, 64) and device.image.mode == "1"
    assert device.image.tobytes() == ImageChops.invert(painted).tobytes()


def test_luma_rgb_device_gets_black_text_on_white_centred() -> None:
    device = dummy(width=240, height=320, mode="RGB")
    display = LumaDisplay(device, rows=8, cols=21)
    frame = Frame(("收银台", "1", "2", "3", "4", "5", "6", "7"), inverse_row=0)
    display.show(frame)
    assert device.image.mode == "RGB"
    painted = Painter(8, 21).paint(frame).convert("RGB")
    origin = ((240 - 168) // 2, (320 - 128) // 2)
    shown = device.image.crop((*origin, origin[0] + 168, origin[1] + 128))
    assert shown.tobytes() == painted.tobytes()
    assert device.image.getpixel((0, 0)) == (255, 255, 255)


def test_luma_close_cleans_up_once() -> None:
    device = dummy(width=128, height=64, mode="1")
    calls: list[str] = []
    real_cleanup = device.cleanup
    device.cleanup = lambda: (calls.append("cleanup"), real_cleanup())
    display = LumaDisplay(device)
    display.close()
    display.close()
    device.cleanup()  # what luma's exit hook will call: must no longer reach the device
    assert calls == ["cleanup"]
    with pytest.raises(ValueError, match="closed"):
        display.show(ENGLISH)


def test_framebuffer_without_dev_fb0_names_it() -> None:
    if os.path.exists("/dev/fb0"):
        pytest.skip("this machine has a framebuffer")
    with pytest.raises(DisplayUnavailable, match="no framebuffer device /dev/fb0"):
        framebuffer()


def test_framebuffer_path_luma_cannot_use_is_named(tmp_path: Path) -> None:
    odd = tmp_path / "lcd"
    odd.write_bytes(b"")
    with pytest.raises(DisplayUnavailable, match=f"cannot use framebuffer {odd}"):
        framebuffer(str(odd))


@pytest.mark.parametrize("driver", ["st7735", "st7567", "ili9341"])
def test_spi_lcd_without_spidev_names_the_device(driver: str) -> None:
    if os.path.exists("/dev/spidev0.1"):
        pytest.skip("this machine has SPI")
    with pytest.raises(DisplayUnavailable, match=r"no SPI device /dev/spidev0\.1: enable SPI"):
        spi_lcd(driver, port=0, device=1)


def test_spi_lcd_unknown_driver_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown SPI LCD driver 'ssd1306'; known: st7735, st7567, ili9341"):
        spi_lcd("ssd1306")
