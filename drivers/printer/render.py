"""Document -> ESC/POS bytes for one copy, in text mode (printer fonts, GB18030 for Chinese) or raster
mode (the whole slip drawn with GNU Unifont and sent as GS v 0 bands); plus the DLE EOT status
query and its reply parser. The home of the ESC/POS bytes python-escpos does not produce.

python-escpos generates every style, feed, cut and init command (printed to an escpos Dummy);
c_ext.posio does the dithering and band packing. Nothing here does I/O.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from c_ext import posio
from firmware.ports import Align, Block, Cut, Document, Feed, Image, PrinterStatus, TextLine, char_cells

from .profiles import LINE_PITCH, PrinterProfile, get_profile, import_escpos

if TYPE_CHECKING:  # Pillow is imported where pictures are drawn: a text-mode terminal never loads it
    from PIL import Image as PILImage
    from PIL import ImageFont

RenderMode = Literal["text", "raster"]
MODES: tuple[str, ...] = ("text", "raster")

UNIFONT_PATH = "/usr/share/fonts/opentype/unifont/unifont.otf"

# ---- the ESC/POS bytes python-escpos has no command for -------------------------------------
# Chinese character mode of Chinese thermal printers: double-byte text in GB18030 until FS . ;
# single bytes below 0x80 stay ASCII, so a mixed line needs no switching inside it.
FS_CHINESE_ON = b"\x1c\x26"  # FS &
FS_CHINESE_OFF = b"\x1c\x2e"  # FS .
TEXT_ENCODING_CHINESE = "gb18030"

# DLE EOT n real-time status (Epson ESC/POS). Every reply byte has fixed bits: bit0 = 0, bit1 = 1,
# bit4 = 1, bit7 = 0; anything else is not a status byte.
DLE_EOT = b"\x10\x04"
STATUS_PRINTER = 1
STATUS_OFFLINE_CAUSE = 2
STATUS_ERROR_CAUSE = 3
STATUS_ROLL_SENSOR = 4
STATUS_QUERIES = (STATUS_PRINTER, STATUS_OFFLINE_CAUSE, STATUS_ROLL_SENSOR)  # what status() asks
STATUS_FIXED_MASK = 0x93
STATUS_FIXED_BITS = 0x12
PRINTER_OFFLINE = 0x08  # n=1 bit3
OFFLINE_COVER_OPEN = 0x04  # n=2 bit2
OFFLINE_PAPER_END_STOP = 0x20  # n=2 bit5: printing stopped at the paper end
ROLL_NEAR_END = 0x0C  # n=4 bits 2-3
ROLL_PAPER_OUT = 0x60  # n=4 bits 5-6


class StatusByteError(ValueError):
    """A byte read as a DLE EOT reply is not one (fixed bits wrong): line noise or another protocol."""


def status_query(n: int) -> bytes:
    """DLE EOT n: the real-time status request (n = 1 printer, 2 offline cause, 3 error, 4 roll)."""
    if n not in (1, 2, 3, 4):
        raise ValueError(f"DLE EOT takes n = 1, 2, 3 or 4, not {n!r}")
    return DLE_EOT + bytes((n,))


def parse_status(n: int, byte: int) -> PrinterStatus:
    """The PrinterStatus fragment one DLE EOT n reply says; merge the fragments with merge_status().

    Fields a reply says nothing about keep their healthy default, so merging is "all online,
    any problem". Raises StatusByteError if the fixed bits are wrong.
    """
    if not 0 <= byte <= 0xFF:
        raise StatusByteError(f"status reply must be one byte, got {byte!r}")
    if byte & STATUS_FIXED_MASK != STATUS_FIXED_BITS:
        raise StatusByteError(
            f"0x{byte:02X} is not a reply to DLE EOT {n}: a status byte has bit0=0, bit1=1, bit4=1, "
            f"bit7=0 (line noise, wrong baud rate, or not an ESC/POS printer)")
    if n == STATUS_PRINTER:
        return PrinterStatus(online=not byte & PRINTER_OFFLINE)
    if n == STATUS_OFFLINE_CAUSE:
        return PrinterStatus(cover_open=bool(byte & OFFLINE_COVER_OPEN),
                             paper_out=bool(byte & OFFLINE_PAPER_END_STOP))
    if n == STATUS_ROLL_SENSOR:
        return PrinterStatus(paper_near_end=bool(byte & ROLL_NEAR_END),
                             paper_out=bool(byte & ROLL_PAPER_OUT))
    if n == STATUS_ERROR_CAUSE:
        return PrinterStatus()  # cutter / unrecoverable errors: nothing PrinterStatus can say
    raise ValueError(f"DLE EOT takes n = 1, 2, 3 or 4, not {n!r}")


def merge_status(parts: Iterable[PrinterStatus]) -> PrinterStatus:
    parts = list(parts)
    return PrinterStatus(
        online=all(p.online for p in parts),
        paper_out=any(p.paper_out for p in parts),
        cover_open=any(p.cover_open for p in parts),
        paper_near_end=any(p.paper_near_end for p in parts),
    )


# ---- python-escpos as the command generator -------------------------------------------------


# Our density setting (1 light .. 4 normal .. 8 dark, in 12.5% steps) -> python-escpos's key.
_ESCPOS_DENSITY = {1: 1, 2: 2, 3: 3, 4: 4, 5: 8, 6: 7, 7: 6, 8: 5}


class _EscposCommands:
    """python-escpos printing into a Dummy: each call returns the bytes that call produced."""

    def __init__(self, profile: PrinterProfile) -> None:
        printer_module = import_escpos()
        self._dummy = printer_module.Dummy()
        # Dummy(profile=...) only takes a name; ours carries overrides, so it is set afterwards.
        self._dummy.profile = profile.escpos_capabilities()

    def _take(self, call: Callable[[Any], None]) -> bytes:
        self._dummy.clear()
        call(self._dummy)
        return bytes(self._dummy.output)

    def init(self) -> bytes:
        return self._take(lambda p: p.hw("INIT"))

    def density(self, level: int) -> bytes:
        """GS | n through set(density=): our 1..8 scale (4 normal) onto python-escpos's 0..8,
        whose keys run -50% .. 0% (0..4) and then +50% .. +12.5% (5..8)."""
        if level not in _ESCPOS_DENSITY:
            raise ValueError(f"print density {level} is outside 1..8")
        return self._take(lambda p: p.set(density=_ESCPOS_DENSITY[level]))

    def line_feed(self) -> bytes:
        return self._take(lambda p: p.control("LF"))

    def feed(self, lines: int) -> bytes:
        return self._take(lambda p: p.print_and_feed(lines))

    def cut(self, partial: bool) -> bytes:
        return self._take(lambda p: p.cut(mode="PART" if partial else "FULL"))

    def style(self, *, align: Align | None, bold: bool | None, double: bool | None) -> bytes:
        # GS ! (custom size) rather than ESC !: ESC ! scales only the single-byte font, so Chinese
        # glyphs would stay normal size on a double line. GS ! is sent before ESC E, as set() does.
        size: dict[str, Any] = {}
        if double is not None:
            factor = 2 if double else 1
            size = {"custom_size": True, "width": factor, "height": factor}
        return self._take(lambda p: p.set(align=None if align is None else align.value,
                                          bold=bold, **size))


@dataclass
class _TextState:
    """What the printer has been told since ESC @ (its power-on defaults)."""

    align: Align = Align.LEFT
    bold: bool = False
    double: bool = False


# ---- checks shared by both modes -------------------------------------------------------------


def _check_line(index: int, line: TextLine, profile: PrinterProfile) -> None:
    """Rejects what would print wrong: control characters (they would be commands) and overlong lines.

    Words only, never the text: a receipt line may hold a masked PAN or a name.
    """
    for ch in line.text:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValueError(f"block {index}: text line holds control character U+{ord(ch):04X}; "
                             "a printed line must be plain text")
    cells = sum(char_cells(ch) for ch in line.text) * (2 if line.double else 1)
    if cells > profile.columns:
        raise ValueError(f"block {index}: text line needs {cells} columns, the {profile.name} paper "
                         f"has {profile.columns}; the layout must fit it")


def _image_rows(index: int, image: Image, profile: PrinterProfile) -> bytes:
    """The image as packed 1-bit rows the full paper width, centred by whole bytes (8 dots = 1 mm).

    Full-width rows keep the picture where it belongs whatever ESC a alignment the printer holds.
    """
    if image.width > profile.dots:
        raise ValueError(f"block {index}: image is {image.width} dots wide, the {profile.name} paper "
                         f"prints {profile.dots}")
    if len(image.gray) != image.width * image.height:
        raise ValueError(f"block {index}: image gray data is {len(image.gray)} bytes, "
                         f"{image.width}x{image.height} needs {image.width * image.height}")
    if image.width == 0 or image.height == 0:
        return b""
    if image.dither:
        packed = posio.floyd_steinberg(image.gray, image.width, image.height)
    else:
        packed = posio.threshold(image.gray, image.width, image.height)
    stride = (image.width + 7) // 8
    left = (profile.dots - image.width) // 2 // 8
    right = profile.row_bytes - left - stride
    pad_left, pad_right = bytes(left), bytes(right)
    return b"".join(pad_left + packed[y * stride:(y + 1) * stride] + pad_right
                    for y in range(image.height))


def _trailing_cut(blocks: Sequence[Block]) -> tuple[Block, ...]:
    """Every copy ends with a cut, so the slip comes off whatever the layout sent."""
    if blocks and isinstance(blocks[-1], Cut):
        return tuple(blocks)
    return (*blocks, Cut(partial=True))


# ---- text mode ---------------------------------------------------------------------------------


def _render_text(doc: Document, profile: PrinterProfile) -> list[bytes]:
    commands = _EscposCommands(profile)
    state = _TextState()
    chunks = [commands.init()]
    if doc.density is not None:
        chunks.append(commands.density(doc.density))
    line_feed = commands.line_feed()
    for index, block in enumerate(_trailing_cut(doc.blocks)):
        if isinstance(block, TextLine):
            _check_line(index, block, profile)
            chunks.append(_text_line(block, state, commands) + line_feed)
        elif isinstance(block, Image):
            rows = _image_rows(index, block, profile)
            chunks.extend(posio.raster_bands(rows, profile.dots, block.height, profile.band_height))
        elif isinstance(block, Feed):
            chunks.extend(_feeds(index, block, commands))
        elif isinstance(block, Cut):
            chunks.append(commands.cut(block.partial))
        else:
            raise TypeError(f"block {index}: {type(block).__name__} is not a printable block")
    return chunks


def _text_line(line: TextLine, state: _TextState, commands: _EscposCommands) -> bytes:
    size_changes = line.double != state.double
    style = commands.style(
        align=line.align if line.align != state.align else None,
        # A size command leaves emphasis alone on most printers but not all: say it again then.
        bold=line.bold if size_changes or line.bold != state.bold else None,
        double=line.double if size_changes else None,
    )
    state.align, state.bold, state.double = line.align, line.bold, line.double
    if line.text.isascii():
        return style + line.text.encode("ascii")
    return style + FS_CHINESE_ON + line.text.encode(TEXT_ENCODING_CHINESE) + FS_CHINESE_OFF


def _feeds(index: int, feed: Feed, commands: _EscposCommands) -> list[bytes]:
    if feed.lines < 0:
        raise ValueError(f"block {index}: cannot feed {feed.lines} lines")
    remaining, chunks = feed.lines, []
    while remaining > 0:  # ESC d n takes at most 255
        step = min(remaining, 255)
        chunks.append(commands.feed(step))
        remaining -= step
    return chunks


# ---- raster mode -------------------------------------------------------------------------------


# Unifont is a 16-dot bitmap font: drawn at 24 px, some of its rows fell between dots (the tops
# of Chinese glyphs went missing) and a CJK glyph filled the whole 24-dot line, so lines touched.
# It is drawn at its own 16 px, every dot kept, then scaled up to the printer's 12-dot cell
# (8 -> 12 across) and 20 of the line's 24 dots (16 -> 20 down, rows only repeated, never
# dropped), leaving LINE_GAP blank dots above and below: the printed line pitch is unchanged.
GLYPH_PX = 16
GLYPH_ROWS = 20
LINE_GAP = (LINE_PITCH - GLYPH_ROWS) // 2


@cache
def unifont(size: int = LINE_PITCH) -> ImageFont.FreeTypeFont:
    """GNU Unifont at `size` px: at 16 px (GLYPH_PX) a half-width glyph is 8x16, a CJK one 16x16."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype(UNIFONT_PATH, size)
    except OSError as exc:
        raise OSError(f"GNU Unifont not found at {UNIFONT_PATH} ({exc}): install the Debian package "
                      "fonts-unifont") from exc


