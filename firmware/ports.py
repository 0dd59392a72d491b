"""The Protocols the drivers implement, and the plain data that crosses them.

drivers/ may import this module and nothing else from firmware/; firmware/app/devices.py picks
the concrete driver from the board profile. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# ---- keypad ----------------------------------------------------------------


class Key(enum.StrEnum):
    """The firmware's keys; each board's key map turns its key codes into these."""

    D0 = "0"
    D1 = "1"
    D2 = "2"
    D3 = "3"
    D4 = "4"
    D5 = "5"
    D6 = "6"
    D7 = "7"
    D8 = "8"
    D9 = "9"
    D00 = "00"
    DOT = "."
    ENTER = "ENTER"
    CANCEL = "CANCEL"
    CLEAR = "CLEAR"
    UP = "UP"
    DOWN = "DOWN"
    F1 = "F1"
    F2 = "F2"
    F3 = "F3"
    F4 = "F4"
    MENU = "MENU"


@dataclass(frozen=True)
class KeyPress:
    key: Key
    at: float  # time.monotonic() when the key went down (or repeated)
    repeat: bool = False  # an auto-repeat of a held key, not a new press


@runtime_checkable
class Keypad(Protocol):
    async def next_key(self) -> KeyPress:
        """Waits for the next key; cancellable. Never returns an unmapped key."""
        ...

    def close(self) -> None: ...


# ---- display ---------------------------------------------------------------


class Icon(enum.StrEnum):
    LINK_UP = "link_up"
    LINK_DOWN = "link_down"
    PAPER_OK = "paper_ok"
    PAPER_OUT = "paper_out"
    REVERSAL_DUE = "reversal_due"
    ADVICE_DUE = "advice_due"
    LOCKED = "locked"
    BUSY = "busy"


@dataclass(frozen=True)
class Frame:
    """What the LCD shows: a text grid, at most one inverse row, status icons.

    rows has exactly the display's row count; a row is cut to the display's
    width in cells, where a CJK character takes two cells (see text_cells()).
    """

    rows: tuple[str, ...]
    inverse_row: int | None = None
    icons: frozenset[Icon] = frozenset()


def char_cells(ch: str) -> int:
    """Cells one character takes on the LCD grid and on the printer: 2 for wide (CJK)."""
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_cells(text: str) -> int:
    return sum(char_cells(ch) for ch in text)


@runtime_checkable
class Display(Protocol):
    rows: int
    cols: int

    def show(self, frame: Frame) -> None:
        """Draws the frame at once (no waiting on anything but the bus)."""
        ...

    def close(self) -> None: ...


# ---- card reader -----------------------------------------------------------


@dataclass(frozen=True)
class MagstripeRead:
    """Raw tracks without sentinels or LRC; None where a track was blank or unreadable.

    Lives only in memory: never log, persist or repr the track data.
    """

    track1: str | None = field(default=None, repr=False)
    track2: str | None = field(default=None, repr=False)
    track3: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        present = [str(i) for i, t in enumerate((self.track1, self.track2, self.track3), 1) if t]
        return f"MagstripeRead(tracks={','.join(present) or 'none'})"


@dataclass(frozen=True)
class ChipInserted:
    atr: bytes = b""


@dataclass(frozen=True)
class ChipRemoved:
    pass


@dataclass(frozen=True)
class ReadFailed:
    """The reader saw a card but could not read it; reason is in words."""

    reason: str


@dataclass(frozen=True)
class ReadTimedOut:
    pass


ReaderEvent = MagstripeRead | ChipInserted | ChipRemoved | ReadFailed | ReadTimedOut


class ReaderUnavailable(Exception):
    """The reader does not answer or its device is gone; the message says which."""


class ChipGone(Exception):
    """The chip card was removed, or stopped answering, during an exchange; the message says
    which. Raised by CardReader.transmit; the transaction's chip session is over."""


