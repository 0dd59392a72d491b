"""The reader link's payloads (docs/reader-link.md): one home for building and parsing them.

Pure: bytes in, messages and reader events out. The driver (serial_link.py) and the
emulated reader (board/sim/reader.py) both use it; frames come from c_ext.posio.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from c_ext import posio
from firmware.ports import (
    WORKING_KEY_ROLES,
    ChipInserted,
    ChipRemoved,
    MagstripeRead,
    PinPadStatus,
    ReaderEvent,
    ReadFailed,
    ReadTimedOut,
    WrappedKey,
)

__all__ = [
    "APDU_MAX",
    "APDU_MIN",
    "BODY_MAX",
    "COMMANDS",
    "EVENTS",
    "LED_COLOURS",
    "PAD_OPS",
    "RESPONSE_MAX",
    "TRACK_MAX",
    "ArmRequest",
    "ChipReply",
    "ChipStatus",
    "LinkError",
    "Message",
    "NakReason",
    "PadReply",
    "PadStatus",
    "PinEntryRequest",
    "ReadErrorCode",
    "TrackStatus",
    "apdu_parts",
    "arm_body",
    "beep_body",
    "check_failed_body",
    "chip_error_body",
    "cut_prompt",
    "encode",
    "error_body",
    "event_from_message",
    "exchange_reply_body",
    "install_args",
    "key_bits",
    "led_body",
    "mac_args",
    "magstripe_body",
    "nak_body",
    "pad_body",
    "pad_reply_body",
    "pad_status_data",
    "parse",
    "parse_arm",
    "parse_beep",
    "parse_chip_reply",
    "parse_error",
    "parse_install",
    "parse_led",
    "parse_mac",
    "parse_magstripe",
    "parse_nak",
    "parse_offset_part",
    "parse_pad",
    "parse_pad_reply",
    "parse_pad_status",
    "parse_pin_entry",
    "parse_status",
    "parse_status_flags",
    "parse_tr31",
    "pin_entry_body",
    "power_reply_body",
    "roles_of",
    "status_body",
    "timeout_field",
    "tr31_args",
]

BODY_MAX = posio.PAYLOAD_MAX - 2  # TYPE and SEQ take two of the frame's 250 bytes

# Commands (terminal to reader); the reply is the same letter in lower case, or NAK.
VERSION, ARM, CANCEL, BEEP, LED, STATUS = "V", "A", "C", "B", "L", "S"
# The chip session (docs/reader-link.md, "Chip commands").
POWER_ON, APDU_PART, EXCHANGE, GET_PART, POWER_OFF = "P", "W", "X", "G", "O"
CHIP_COMMANDS = frozenset({POWER_ON, APDU_PART, EXCHANGE, GET_PART, POWER_OFF})
# The PIN pad (docs/reader-link.md, "PIN pad"): key commands (one letter, the operation in the
# body), PIN entry, and its cancel. Not N: its reply would be the NAK's letter.
PINPAD, PIN_ENTRY, PIN_CANCEL = "Y", "J", "Q"
PINPAD_COMMANDS = frozenset({PINPAD, PIN_ENTRY, PIN_CANCEL})
COMMANDS = frozenset({VERSION, ARM, CANCEL, BEEP, LED, STATUS}) | CHIP_COMMANDS | PINPAD_COMMANDS
NAK = "n"
# Events (reader to terminal).
MAGSTRIPE, CHIP_IN, CHIP_OUT, READ_ERROR, TIMED_OUT = "M", "K", "R", "E", "T"
EVENTS = frozenset({MAGSTRIPE, CHIP_IN, CHIP_OUT, READ_ERROR, TIMED_OUT})

COMMAND_NAMES = {VERSION: "version", ARM: "arm", CANCEL: "cancel", BEEP: "beep", LED: "LED",
                 STATUS: "status", POWER_ON: "chip power-on", APDU_PART: "APDU part",
                 EXCHANGE: "APDU exchange", GET_PART: "response part", POWER_OFF: "chip power-off",
                 PINPAD: "PIN pad", PIN_ENTRY: "PIN entry", PIN_CANCEL: "PIN entry cancel"}

ARM_MAGSTRIPE = 0x01
ARM_CHIP = 0x02
TIMEOUT_MAX_S = 0xFFFF
BEEP_MIN_MS, BEEP_MAX_MS = 1, 2000
LED_COLOURS: tuple[str, ...] = ("green", "red", "amber", "blue")
ATR_MAX = 32
# ISO 7816-4 short APDUs: CLA INS P1 P2 [Lc 1..255 data] [Le] is 4..261 bytes; a response is
# up to 256 data bytes and SW1 SW2.
APDU_MIN, APDU_MAX = 4, 261
RESPONSE_MAX = 258
OFFSET_LEN = 2
PART_MAX = BODY_MAX - OFFSET_LEN  # APDU bytes in one W or X: 246
FIRST_RESPONSE_MAX = BODY_MAX - 1 - 2  # after the status byte and the length: 245
STATUS_ARMED, STATUS_CHIP_PRESENT, STATUS_CHIP_POWERED = 0x01, 0x02, 0x04

# Longest track data a reader may send (ISO 7811/7813 data characters, without
# sentinels and LRC).
TRACK_MAX = (79, 40, 107)
# ISO 7811 track 1 is the 6-bit set 0x20..0x5F; '%' and '?' are its sentinels and
# never appear in the data.
_TRACK1_CHARS = frozenset(chr(c) for c in range(0x20, 0x60)) - {"%", "?"}
_TRACK23_CHARS = frozenset("0123456789=")


class LinkError(ValueError):
    """A payload that does not follow docs/reader-link.md; the message says what, never the bytes."""


class NakReason(enum.IntEnum):
    UNKNOWN_COMMAND = 1
    BAD_BODY = 2
    BUSY = 3

    @property
    def words(self) -> str:
        return {1: "unknown command", 2: "bad body (wrong length or value)",
                3: "busy (a chip transaction is running)"}[self.value]


class TrackStatus(enum.IntEnum):
    READ = 0
    BLANK = 1
    UNREADABLE = 2  # parity or LRC error


class ReadErrorCode(enum.IntEnum):
    SWIPE_UNREADABLE = 1
    CHIP_NOT_RESPONDING = 2
    CARD_REMOVED_EARLY = 3

    @property
    def words(self) -> str:
        return {1: "the swipe could not be read on any track",
                2: "the chip does not respond",
                3: "the card was removed too early"}[self.value]


class ChipStatus(enum.IntEnum):
    """First byte of the `p` and `x` replies (docs/reader-link.md, "Chip status")."""

    OK = 0
    NO_CARD = 1
    MUTE = 2
    REMOVED = 3
    NOT_POWERED = 4
    NO_CHIP_SLOT = 5

    @property
    def words(self) -> str:
        return {0: "done", 1: "no card in the chip slot",
                2: "the chip card does not respond (mute); the reader deactivated it",
                3: "the chip card was removed during an exchange",
                4: "the chip card is not powered (no chip session)",
                5: "no chip slot: this reader reads magstripe only"}[self.value]


@dataclass(frozen=True)
class Message:
    """One payload: TYPE letter, SEQ and body. The body may hold track data: never shown."""

    type: str
    seq: int
    body: bytes = field(default=b"", repr=False)

    def __repr__(self) -> str:
        return f"Message({self.type!r}, seq={self.seq}, body={len(self.body)} bytes)"

    @property
    def is_reply(self) -> bool:
        return self.type.islower()


def encode(msg_type: str, seq: int, body: bytes = b"") -> bytes:
    """The whole frame (STX LEN TYPE SEQ BODY ETX LRC) for one message."""
    if len(msg_type) != 1 or not msg_type.isascii() or not msg_type.isalpha():
        raise LinkError(f"message type must be one ASCII letter, got {msg_type!r}")
    if not 0 <= seq <= 255:
        raise LinkError(f"SEQ must be 0..255, got {seq}")
    if len(body) > BODY_MAX:
        raise LinkError(f"body is {len(body)} bytes; the link allows {BODY_MAX}")
    return posio.encode_frame(msg_type.encode("ascii") + bytes((seq,)) + body)


def parse(payload: bytes, start: int = 0, end: int | None = None) -> Message:
    """A decoded frame's payload, payload[start:end], as a Message; LinkError if it has no
    TYPE letter and SEQ. The bounds let the driver parse the decoder's records in place."""
    if end is None:
        end = len(payload)
    if end - start < 2:
        raise LinkError(f"payload of {end - start} bytes has no TYPE and SEQ")
    letter = payload[start]
    if not (0x41 <= letter <= 0x5A or 0x61 <= letter <= 0x7A):
        raise LinkError(f"TYPE byte 0x{letter:02X} is not an ASCII letter")
    return Message(chr(letter), payload[start + 1], bytes(payload[start + 2 : end]))


