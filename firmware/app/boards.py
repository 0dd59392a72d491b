"""Board profiles: which drivers a board runs and what it may accept.

The app reads them (core: name, reader driver, ECR card-data rule; the driver choice: which
driver; the process entry: the ECR serial port); board/qemu and the tests read them too. They
live in the firmware because `python -m firmware.app --board rpi` must resolve a name on a
device without board/. A profile is plain data so that adding a board is adding an entry here
(see docs/boards.md, "How to add a board").
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
    printer_path: str | None = None  # serial device of the ESC/POS printer; None = no printer
    reader_driver: str = "serial"  # "serial" (framed reader link) | "hid" (keyboard-wedge magstripe)
    # | "pcsc" (a PC/SC chip reader through pcscd)
    reader_path: str | None = None  # its device (tty or /dev/input/event*; pcsc: the reader's
    # name or a part of it); None = no reader
    keypad: str = "terminal"  # "terminal" (development) | "evdev"
    keypad_device: str | None = None  # evdev: a /dev/input/event* path or a device-name hint
    keymap: str = "pc"  # a name in drivers/keypad/keymaps.py
    display: str = "terminal"  # "terminal" | "capture" | "framebuffer" | "serial_frames" | "spi:<driver>"
    # The reader has a contact chip slot the firmware reads (docs/chip.md): the terminal signs
    # on as an IC terminal (it then loads the host's chip tables), says 60.4 = 5, and reads an
    # inserted card's chip. False for a magstripe-only board; a HID wedge never has one.
    chip_slot: bool = True

    @property
    def reads_chip(self) -> bool:
        return self.chip_slot and self.reader_driver != "hid"


PROFILES: dict[str, BoardProfile] = {
    "sim": BoardProfile(
        name="sim",
        description="development machine: emulated card source, ECR on loopback TCP",
        card_source="sim",
        ecr_accepts_card_data=True,
    ),
    "sim-pcsc": BoardProfile(
        name="sim-pcsc",
        description="development machine with the chip in a PC/SC reader (vpcd: make run READER=pcsc)",
        card_source="sim",
        ecr_accepts_card_data=True,
        reader_driver="pcsc",
        reader_path="POS Virtual PCD",  # board/sim/vpcd.py's reader in a private pcscd
    ),
    "qemu": BoardProfile(
        name="qemu",
        description="QEMU guest: reader and printer on ttyS1/ttyS2, ECR on ttyS3",
        card_source="sim",
        ecr_accepts_card_data=True,
        ecr_serial="/dev/ttyS3",
        printer_path="/dev/ttyS2",
        reader_path="/dev/ttyS1",
        keypad="evdev",
        keypad_device="QEMU Virtio Keyboard",  # keys injected through QMP (board/qemu/qmp_keys.py)
        keymap="qemu",
        display="serial_frames",  # frames to /dev/ttyS4, drawn on the host by board/qemu/lcd_mirror
    ),
    "qemu-pcsc": BoardProfile(
        name="qemu-pcsc",
        description="QEMU guest with the chip in a PC/SC reader: pcscd and vpcd in the guest, the "
                    "card on the host (board/qemu/rig.py)",
        card_source="sim",
        ecr_accepts_card_data=True,
        ecr_serial="/dev/ttyS3",
        printer_path="/dev/ttyS2",
        reader_driver="pcsc",
        reader_path="POS Virtual PCD",  # board/sim/vpcd.py's reader in the guest's pcscd
        keypad="evdev",
        keypad_device="QEMU Virtio Keyboard",
        keymap="qemu",
        display="serial_frames",
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
        printer_path="/dev/pos-printer",  # udev rules name the USB-serial printer and reader
        reader_path="/dev/pos-reader",
        keypad="evdev",
        keypad_device="/dev/pos-keypad",
        keymap="pos_keypad",
        display="spi:st7735",
    ),
}


def profile(name: str) -> BoardProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise SystemExit(f"unknown board {name!r}; known boards: {', '.join(PROFILES)}") from None