def text_image(text: str, *, bold: bool = False, width_mult: int = 1, height_mult: int = 1) -> PILImage.Image:
    """One line of text as an 8-bit image (0 black on 255 white), 12x24 dots per half-width cell
    times the multipliers, the glyphs LINE_GAP dots clear of the line's top and bottom. Bold is the
    printer's way: the line struck again one dot to the right."""
    from PIL import Image as PILImage
    from PIL import ImageChops, ImageDraw

    font = unifont(GLYPH_PX)
    width = round(font.getlength(text)) if text else 0
    glyphs = PILImage.new("L", (max(width, 1), GLYPH_PX), 255)
    draw = ImageDraw.Draw(glyphs)
    draw.fontmode = "1"  # thermal dots are on or off: no anti-aliasing to threshold away
    if text:
        draw.text((0, 0), text, font=font, fill=0)
    cells = glyphs.resize((max(width * 3 // 2, 1), GLYPH_ROWS), PILImage.Resampling.NEAREST)
    if bold:
        struck = PILImage.new("L", cells.size, 255)
        struck.paste(cells, (1, 0))
        cells = ImageChops.darker(cells, struck)
    line = PILImage.new("L", (cells.width, LINE_PITCH), 255)
    line.paste(cells, (0, LINE_GAP))
    if width_mult != 1 or height_mult != 1:
        line = line.resize((line.width * width_mult, LINE_PITCH * height_mult), PILImage.Resampling.NEAREST)
    return line


_INVERT = bytes(255 - b for b in range(256))


def packed_to_image(packed: bytes, width: int, height: int) -> PILImage.Image:
    """Packed 1-bit rows (1 = black, MSB leftmost) as an 8-bit image (0 black, 255 white)."""
    from PIL import Image as PILImage

    # PIL's "1" mode packs the same way but with 1 = white.
    return PILImage.frombytes("1", (width, height), packed.translate(_INVERT)).convert("L")


def _aligned_x(align: Align, width: int, paper: int) -> int:
    if align is Align.CENTER:
        return max((paper - width) // 2, 0)
    if align is Align.RIGHT:
        return max(paper - width, 0)
    return 0


def _draw_page(index0: int, blocks: Sequence[Block], profile: PrinterProfile) -> PILImage.Image:
    from PIL import Image as PILImage

    parts: list[tuple[int, PILImage.Image | int]] = []  # (x, picture) or (0, blank rows)
    for offset, block in enumerate(blocks):
        index = index0 + offset
        if isinstance(block, TextLine):
            _check_line(index, block, profile)
            mult = 2 if block.double else 1
            line = text_image(block.text, bold=block.bold, width_mult=mult, height_mult=mult)
            parts.append((_aligned_x(block.align, line.width, profile.dots), line))
        elif isinstance(block, Image):
            rows = _image_rows(index, block, profile)
            if rows:
                parts.append((0, packed_to_image(rows, profile.dots, block.height)))
        elif isinstance(block, Feed):
            if block.lines < 0:
                raise ValueError(f"block {index}: cannot feed {block.lines} lines")
            parts.append((0, block.lines * LINE_PITCH))
        else:
            raise TypeError(f"block {index}: {type(block).__name__} is not a printable block")
    height = sum(p.height if isinstance(p, PILImage.Image) else p for _, p in parts)
    page = PILImage.new("L", (profile.dots, height), 255)
    y = 0
    for x, part in parts:
        if isinstance(part, int):
            y += part
            continue
        page.paste(part.crop((0, 0, min(part.width, profile.dots - x), part.height)), (x, y))
        y += part.height
    return page


def _render_raster(doc: Document, profile: PrinterProfile) -> list[bytes]:
    commands = _EscposCommands(profile)
    chunks = [commands.init()]
    if doc.density is not None:
        chunks.append(commands.density(doc.density))
    segment: list[Block] = []
    start = 0
    for index, block in enumerate(_trailing_cut(doc.blocks)):
        if not isinstance(block, Cut):
            segment.append(block)
            continue
        page = _draw_page(start, segment, profile)
        if page.height:
            packed = posio.threshold(page.tobytes(), page.width, page.height)
            chunks.extend(posio.raster_bands(packed, page.width, page.height, profile.band_height))
        chunks.append(commands.cut(block.partial))
        segment, start = [], index + 1
    return chunks


# ---- entry ---------------------------------------------------------------------------------------


def render(doc: Document, profile: str | PrinterProfile, *, mode: RenderMode = "text") -> list[bytes]:
    """ESC/POS chunks for one copy: ESC @ first, then one chunk per printed line, feed or raster
    band, and a cut last (added if the document does not end with one).

    Raises ValueError in words (naming the block, never its text) for what cannot print right.
    """
    printer = get_profile(profile)
    if mode == "text":
        return _render_text(doc, printer)
    if mode == "raster":
        return _render_raster(doc, printer)
    raise ValueError(f"unknown render mode {mode!r}; use one of {', '.join(MODES)}")
