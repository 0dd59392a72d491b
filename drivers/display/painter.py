"""Draws a Frame onto a 1-bit PIL image with GNU Unifont; shared by every pixel backend.

Owns the pixel layout of the LCD (below), the glyph cache and the built-in status icons.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from drivers.display import CELL_H, CELL_W, check_frame, fit_row
from firmware.ports import Frame, Icon

# Layout: a rows x cols grid of 8x16-pixel cells from the top-left (a CJK character takes two
# cells); the inverse row white on black; the status icons in the status area, which is the
# right end of row 0: one cell per icon (an 8x8 glyph, vertically centred), in Icon order,
# drawn over whatever text is there (screens keep their title short of it). Pixel value 255
# is background (paper), 0 is ink, so a saved PNG looks like the LCD. A device larger than
# the grid gets it scaled by a whole factor and centred.

UNIFONT_PATH = Path("/usr/share/fonts/opentype/unifont/unifont.otf")
PAPER, INK = 255, 0  # mode "1" reads back 0 / 255; 255 also for a set mask bit

# 8x8 icons, '#' is ink; drawn 4 px down in their 8x16 cell.
_ICON_ART: dict[Icon, str] = {
    Icon.LINK_UP: """
        ......#.
        ......#.
        ....#.#.
        ....#.#.
        ..#.#.#.
        ..#.#.#.
        #.#.#.#.
        #.#.#.#.""",
    Icon.LINK_DOWN: """
        #...#...
        .#.#....
        ..#.....
        .#.#....
        #...#...
        ........
        ......#.
        #.#.#.#.""",
    Icon.PAPER_OK: """
        .######.
        .#....#.
        .#.##.#.
        .#....#.
        .#.##.#.
        .#....#.
        .#.#..#.
        .##.###.""",
    Icon.PAPER_OUT: """
        .######.
        .##..##.
        .#.##.#.
        .#.##.#.
        .##..##.
        .#....#.
        .#.#..#.
        .##.###.""",
    Icon.REVERSAL_DUE: """
        ########
        ##...###
        ##.##.##
        ##...###
        ##.#.###
        ##.##.##
        ##.##.##
        ########""",
    Icon.ADVICE_DUE: """
        ########
        ###..###
        ##.##.##
        ##.##.##
        ##....##
        ##.##.##
        ##.##.##
        ########""",
    Icon.LOCKED: """
        ..####..
        .#....#.
        .#....#.
        ########
        ###..###
        ###..###
        ########
        ########""",
    Icon.BUSY: """
        ########
        .#....#.
        ..#..#..
        ...##...
        ...##...
        ..#..#..
        .#....#.
        ########""",
}
ICON_ORDER: tuple[Icon, ...] = tuple(Icon)  # left to right in the status area
ICON_TOP = (CELL_H - 8) // 2


class FontMissing(FileNotFoundError):
    """GNU Unifont is not installed where the painter looks for it."""


@functools.lru_cache(maxsize=4)
def _font(path: Path) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(str(path), 16)
    except OSError:
        raise FontMissing(f"GNU Unifont not found at {path}: install the Debian package fonts-unifont") \
            from None


@functools.lru_cache(maxsize=4096)
def _glyph(path: Path, ch: str, cells: int) -> Image.Image:
    """The character's mask (set = ink) in its cells; anything wider than the cells is cut off."""
    mask = Image.new("1", (cells * CELL_W, CELL_H), 0)
    ImageDraw.Draw(mask).text((0, 0), ch, font=_font(path), fill=255)
    return mask


@functools.lru_cache(maxsize=len(Icon))
def icon_mask(icon: Icon) -> Image.Image:
    lines = [line.strip() for line in _ICON_ART[icon].strip().splitlines()]
    mask = Image.new("1", (8, 8), 0)
    mask.putdata([255 if c == "#" else 0 for line in lines for c in line])
    return mask


class Painter:
    """Frames for one display: rows x cols cells on a device of size (width, height) pixels."""

    def __init__(self, rows: int, cols: int, size: tuple[int, int] | None = None,
                 font_path: Path = UNIFONT_PATH) -> None:
        if rows < 1 or cols < 1:
            raise ValueError(f"a display needs at least one row and one column, not {rows}x{cols}")
        self.rows, self.cols = rows, cols
        self.grid_size = (cols * CELL_W, rows * CELL_H)
        self.size = size or self.grid_size
        width, height = self.size
        self.scale = min(width // self.grid_size[0], height // self.grid_size[1])
        if self.scale < 1:
            raise ValueError(
                f"{rows} rows x {cols} columns need {self.grid_size[0]}x{self.grid_size[1]} pixels; "
                f"the device has {width}x{height}")
        scaled = (self.grid_size[0] * self.scale, self.grid_size[1] * self.scale)
        self.origin = ((width - scaled[0]) // 2, (height - scaled[1]) // 2)
        self._font_path = font_path
        _font(font_path)  # fail now, with the install hint, not on the first frame

    def paint(self, frame: Frame) -> Image.Image:
        """The frame as a mode "1" image of the device's size (255 = paper, 0 = ink)."""
        check_frame(frame, self.rows)
        grid = Image.new("1", self.grid_size, PAPER)
        for r, text in enumerate(frame.rows):
            self._draw_row(grid, r, text, inverse=r == frame.inverse_row)
        if frame.icons:
            self._draw_icons(grid, frame.icons, inverse=frame.inverse_row == 0)
        if self.size == self.grid_size:
            return grid
        if self.scale > 1:
            grid = grid.resize((self.grid_size[0] * self.scale, self.grid_size[1] * self.scale),
                               Image.Resampling.NEAREST)
        image = Image.new("1", self.size, PAPER)
        image.paste(grid, self.origin)
        return image

    def _draw_row(self, grid: Image.Image, r: int, text: str, *, inverse: bool) -> None:
        top = r * CELL_H
        if inverse:
            grid.paste(INK, (0, top, self.grid_size[0], top + CELL_H))
        ink = PAPER if inverse else INK
        x = 0
        for ch, cells in fit_row(text, self.cols):
            if not ch.isspace():
                grid.paste(ink, (x, top), _glyph(self._font_path, ch, cells))
            x += cells * CELL_W

    def _draw_icons(self, grid: Image.Image, icons: frozenset[Icon], *, inverse: bool) -> None:
        shown = [icon for icon in ICON_ORDER if icon in icons][-self.cols:]
        background, ink = (INK, PAPER) if inverse else (PAPER, INK)
        x = (self.cols - len(shown)) * CELL_W
        for icon in shown:
            grid.paste(background, (x, 0, x + CELL_W, CELL_H))
            grid.paste(ink, (x, ICON_TOP), icon_mask(icon))
            x += CELL_W
