"""Board profiles: which drivers a board runs and what it may accept.

The app reads them (core: name, reader driver, ECR card-data rule, the key store; the driver
choice: which driver; the process entry: the ECR serial port); board/qemu and the tests read them
too. They
live in the firmware because `python -m firmware.app --board rpi` must resolve a name on a
device without board/. A profile is plain data so that adding a board is adding an entry here
(see docs/boards.md, "How to add a board").
"""

from __future__ import annotations

from dataclasses import dataclass

KEY_STORES = ("memory", "pkcs11", "pinpad")
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"  # Debian's softhsm2 (libsofthsm2)
# Debian's libtpm2-pkcs11-1: a TPM 2.0 as a PKCS#11 token. Its store and its TPM come from the
# environment (TPM2_PKCS11_STORE, TPM2_PKCS11_TCTI), which the board's start script sets.
TPM2_PKCS11_MODULE = "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1"


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
    display_path: str | None = None  # serial_frames: its serial port (None: the x86 QEMU board's)
    # The reader has a contact chip slot the firmware reads (docs/chip.md): the terminal signs
    # on as an IC terminal (it then loads the host's chip tables), says 60.4 = 5, and reads an
    # inserted card's chip. False for a magstripe-only board; a HID wedge never has one.
    chip_slot: bool = True
    # Where the keys live (docs/security.md "Key custody"): "memory", the development key files
    # (keys/tmk.key, keys/card.key; refused unless `development`), "pkcs11", a PKCS#11 token
    # holding the TMK, the working keys and the card-vault key, or "pinpad", the DES keys in the
    # secure PIN pad on the reader link and the card-vault key in the token.
    key_store: str = "pkcs11"
    token_module: str = SOFTHSM_MODULE  # the token's PKCS#11 module (a shared library)
    token_label: str = "posfw"  # the token's label (the slot id is not stable: the label is)
    # Where the user PIN comes from: "file:keys/token.pin" (0600, under the data directory) or
    # "env:NAME" (an environment variable the service manager sets).
    token_pin: str = "file:keys/token.pin"
    # A SoftHSM2 configuration under the data directory: when that file exists the module is
    # pointed at it (SOFTHSM2_CONF), so the token's object store lives beside the journal.
    token_conf: str | None = "keys/softhsm2.conf"
    # A development board (an emulator, a PC): it may keep keys in clear files (key_store
    # "memory") and take a clear TMK at provisioning (--tmk). Never a board that takes cards.
    development: bool = False
    # What updates the firmware (docs/updates.md): "rauc", an A/B image with RAUC (the root slots,
    # the boot counter), or "none", a board whose firmware is not updated by itself.
    update_agent: str = "none"

    @property
    def reads_chip(self) -> bool:
        return self.chip_slot and self.reader_driver != "hid"


PROFILES: dict[str, BoardProfile] = {
    "sim": BoardProfile(
        name="sim",
        development=True,
        key_store="pkcs11",  # SoftHSM2 under the data directory (keys/softhsm2.conf)
        description="development machine: emulated card source, ECR on loopback TCP",
        card_source="sim",
        ecr_accepts_card_data=True,
    ),
    "sim-pcsc": BoardProfile(
        name="sim-pcsc",
        development=True,
        key_store="pkcs11",  # SoftHSM2 under the data directory (keys/softhsm2.conf)
        description="development machine with the chip in a PC/SC reader (vpcd: make run READER=pcsc)",
        card_source="sim",
        ecr_accepts_card_data=True,
        reader_driver="pcsc",
        reader_path="POS Virtual PCD",  # board/sim/vpcd.py's reader in a private pcscd
    ),
    "sim-pinpad": BoardProfile(
        name="sim-pinpad",
        description="development machine whose emulated card reader has an encrypting PIN pad: "
                    "the DES keys and the PIN in the pad, the card-vault key in a SoftHSM2 token",
        development=True,
        key_store="pinpad",
        card_source="sim",
        ecr_accepts_card_data=True,
    ),
    "qemu": BoardProfile(
        name="qemu",
        development=True,
        # The DES keys in the emulated reader's PIN pad (on the host, over /dev/ttyS1); the
        # card-vault keys in the guest's TPM through tpm2-pkcs11 (docs/qemu.md "The TPM"), its
        # environment set by board/qemu/rig.py's start script.
        key_store="pinpad",
        token_module=TPM2_PKCS11_MODULE,
        token_conf=None,
        description="QEMU guest: reader (with its PIN pad) and printer on ttyS1/ttyS2, ECR on "
                    "ttyS3, a TPM 2.0",
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
        development=True,
        key_store="memory",
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
    "qemu-arm64": BoardProfile(
        name="qemu-arm64",
        development=True,
        # The flashable arm64 image (board/image, docs/image.md) under qemu-system-aarch64 -M virt:
        # it runs `python -m firmware.app` as a device does (no test cards: cards are swiped at the
        # emulated reader), on four PCI 16550 ports; the DES keys in the reader's PIN pad, the
        # card-vault key in a SoftHSM2 token on the data partition.
        key_store="pinpad",
        update_agent="rauc",  # RAUC over U-Boot's A/B slots (docs/updates.md)
        description="QEMU arm64 (virt) image: reader with PIN pad, printer, ECR and LCD frames on "
                    "ttyS0-ttyS3",
        card_source="reader",
        ecr_accepts_card_data=False,
        reader_path="/dev/ttyS0",
        printer_path="/dev/ttyS1",
        ecr_serial="/dev/ttyS2",
        keypad="evdev",
        keypad_device="QEMU Virtio Keyboard",
        keymap="qemu",
        display="serial_frames",
        display_path="/dev/ttyS3",
    ),
    "rpi": BoardProfile(
        name="rpi",
        key_store="pkcs11",  # its token: token_module (docs/security.md "Key custody")
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
