"""The firmware's entry to the C extension `_posio`: frame codec, checksums,
printer raster packing and the fd byte pump, taking and returning bytes.
No Python fallback: without `_posio` the import fails naming the build command."""

from __future__ import annotations

from typing import Any

from .common import (
    ETX,
    NO_RECORDS,
    PAYLOAD_MAX,
    STX,
    LinkDecoder,
    ReadCancelled,
    WriteTimeout,
    check_bands,
    check_crc_init,
    check_image,
    check_level,
    check_payload,
    check_read,
    check_write,
    finish_read,
    record_spans,
    row_stride,
    split_records,
    write_failed,
)

NOT_BUILT = (
    "the C extension _posio is not built: run `make build` "
    "(or `.venv/bin/python c_ext/build_posio.py`)"
)

try:
    import _posio
except ModuleNotFoundError as exc:
    if exc.name != "_posio":
        raise
    raise ImportError(NOT_BUILT, name="_posio") from exc
except ImportError as exc:
    # Present but unloadable (stale build for another Python, missing
    # symbol): a rebuild is still the fix, but say what actually failed.
    raise ImportError(f"the C extension _posio failed to load ({exc}): rebuild it with "
                      "`make build` (or `.venv/bin/python c_ext/build_posio.py --force`)",
                      name="_posio") from exc

ffi: Any = _posio.ffi
lib: Any = _posio.lib

__all__ = [
    "BUILD_INFO",
    "ETX",
    "IMPLEMENTATION",
    "PAYLOAD_MAX",
    "STX",
    "FrameDecoder",
    "LinkDecoder",
    "ReadCancelled",
    "WriteTimeout",
    "crc16_ccitt",
    "encode_frame",
    "floyd_steinberg",
    "lrc",
    "raster_bands",
    "read_until",
    "record_spans",
    "split_records",
    "threshold",
    "write_all",
]

IMPLEMENTATION = "c"
BUILD_INFO: dict[str, str] = {
    "module": str(_posio.__file__),
    "compiler": ffi.string(lib.posio_build_compiler()).decode(),
    "flags": ffi.string(lib.posio_build_flags()).decode(),
    "built_at": ffi.string(lib.posio_build_time()).decode(),
    "hardening": ffi.string(lib.posio_build_hardening()).decode(),
}

# Every `lib.` call below runs with the GIL released: cffi's API mode wraps
# each out-of-line call in Py_BEGIN/END_ALLOW_THREADS (see the generated
# build/posio/_posio.c; test_posio.py checks it with a blocked read_until).
# So the C side touches no Python object, and callers keep the argument
# objects alive for the call, which ffi.from_buffer pins.


def _u8(data: bytes) -> Any:
    """A zero-copy uint8_t view of a bytes-like object."""
    return ffi.from_buffer("uint8_t[]", data)


# ---- reader link frames ----------------------------------------------------


def encode_frame(payload: bytes) -> bytes:
    """STX LEN PAYLOAD ETX LRC for payload (0..250 bytes); ValueError if longer."""
    check_payload(payload)
    out = ffi.new("uint8_t[]", len(payload) + 4)
    n = lib.posio_encode_frame(_u8(payload), len(payload), out, len(payload) + 4)
    return ffi.buffer(out, n)[:]


