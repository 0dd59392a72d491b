"""The only place a concrete driver is chosen: the board profile (firmware/app/boards.py) and the
command line's device paths name it, this module imports it (lazily: a board loads only its
own drivers). Everything else in the firmware speaks to drivers through firmware/ports.py."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, Protocol

from firmware.app.boards import KEY_STORES, BoardProfile
from firmware.ports import (
    CardReader,
    Display,
    Keypad,
    KeyStore,
    KeyStoreError,
    KeyStoreUnavailable,
    Printer,
    UpdateAgent,
)

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

        return SerialFrameDisplay(board.display_path or LCD_MIRROR_PORT, rows, cols)
    if board.display == "framebuffer":
        from drivers.display.luma_backend import framebuffer

        return framebuffer("/dev/fb0", rows, cols)
    if board.display.startswith("spi:"):
        from drivers.display.luma_backend import spi_lcd

        return spi_lcd(board.display.split(":", 1)[1], rows=rows, cols=cols)
    raise SystemExit(f"board {board.name}: unknown display {board.display!r}")


def key_store_kind(board: BoardProfile, override: str | None = None) -> str:
    """The key store a board runs ("memory", "pkcs11", "pinpad"), or KeyStoreError in words: the
    development store is refused on a board that is not a development board."""
    kind = override or board.key_store
    if kind not in KEY_STORES:
        raise KeyStoreError(f"board {board.name}: unknown key store {kind!r} "
                            f"(one of {', '.join(KEY_STORES)})")
    if kind == "memory" and not board.development:
        raise KeyStoreError(f"board {board.name} keeps no keys in clear files (key store "
                            "'memory' is for development boards only): give it a token "
                            "(docs/security.md, \"Key custody\")")
    return kind


def token_pin(board: BoardProfile, data_dir: Path) -> str:
    """The token's user PIN from the profile's source ("file:PATH" under the data directory,
    0600, or "env:NAME"), or KeyStoreUnavailable in words (never the PIN itself)."""
    source = board.token_pin
    kind, _, where = source.partition(":")
    if kind == "env":
        pin = os.environ.get(where, "")
        if not pin:
            raise KeyStoreUnavailable(f"the token PIN variable {where} is not set "
                                      f"(board {board.name}: token_pin {source})")
        return pin
    if kind != "file" or not where:
        raise KeyStoreUnavailable(f"board {board.name}: token_pin must be file:PATH or env:NAME, "
                                  f"not {source!r}")
    path = Path(data_dir) / where
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise KeyStoreUnavailable(f"the token PIN file {path} is missing: provision the "
                                  "terminal (docs/provisioning.md)") from None
    if mode & 0o077:
        raise KeyStoreUnavailable(f"the token PIN file {path} is readable by others (mode "
                                  f"{mode:o}); run chmod 600 {path}")
    pin = path.read_text(encoding="utf-8").strip()
    if not pin:
        raise KeyStoreUnavailable(f"the token PIN file {path} is empty")
    return pin


def use_token_conf(board: BoardProfile, data_dir: Path) -> None:
    """Point SoftHSM2 at the board's configuration under the data directory when there is one
    (its object store beside the journal): read when the module is initialised."""
    if board.token_conf:
        conf = Path(data_dir) / board.token_conf
        if conf.is_file():
            os.environ["SOFTHSM2_CONF"] = str(conf.resolve())


# Names the token's PKCS#11 module instead of the profile's token_module: a device whose token
# lives in another process (p11-kit's client, p11-kit-client.so, with P11_KIT_SERVER_ADDRESS)
# or a module at another path. Set by the service manager (docs/security.md, "Key custody").
TOKEN_MODULE_ENV = "POSFW_TOKEN_MODULE"


def token_module(board: BoardProfile) -> str:
    """The PKCS#11 module to load: POSFW_TOKEN_MODULE when set, else the profile's."""
    module = os.environ.get(TOKEN_MODULE_ENV, "")
    if not module:
        return board.token_module
    if not Path(module).is_file():
        raise KeyStoreUnavailable(f"the PKCS#11 module {module} named by {TOKEN_MODULE_ENV} does "
                                  "not exist: fix the variable or install its package "
                                  "(p11-kit-modules for p11-kit-client.so)")
    return module


def open_token(board: BoardProfile, data_dir: Path) -> KeyStore:
    """The board's PKCS#11 token (its configuration under the data directory, its PIN from the
    profile's source, its module from token_module())."""
    module = token_module(board)
    use_token_conf(board, data_dir)
    try:
        from drivers.keystore.pkcs11 import Pkcs11KeyStore
    except ImportError as exc:
        raise KeyStoreUnavailable(f"the PKCS#11 key store cannot be loaded ({exc.name or exc}): "
                                  "install the runtime lock (docs/dependencies.md)") from None
    return Pkcs11KeyStore(module, board.token_label, token_pin(board, data_dir))


def open_key_store(board: BoardProfile, data_dir: Path, override: str | None = None,
                   reader: CardReader | None = None) -> KeyStore:
    """The board's key store, opened (KeyStoreError in words when it cannot be). A PIN pad
    board's host keys are in the PIN pad of `reader` (the board's card reader, opened by the
    caller, who closes it after the store); its card-vault key is in the token."""
    kind = key_store_kind(board, override)
    data_dir = Path(data_dir)
    if kind == "memory":
        from drivers.keystore.memory import MemoryKeyStore

        return MemoryKeyStore(data_dir / "keys")
    if kind == "pkcs11":
        return open_token(board, data_dir)
    if reader is None or not hasattr(reader, "pinpad_command"):
        raise KeyStoreUnavailable(f"board {board.name} keeps its master key in the PIN pad of its "
                                  "card reader (the serial reader link), and no such reader is "
                                  "connected (its device path: --reader)")
    from drivers.keystore.pinpad import PinPadKeys
    from firmware.app.split_keys import SplitKeyStore

    return SplitKeyStore(PinPadKeys(reader), open_token(board, data_dir))  # type: ignore[arg-type]


def make_update_agent(board: BoardProfile) -> UpdateAgent:
    """The board's update agent (docs/updates.md): RAUC on an A/B image, else one that says in
    words that this board's firmware is not updated by itself."""
    if board.update_agent == "rauc":
        from drivers.update.rauc import RaucAgent

        return RaucAgent()
    if board.update_agent != "none":
        raise SystemExit(f"board {board.name}: unknown update agent {board.update_agent!r}")
    from drivers.update.none import NoUpdates

    return NoUpdates()