def _need_length(body: bytes, length: int, what: str) -> None:
    if len(body) != length:
        raise LinkError(f"{what} body must be {length} bytes, got {len(body)}")


# ---- command bodies ----------------------------------------------------------


@dataclass(frozen=True)
class ArmRequest:
    magstripe: bool
    chip: bool
    timeout_s: int  # 0 = no timeout


def timeout_field(timeout_s: float | None) -> int:
    """A read's timeout as the arm's 2-byte seconds: rounded up, 0 (none) for None or <= 0."""
    if timeout_s is None or timeout_s <= 0:
        return 0
    seconds = math.ceil(timeout_s)
    if seconds > TIMEOUT_MAX_S:
        raise LinkError(f"arm timeout {timeout_s} s exceeds {TIMEOUT_MAX_S} s; use 0 for none")
    return seconds


def arm_body(magstripe: bool, chip: bool, timeout_s: int) -> bytes:
    if not (magstripe or chip):
        raise LinkError("an arm needs magstripe, chip or both")
    if not 0 <= timeout_s <= TIMEOUT_MAX_S:
        raise LinkError(f"arm timeout must be 0..{TIMEOUT_MAX_S} s, got {timeout_s}")
    flags = (ARM_MAGSTRIPE if magstripe else 0) | (ARM_CHIP if chip else 0)
    return bytes((flags,)) + timeout_s.to_bytes(2, "big")