class FrameDecoder:
    """Incremental, resynchronising decoder for the reader link (FRAMING.md).

    feed() returns every complete good payload, whatever the chunking;
    feed_records() returns the same payloads as records in one bytes object
    (common.LinkDecoder), which spares the object per frame.  At most one
    partial frame (< 254 bytes) is kept between calls.  Not thread-safe: one
    decoder per link, fed from one thread.
    """

    # Size of the one reused output buffer (plus two reserves): a feed up to
    # this size needs one C call; a longer one takes several, never an allocation.
    _SMALL = 4096

    def __init__(self) -> None:
        self._d = ffi.new("posio_decoder *")
        lib.posio_decoder_init(self._d)
        self._cap = self._SMALL + 2 * lib.POSIO_OUT_RESERVE
        # A char array, because ffi.unpack copies one out as bytes in one step;
        # the C side takes it through a uint8_t view (this object keeps it alive).
        self._out_chars = ffi.new("char[]", self._cap)
        self._out = ffi.cast("uint8_t *", self._out_chars)
        self._out_len = ffi.new("size_t *")
        self._n_frames = ffi.new("size_t *")

    def feed(self, data: bytes) -> list[bytes]:
        """Consumes data; returns the payloads of the frames it completed."""
        records, count = self.feed_records(data)
        if count == 1:  # the usual case for short reads
            return [records[1:]]
        return split_records(records, count)

    def feed_records(self, data: bytes) -> tuple[bytes, int]:
        """Consumes data; returns (records, count) for the frames it completed:
        feed()'s payloads as records in one bytes object (common.LinkDecoder)."""
        n = len(data)
        if n == 0:
            return NO_RECORDS
        out_len, n_frames = self._out_len, self._n_frames
        out_len[0] = 0
        n_frames[0] = 0
        # cffi passes a bytes object's own buffer to a `const uint8_t *`
        # argument, which saves building a view on every (often tiny) read.
        src = data if type(data) is bytes else _u8(data)
        pos = lib.posio_decoder_feed(self._d, src, n, self._out, self._cap, out_len, n_frames)
        records = ffi.unpack(self._out_chars, out_len[0])
        count = n_frames[0]
        if pos < n:
            # out filled up (only for inputs over _SMALL): drain it, go on.
            # Longer inputs also go through the small buffer, in several C calls:
            # cheaper than a fresh len(data)-sized one (page faults, cold cache).
            parts = [records]
            view = _u8(data)
            while pos < n:
                out_len[0] = 0
                n_frames[0] = 0
                pos += lib.posio_decoder_feed(
                    self._d, view + pos, n - pos, self._out, self._cap, out_len, n_frames
                )
                parts.append(ffi.unpack(self._out_chars, out_len[0]))
                count += n_frames[0]
            records = b"".join(parts)
        return records, count

    def flush(self) -> list[bytes]:
        """The link went quiet mid-frame: give up the partial frame, return what it hid.

        A damaged frame's LEN byte can look like an STX and start a false
        candidate that holds back a good frame behind it until more bytes
        arrive; call this when read_until's inter-byte gap ends a read with
        `buffered` > 0.  Counts each abandoned candidate in `truncated`;
        the buffer is empty afterwards.
        """
        return split_records(*self.flush_records())

    def flush_records(self) -> tuple[bytes, int]:
        """flush(), with its payloads as (records, count) like feed_records()."""
        self._out_len[0] = 0
        self._n_frames[0] = 0
        # The reused buffer always has POSIO_OUT_RESERVE free: cannot fail.
        lib.posio_decoder_flush(self._d, self._out, self._cap, self._out_len, self._n_frames)
        return ffi.unpack(self._out_chars, self._out_len[0]), self._n_frames[0]

    def reset(self) -> None:
        """Back to the initial state: partial frame dropped, counters zeroed."""
        lib.posio_decoder_init(self._d)

    @property
    def errors(self) -> dict[str, int]:
        """Counts since creation/reset: noise_bytes, bad_checksum, bad_length,
        bad_etx, truncated (candidates given up by flush)."""
        d = self._d
        # Spelt out (same keys and order as ERROR_KEYS): the driver reads this after every
        # read with a line error, and five getattr() by name cost twice as much.
        return {
            "noise_bytes": d.noise_bytes,
            "bad_checksum": d.bad_checksum,
            "bad_length": d.bad_length,
            "bad_etx": d.bad_etx,
            "truncated": d.truncated,
        }

    @property
    def line_errors(self) -> int:
        """The sum of the `errors` counts: a cheap test for "anything new there"."""
        return self._d.line_errors  # cffi reads a uint64_t field as an int

    @property
    def frames(self) -> int:
        """Good frames delivered since creation/reset."""
        return int(self._d.frames)

    @property
    def buffered(self) -> int:
        """Bytes of the partial frame held (always < 254)."""
        return int(self._d.len)


# ---- checksums -------------------------------------------------------------


def lrc(data: bytes) -> int:
    """XOR of all bytes (0 for empty input)."""
    return int(lib.posio_lrc(_u8(data), len(data)))


