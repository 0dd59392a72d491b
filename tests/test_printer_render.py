"""drivers.printer.render and profiles: exact ESC/POS bytes for text mode, the raster page, image
centring, the DLE EOT parser against the Epson bit table, and the clear errors for bad documents."""

from __future__ import annotations

import logging

import pytest

from c_ext import posio
from drivers.printer.profiles import LINE_PITCH, PROFILES, get_profile, import_escpos
from drivers.printer.render import (
    GLYPH_PX,
    GLYPH_ROWS,
    LINE_GAP,
    StatusByteError,
    merge_status,
    packed_to_image,
    parse_status,
    render,
    status_query,
    text_image,
    unifont,
)
from firmware.ports import Align, Cut, Document, Feed, Image, PrinterStatus, TextLine

ESC_INIT = b"\x1b@"


def gradient(width: int, height: int) -> bytes:
    return bytes((x * 255 // max(width - 1, 1) + y) % 256 for y in range(height) for x in range(width))


def unband(chunks: list[bytes]) -> tuple[int, bytes]:
    """(rows, packed) of consecutive GS v 0 chunks, checking each header."""
    rows, packed = 0, b""
    for chunk in chunks:
        assert chunk[:4] == b"\x1dv0\x00"
        x, y = chunk[4] | chunk[5] << 8, chunk[6] | chunk[7] << 8
        assert len(chunk) == 8 + x * y
        rows += y
        packed += chunk[8:]
    return rows, packed


# ---- profiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "columns", "dots"), [("58mm", 32, 384), ("80mm", 48, 576)])
def test_profiles_font_a_fills_the_paper(name: str, columns: int, dots: int) -> None:
    profile = get_profile(name)
    assert (profile.columns, profile.dots) == (columns, dots)
    assert profile.columns * 12 == profile.dots
    capabilities = profile.escpos_capabilities()
    assert capabilities.supports("paperPartCut") and capabilities.supports("paperFullCut")
    assert int(capabilities.profile_data["media"]["width"]["pixels"]) == dots


def test_capability_override_does_not_leak_into_the_shared_escpos_profile() -> None:
    get_profile("58mm").escpos_capabilities()
    from escpos.capabilities import get_profile_class  # type: ignore[import-untyped]

    assert not get_profile_class(PROFILES["58mm"].escpos_profile)().supports("paperFullCut")


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="58mm, 58mm-tear, 80mm"):
        get_profile("110mm")


def test_escpos_import_leaves_the_root_logger_alone() -> None:
    before = list(logging.getLogger().handlers)
    import_escpos()
    assert logging.getLogger().handlers == before


# ---- status ---------------------------------------------------------------------------------------


def test_status_query_bytes() -> None:
    assert [status_query(n) for n in (1, 2, 3, 4)] == [b"\x10\x04\x01", b"\x10\x04\x02", b"\x10\x04\x03",
                                                        b"\x10\x04\x04"]
    with pytest.raises(ValueError):
        status_query(5)


# Epson ESC/POS DLE EOT tables: 0x12 is "all clear" for every n.
STATUS_VECTORS = [
    (1, 0x12, PrinterStatus()),
    (1, 0x1A, PrinterStatus(online=False)),
    (1, 0x16, PrinterStatus()),  # bit2: drawer pin, not our business
    (2, 0x12, PrinterStatus()),
    (2, 0x16, PrinterStatus(cover_open=True)),
    (2, 0x32, PrinterStatus(paper_out=True)),
    (2, 0x36, PrinterStatus(cover_open=True, paper_out=True)),
    (4, 0x12, PrinterStatus()),
    (4, 0x1E, PrinterStatus(paper_near_end=True)),
    (4, 0x72, PrinterStatus(paper_out=True)),
    (4, 0x7E, PrinterStatus(paper_out=True, paper_near_end=True)),
]


@pytest.mark.parametrize(("n", "byte", "expected"), STATUS_VECTORS)
def test_parse_status_vectors(n: int, byte: int, expected: PrinterStatus) -> None:
    assert parse_status(n, byte) == expected


@pytest.mark.parametrize("byte", [0x00, 0xFF, 0x13, 0x92, 0x02, 0x10, 0x0A])
def test_parse_status_rejects_bytes_with_wrong_fixed_bits(byte: int) -> None:
    with pytest.raises(StatusByteError, match=f"0x{byte:02X} is not a reply to DLE EOT 1"):
        parse_status(1, byte)


def test_merge_status_is_all_online_any_problem() -> None:
    merged = merge_status([parse_status(1, 0x1A), parse_status(2, 0x16), parse_status(4, 0x1E)])
    assert merged == PrinterStatus(online=False, cover_open=True, paper_near_end=True)
    assert merged.problem == "printer_cover_open"
    assert merge_status([parse_status(n, 0x12) for n in (1, 2, 4)]).ready


# ---- text mode -------------------------------------------------------------------------------------


def test_text_mode_exact_bytes() -> None:
    doc = Document(blocks=(
        TextLine("SHOP", Align.CENTER, bold=True, double=True),
        TextLine("Total 1.00", Align.RIGHT),
        TextLine("收银 OK"),
        Feed(3),
        Cut(partial=False),
    ))
    assert render(doc, "58mm") == [
        ESC_INIT,
        b"\x1d!\x11" b"\x1bE\x01" b"\x1ba\x01" b"SHOP\n",  # GS ! 2x2, bold, centre
        b"\x1d!\x00" b"\x1bE\x00" b"\x1ba\x02" b"Total 1.00\n",  # size back, bold said again, right
        b"\x1ba\x00" b"\x1c&" b"\xca\xd5\xd2\xf8 OK" b"\x1c.\n",  # Chinese mode around GB18030
        b"\x1bd\x03",
        b"\x1bd\x06\x1dV\x00",  # python-escpos cut(): feed 6, full cut
    ]


def test_unchanged_style_sends_no_style_bytes_and_a_cut_is_added() -> None:
    doc = Document(blocks=(TextLine("a", bold=True), TextLine("b", bold=True), TextLine("")))
    assert render(doc, "80mm") == [ESC_INIT, b"\x1bE\x01a\n", b"b\n", b"\x1bE\x00\n", b"\x1bd\x06\x1dV\x01"]


def test_gb18030_reaches_beyond_gb2312() -> None:
    (_, line, _) = render(Document(blocks=(TextLine("€ 5 䶮"),)), "58mm")
    assert line == b"\x1c&" + "€ 5 䶮".encode("gb18030") + b"\x1c.\n"
    assert "€ 5 䶮".encode("gb18030").decode("gb18030") == "€ 5 䶮"


def test_long_feed_is_split_at_255() -> None:
    chunks = render(Document(blocks=(Feed(300), Cut())), "58mm")
    assert chunks[1:3] == [b"\x1bd\xff", b"\x1bd\x2d"]


@pytest.mark.parametrize("dither", [True, False])
def test_image_is_centred_full_width_bands(dither: bool) -> None:
    width, height = 64, 30
    gray = gradient(width, height)
    chunks = render(Document(blocks=(Image(gray, width, height, dither=dither), Cut())), "58mm")
    bands = chunks[1:-1]
    assert [b[6] for b in bands] == [24, 6]  # the profile's band height
    rows, packed = unband(bands)
    assert rows == height
    expected = (posio.floyd_steinberg if dither else posio.threshold)(gray, width, height)
    left = (384 - width) // 2 // 8  # 20 bytes: centred by whole bytes
    for y in range(height):
        row = packed[y * 48:(y + 1) * 48]
        assert row[:left] == bytes(left)
        assert row[left:left + 8] == expected[y * 8:(y + 1) * 8]
        assert row[left + 8:] == bytes(48 - left - 8)


def test_odd_width_image_on_80mm() -> None:
    width, height = 101, 5
    chunks = render(Document(blocks=(Image(gradient(width, height), width, height),)), "80mm")
    rows, packed = unband(chunks[1:-1])
    assert (rows, len(packed)) == (5, 5 * 72)


# ---- bad documents: clear errors, no text in them -------------------------------------------------


@pytest.mark.parametrize(("block", "words"), [
    (TextLine("621483******1234\x1b@"), "block 0: text line holds control character U\\+001B"),
    (TextLine("a\nb"), "control character U\\+000A"),
    (TextLine("x" * 33), "needs 33 columns, the 58mm paper has 32"),
    (TextLine("中" * 9, double=True), "needs 36 columns"),
    (Image(bytes(385), 385, 1), "385 dots wide, the 58mm paper prints 384"),
    (Image(bytes(10), 4, 4), "10 bytes, 4x4 needs 16"),
    (Feed(-1), "cannot feed -1 lines"),
])
@pytest.mark.parametrize("mode", ["text", "raster"])
def test_bad_blocks_are_refused_in_words(block: object, words: str, mode: str) -> None:
    with pytest.raises(ValueError, match=words) as info:
        render(Document(blocks=(block,)), "58mm", mode=mode)  # type: ignore[arg-type]
    assert "621483" not in str(info.value)


def test_unknown_mode_and_block() -> None:
    with pytest.raises(ValueError, match="unknown render mode 'pdf'"):
        render(Document(blocks=()), "58mm", mode="pdf")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="block 0: str is not a printable block"):
        render(Document(blocks=("hello",)), "58mm")  # type: ignore[arg-type]


