"""Every board profile names drivers, key maps and displays that exist."""

from __future__ import annotations

import pytest

from drivers.keypad.keymaps import KEYMAPS
from drivers.printer.profiles import PROFILES as PRINTER_PROFILES
from firmware.app.boards import PROFILES, profile
from firmware.ports import Key


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_names_what_exists(name):
    p = PROFILES[name]
    assert p.keymap in KEYMAPS
    assert p.keypad in ("terminal", "evdev")
    assert p.reader_driver in ("serial", "hid", "pcsc")
    kind, _, driver = p.display.partition(":")
    assert kind in ("terminal", "capture", "framebuffer", "serial_frames", "spi")
    if kind == "spi":
        from luma.lcd import device

        assert hasattr(device, driver), f"luma.lcd has no {driver}"
    assert p.printer_columns in {pp.columns for pp in PRINTER_PROFILES.values()}
    assert p.display_rows >= 4 and p.display_cols >= 16


@pytest.mark.parametrize("name", sorted(KEYMAPS))
def test_every_key_map_reaches_every_key(name):
    assert set(KEYMAPS[name].values()) >= set(Key) - {Key.F1, Key.F2, Key.F3, Key.F4} or \
        set(KEYMAPS[name].values()) == set(Key)


def test_real_boards_refuse_card_data_over_ecr():
    assert not profile("rpi").ecr_accepts_card_data
    with pytest.raises(SystemExit, match="unknown board"):
        profile("nope")
