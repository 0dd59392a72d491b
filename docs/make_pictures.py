"""Makes the README pictures from the real code paths: a Chinese sale receipt laid out by
firmware/printing, rendered to ESC/POS by the printer driver and decoded by the emulated
printer; an idle and an amount screen drawn by the capture display backend.

Run: `.venv/bin/python docs/make_pictures.py` (writes docs/img/*.png).
"""

from __future__ import annotations

import sys
import time
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
from firmware.ports import Frame, Icon  # noqa: E402
from firmware.printing import layout  # noqa: E402
from firmware.settings.model import factory  # noqa: E402

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


def screens() -> None:
    lcd = CaptureDisplay(4, 16)
    lcd.show(Frame(rows=("DEMO MERCHANT", "2026-11-22 14:30", "", "Swipe or MENU"),
                   icons=frozenset({Icon.LINK_UP, Icon.PAPER_OK})))
    lcd.save_png(OUT / "lcd-idle.png")
    lcd.show(Frame(rows=("消费 SALE", "", "       123.45", "确认 ENTER"), inverse_row=0,
                   icons=frozenset({Icon.LINK_UP})))
    lcd.save_png(OUT / "lcd-amount-zh.png")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    receipt("zh_CN", "receipt-sale-zh.png")
    receipt("en", "receipt-sale-en.png")
    screens()
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.png"))))