def parse_arm(body: bytes) -> ArmRequest:
    _need_length(body, 3, "arm")
    flags = body[0]
    if flags & ~(ARM_MAGSTRIPE | ARM_CHIP) or not flags:
        raise LinkError(f"arm flags 0x{flags:02X}: only bit 0 (magstripe) and bit 1 (chip), at least one")
    return ArmRequest(bool(flags & ARM_MAGSTRIPE), bool(flags & ARM_CHIP),
                      int.from_bytes(body[1:3], "big"))


def beep_body(ms: int) -> bytes:
    if not BEEP_MIN_MS <= ms <= BEEP_MAX_MS:
        raise LinkError(f"beep duration must be {BEEP_MIN_MS}..{BEEP_MAX_MS} ms, got {ms}")
    return ms.to_bytes(2, "big")


def parse_beep(body: bytes) -> int:
    _need_length(body, 2, "beep")
    ms = int.from_bytes(body, "big")
    if not BEEP_MIN_MS <= ms <= BEEP_MAX_MS:
        raise LinkError(f"beep duration must be {BEEP_MIN_MS}..{BEEP_MAX_MS} ms, got {ms}")
    return ms


def led_body(colour: str, on: bool) -> bytes:
    if colour not in LED_COLOURS:
        raise LinkError(f"LED colour must be one of {', '.join(LED_COLOURS)}, got {colour!r}")
    return bytes((LED_COLOURS.index(colour), 1 if on else 0))


def parse_led(body: bytes) -> tuple[str, bool]:
    _need_length(body, 2, "LED")
    if body[0] >= len(LED_COLOURS) or body[1] > 1:
        raise LinkError(f"LED colour {body[0]} / state {body[1]}: colour 0..3, state 0..1")
    return LED_COLOURS[body[0]], bool(body[1])


# ---- reply bodies ------------------------------------------------------------


def status_body(armed: bool, chip_present: bool, chip_powered: bool = False) -> bytes:
    return bytes(((STATUS_ARMED if armed else 0) | (STATUS_CHIP_PRESENT if chip_present else 0)
                  | (STATUS_CHIP_POWERED if chip_powered else 0),))


def parse_status(body: bytes) -> tuple[bool, bool]:
    """(armed, chip present) from an `s` reply."""
    armed, present, _powered = parse_status_flags(body)
    return armed, present


def parse_status_flags(body: bytes) -> tuple[bool, bool, bool]:
    """(armed, chip present, chip powered) from an `s` reply (a reader without the powered bit
    reports it 0)."""
    _need_length(body, 1, "status reply")
    return (bool(body[0] & STATUS_ARMED), bool(body[0] & STATUS_CHIP_PRESENT),
            bool(body[0] & STATUS_CHIP_POWERED))


def nak_body(reason: NakReason) -> bytes:
    return bytes((int(reason),))


def parse_nak(body: bytes) -> NakReason:
    _need_length(body, 1, "NAK")
    try:
        return NakReason(body[0])
    except ValueError:
        raise LinkError(f"NAK reason {body[0]} is not 1, 2 or 3") from None


# ---- chip session: command and reply bodies --------------------------------------


def apdu_parts(apdu: bytes) -> list[tuple[str, bytes]]:
    """The (TYPE, body) commands that carry one command APDU: W parts, then the X."""
    if not APDU_MIN <= len(apdu) <= APDU_MAX:
        raise LinkError(f"a command APDU is {APDU_MIN}..{APDU_MAX} bytes, got {len(apdu)}")
    parts: list[tuple[str, bytes]] = []
    offset = 0
    while len(apdu) - offset > PART_MAX:
        parts.append((APDU_PART, offset.to_bytes(OFFSET_LEN, "big") + apdu[offset:offset + PART_MAX]))
        offset += PART_MAX
    parts.append((EXCHANGE, offset.to_bytes(OFFSET_LEN, "big") + apdu[offset:]))
    return parts


def parse_offset_part(body: bytes, what: str) -> tuple[int, bytes]:
    """(offset, bytes) of a W, X or G body (G has no bytes)."""
    if len(body) < OFFSET_LEN:
        raise LinkError(f"{what} body needs a 2-byte offset, got {len(body)} bytes")
    offset = int.from_bytes(body[:OFFSET_LEN], "big")
    if offset > APDU_MAX and what != "response part":
        raise LinkError(f"{what} offset {offset} is past the longest APDU ({APDU_MAX} bytes)")
    return offset, bytes(body[OFFSET_LEN:])


