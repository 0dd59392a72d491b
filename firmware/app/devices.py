"""The only place a concrete driver is chosen: the board profile (firmware/app/boards.py) and the
command line's device paths name it, this module imports it (lazily: a board loads only its
own drivers). Everything else in the firmware speaks to drivers through firmware/ports.py."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from firmware.app.boards import BoardProfile
from firmware.ports import CardReader, Display, Keypad, KeyStore, Printer

log = logging.getLogger("posfw.app")


class DevicePaths(Protocol):
    """The command line's device paths (AppConfig): None keeps the board's, '' means none."""

    printer_path: str | None
    reader_path: str | None


def make_printer(board: BoardProfile, paths: DevicePaths,
                 settings: dict[str, dict[str, Any]]) -> Printer | None:
    """The board's printer driver, with the printer profile the settings name."""
    path = paths.printer_path if paths.printer_path is not None else board.printer_path
    if not path:
        log.info("no printer on this board: receipts wait in the print queue")
        return None
    from drivers.printer.escpos_serial import EscPosSerialPrinter

    return EscPosSerialPrinter(path, profile=str(settings["printer"]["profile"]))


def make_reader(board: BoardProfile, paths: DevicePaths) -> CardReader | None:
    """The board's card reader driver (None: the board has no reader, or none was given)."""
    path = paths.reader_path if paths.reader_path is not None else board.reader_path
    if not path:
        return None
    if board.reader_driver == "pcsc":  # path: the PC/SC reader's name, or a part of it
        from drivers.reader.pcsc import PcscReader

        return PcscReader(path)
    if board.reader_driver == "hid":
        from drivers.reader.hid_wedge import HidWedgeReader

        return HidWedgeReader(path)
    from drivers.reader.serial_link import SerialLinkReader

    return SerialLinkReader(path)


def make_keypad(board: BoardProfile) -> Keypad:
    """The board's keypad driver."""
    if board.keypad == "terminal":
        from drivers.keypad.terminal_keypad import TerminalKeypad

        return TerminalKeypad(0)
    if board.keypad == "evdev":
        from drivers.keypad.evdev_keypad import EvdevKeypad, find_keypad
        from drivers.keypad.keymaps import keymap

        device = board.keypad_device or ""
        path = device if device.startswith("/dev/") else find_keypad(device)
        return EvdevKeypad(path, keymap(board.keymap))
    raise SystemExit(f"board {board.name}: unknown keypad driver {board.keypad!r}")


def make_display(board: BoardProfile) -> Display:
    """The board's display driver, at the board's LCD size."""
    rows, cols = board.display_rows, board.display_cols
    if board.display == "terminal":
        from drivers.display.terminal import TerminalDisplay

        return TerminalDisplay(rows, cols)
    if board.display == "capture":
        from drivers.display.capture import CaptureDisplay

        return CaptureDisplay(rows, cols)
    if board.display == "serial_frames":
        from drivers.display.serial_frames import LCD_MIRROR_PORT, SerialFrameDisplay

        return SerialFrameDisplay(LCD_MIRROR_PORT, rows, cols)
    if board.display == "framebuffer":
        from drivers.display.luma_backend import framebuffer

        return framebuffer("/dev/fb0", rows, cols)
    if board.display.startswith("spi:"):
        from drivers.display.luma_backend import spi_lcd

        return spi_lcd(board.display.split(":", 1)[1], rows=rows, cols=cols)
    raise SystemExit(f"board {board.name}: unknown display {board.display!r}")


def make_key_store(board: BoardProfile, keys_dir: Path) -> KeyStore:
    """The board's key store. For now the development store over keys/ on every board (the
    profiles' token choice, firmware/app/boards.py, picks a PKCS#11 token or the PIN pad)."""
    from drivers.keystore.memory import MemoryKeyStore

    return MemoryKeyStore(keys_dir)
