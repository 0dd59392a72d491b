"""Printer profiles keyed by the settings value ("58mm", "80mm"): paper geometry in dots and
columns, the python-escpos capability profile each one uses, raster band height and write chunk.

Plain data; the python-escpos profile object is built on demand (its import is slow and noisy).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cache
from typing import Any

FONT_A_WIDTH = 12  # dots per column of font A (12x24); every profile prints font A
LINE_PITCH = 24  # dots per text line at normal height (font A, default line spacing)


@dataclass(frozen=True)
class PrinterProfile:
    """One paper width as the driver, the renderer and the emulator see it."""

    name: str  # the settings value, "58mm" / "80mm"
    columns: int  # font A columns at normal width
    dots: int  # printable width in dots (8 dots per mm at 203 dpi)
    escpos_profile: str  # python-escpos capability profile name
    band_height: int  # rows per GS v 0 band: one text line, small enough for any receive buffer
    write_chunk: int  # most bytes handed to one write() on the port
    # Capability overrides on top of the python-escpos profile, with the reason in a comment at the
    # entry. Kept as pairs so the dataclass stays hashable.
    feature_overrides: tuple[tuple[str, bool], ...] = field(default=())

    @property
    def row_bytes(self) -> int:
        return self.dots // 8

    def escpos_capabilities(self) -> Any:
        """The python-escpos profile object (escpos.capabilities.BaseProfile) with our overrides."""
        return _capabilities(self.escpos_profile, self.feature_overrides)

    @property
    def has_cutter(self) -> bool:
        """The mechanism cuts (GS V); without a cutter a slip is torn off at the tear bar."""
        caps = self.escpos_capabilities()
        return bool(caps.supports("paperFullCut") or caps.supports("paperPartCut"))


PROFILES: dict[str, PrinterProfile] = {
    # The ubiquitous Chinese 58 mm mechanism (POS-5890 / ZJ-58 family, GB18030 font built in).
    # python-escpos lists it without a cutter; the terminal units we ship have the auto-cutter
    # option, and a slip must end with GS V, so the cut features are switched on here.
    "58mm": PrinterProfile(
        name="58mm", columns=32, dots=384, escpos_profile="POS-5890", band_height=24,
        write_chunk=256, feature_overrides=(("paperFullCut", True), ("paperPartCut", True)),
    ),
    # The same mechanism as python-escpos lists it: no cutter, a tear bar (the cheaper units).
    # A "cut" only feeds the slip past the bar; the operator tears each copy off.
    "58mm-tear": PrinterProfile(
        name="58mm-tear", columns=32, dots=384, escpos_profile="POS-5890", band_height=24,
        write_chunk=256,
    ),
    # Epson TM-T20II: the reference 80 mm receipt printer (576 dots, 48 columns of font A).
    "80mm": PrinterProfile(
        name="80mm", columns=48, dots=576, escpos_profile="TM-T20II", band_height=24,
        write_chunk=512,
    ),
}


def get_profile(profile: str | PrinterProfile) -> PrinterProfile:
    """The profile for a settings value (or the profile itself); ValueError naming the known ones."""
    if isinstance(profile, PrinterProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown printer profile {profile!r}; known profiles: "
                         f"{', '.join(PROFILES)}") from None


def import_escpos() -> Any:
    """Imports python-escpos, undoing the root-logger handler its import installs.

    escpos.capabilities calls logging.basicConfig() at import: imported before the firmware sets
    up logging, that would leave an extra stderr handler on the root logger without the card-data
    mask. Returns the escpos.printer module.
    """
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        import escpos.printer  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportError(f"python-escpos is needed for the ESC/POS printer ({exc}): "
                          "pip install python-escpos") from exc
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
    return escpos.printer


@cache
def _capabilities(name: str, overrides: tuple[tuple[str, bool], ...]) -> Any:
    import_escpos()
    from escpos.capabilities import BaseProfile, get_profile_class  # type: ignore[import-untyped]

    base = get_profile_class(name)
    if not overrides:
        return base()
    data = dict(base.profile_data)
    data["features"] = {**data.get("features", {}), **dict(overrides)}
    # A subclass with its own data: python-escpos keeps profile data on the class, shared by
    # every user of that profile, so it must not be edited in place.
    derived: type[BaseProfile] = type(f"{base.__name__}WithOverrides", (base,), {"profile_data": data})
    return derived()