def chip_error_body(status: ChipStatus, text: str = "") -> bytes:
    """A `p` or `x` body for a failed chip command: status + words for the log (no card data)."""
    if status is ChipStatus.OK:
        raise LinkError("an error body needs a status other than 0")
    data = (text or status.words).encode("ascii", "replace")[: BODY_MAX - 1]
    return bytes((int(status),)) + data


def power_reply_body(atr: bytes) -> bytes:
    if len(atr) > ATR_MAX:
        raise LinkError(f"ATR of {len(atr)} bytes; at most {ATR_MAX}")
    return bytes((int(ChipStatus.OK),)) + atr


def exchange_reply_body(rapdu: bytes) -> bytes:
    """The `x` body for an answered APDU: status 0, the response's length, its first bytes
    (the rest is fetched with G)."""
    if not 2 <= len(rapdu) <= RESPONSE_MAX:
        raise LinkError(f"a response APDU is 2..{RESPONSE_MAX} bytes, got {len(rapdu)}")
    return bytes((int(ChipStatus.OK),)) + len(rapdu).to_bytes(2, "big") + rapdu[:FIRST_RESPONSE_MAX]


@dataclass(frozen=True)
class ChipReply:
    """A parsed `p` or `x`: status, and the ATR / the response's length and first bytes, or words.
    The data may hold card data: never shown."""

    status: ChipStatus
    data: bytes = field(default=b"", repr=False)
    total: int = 0  # `x` only: the whole response's length
    words: str = ""

    def __repr__(self) -> str:
        return f"ChipReply({self.status.name}, data={len(self.data)} bytes, total={self.total})"


def parse_chip_reply(body: bytes, *, exchange: bool) -> ChipReply:
    """A `p` (exchange=False) or `x` reply body; LinkError if it breaks the rules."""
    if not body:
        raise LinkError("chip reply has no status byte")
    try:
        status = ChipStatus(body[0])
    except ValueError:
        raise LinkError(f"chip status {body[0]} is not 0..5") from None
    rest = bytes(body[1:])
    if status is not ChipStatus.OK:
        return ChipReply(status, words=rest.decode("ascii", "replace") or status.words)
    if not exchange:
        if len(rest) > ATR_MAX:
            raise LinkError(f"ATR of {len(rest)} bytes; at most {ATR_MAX}")
        return ChipReply(status, rest)
    if len(rest) < 2:
        raise LinkError("exchange reply has no response length")
    total = int.from_bytes(rest[:2], "big")
    first = rest[2:]
    if not 2 <= total <= RESPONSE_MAX:
        raise LinkError(f"response length {total}: a response APDU is 2..{RESPONSE_MAX} bytes")
    if len(first) != min(total, FIRST_RESPONSE_MAX):
        raise LinkError(f"exchange reply carries {len(first)} response bytes of {total}; "
                        f"expected {min(total, FIRST_RESPONSE_MAX)}")
    return ChipReply(status, first, total)


# ---- event bodies ------------------------------------------------------------


def magstripe_body(tracks: tuple[str | None, str | None, str | None],
                   statuses: tuple[TrackStatus, TrackStatus, TrackStatus] | None = None) -> bytes:
    """Three track records. statuses defaults to READ where a track is given, BLANK where None."""
    if statuses is None:
        statuses = tuple(TrackStatus.READ if t else TrackStatus.BLANK for t in tracks)  # type: ignore[assignment]
    assert statuses is not None
    out = bytearray()
    for number, (text, status) in enumerate(zip(tracks, statuses, strict=True), 1):
        data = (text or "").encode("ascii", "replace")
        if status is TrackStatus.READ:
            _check_track(number, data)
        elif data:
            raise LinkError(f"track {number} is {status.name.lower()} but has {len(data)} characters")
        out += bytes((int(status), len(data))) + data
    if len(out) > BODY_MAX:
        raise LinkError(f"the three tracks need {len(out)} bytes; the link allows {BODY_MAX}")
    return bytes(out)


def _check_track(number: int, data: bytes) -> None:
    if not data:
        raise LinkError(f"track {number} is marked read but is empty")
    if len(data) > TRACK_MAX[number - 1]:
        raise LinkError(f"track {number} has {len(data)} characters; at most {TRACK_MAX[number - 1]}")
    allowed = _TRACK1_CHARS if number == 1 else _TRACK23_CHARS
    bad = sum(1 for ch in data.decode("latin-1") if ch not in allowed)
    if bad:
        # Count only: the characters themselves are card data.
        raise LinkError(f"track {number} has {bad} characters outside its character set")


