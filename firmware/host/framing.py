"""Frame layout around an ISO 8583 body: [length 2][TPDU 5][header 6 BCD][MTI ...].

Owns the TPDU, the CUP 12-digit header and reading one length-prefixed frame
from a stream; the body itself is codec.py's business.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_TPDU",
    "HEADER_LEN",
    "MAX_FRAME",
    "TPDU_ID",
    "TPDU_LEN",
    "Header",
    "frame",
    "read_frame",
    "split",
    "swap_tpdu",
]

TPDU_ID: Final = 0x60
TPDU_LEN: Final = 5
HEADER_LEN: Final = 6
DEFAULT_TPDU: Final = bytes.fromhex("6000030000")
# Largest payload (bytes after the length prefix) we send or accept: far above any
# CUP message (62 is at most 512 bytes), low enough that a corrupt length cannot
# make us buffer megabytes.
MAX_FRAME: Final = 4096

_DIGITS: Final = frozenset("0123456789")


@dataclass(frozen=True)
class Header:
    """The 6-byte CUP header, 12 BCD digits."""

    app_type: str = "60"  # 60 magstripe, 61 IC
    version: str = "31"  # software version we announce
    status: str = "0"  # terminal status: 0 normal, 1 test
    processing: str = "0"  # set by the host: 3 = sign on again
    reserved: str = "000000"

    def __post_init__(self) -> None:
        for name, width in (("app_type", 2), ("version", 2), ("status", 1),
                            ("processing", 1), ("reserved", 6)):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) != width or not set(value) <= _DIGITS:
                raise LocalProtocolError(f"header {name} must be {width} digits, got {value!r}")

    def to_bytes(self) -> bytes:
        digits = self.app_type + self.version + self.status + self.processing + self.reserved
        return bytes.fromhex(digits)

    @classmethod
    def from_bytes(cls, b: bytes) -> Header:
        """Parse 6 bytes; RemoteProtocolError (offset within the header) if not BCD."""
        if len(b) != HEADER_LEN:
            raise RemoteProtocolError(f"header is {len(b)} bytes, expected {HEADER_LEN}",
                                      field="header")
        digits = b.hex()
        for i, nibble in enumerate(digits):
            if nibble not in _DIGITS:
                raise RemoteProtocolError(f"header digit {i + 1} is not BCD ({nibble.upper()})",
                                          field="header", offset=i // 2)
        return cls(digits[0:2], digits[2:4], digits[4], digits[5], digits[6:12])


def swap_tpdu(tpdu: bytes) -> bytes:
    """The host answers with destination and source addresses exchanged."""
    if len(tpdu) != TPDU_LEN:
        raise LocalProtocolError(f"TPDU must be {TPDU_LEN} bytes, got {len(tpdu)}")
    return tpdu[:1] + tpdu[3:5] + tpdu[1:3]


def frame(tpdu: bytes, header: Header, body: bytes) -> bytes:
    """Prefix an encoded body (MTI onward) with length, TPDU and header."""
    if len(tpdu) != TPDU_LEN or tpdu[0] != TPDU_ID:
        raise LocalProtocolError(f"TPDU must be {TPDU_LEN} bytes starting 60, got {tpdu.hex()}")
    payload = tpdu + header.to_bytes() + body
    if len(payload) > MAX_FRAME:
        raise LocalProtocolError(f"message is {len(payload)} bytes, larger than {MAX_FRAME}")
    return len(payload).to_bytes(2, "big") + payload


def split(payload: bytes) -> tuple[bytes, Header, bytes]:
    """Cut a payload (the bytes after the length) into TPDU, header and body."""
    if len(payload) < TPDU_LEN + HEADER_LEN:
        raise RemoteProtocolError(
            f"frame is {len(payload)} bytes, too short for TPDU and header",
            field="tpdu", offset=len(payload))
    if payload[0] != TPDU_ID:
        raise RemoteProtocolError(f"TPDU id is {payload[0]:02X}, expected 60",
                                  field="tpdu", offset=0)
    tpdu = bytes(payload[:TPDU_LEN])
    try:
        header = Header.from_bytes(bytes(payload[TPDU_LEN:TPDU_LEN + HEADER_LEN]))
    except RemoteProtocolError as exc:
        # Report the position within the payload, not within the header.
        raise RemoteProtocolError(exc.detail, field="header",
                                  offset=TPDU_LEN + (exc.offset or 0)) from None
    return tpdu, header, bytes(payload[TPDU_LEN + HEADER_LEN:])


async def read_frame(reader: asyncio.StreamReader, max_len: int = MAX_FRAME) -> bytes:
    """Read one frame and return its payload (the bytes after the length prefix).

    Raises RemoteProtocolError for a length of 0 or above `max_len`; the stream is
    unusable afterwards (we no longer know where the next frame starts), so the
    caller must close the connection. asyncio.IncompleteReadError passes through
    when the peer closes mid-frame or before one.
    """
    prefix = await reader.readexactly(2)
    length = int.from_bytes(prefix, "big")
    if length == 0 or length > max_len:
        raise RemoteProtocolError(f"frame length {length} outside 1..{max_len}",
                                  field="length")
    return await reader.readexactly(length)
