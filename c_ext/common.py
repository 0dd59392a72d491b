"""What the C wrapper (posio.py) and its Python twin (reference.py) share.

Wire constants, the decoder's record format and interface, the pump's
exceptions and the argument checks live here once, so both implementations
accept the same input, answer in the same form and fail with the same errors.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Iterator
from typing import Protocol

# Reader link framing (FRAMING.md); the C values come from posio.h and a test
# checks they agree.
STX = 0x02
ETX = 0x03
PAYLOAD_MAX = 250
FRAME_MAX = PAYLOAD_MAX + 4
ERROR_KEYS = ("noise_bytes", "bad_checksum", "bad_length", "bad_etx", "truncated")
# feed_records() with no bytes, or with none that finish a frame.
NO_RECORDS: tuple[bytes, int] = (b"", 0)


class LinkDecoder(Protocol):
    """What a reader-link frame decoder offers (posio.FrameDecoder, its twin in reference.py).

    The *_records forms return (records, count): the payloads of `count` frames in one bytes
    object, each as a record of one length byte then the payload (the frame without its STX,
    ETX and LRC), back to back: no object per frame.  record_spans() walks them,
    split_records() turns them into feed()'s list.
    """

    def feed(self, data: bytes) -> list[bytes]: ...
    def feed_records(self, data: bytes) -> tuple[bytes, int]: ...
    def flush(self) -> list[bytes]: ...
    def flush_records(self) -> tuple[bytes, int]: ...
    def reset(self) -> None: ...
    @property
    def errors(self) -> dict[str, int]: ...
    @property
    def line_errors(self) -> int: ...
    @property
    def frames(self) -> int: ...
    @property
    def buffered(self) -> int: ...


def record_spans(records: bytes, count: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each payload in records: records[start:end] is the payload."""
    end = 0
    for _ in range(count):
        start = end + 1
        end = start + records[end]
        yield start, end


def split_records(records: bytes, count: int) -> list[bytes]:
    """The payloads in records, one bytes object each (what feed() returns)."""
    # One slice per frame is the whole cost here, so the loop around it is a
    # comprehension with no per-record statement: j is the length byte of the
    # record, i its payload, and after the slice j is the next length byte
    # (the slice's start is evaluated before its stop).
    j = 0
    return [records[(i := j + 1) : (j := i + records[j])] for _ in range(count)]

# GS v 0 (print raster bit image), normal density.
GS_V0 = b"\x1d\x76\x30\x00"

# read_until outcomes, mirroring POSIO_READ_* in posio.h.
READ_DONE = 0
READ_CANCELLED = 1
READ_EOF = 2


class ReadCancelled(Exception):
    """read_until stopped because its cancel fd became readable (or hung up).

    `partial` holds the bytes read before the cancel: they were taken off the
    fd, so the caller decides whether they matter.  The cancel fd itself is
    not drained; whoever owns it clears it before the next operation.
    """

    def __init__(self, partial: bytes) -> None:
        super().__init__(f"read cancelled after {len(partial)} bytes")
        self.partial = partial


class WriteTimeout(TimeoutError):
    """write_all gave up waiting for the fd; `written` bytes did go out."""

    def __init__(self, written: int, total: int) -> None:
        super().__init__(_errno.ETIMEDOUT, f"write timed out after {written} of {total} bytes")
        self.written = written
        self.total = total


def check_payload(payload: bytes) -> None:
    if len(payload) > PAYLOAD_MAX:
        raise ValueError(f"frame payload is {len(payload)} bytes; the link allows {PAYLOAD_MAX}")


def check_crc_init(init: int) -> None:
    if not 0 <= init <= 0xFFFF:
        raise ValueError(f"CRC-16 init must be 0..0xFFFF, got {init!r}")


def row_stride(width: int) -> int:
    """Bytes per packed raster row: one bit per dot, rounded up to a byte."""
    return (width + 7) // 8


def check_image(gray: bytes, width: int, height: int) -> None:
    if width < 1 or height < 0:
        raise ValueError(f"image must be at least 1 dot wide, got {width}x{height}")
    if len(gray) != width * height:
        raise ValueError(f"gray image is {len(gray)} bytes, expected {width}x{height}")


def check_level(level: int) -> None:
    # 256 is allowed on purpose: it makes every dot black (all values < 256).
    if not 0 <= level <= 256:
        raise ValueError(f"threshold level must be 0..256, got {level!r}")


def check_bands(packed: bytes, width: int, height: int, band_height: int) -> int:
    """Validates raster_bands arguments; returns the row stride."""
    if width < 1 or height < 0:
        raise ValueError(f"raster must be at least 1 dot wide, got {width}x{height}")
    stride = row_stride(width)
    if stride > 0xFFFF:
        raise ValueError(f"raster is {width} dots wide; GS v 0 allows {0xFFFF * 8}")
    if not 1 <= band_height <= 0xFFFF:
        raise ValueError(f"band_height must be 1..65535, got {band_height!r}")
    if len(packed) != stride * height:
        raise ValueError(f"packed raster is {len(packed)} bytes, expected {stride * height}")
    return stride


def band_header(stride: int, rows: int) -> bytes:
    return GS_V0 + bytes((stride & 0xFF, stride >> 8, rows & 0xFF, rows >> 8))


def check_write(fd: int, chunk: int) -> None:
    if fd < 0:
        raise ValueError(f"fd must be >= 0, got {fd}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")


def check_read(fd: int, max_bytes: int) -> None:
    if fd < 0:
        raise ValueError(f"fd must be >= 0, got {fd}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")


def write_failed(err: int, written: int, total: int) -> OSError:
    """The exception for a failed write_all; `written` says how far it got."""
    if err == _errno.ETIMEDOUT:
        return WriteTimeout(written, total)
    exc = OSError(err, os.strerror(err))
    exc.written = written  # type: ignore[attr-defined]
    return exc


def finish_read(status: int, data: bytes) -> bytes:
    """Turns a read_until outcome into its result or exception.

    EOF with data returns the data (the next call then raises EOFError), so a
    peer's last bytes before it closed are never lost.
    """
    if status == READ_DONE:
        return data
    if status == READ_CANCELLED:
        raise ReadCancelled(data)
    if status == READ_EOF:
        if data:
            return data
        raise EOFError("end of file on the fd: the other side closed it")
    err = -status
    exc = OSError(err, os.strerror(err))
    exc.partial = data  # type: ignore[attr-defined]
    raise exc