def parse_magstripe(body: bytes) -> tuple[tuple[TrackStatus, ...], MagstripeRead]:
    """The statuses of the three tracks and the tracks that were read (None where not)."""
    pos = 0
    statuses: list[TrackStatus] = []
    tracks: list[str | None] = []
    for number in (1, 2, 3):
        if pos + 2 > len(body):
            raise LinkError(f"magstripe event ends before track {number}'s record")
        try:
            status = TrackStatus(body[pos])
        except ValueError:
            raise LinkError(f"track {number} status {body[pos]} is not 0, 1 or 2") from None
        length = body[pos + 1]
        data = body[pos + 2 : pos + 2 + length]
        if len(data) != length:
            raise LinkError(f"track {number} claims {length} characters; {len(data)} follow")
        if status is TrackStatus.READ:
            _check_track(number, data)
            tracks.append(data.decode("ascii"))
        elif length:
            raise LinkError(f"track {number} is {status.name.lower()} but has {length} characters")
        else:
            tracks.append(None)
        statuses.append(status)
        pos += 2 + length
    if pos != len(body):
        raise LinkError(f"magstripe event has {len(body) - pos} bytes after track 3")
    return tuple(statuses), MagstripeRead(tracks[0], tracks[1], tracks[2])


def error_body(code: ReadErrorCode, text: str = "") -> bytes:
    data = text.encode("ascii", "replace")[: BODY_MAX - 1]
    return bytes((int(code),)) + data


def parse_error(body: bytes) -> tuple[int, str]:
    if not body:
        raise LinkError("read-error event has no code")
    return body[0], body[1:].decode("ascii", "replace")


def event_from_message(msg: Message) -> ReaderEvent:
    """The ReaderEvent a reader event message stands for; LinkError if its body is malformed."""
    if msg.type == MAGSTRIPE:
        statuses, read = parse_magstripe(msg.body)
        if read.track1 is None and read.track2 is None and read.track3 is None:
            if TrackStatus.UNREADABLE in statuses:
                return ReadFailed(ReadErrorCode.SWIPE_UNREADABLE.words)
            return ReadFailed("the swipe carried no track data (all tracks blank)")
        return read
    if msg.type == CHIP_IN:
        if len(msg.body) > ATR_MAX:
            raise LinkError(f"ATR of {len(msg.body)} bytes; at most {ATR_MAX}")
        return ChipInserted(msg.body)
    if msg.type == CHIP_OUT:
        _need_length(msg.body, 0, "chip-removed event")
        return ChipRemoved()
    if msg.type == READ_ERROR:
        code, _log_text = parse_error(msg.body)
        try:
            return ReadFailed(ReadErrorCode(code).words)
        except ValueError:
            return ReadFailed(f"the reader reported read error {code}")
    if msg.type == TIMED_OUT:
        _need_length(msg.body, 0, "timeout event")
        return ReadTimedOut()
    raise LinkError(f"{msg.type!r} is not a reader event")


# ---- PIN pad: command and reply bodies (docs/reader-link.md, "PIN pad") ------------------------
#
# No clear PIN and no clear key ever crosses the link: the bodies below carry wrapped keys, check
# values, MAC data and ciphertext, the PAN the PIN block is built over, and the PIN block
# encrypted under the PIK.

# Operations of `Y` (the body's first byte, an ASCII letter).
PAD_STATUS, PAD_LOAD_TMK, PAD_INSTALL, PAD_FORGET = "S", "T", "I", "F"
PAD_MAC, PAD_TRACK, PAD_DESTROY = "M", "E", "D"
PAD_OPS = {PAD_STATUS: "status", PAD_LOAD_TMK: "load TMK", PAD_INSTALL: "install working keys",
           PAD_FORGET: "forget working keys", PAD_MAC: "MAC cipher", PAD_TRACK: "track block",
           PAD_DESTROY: "destroy keys"}
# Operations that change the keys: refused (status BUSY) while a PIN entry runs.
PAD_KEY_CHANGES = frozenset({PAD_LOAD_TMK, PAD_INSTALL, PAD_FORGET, PAD_DESTROY})

KCV_LEN = 4
KEY_LEN = 16  # double-length DES keys: the TMK and every working key
PIN_BLOCK_LEN = 8
PAN_MIN, PAN_MAX = 13, 19
PIN_TIMEOUT_MIN_S, PIN_TIMEOUT_MAX_S = 1, 300
PROMPT_MAX = 96  # bytes of UTF-8 text for the pad's display; "\n" starts its second line
TR31_MIN, TR31_MAX = 16, BODY_MAX - 1
MAC_FLAG_DOUBLE, MAC_FLAG_CHAIN = 0x01, 0x02
MAC_IV_LEN = 8
MAC_DATA_MAX = (BODY_MAX - 2 - MAC_IV_LEN) // 8 * 8  # 232: op, flags and IV take ten bytes
ENTRY_ALLOW_EMPTY = 0x01
INSTALL_FIRST8 = 0x01
_INSTALL_ENTRY = 3 + 1 + KEY_LEN + KCV_LEN  # role, flags, wrapped key, check value
# Key bits of the `Y S` and `Y D` replies: the TMK, then the working keys in WORKING_KEY_ROLES order.
PAD_HAS_TMK = 0x01
PAD_ENTRY_RUNNING = 0x10
_ROLE_BITS = {"PIK": 0x02, "MAK": 0x04, "TDK": 0x08}


