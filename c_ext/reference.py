"""Pure-Python twin of every `_posio` function, with the same semantics.

Used ONLY by the tests as the reference the C module is checked against (and
by the benchmark); the firmware never imports it: there is no slow path.
"""

from __future__ import annotations

import errno
import os
import select
import time

from .common import (
    ERROR_KEYS,
    ETX,
    PAYLOAD_MAX,
    READ_CANCELLED,
    READ_DONE,
    READ_EOF,
    STX,
    band_header,
    check_bands,
    check_crc_init,
    check_image,
    check_level,
    check_payload,
    check_read,
    check_write,
    finish_read,
    row_stride,
    split_records,
    write_failed,
)
from .common import record_spans as record_spans  # re-exported, as c_ext.posio does

IMPLEMENTATION = "python"


# ---- checksums -------------------------------------------------------------


def lrc(data: bytes) -> int:
    acc = 0
    for b in data:
        acc ^= b
    return acc


def crc16_ccitt(data: bytes, init: int = 0xFFFF) -> int:
    # Bitwise on purpose: independent of the C table.
    check_crc_init(init)
    crc = init
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


# ---- reader link frames ----------------------------------------------------


def encode_frame(payload: bytes) -> bytes:
    check_payload(payload)
    body = bytes([len(payload)]) + bytes(payload) + bytes([ETX])
    return bytes([STX]) + body + bytes([lrc(body)])