# ---- raster mode -------------------------------------------------------------------------------------


def test_raster_mode_draws_the_page_with_unifont() -> None:
    image = Image(gradient(40, 10), 40, 10)
    doc = Document(blocks=(TextLine("商户 SHOP", Align.CENTER, double=True), TextLine("Hello", bold=True),
                           Feed(1), image))
    chunks = render(doc, "58mm", mode="raster")
    assert chunks[0] == ESC_INIT and chunks[-1] == b"\x1bd\x06\x1dV\x01"
    bands = chunks[1:-1]
    assert all(b[4:6] == b"\x30\x00" and b[6] <= 24 for b in bands)  # 48 bytes wide, <= 24 rows
    rows, packed = unband(bands)
    assert rows == 48 + 24 + 24 + 10
    page = packed_to_image(packed, 384, rows)
    # The bold line is Unifont struck twice, at the left edge.
    hello = text_image("Hello", bold=True)
    drawn = page.crop((0, 48, hello.width, 72)).tobytes()
    assert drawn == hello.point(lambda v: 0 if v < 128 else 255).tobytes()
    # The double line is centred: 6 cells of 2x2 -> 12 columns * 24 = 288 dots, 48 dots each side.
    double_box = page.crop((0, 0, 384, 48)).point(lambda v: 255 - v).getbbox()
    assert double_box is not None and double_box[0] >= 48 and double_box[2] <= 336
    # The feed is blank; the image bits are the same as text mode sends.
    assert page.crop((0, 72, 384, 96)).getextrema() == (255, 255)
    text_rows = unband(render(Document(blocks=(image,)), "58mm")[1:-1])[1]
    assert packed[96 * 48:] == text_rows


