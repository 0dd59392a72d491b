"""Benchmark of the receipt printer path: one representative sale receipt (Chinese and English,
masked PAN, amounts, a 384x96 logo) as bytes on the wire, line time at 115200 baud and render time,
for our text mode, our raster mode, and python-escpos used on its own as an integrator would.

Figures only, no assertions; `main()` returns them. Run: `.venv/bin/python tests/bench/bench_printer.py`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `import firmware` (and drivers, board, c_ext) from the repo root

from PIL import Image as PILImage  # noqa: E402
from PIL import ImageDraw  # noqa: E402

from board.sim.printer import EscPosDecoder  # noqa: E402
from drivers.printer.profiles import get_profile, import_escpos  # noqa: E402
from drivers.printer.render import render, unifont  # noqa: E402
from firmware.ports import Align, Block, Cut, Document, Feed, Image, TextLine, text_cells  # noqa: E402

BAUD = 115200
BITS_PER_BYTE = 10  # 8N1
PROFILE = "58mm"
RULE = "-" * 32


def logo() -> tuple[bytes, int, int]:
    """A 384x96 gray logo: a gradient band behind the merchant's name in a frame."""
    width, height = 384, 96
    picture = PILImage.new("L", (width, height), 255)
    draw = ImageDraw.Draw(picture)
    for x in range(width):
        draw.line([(x, 8), (x, 30)], fill=x * 255 // (width - 1))
    draw.rounded_rectangle([(40, 36), (344, 90)], radius=12, outline=0, width=4)
    draw.text((72, 50), "演示商户  DEMO", font=unifont(), fill=0)
    return picture.tobytes(), width, height


def receipt() -> Document:
    gray, width, height = logo()
    lines: list[Block] = [
        Image(gray, width, height),
        TextLine("演示商户", Align.CENTER, bold=True, double=True),
        TextLine("DEMO SHOP", Align.CENTER, bold=True),
        TextLine("商户存根 MERCHANT COPY", Align.CENTER),
        TextLine(RULE),
        TextLine("商户名称: 演示商户"),
        TextLine("商户编号: 898100012340001"),
        TextLine("终端编号: 10000001 操作员: 01"),
        TextLine("卡号 CARD NO.:"),
        TextLine("621483******1234 S", bold=True),
        TextLine("发卡行 ISSUER: 演示银行"),
        TextLine("交易类型 TYPE: 消费 SALE", bold=True),
        TextLine("有效期 EXP: 28/12"),
        TextLine("批次号 BATCH: 000001"),
        TextLine("凭证号 VOUCHER: 000123"),
        TextLine("授权码 AUTH: 123456"),
        TextLine("参考号 REF: 123456789012"),
        TextLine("日期时间: 2024-05-01 12:34:56"),
        TextLine(RULE),
        TextLine("金额 AMOUNT:", bold=True),
        TextLine("RMB 128.00", Align.RIGHT, bold=True, double=True),
        TextLine(RULE),
        TextLine("持卡人签名 CARDHOLDER SIGNATURE"),
        Feed(2),
        TextLine(RULE),
        TextLine("本人确认以上交易,同意将其记入"),
        TextLine("本卡账户"),
        TextLine("I ACKNOWLEDGE SATISFACTORY"),
        TextLine("RECEIPT OF RELATIVE GOODS"),
        Cut(),
    ]
    for block in lines:
        if isinstance(block, TextLine):
            cells = text_cells(block.text) * (2 if block.double else 1)
            assert cells <= 32, f"{block.text!r} is {cells} columns"
    return Document(blocks=tuple(lines), title="bench sale")


def escpos_alone(doc: Document) -> bytes:
    """The same receipt through python-escpos's own API: set/text/image/cut on a Dummy."""
    printer_module = import_escpos()
    printer = printer_module.Dummy(profile=get_profile(PROFILE).escpos_profile)
    printer.hw("INIT")
    for block in doc.blocks:
        if isinstance(block, TextLine):
            printer.set(align=block.align.value, bold=block.bold, double_width=block.double,
                        double_height=block.double, normal_textsize=not block.double)
            printer.text(block.text + "\n")
        elif isinstance(block, Image):
            picture = PILImage.frombytes("L", (block.width, block.height), block.gray)
            printer.image(picture, center=True)  # python-escpos dithers with PIL's convert("1")
        elif isinstance(block, Feed):
            printer.ln(block.lines)
        elif isinstance(block, Cut):
            printer.cut(mode="PART" if block.partial else "FULL")
    return bytes(printer.output)


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def decoded(data: bytes, *, chinese_by_default: bool = False) -> list[str]:
    decoder = EscPosDecoder(PROFILE, chinese_by_default=chinese_by_default)
    decoder.feed(data)
    return [line for slip in [*decoder.slips, decoder.current] for line in slip.lines]


def main() -> dict[str, Any]:
    doc = receipt()
    import_escpos()  # the first import (about 0.3 s) is not part of any render time
    cases: dict[str, Callable[[], bytes]] = {
        "text (ours)": lambda: b"".join(render(doc, PROFILE, mode="text")),
        "raster (ours)": lambda: b"".join(render(doc, PROFILE, mode="raster")),
        "python-escpos alone": lambda: escpos_alone(doc),
    }
    figures: dict[str, Any] = {}
    lines = sum(isinstance(b, TextLine) for b in doc.blocks)
    print(f"bench_printer: one sale receipt, {PROFILE} ({get_profile(PROFILE).dots} dots), {lines} text "
          f"lines + 384x96 logo; wire time at {BAUD} baud, {BITS_PER_BYTE} bits per byte")
    print(f"\n  {'case':<22}{'bytes':>9}{'line time ms':>15}{'render ms':>12}{'bytes vs text':>15}")
    text_bytes = len(cases["text (ours)"]())
    for name, make in cases.items():
        size = len(make())
        render_s = best_of(make, 5 if "raster" in name else 20)
        wire_s = size * BITS_PER_BYTE / BAUD
        figures[name] = {"bytes": size, "line_ms": wire_s * 1000, "render_ms": render_s * 1000}
        print(f"  {name:<22}{size:>9,}{wire_s * 1000:>15.1f}{render_s * 1000:>12.2f}"
              f"{size / text_bytes:>14.2f}x")

    # How each came out on the emulated printer (Epson-like: starts outside Chinese mode).
    ours = decoded(cases["text (ours)"]())
    theirs = decoded(cases["python-escpos alone"]())
    theirs_cn = decoded(cases["python-escpos alone"](), chinese_by_default=True)
    expected = [b.text for b in doc.blocks if isinstance(b, TextLine)]
    printed_ok = [line for line in expected if line in ours]
    figures["text_lines_read_back"] = f"{len(printed_ok)}/{len(expected)}"
    chinese_lines = [line for line in expected if not line.isascii()]
    figures["escpos_chinese_ok_strict"] = sum(line in theirs for line in chinese_lines)
    figures["escpos_chinese_ok_cn_default"] = sum(line in theirs_cn for line in chinese_lines)
    theirs_text = [line for line in theirs if line and not line.startswith("[image ")]
    sample = theirs_text[expected.index(chinese_lines[0])]
    escpos_raw = cases["python-escpos alone"]()
    figures["escpos_has_cut"] = b"\x1dV" in escpos_raw
    print(f"\n  our text mode read back by the emulator: {figures['text_lines_read_back']} lines exact")
    print(f"  python-escpos and Chinese: it sends any string with a CJK ideograph (U+4E00-9FA5) as raw "
          f"GB18030, without FS &;\n    on a printer that starts outside Chinese mode "
          f"{figures['escpos_chinese_ok_strict']}/{len(chinese_lines)} Chinese lines print right "
          f"(e.g. {sample!r} for {chinese_lines[0]!r}); on one set to "
          f"start in Chinese mode {figures['escpos_chinese_ok_cn_default']}/{len(chinese_lines)}.")
    print(f"  python-escpos cut with its '{get_profile(PROFILE).escpos_profile}' profile: "
          f"{'GS V sent' if figures['escpos_has_cut'] else 'no GS V (the profile has no cutter): feed only'}")

    from results import emit  # the recorder beside this script: run_all collects what it emits
    peer = figures["python-escpos alone"]
    for case, slug in (("text (ours)", "text"), ("raster (ours)", "raster")):
        f = figures[case]
        for key, unit in (("bytes", "B"), ("line_ms", "ms"), ("render_ms", "ms")):
            emit(f"receipt_{slug}_{key}", f[key], unit, group="bench_printer",
                 floor={"name": f"python-escpos alone {key}", "value": peer[key], "unit": unit},
                 ratio=f[key] / peer[key] if peer[key] else None,
                 note=f"one sale receipt, {PROFILE}, line time at {BAUD} baud; ratio: ours / python-escpos"
                 + (f"; {figures['text_lines_read_back']} lines read back exact" if slug == "text" else ""))
    return figures


if __name__ == "__main__":
    main()
