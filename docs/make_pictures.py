"""Makes the README pictures from the real code paths: a Chinese sale receipt laid out by
firmware/printing, rendered to ESC/POS by the printer driver and decoded by the emulated
printer; the main LCD screens driven through the real screen machine (firmware/ui) and drawn
by the capture display backend, in both languages and both LCD sizes.

Run: `.venv/bin/python docs/make_pictures.py` (writes docs/img/*.png).
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from board.sim.printer import EscPosDecoder  # noqa: E402
from drivers.display.capture import CaptureDisplay  # noqa: E402
from drivers.printer.profiles import get_profile  # noqa: E402
from drivers.printer.render import render  # noqa: E402
from firmware.engine.model import TxnRecord  # noqa: E402
from firmware.engine.states import TxnState  # noqa: E402
from firmware.host.messages import TxnKind  # noqa: E402
from firmware.ports import Key  # noqa: E402
from firmware.printing import layout  # noqa: E402
from firmware.settings.model import factory  # noqa: E402
from firmware.ui import core as ui  # noqa: E402

OUT = ROOT / "docs" / "img"


def receipt(lang: str, name: str) -> None:
    settings = factory()
    settings["merchant"]["name"] = "示范商户 DEMO SHOP" if lang == "zh_CN" else "DEMO MERCHANT"
    record = TxnRecord(
        id=1, kind=TxnKind.SALE, state=TxnState.APPROVED, stan="000123", batch="000001",
        invoice="000045", amount=12345, currency="156", pan_masked="622588******0001",
        foreign=False, entry_mode="swipe", pin_entered=True, operator="01", local_date="1122",
        local_time="143015", created_at=time.mktime((2026, 11, 22, 14, 30, 15, 0, 0, -1)),
        rrn="263260000123", auth_code="351493", card_org="CUP", response_code="00",
    )
    doc = layout.receipt(record, layout.CopyKind.CARDHOLDER, layout.MerchantInfo.from_settings(settings),
                         lang=lang, columns=32)
    decoder = EscPosDecoder("58mm")
    for chunk in render(doc, get_profile("58mm")):
        decoder.feed(chunk)
    decoder.slips[-1].save_png(OUT / name)


def context(lang: str, rows: int = 4, cols: int = 16, mono: float = 0.0) -> ui.UiContext:
    settings = factory()
    settings["display"]["language"] = lang
    return ui.UiContext(now=datetime(2026, 11, 22, 14, 30), mono=mono, rows=rows, cols=cols, lang=lang,
                        merchant_name="DEMO MERCHANT" if lang == "en" else "示范商户",
                        tid="12345678", signed_on=True, link_up=True, paper="ok", settings=settings)


def screens() -> None:
    """The main screens, driven through the real screen machine and drawn by the capture backend."""
    from firmware.ui.machine import build_ui

    def shot(machine: ui.Ui, ctx: ui.UiContext, name: str) -> None:
        lcd = CaptureDisplay(ctx.rows, ctx.cols)
        lcd.show(machine.frame(ctx))
        # Twice the LCD's pixel size, pixel for pixel, so the README shows it legibly.
        image = lcd.image
        image.resize((image.width * 2, image.height * 2), resample=0).save(OUT / name, format="PNG")

    def keys(machine: ui.Ui, ctx: ui.UiContext, *names: str) -> None:
        for name in names:
            for key in ([Key(ch) for ch in name] if name.isdigit() else [Key[name]]):
                machine.feed(ui.KeyIn(key), ctx)

    for lang, tag in (("en", "en"), ("zh_CN", "zh")):
        ctx = context(lang)
        m = build_ui()
        shot(m, ctx, f"lcd-idle-{tag}.png")
        keys(m, ctx, "MENU")
        shot(m, ctx, f"lcd-menu-{tag}.png")
        m = build_ui()
        keys(m, ctx, "12345")
        shot(m, ctx, f"lcd-amount-{tag}.png")
        keys(m, ctx, "ENTER", "ENTER")
        m.feed(ui.OpStep("card"), ctx)
        shot(m, ctx, f"lcd-swipe-{tag}.png")
        m.feed(ui.PinWanted("622588******0001", 12345, bypass_allowed=False), ctx)
        keys(m, ctx, "1234")
        shot(m, ctx, f"lcd-pin-{tag}.png")
        m.feed(ui.OpDone(ui.OpOutcome("sale", "approved", "00", amount=12345,
                                      pan_masked="622588******0001", auth_code="351493",
                                      voucher="000123")), ctx)
        shot(m, ctx, f"lcd-approved-{tag}.png")
    m = build_ui()
    ctx = context("en")
    keys(m, ctx, "F2", "246810", "ENTER")
    m.feed(ui.PasswordChecked(False), ctx)
    shot(m, ctx, "lcd-password-wrong-en.png")
    m = build_ui()
    m.feed(ui.OpDone(ui.OpOutcome("sale", "failed", "host_unreachable")), ctx)
    shot(m, ctx, "lcd-host-unreachable-en.png")
    big = context("zh_CN", rows=8, cols=21)
    m = build_ui()
    shot(m, big, "lcd-idle-8x21-zh.png")
    keys(m, big, "MENU")
    shot(m, big, "lcd-menu-8x21-zh.png")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    receipt("zh_CN", "receipt-sale-zh.png")
    receipt("en", "receipt-sale-en.png")
    screens()
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.png"))))