class PadStatus(enum.IntEnum):
    """First byte of the `y` and `j` replies. Not 0: the rest is ASCII words for the log, except
    after CHECK_FAILED, whose role and two check values come first."""

    OK = 0
    NO_PIN_PAD = 1
    NO_TMK = 2
    KEY_MISSING = 3
    CHECK_FAILED = 4
    KEY_BLOCK_REFUSED = 5
    BUSY = 6
    CANCELLED = 7  # j only
    TIMED_OUT = 8  # j only
    SKIPPED = 9  # j only

    @property
    def words(self) -> str:
        return {0: "done", 1: "this reader has no PIN pad",
                2: "the PIN pad holds no terminal master key (load one at the key ceremony)",
                3: "the PIN pad does not hold that working key (sign on first)",
                4: "a working key's check value disagrees; the PIN pad kept its old keys",
                5: "the PIN pad refused the key block",
                6: "the PIN pad is busy with a PIN entry",
                7: "the PIN entry was cancelled", 8: "the PIN entry timed out",
                9: "the cardholder skipped the PIN (ENTER with no digits)"}[self.value]


def pad_body(op: str, args: bytes = b"") -> bytes:
    """A `Y` body: the operation's letter and its arguments."""
    if op not in PAD_OPS:
        raise LinkError(f"PIN pad operation {op!r} is not one of {', '.join(PAD_OPS)}")
    return op.encode("ascii") + args


def parse_pad(body: bytes) -> tuple[str, bytes]:
    """(operation, arguments) of a `Y` body."""
    if not body:
        raise LinkError("PIN pad command has no operation")
    op = chr(body[0])
    if op not in PAD_OPS:
        raise LinkError(f"PIN pad operation 0x{body[0]:02X} is not one of {', '.join(PAD_OPS)}")
    return op, bytes(body[1:])


def tr31_args(block: str) -> bytes:
    data = block.strip().encode("ascii", "replace")
    if not TR31_MIN <= len(data) <= TR31_MAX or not all(0x21 <= b <= 0x7E for b in data):
        raise LinkError(f"a TR-31 key block is {TR31_MIN}..{TR31_MAX} printable ASCII characters, "
                        f"got {len(data)}")
    return data


def parse_tr31(args: bytes) -> str:
    if not TR31_MIN <= len(args) <= TR31_MAX or not all(0x21 <= b <= 0x7E for b in args):
        raise LinkError(f"a TR-31 key block is {TR31_MIN}..{TR31_MAX} printable ASCII characters")
    return args.decode("ascii")


def install_args(keys: list[WrappedKey]) -> bytes:
    """`Y I` arguments: count, then role (3 ASCII), flags, wrapped key (16), check value (4)."""
    if not 1 <= len(keys) <= len(WORKING_KEY_ROLES):
        raise LinkError(f"install 1..{len(WORKING_KEY_ROLES)} working keys, got {len(keys)}")
    out = bytearray((len(keys),))
    for k in keys:
        if k.role not in WORKING_KEY_ROLES or len(k.wrapped) != KEY_LEN or len(k.check_value) != KCV_LEN:
            raise LinkError(f"a working key is one of {', '.join(WORKING_KEY_ROLES)}, {KEY_LEN} bytes "
                            f"wrapped and a {KCV_LEN}-byte check value")
        out += k.role.encode("ascii") + bytes((INSTALL_FIRST8 if k.check_first8 else 0,))
        out += k.wrapped + k.check_value
    return bytes(out)


def parse_install(args: bytes) -> list[WrappedKey]:
    if not args or not 1 <= args[0] <= len(WORKING_KEY_ROLES):
        raise LinkError(f"install names 1..{len(WORKING_KEY_ROLES)} working keys")
    count = args[0]
    _need_length(args, 1 + count * _INSTALL_ENTRY, f"install of {count} keys")
    keys: list[WrappedKey] = []
    for i in range(count):
        e = args[1 + i * _INSTALL_ENTRY: 1 + (i + 1) * _INSTALL_ENTRY]
        role = e[:3].decode("ascii", "replace")
        if role not in WORKING_KEY_ROLES or e[3] & ~INSTALL_FIRST8:
            raise LinkError(f"working key {i + 1}: role must be one of {', '.join(WORKING_KEY_ROLES)}, "
                            f"flags only bit 0")
        if role in (k.role for k in keys):
            raise LinkError(f"working key {role} appears twice")
        keys.append(WrappedKey(role, bytes(e[4:4 + KEY_LEN]), bytes(e[4 + KEY_LEN:]),
                               bool(e[3] & INSTALL_FIRST8)))
    return keys