@runtime_checkable
class CardReader(Protocol):
    async def version(self) -> str: ...

    async def read(self, *, magstripe: bool = True, chip: bool = True,
                   timeout_s: float = 60.0) -> ReaderEvent:
        """Arms the reader and waits for one event.

        Cancelling the awaiting task (operator CANCEL) disarms the reader at
        once and returns no event. Raises ReaderUnavailable if the reader is
        gone and does not come back within the wait.
        """
        ...

    async def transmit(self, apdu: bytes, timeout_s: float = 5.0) -> bytes:
        """Sends one command APDU to the inserted chip card (after a ChipInserted event) and
        returns its response APDU: data followed by SW1 SW2. The transport handles its own
        protocol details (T=0 GET RESPONSE on 61xx, a resend on 6Cxx), so the caller sees one
        complete response per command. Raises ChipGone if the card was removed or is mute;
        ReaderUnavailable if the reader itself is gone. Readers without a chip slot raise
        ChipGone("no chip slot")."""
        ...

    async def chip_present(self) -> bool:
        """Whether a chip card sits in the slot now (powered or not)."""
        ...

    async def power_off(self) -> None:
        """Deactivates the chip card (end of its session); removal is still the cardholder's."""
        ...

    async def beep(self, ms: int = 100) -> None: ...

    async def led(self, colour: str, on: bool) -> None: ...

    async def close(self) -> None: ...


# ---- printer ---------------------------------------------------------------


class Align(enum.StrEnum):
    LEFT = "left"
    CENTER = "center"
    RIGHT = "right"


@dataclass(frozen=True)
class TextLine:
    """One printed line. The layout has already fitted it to the printer's columns
    (CJK characters take two columns); the driver never wraps."""

    text: str
    align: Align = Align.LEFT
    bold: bool = False
    double: bool = False  # double width and height: the line holds half the columns


@dataclass(frozen=True)
class Image:
    """8-bit gray (0 black .. 255 white), row-major; printed through the raster path."""

    gray: bytes = field(repr=False)
    width: int
    height: int
    dither: bool = True  # Floyd-Steinberg; False = threshold at 128


@dataclass(frozen=True)
class Feed:
    lines: int = 1


@dataclass(frozen=True)
class Cut:
    partial: bool = True


Block = TextLine | Image | Feed | Cut


@dataclass(frozen=True)
class Document:
    """One copy of a receipt, slip or report, device-independent."""

    blocks: tuple[Block, ...]
    title: str = ""  # for logs and the print queue listing; never sensitive
    density: int | None = None  # print darkness 1 (light) .. 4 (normal) .. 8 (dark); None: as set


@dataclass(frozen=True)
class PrinterStatus:
    online: bool = True
    paper_out: bool = False
    cover_open: bool = False
    paper_near_end: bool = False

    @property
    def ready(self) -> bool:
        return self.online and not self.paper_out and not self.cover_open

    @property
    def problem(self) -> str | None:
        """The i18n key of what stops printing, or None."""
        if self.cover_open:
            return "printer_cover_open"
        if self.paper_out:
            return "printer_paper_out"
        if not self.online:
            return "printer_offline"
        return None


class PrinterPaused(Exception):
    """Printing stopped mid-copy (paper out, cover open, offline).

    printed_any says whether any line of this copy reached the paper, which is
    what decides how a CANCEL in PAUSED is handled (cancel-semantics.md).
    """

    def __init__(self, status: PrinterStatus, printed_any: bool) -> None:
        self.status = status
        self.printed_any = printed_any
        super().__init__(status.problem or "printer paused")


class PrinterUnavailable(Exception):
    """No answer from the printer (unplugged, wrong port); the message says which."""


Progress = Callable[[int, int], None]  # (lines done, lines in the copy)


@runtime_checkable
class Printer(Protocol):
    columns: int  # text columns at normal width (32 on 58 mm, 48 on 80 mm)

    async def status(self) -> PrinterStatus: ...

    async def print_document(self, doc: Document, progress: Progress | None = None) -> None:
        """Prints one whole copy and returns once the printer confirmed it.

        Raises PrinterPaused if paper, cover or power stop it part way (what
        printed stays printed; the caller decides about the rest), or
        PrinterUnavailable if the printer does not answer.
        """
        ...

    async def close(self) -> None: ...