def crc16_ccitt(data: bytes, init: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE; pass the previous result as init to continue it."""
    check_crc_init(init)
    return int(lib.posio_crc16_ccitt(_u8(data), len(data), init))


# ---- printer raster --------------------------------------------------------


def threshold(gray: bytes, width: int, height: int, level: int = 128) -> bytes:
    """8-bit gray (0 black..255 white) -> packed 1-bit rows; black where gray < level.

    Rows are ceil(width/8) bytes, MSB = leftmost dot, 1 = black, pad bits 0.
    """
    check_image(gray, width, height)
    check_level(level)
    size = row_stride(width) * height
    out = ffi.new("uint8_t[]", max(size, 1))
    lib.posio_threshold(_u8(gray), width, height, level, out)
    return ffi.buffer(out, size)[:]


def floyd_steinberg(gray: bytes, width: int, height: int) -> bytes:
    """Floyd-Steinberg dithering to packed 1-bit rows (packing as threshold()).

    Exact integer rule, shared bit for bit with reference.py: scan rows top to
    bottom, each left to right; v = gray + accumulated error; black if
    v < 128 (error e = v) else white (e = v - 255).  Push e*7//16 right,
    e*3//16 down-left, e*5//16 down and the remainder
    e - (the three) down-right, with // flooring; error pushed outside the
    image is dropped.
    """
    check_image(gray, width, height)
    size = row_stride(width) * height
    out = ffi.new("uint8_t[]", max(size, 1))
    scratch = ffi.new("int32_t[]", 2 * (width + 2))
    lib.posio_floyd_steinberg(_u8(gray), width, height, out, scratch)
    return ffi.buffer(out, size)[:]


def raster_bands(packed: bytes, width: int, height: int, band_height: int = 24) -> list[bytes]:
    """Slices packed rows into ESC/POS `GS v 0` commands of up to band_height rows.

    Each is 1D 76 30 00 xL xH yL yH + rows, x = bytes per row, y = rows
    (m = 0, normal density).  Printers cap y lower than 65535: pick
    band_height from the printer profile.
    """
    stride = check_bands(packed, width, height, band_height)
    if height == 0:
        return []
    bands = (height + band_height - 1) // band_height
    total = bands * 8 + len(packed)
    out = ffi.new("uint8_t[]", total)
    written = lib.posio_raster_bands(_u8(packed), stride, height, band_height, out, total)
    blob = ffi.buffer(out, written)[:]
    result = []
    pos = 0
    for y0 in range(0, height, band_height):
        size = 8 + stride * min(band_height, height - y0)
        result.append(blob[pos : pos + size])
        pos += size
    return result


# ---- byte pump -------------------------------------------------------------


def write_all(fd: int, data: bytes, chunk: int, deadline_ms: int) -> int:
    """Writes all of data to fd in writes of at most chunk bytes; returns len(data).

    Waits with poll(POLLOUT); EAGAIN and EINTR just wait again.  deadline_ms
    (monotonic, from the call; negative = no limit) bounds the waiting: a write
    that never has to wait always completes.  Raises WriteTimeout (a
    TimeoutError; .written says how much went out) or OSError (errno set,
    .written too).  Use an O_NONBLOCK fd: on a blocking one a single write may
    block past the deadline.
    """
    check_write(fd, chunk)
    written = ffi.new("size_t *")
    rc = lib.posio_write_all(fd, _u8(data), len(data), chunk, deadline_ms, written)
    if rc != 0:
        raise write_failed(-rc, int(written[0]), len(data))
    return int(written[0])


def read_until(
    fd: int, max_bytes: int, inter_byte_ms: int, deadline_ms: int, cancel_fd: int = -1
) -> bytes:
    """Reads from fd until a pause, the deadline, max_bytes, EOF or a cancel.

    Returns what arrived when inter_byte_ms passes with no new byte after at
    least one byte (negative: no gap rule), when deadline_ms passes (from the
    call, monotonic; negative = no limit; b"" if nothing came), or when
    max_bytes are in.  The first poll always happens, so deadline 0 means
    "what is there now".  If cancel_fd (e.g. a pipe's read end) becomes
    readable or hangs up, raises ReadCancelled with the bytes read so far;
    the cancel byte is left for its owner to drain.  At EOF returns the bytes
    read, or raises EOFError if there were none.  Other failures raise OSError
    with .partial.  Signals are not seen until the call returns (no GIL while
    waiting): cancel through cancel_fd.
    """
    check_read(fd, max_bytes)
    out = ffi.new("uint8_t[]", max_bytes)
    got = ffi.new("size_t *")
    status = lib.posio_read_until(fd, out, max_bytes, inter_byte_ms, deadline_ms, cancel_fd, got)
    return finish_read(status, ffi.buffer(out, got[0])[:])