def mac_args(data: bytes, *, iv: bytes, double: bool, chain: bool) -> bytes:
    """`Y M` arguments: flags, the CBC chaining value (zeros for the first piece), the data."""
    if not data or len(data) % 8 or len(data) > MAC_DATA_MAX:
        raise LinkError(f"MAC data goes in pieces of 8..{MAC_DATA_MAX} bytes, a multiple of 8; "
                        f"got {len(data)}")
    if len(iv) != MAC_IV_LEN or (iv != bytes(MAC_IV_LEN) and not chain):
        raise LinkError("the chaining value is 8 bytes, and zeros unless chained")
    flags = (MAC_FLAG_DOUBLE if double else 0) | (MAC_FLAG_CHAIN if chain else 0)
    return bytes((flags,)) + iv + data


def parse_mac(args: bytes) -> tuple[bool, bool, bytes, bytes]:
    """(double, chain, iv, data) of `Y M` arguments."""
    if len(args) < 1 + MAC_IV_LEN + 8:
        raise LinkError("MAC cipher needs flags, an 8-byte chaining value and at least 8 bytes of data")
    flags, iv, data = args[0], bytes(args[1:1 + MAC_IV_LEN]), bytes(args[1 + MAC_IV_LEN:])
    if flags & ~(MAC_FLAG_DOUBLE | MAC_FLAG_CHAIN):
        raise LinkError(f"MAC flags 0x{flags:02X}: only bit 0 (double) and bit 1 (chain)")
    if len(data) % 8 or len(data) > MAC_DATA_MAX:
        raise LinkError(f"MAC data is a multiple of 8 bytes, at most {MAC_DATA_MAX}; got {len(data)}")
    if not flags & MAC_FLAG_CHAIN and iv != bytes(MAC_IV_LEN):
        raise LinkError("a chaining value other than zeros needs the chain flag")
    return bool(flags & MAC_FLAG_DOUBLE), bool(flags & MAC_FLAG_CHAIN), iv, data


def key_bits(has_tmk: bool, roles: tuple[str, ...] | list[str], entry_running: bool = False) -> int:
    bits = PAD_HAS_TMK if has_tmk else 0
    for role in roles:
        bits |= _ROLE_BITS[role]
    return bits | (PAD_ENTRY_RUNNING if entry_running else 0)


def roles_of(bits: int) -> tuple[str, ...]:
    return tuple(r for r in WORKING_KEY_ROLES if bits & _ROLE_BITS[r])


def pad_status_data(has_tmk: bool, tmk_check: bytes | None, roles: tuple[str, ...],
                    entry_running: bool) -> bytes:
    """The data of a `y` to `Y S`: key bits, then the TMK's check value when there is a TMK."""
    bits = key_bits(has_tmk, roles, entry_running)
    if has_tmk:
        if tmk_check is None or len(tmk_check) != KCV_LEN:
            raise LinkError("a PIN pad with a TMK reports its 4-byte check value")
        return bytes((bits,)) + tmk_check
    return bytes((bits,))


def parse_pad_status(data: bytes) -> PinPadStatus:
    if not data:
        raise LinkError("PIN pad status has no key bits")
    bits = data[0]
    if bits & ~(PAD_HAS_TMK | PAD_ENTRY_RUNNING | sum(_ROLE_BITS.values())):
        raise LinkError(f"PIN pad key bits 0x{bits:02X} have unknown bits set")
    has_tmk = bool(bits & PAD_HAS_TMK)
    _need_length(data, 1 + (KCV_LEN if has_tmk else 0), "PIN pad status")
    return PinPadStatus(has_tmk=has_tmk, tmk_check=data[1:].hex().upper() if has_tmk else None,
                        working_keys=roles_of(bits), entry_running=bool(bits & PAD_ENTRY_RUNNING))


def pad_reply_body(status: PadStatus, data: bytes = b"", words: str = "") -> bytes:
    """A `y` or `j` body: status 0 and the data, or a status and words (no secrets in them)."""
    if status is PadStatus.OK:
        if len(data) > BODY_MAX - 1:
            raise LinkError(f"PIN pad reply data of {len(data)} bytes; at most {BODY_MAX - 1}")
        return bytes((0,)) + data
    if data:
        raise LinkError("only status 0 carries data; CHECK_FAILED is built by check_failed_body")
    return bytes((int(status),)) + (words or status.words).encode("ascii", "replace")[:BODY_MAX - 1]


def check_failed_body(role: str, expected: bytes, got: bytes, words: str = "") -> bytes:
    if role not in WORKING_KEY_ROLES or len(expected) != KCV_LEN or len(got) != KCV_LEN:
        raise LinkError("a check failure names a working key and two 4-byte check values")
    text = (words or PadStatus.CHECK_FAILED.words).encode("ascii", "replace")
    return (bytes((int(PadStatus.CHECK_FAILED),)) + role.encode("ascii") + expected + got
            + text[:BODY_MAX - 12])