class FrameDecoder:
    """Same contract as posio.FrameDecoder, written as a scan over a buffer.

    Each check fires as soon as its byte is present (LEN at offset 1, ETX at
    2+LEN, LRC at 3+LEN), exactly when the C state machine checks it, so the
    two agree after every feed, not just at the end.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._buf = bytearray()
        self._errors = dict.fromkeys(ERROR_KEYS, 0)
        self._frames = 0

    def feed(self, data: bytes) -> list[bytes]:
        return split_records(*self.feed_records(data))

    def feed_records(self, data: bytes) -> tuple[bytes, int]:
        self._buf += data
        out = bytearray()
        count = self._scan(0, out)
        return bytes(out), count

    def flush(self) -> list[bytes]:
        return split_records(*self.flush_records())

    def flush_records(self) -> tuple[bytes, int]:
        out = bytearray()
        count = 0
        while self._buf:
            self._errors["truncated"] += 1
            count += self._scan(1, out)  # the abandoned candidate's STX goes
        return bytes(out), count

    def _scan(self, i: int, out: bytearray) -> int:
        """Hunts and checks from buf[i]; drops what is settled, keeps a valid prefix.
        Appends a record per good frame to out; returns how many."""
        buf = self._buf
        errs = self._errors
        count = 0
        while True:
            j = buf.find(STX, i)
            if j < 0:
                errs["noise_bytes"] += len(buf) - i
                i = len(buf)
                break
            errs["noise_bytes"] += j - i
            i = j
            avail = len(buf) - i
            if avail < 2:
                break
            n = buf[i + 1]
            if n > PAYLOAD_MAX:
                errs["bad_length"] += 1
                i += 1  # resync just after the failed frame's STX
                continue
            if avail < 3 + n:
                break
            if buf[i + 2 + n] != ETX:
                errs["bad_etx"] += 1
                i += 1
                continue
            if avail < 4 + n:
                break
            if lrc(buf[i + 1 : i + 3 + n]) != buf[i + 3 + n]:
                errs["bad_checksum"] += 1
                i += 1
                continue
            out += buf[i + 1 : i + 2 + n]  # the record: LEN, then the payload
            count += 1
            self._frames += 1
            i += 4 + n
        del buf[:i]
        return count

    @property
    def errors(self) -> dict[str, int]:
        return dict(self._errors)

    @property
    def line_errors(self) -> int:
        return sum(self._errors.values())

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def buffered(self) -> int:
        return len(self._buf)


# ---- printer raster --------------------------------------------------------


def threshold(gray: bytes, width: int, height: int, level: int = 128) -> bytes:
    check_image(gray, width, height)
    check_level(level)
    stride = row_stride(width)
    out = bytearray(stride * height)
    for y in range(height):
        base = y * width
        for x in range(width):
            if gray[base + x] < level:
                out[y * stride + (x >> 3)] |= 0x80 >> (x & 7)
    return bytes(out)


def floyd_steinberg(gray: bytes, width: int, height: int) -> bytes:
    # Same rule as posio.floyd_steinberg's docstring; lists are padded by one
    # cell each side so edge errors fall off the image.
    check_image(gray, width, height)
    stride = row_stride(width)
    out = bytearray(stride * height)
    cur = [0] * (width + 2)
    for y in range(height):
        nxt = [0] * (width + 2)
        base = y * width
        for x in range(width):
            v = gray[base + x] + cur[x + 1]
            if v < 128:
                out[y * stride + (x >> 3)] |= 0x80 >> (x & 7)
                e = v
            else:
                e = v - 255
            right = e * 7 // 16
            down_left = e * 3 // 16
            down = e * 5 // 16
            cur[x + 2] += right
            nxt[x] += down_left
            nxt[x + 1] += down
            nxt[x + 2] += e - right - down_left - down
        cur = nxt
    return bytes(out)


def raster_bands(packed: bytes, width: int, height: int, band_height: int = 24) -> list[bytes]:
    stride = check_bands(packed, width, height, band_height)
    bands = []
    for y0 in range(0, height, band_height):
        rows = min(band_height, height - y0)
        bands.append(band_header(stride, rows) + bytes(packed[y0 * stride : (y0 + rows) * stride]))
    return bands


# ---- byte pump -------------------------------------------------------------

_NEVER = None


def _deadline(start_ns: int, ms: int) -> int | None:
    return _NEVER if ms < 0 else start_ns + ms * 1_000_000


def _poll_ms(until: int | None, now: int) -> int | None:
    # Rounded up like the C side, so a wait never ends before its deadline.
    if until is None:
        return None
    if until <= now:
        return 0
    return min((until - now + 999_999) // 1_000_000, 2**31 - 1)


def write_all(fd: int, data: bytes, chunk: int, deadline_ms: int) -> int:
    check_write(fd, chunk)
    view = memoryview(bytes(data))
    end = _deadline(time.monotonic_ns(), deadline_ms)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    written = 0
    while written < len(view):
        try:
            events = poller.poll(_poll_ms(end, time.monotonic_ns()))
        except InterruptedError:
            continue
        if not events:
            raise write_failed(errno.ETIMEDOUT, written, len(view))
        if events[0][1] & select.POLLNVAL:
            raise write_failed(errno.EBADF, written, len(view))
        try:
            written += os.write(fd, view[written : written + chunk])
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as exc:
            raise write_failed(exc.errno or errno.EIO, written, len(view)) from None
    return written


def read_until(
    fd: int, max_bytes: int, inter_byte_ms: int, deadline_ms: int, cancel_fd: int = -1
) -> bytes:
    check_read(fd, max_bytes)
    end = _deadline(time.monotonic_ns(), deadline_ms)
    gap_end: int | None = _NEVER
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if cancel_fd >= 0:
        poller.register(cancel_fd, select.POLLIN)
    got = bytearray()
    status = READ_DONE
    first = True
    while len(got) < max_bytes:
        now = time.monotonic_ns()
        ends = [t for t in (gap_end, end) if t is not None]
        until = min(ends) if ends else None
        if not first and until is not None and until <= now:
            break
        first = False
        try:
            events = dict(poller.poll(_poll_ms(until, now)))
        except InterruptedError:
            continue
        if cancel_fd >= 0 and events.get(cancel_fd):
            # Readable or hung up: cancelled; the cancel byte is left in place.
            status = -errno.EBADF if events[cancel_fd] & select.POLLNVAL else READ_CANCELLED
            break
        if not events:
            break
        if events.get(fd, 0) & select.POLLNVAL:
            status = -errno.EBADF
            break
        try:
            chunk = os.read(fd, max_bytes - len(got))
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as exc:
            status = -(exc.errno or errno.EIO)
            break
        if not chunk:
            status = READ_EOF
            break
        got += chunk
        if inter_byte_ms >= 0:
            gap_end = time.monotonic_ns() + inter_byte_ms * 1_000_000
    return finish_read(status, bytes(got))