# ---- key store ---------------------------------------------------------------
#
# Where the terminal's secrets live (docs/security.md "Key custody"). The application asks for
# operations under named keys and never holds a clear key on a board with a token: the master key
# (TMK) and the card-vault key are token objects created at provisioning; the working keys (PIK,
# MAK, TDK) are installed at each sign-on from field 62, checked against their check values, and
# used only through the methods below. Two roles, because a board may split them: the host keys
# (DES, for the acquirer) may live in a secure PIN pad while the vault key lives in a TPM.

WORKING_KEY_ROLES = ("PIK", "MAK", "TDK")


class KeyStoreError(Exception):
    """The key store cannot do what was asked. The message is words an engineer can act on
    ("the key token 'posfw' is not present: check the PKCS#11 module ..."), never key bytes."""


class KeyStoreUnavailable(KeyStoreError):
    """The token (or PIN pad) is absent, refuses its PIN, or its module cannot be loaded."""


class KeyMissing(KeyStoreError):
    """The key an operation needs is not in the store (not provisioned, destroyed, or no
    sign-on yet for a working key)."""


class KeyCheckFailed(KeyStoreError):
    """A key's check value disagrees: `role` names it, `expected` is what was sent with it,
    `got` what the key in the store gives (both 4 bytes, hex in words)."""

    def __init__(self, role: str, expected: bytes, got: bytes, detail: str = "") -> None:
        self.role, self.expected, self.got = role, expected, got
        super().__init__(f"{role} check value mismatch: expected {expected.hex().upper()}, "
                         f"the key gives {got.hex().upper()}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class WrappedKey:
    """One working key as the host sends it: 16 bytes encrypted TDES-ECB under the TMK, and its
    check value (first 4 bytes of TDES-ECB of 8 zero bytes under the clear key; over the key's
    first 8 bytes only when `check_first8`, the MAK convention of some acquirers)."""

    role: str  # one of WORKING_KEY_ROLES
    wrapped: bytes
    check_value: bytes
    check_first8: bool = False


@dataclass(frozen=True)
class KeyStatus:
    """What a store holds, for diagnostics and the deregistration report (no key bytes)."""

    kind: str  # "memory" (development files), "pkcs11", "pinpad", "split"
    where: str  # words: "SoftHSM2 token 'posfw'", "development key files in keys/"
    tmk_check: str | None  # the TMK's check value (hex), None when there is no TMK
    vault_key: bool  # the card-vault key is present
    working_keys: tuple[str, ...] = ()  # roles installed since the last sign-on
    notes: tuple[str, ...] = ()  # anything an engineer should know, in words


@runtime_checkable
class HostKeys(Protocol):
    """The acquirer's DES keys: TMK and the working keys under it. The operations are
    coroutines: a token answers at once (or from a thread, for a slow TPM), a secure PIN pad
    answers over its serial link."""

    async def install_working_keys(self, keys: list[WrappedKey]) -> None:
        """Decrypt each under the TMK inside the store, check its check value, and replace the
        working keys, all or none. KeyCheckFailed names the first mismatch (the old keys stay);
        KeyMissing if there is no TMK."""
        ...

    def forget_working_keys(self) -> None: ...

    def has_working_key(self, role: str) -> bool: ...

    async def mac_cipher(self, data: bytes, *, double: bool, chain: bool) -> bytes:
        """Encrypt `data` (a multiple of 8 bytes) under the MAK: single DES with its first half
        (double=False) or TDES with both halves (double=True); ECB block by block (chain=False)
        or CBC from a zero IV (chain=True). Returns the ciphertext, same length. The only use of
        the MAK; firmware/host/mac.py builds the CUP and X9.19 MACs from it."""
        ...

    async def encrypt_pin(self, pin: str, pan: str) -> bytes:
        """The ISO 9564 format 0 PIN block for a PIN typed on the terminal's own keypad,
        encrypted TDES-ECB under the PIK (sim boards only: a real board's PIN pad encrypts)."""
        ...

    async def encrypt_track_block(self, block: bytes) -> bytes:
        """TDES-ECB of one 8-byte block under the TDK (track data encryption, field 35/36)."""
        ...


@runtime_checkable
class VaultKeys(Protocol):
    """The card-vault key: authenticated encryption of PANs at rest. Fast and synchronous (the
    journal calls it inside its transactions)."""

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        """nonce || ciphertext || tag under the vault key."""
        ...

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        """Inverse of seal; KeyStoreError in words if the blob is damaged or the key is wrong."""
        ...


@runtime_checkable
class KeyStore(HostKeys, VaultKeys, Protocol):
    """A board's whole key store."""

    def status(self) -> KeyStatus: ...

    def destroy_all(self) -> list[str]:
        """Destroy every key object (deregistration). Returns what was destroyed, in words,
        one line each ("terminal master key (token object posfw-tmk)"), for the report."""
        ...

    def close(self) -> None: ...


# ---- PIN pad -------------------------------------------------------------------
#
# The encrypting PIN pad on the card reader's link (docs/reader-link.md "PIN pad"). The
# cardholder types the PIN on the pad; the terminal never sees it. At the key ceremony the pad
# takes the TMK as a TR-31 block under its own key-block protection key; at each sign-on it takes
# the field 62 working keys through HostKeys.install_working_keys and checks their check values
# itself; for a sale it returns the ISO 9564 format 0 PIN block encrypted under the PIK, which the
# terminal forwards to field 52 unchanged. One object is both the board's HostKeys and its PinPad
# (drivers/keystore/pinpad.py `PinPadKeys`); its encrypt_pin raises KeyStoreError, because a PIN
# pad never takes a clear PIN.


@dataclass(frozen=True)
class PinEntered:
    """The cardholder typed a PIN and pressed ENTER: the 8-byte ISO 9564 format 0 PIN block,
    encrypted TDES-ECB under the PIK, for field 52 as it is. Never log or persist it."""

    block: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"PinEntered(block={len(self.block)} bytes)"


@dataclass(frozen=True)
class PinCancelled:
    """CANCEL on the pad, or the terminal's cancel_pin()."""


@dataclass(frozen=True)
class PinTimedOut:
    """Nobody finished the entry within its timeout."""


@dataclass(frozen=True)
class PinSkipped:
    """ENTER with no digits where the entry allowed that (allow_empty): no PIN, no field 52."""


PinResult = PinEntered | PinCancelled | PinTimedOut | PinSkipped


@dataclass(frozen=True)
class PinPadStatus:
    """What the pad holds, as it reports it (no key bytes)."""

    has_tmk: bool
    tmk_check: str | None  # the TMK's check value (8 hex digits), None without a TMK
    working_keys: tuple[str, ...] = ()  # roles loaded (WORKING_KEY_ROLES order)
    entry_running: bool = False  # a PIN entry is under way on the pad


@runtime_checkable
class PinPad(Protocol):
    """The encrypting PIN pad. Errors are the key store's: KeyStoreUnavailable (this reader has no
    PIN pad, or it does not answer), KeyMissing (no TMK, or no PIK: sign on first), KeyStoreError
    (refused, in words). No method takes or returns a clear PIN or a clear key."""

    async def enter_pin(self, pan: str, prompt: str, *, timeout: float,
                        allow_empty: bool) -> PinResult:
        """Shows `prompt` on the pad (its own display; cut to fit) and waits for the cardholder:
        digits, CLEAR, ENTER, CANCEL typed on the pad. `pan` (13..19 digits) goes into the
        format 0 block; `timeout` is seconds (1..300) from the pad's first prompt. One entry at a
        time. Cancelling the awaiting task cancels the entry on the pad too (as cancel_pin)."""
        ...

    async def cancel_pin(self) -> None:
        """The terminal's CANCEL: the pending enter_pin returns PinCancelled (at once, whatever
        the pad does). Does nothing when no entry is pending."""
        ...

    async def load_tmk_tr31(self, block: str) -> str:
        """The key ceremony: a TR-31 key block (the TMK, usage K0, wrapped under the pad's own
        key-block protection key) replaces the pad's TMK and drops its working keys. Returns the
        new TMK's check value (8 hex digits) for the ceremony record."""
        ...

    async def pad_status(self) -> PinPadStatus: ...

    async def destroy_keys(self) -> list[str]:
        """Deregistration: erase the TMK and the working keys in the pad. Returns what was
        erased, one line each in words, for the report (the pad's own key-block protection key
        stays: it belongs to the device, not to the merchant)."""
        ...


# ---- update agent ------------------------------------------------------------
#
# What the firmware asks of the board's update system (docs/updates.md): the two root slots and
# why the board booted the one it runs, a bundle looked at before it is installed, the install
# with its progress, marking the booted slot good (or bad) and asking for a reboot. A board
# without A/B slots has an agent that refuses all of it in words. Errors are UpdateError.


class UpdateError(Exception):
    """An update step refused or failed, in words (str()); nothing changed unless it says so."""


class UpdatesUnavailable(UpdateError):
    """This board has no update system (no A/B slots): nothing can be installed."""


@dataclass(frozen=True)
class SlotInfo:
    """One root slot as the update system reports it."""

    name: str  # the boot name, "A" or "B"
    version: str | None  # the firmware version installed there (None: never installed by a bundle)
    state: str  # "good" | "bad": the boot status (bad: out of boot attempts, or marked bad)
    booted: bool  # the board runs from this slot now
    boots_next: bool  # the boot loader tries this slot first at the next boot
    device: str = ""
    # When an install last made this slot the one to boot (the update system's own stamp); None
    # for a slot written at the factory. A stamp the firmware has not confirmed yet is a first
    # start of a new slot: the health check runs (docs/updates.md).
    activated: str | None = None


@dataclass(frozen=True)
class UpdateStatus:
    """Both slots, which runs, which boots next, and the board's update identity."""

    compatible: str  # what a bundle must name to be installed here
    slots: tuple[SlotInfo, ...]

    @property
    def booted(self) -> SlotInfo | None:
        return next((s for s in self.slots if s.booted), None)

    @property
    def next_boot(self) -> SlotInfo | None:
        return next((s for s in self.slots if s.boots_next), None)

    def other(self, name: str) -> SlotInfo | None:
        return next((s for s in self.slots if s.name != name), None)


@dataclass(frozen=True)
class BundleInfo:
    """A bundle looked at before installing (its signature checked against the keyring)."""

    path: str
    compatible: str
    version: str
    description: str = ""
    build: str = ""


@dataclass(frozen=True)
class InstallProgress:
    """A step of an install: percent 0..100 and the update system's step (English, for the log
    and support); writing: the new slot is being written (from here on nothing can cancel)."""

    percent: int
    step: str
    writing: bool


@runtime_checkable
class UpdateAgent(Protocol):
    available: bool  # False: a board without an update system (every call raises UpdatesUnavailable)

    async def status(self) -> UpdateStatus: ...

    async def bundle_info(self, path: str) -> BundleInfo:
        """Reads and verifies a bundle without installing it. UpdateError in words when it is
        unsigned, signed by another key, damaged or not a bundle."""
        ...

    async def install(self, path: str, progress: Callable[[InstallProgress], None]) -> None:
        """Writes the bundle into the other slot and makes it the one that boots next. Once
        called it runs to its end (an update system cannot stop a half-written slot safely);
        the caller cancels before calling, never after. UpdateError: nothing was switched."""
        ...

    async def mark_good(self) -> None:
        """The booted slot passed its health check: the boot loader keeps booting it."""
        ...

    async def mark_bad(self) -> None:
        """The booted slot failed: the boot loader goes back to the other slot at the next boot."""
        ...

    def request_reboot(self) -> None:
        """Asks the system to restart (the firmware cannot reboot the board itself)."""
        ...
