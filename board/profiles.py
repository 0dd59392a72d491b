"""Board profiles: which drivers a board runs and what it may accept.

Only firmware/app.py reads these. A profile is plain data so that adding a
board is adding an entry here (see README, "How to add a board").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BoardProfile:
    name: str
    description: str
    card_source: str  # "sim" (test cards named over ECR / control) | "reader" (serial reader driver)
    ecr_accepts_card_data: bool  # only an emulated board may take card data over the ECR link
    ecr_serial: str | None = None  # device path of the ECR serial port, if any
    display_rows: int = 4
    display_cols: int = 16
    printer_columns: int = 32


PROFILES: dict[str, BoardProfile] = {
    "sim": BoardProfile(
        name="sim",
        description="development machine: emulated card source, ECR on loopback TCP",
        card_source="sim",
        ecr_accepts_card_data=True,
    ),
    "qemu": BoardProfile(
        name="qemu",
        description="QEMU guest: reader and printer on ttyS1/ttyS2, ECR on ttyS3",
        card_source="sim",
        ecr_accepts_card_data=True,
        ecr_serial="/dev/ttyS3",
    ),
    "rpi": BoardProfile(
        name="rpi",
        description="Raspberry Pi dev board: USB-serial reader, serial printer, SPI LCD",
        card_source="reader",
        ecr_accepts_card_data=False,
        ecr_serial="/dev/ttyAMA0",
        display_rows=8,
        display_cols=21,
        printer_columns=32,
    ),
}


def profile(name: str) -> BoardProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise SystemExit(f"unknown board {name!r}; known boards: {', '.join(PROFILES)}") from None
