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
    ChipInserted,
    ChipRemoved,
    MagstripeRead,
    ReaderEvent,
    ReadFailed,
    ReadTimedOut,
)

__all__ = [
    "APDU_MAX",
    "APDU_MIN",
    "BODY_MAX",
    "COMMANDS",
    "EVENTS",
    "LED_COLOURS",
    "RESPONSE_MAX",
    "TRACK_MAX",
    "ArmRequest",
    "ChipReply",
    "ChipStatus",
    "LinkError",
    "Message",
    "NakReason",
    "ReadErrorCode",
    "TrackStatus",
    "apdu_parts",
    "arm_body",
    "beep_body",
    "chip_error_body",
    "encode",
    "error_body",
    "event_from_message",
    "exchange_reply_body",
    "led_body",
    "magstripe_body",
    "nak_body",
    "parse",
    "parse_arm",
    "parse_beep",
    "parse_chip_reply",
    "parse_error",
    "parse_led",
    "parse_magstripe",
    "parse_nak",
    "parse_offset_part",
    "parse_status",
    "parse_status_flags",
    "power_reply_body",
    "status_body",
    "timeout_field",
]

BODY_MAX = posio.PAYLOAD_MAX - 2  # TYPE and SEQ take two of the frame's 250 bytes

# Commands (terminal to reader); the reply is the same letter in lower case, or NAK.
VERSION, ARM, CANCEL, BEEP, LED, STATUS = "V", "A", "C", "B", "L", "S"
# The chip session (docs/reader-link.md, "Chip commands").
POWER_ON, APDU_PART, EXCHANGE, GET_PART, POWER_OFF = "P", "W", "X", "G", "O"
CHIP_COMMANDS = frozenset({POWER_ON, APDU_PART, EXCHANGE, GET_PART, POWER_OFF})
COMMANDS = frozenset({VERSION, ARM, CANCEL, BEEP, LED, STATUS}) | CHIP_COMMANDS
NAK = "n"
# Events (reader to terminal).
MAGSTRIPE, CHIP_IN, CHIP_OUT, READ_ERROR, TIMED_OUT = "M", "K", "R", "E", "T"
EVENTS = frozenset({MAGSTRIPE, CHIP_IN, CHIP_OUT, READ_ERROR, TIMED_OUT})

COMMAND_NAMES = {VERSION: "version", ARM: "arm", CANCEL: "cancel", BEEP: "beep", LED: "LED",
                 STATUS: "status", POWER_ON: "chip power-on", APDU_PART: "APDU part",
                 EXCHANGE: "APDU exchange", GET_PART: "response part", POWER_OFF: "chip power-off"}

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


def parse(payload: bytes) -> Message:
    """A decoded frame's payload as a Message; LinkError if it has no TYPE letter and SEQ."""
    if len(payload) < 2:
        raise LinkError(f"payload of {len(payload)} bytes has no TYPE and SEQ")
    letter = payload[0]
    if not (0x41 <= letter <= 0x5A or 0x61 <= letter <= 0x7A):
        raise LinkError(f"TYPE byte 0x{letter:02X} is not an ASCII letter")
    return Message(chr(letter), payload[1], bytes(payload[2:]))


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