@dataclass(frozen=True)
class PadReply:
    """A parsed `y` or `j`: status, then the data (status 0) or words; after CHECK_FAILED the
    role and both check values. The data may be ciphertext or a PIN block: never shown."""

    status: PadStatus
    data: bytes = field(default=b"", repr=False)
    words: str = ""
    role: str = ""
    expected: bytes = b""
    got: bytes = b""

    def __repr__(self) -> str:
        return f"PadReply({self.status.name}, data={len(self.data)} bytes, words={self.words!r})"


def parse_pad_reply(body: bytes) -> PadReply:
    if not body:
        raise LinkError("PIN pad reply has no status byte")
    try:
        status = PadStatus(body[0])
    except ValueError:
        raise LinkError(f"PIN pad status {body[0]} is not 0..{max(PadStatus)}") from None
    rest = bytes(body[1:])
    if status is PadStatus.OK:
        return PadReply(status, rest)
    if status is PadStatus.CHECK_FAILED:
        if len(rest) < 3 + 2 * KCV_LEN:
            raise LinkError("a check failure carries the role and two check values")
        role = rest[:3].decode("ascii", "replace")
        if role not in WORKING_KEY_ROLES:
            raise LinkError(f"a check failure names {role!r}, not a working key")
        return PadReply(status, words=rest[11:].decode("ascii", "replace") or status.words, role=role,
                        expected=rest[3:3 + KCV_LEN], got=rest[3 + KCV_LEN:3 + 2 * KCV_LEN])
    return PadReply(status, words=rest.decode("ascii", "replace") or status.words)


@dataclass(frozen=True)
class PinEntryRequest:
    """A parsed `J`. The PAN is card data: never shown."""

    pan: str = field(repr=False)
    prompt: str
    timeout_s: int
    allow_empty: bool


def cut_prompt(prompt: str) -> bytes:
    """The prompt as at most PROMPT_MAX bytes of UTF-8, cut at a character boundary."""
    data = prompt.encode("utf-8")
    if len(data) <= PROMPT_MAX:
        return data
    return data[:PROMPT_MAX].decode("utf-8", "ignore").encode("utf-8")


def pin_entry_body(pan: str, prompt: str, timeout_s: float, allow_empty: bool) -> bytes:
    """`J`: timeout (2 bytes, seconds), flags (bit 0 allow empty), PAN length + PAN digits, prompt."""
    if not (PAN_MIN <= len(pan) <= PAN_MAX and pan.isascii() and pan.isdigit()):
        raise LinkError(f"the PAN for a PIN block is {PAN_MIN}..{PAN_MAX} digits")
    seconds = math.ceil(timeout_s)
    if not PIN_TIMEOUT_MIN_S <= seconds <= PIN_TIMEOUT_MAX_S:
        raise LinkError(f"a PIN entry's timeout is {PIN_TIMEOUT_MIN_S}..{PIN_TIMEOUT_MAX_S} s, "
                        f"got {timeout_s}")
    return (seconds.to_bytes(2, "big") + bytes((ENTRY_ALLOW_EMPTY if allow_empty else 0, len(pan)))
            + pan.encode("ascii") + cut_prompt(prompt))


def parse_pin_entry(body: bytes) -> PinEntryRequest:
    if len(body) < 4:
        raise LinkError("PIN entry needs a timeout, flags and the PAN")
    seconds, flags, pan_len = int.from_bytes(body[:2], "big"), body[2], body[3]
    if not PIN_TIMEOUT_MIN_S <= seconds <= PIN_TIMEOUT_MAX_S:
        raise LinkError(f"a PIN entry's timeout is {PIN_TIMEOUT_MIN_S}..{PIN_TIMEOUT_MAX_S} s, got {seconds}")
    if flags & ~ENTRY_ALLOW_EMPTY:
        raise LinkError(f"PIN entry flags 0x{flags:02X}: only bit 0 (allow empty)")
    pan = body[4:4 + pan_len]
    if not PAN_MIN <= pan_len <= PAN_MAX or len(pan) != pan_len or not pan.isdigit():
        raise LinkError(f"the PAN for a PIN block is {PAN_MIN}..{PAN_MAX} digits")
    prompt = body[4 + pan_len:]
    if len(prompt) > PROMPT_MAX:
        raise LinkError(f"the prompt is at most {PROMPT_MAX} bytes of UTF-8, got {len(prompt)}")
    try:
        text = prompt.decode("utf-8")
    except UnicodeDecodeError:
        raise LinkError("the prompt is not UTF-8") from None
    return PinEntryRequest(pan.decode("ascii"), text, seconds, bool(flags & ENTRY_ALLOW_EMPTY))