# Issue 13 A15: Chinese lines touched and the tops of their glyphs looked cut.
GAP_TEXT = ("终端编号(TERMINAL NO.)", "操作员号 三二一 Ag")


def _ink_rows(page, top: int, height: int) -> list[bool]:
    return [any(page.getpixel((x, y)) < 128 for x in range(page.width)) for y in range(top, top + height)]


def _native(ch: str):
    """The glyph as Unifont draws it at its own 16 dots (every dot it has)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    glyph = PILImage.new("L", (16, 16), 255)
    draw = ImageDraw.Draw(glyph)
    draw.fontmode = "1"
    draw.text((0, 0), ch, font=unifont(GLYPH_PX), fill=0)
    return glyph


def test_raster_lines_keep_blank_dots_between_them() -> None:
    doc = Document(blocks=tuple(TextLine(text) for text in GAP_TEXT))
    rows, packed = unband(render(doc, "58mm", mode="raster")[1:-1])
    assert rows == 2 * LINE_PITCH  # the line pitch is unchanged
    page = packed_to_image(packed, 384, rows)
    for top in (0, LINE_PITCH):
        ink = _ink_rows(page, top, LINE_PITCH)
        assert LINE_GAP >= 2 and not any(ink[:LINE_GAP]) and not any(ink[-LINE_GAP:])
        assert ink[LINE_GAP]  # the glyphs start right below the gap: nothing above it


@pytest.mark.parametrize("ch", "终端编号操作员三二一商户凭证参考")
def test_every_dot_row_of_a_chinese_glyph_is_printed(ch: str) -> None:
    """Read back at Unifont's 16 dots, the printed 24x24 cell is the glyph, dot for dot."""
    line = text_image(ch)
    assert line.size == (24, LINE_PITCH)
    cols, rows = _first_copy(16, 24), _first_copy(16, GLYPH_ROWS)
    back = [[line.getpixel((cols[col], LINE_GAP + rows[row])) < 128 for col in range(16)]
            for row in range(16)]
    glyph = _native(ch)
    assert back == [[glyph.getpixel((col, row)) < 128 for col in range(16)] for row in range(16)]


def _first_copy(source: int, target: int) -> list[int]:
    """Where each of `source` dots first lands when scaled to `target` dots (nearest neighbour),
    found by scaling a ruler; every source dot must land somewhere (none dropped)."""
    from PIL import Image as PILImage

    ruler = PILImage.frombytes("L", (source, 1), bytes(i * 8 for i in range(source)))
    scaled = ruler.resize((target, 1), PILImage.Resampling.NEAREST)
    landed = [scaled.getpixel((x, 0)) for x in range(target)]
    return [landed.index(i * 8) for i in range(source)]


def test_raster_mode_cuts_between_segments() -> None:
    doc = Document(blocks=(TextLine("one"), Cut(), TextLine("two"), Cut(partial=False)))
    chunks = render(doc, "58mm", mode="raster")
    assert [c[:3] for c in chunks] == [ESC_INIT, b"\x1dv0", b"\x1bd\x06", b"\x1dv0", b"\x1bd\x06"]
    assert chunks[2].endswith(b"\x1dV\x01") and chunks[4].endswith(b"\x1dV\x00")
