"""Tests of the C extension _posio (via c_ext.posio) against vectors and its twin.

Exact-byte vector tables, hypothesis checks that C == c_ext.reference on random
input, and byte-pump tests over real pipes and a real raw pseudo-terminal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pty
import random
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
# _posio.*.so and the c_ext package live at the repository root.
sys.path.insert(0, str(ROOT))

from c_ext import common, posio  # noqa: E402
from c_ext import reference as ref  # noqa: E402

IMPLS = [pytest.param(posio, id="c"), pytest.param(ref, id="python")]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- module identity and build record ---------------------------------------


def test_module_records_implementation_and_build() -> None:
    assert posio.IMPLEMENTATION == "c"
    assert ref.IMPLEMENTATION == "python"
    assert set(posio.BUILD_INFO) >= {"compiler", "flags", "built_at", "module"}
    assert "-O2" in posio.BUILD_INFO["flags"] and "-Werror" in posio.BUILD_INFO["flags"]
    assert posio.BUILD_INFO["built_at"] != "unknown"
    assert Path(posio.BUILD_INFO["module"]).parent == ROOT


def test_c_constants_match_python() -> None:
    lib = posio.lib
    assert (lib.POSIO_STX, lib.POSIO_ETX) == (common.STX, common.ETX)
    assert lib.POSIO_PAYLOAD_MAX == common.PAYLOAD_MAX
    assert lib.POSIO_FRAME_MAX == common.FRAME_MAX
    assert (lib.POSIO_READ_DONE, lib.POSIO_READ_CANCELLED, lib.POSIO_READ_EOF) == (
        common.READ_DONE,
        common.READ_CANCELLED,
        common.READ_EOF,
    )


def test_missing_extension_gives_build_instructions(tmp_path: Path) -> None:
    # The package is reachable through a symlink, the built .so is not.
    (tmp_path / "c_ext").symlink_to(ROOT / "c_ext")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", "import c_ext.posio"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "ImportError: " + posio.NOT_BUILT in proc.stderr
    # The twin stays importable without the C module (tests need it).
    proc = subprocess.run(
        [sys.executable, "-c", "import c_ext.reference"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


# ---- checksums ----------------------------------------------------------------

CRC_VECTORS = [
    # (data, init, crc): catalogue check values of the 0x1021 family.
    (b"123456789", 0xFFFF, 0x29B1),  # CRC-16/CCITT-FALSE check
    (b"123456789", 0x0000, 0x31C3),  # CRC-16/XMODEM check (same poly, init 0)
    (b"123456789", 0x1D0F, 0xE5CC),  # CRC-16/AUG-CCITT check
    (b"A", 0xFFFF, 0xB915),
    (b"", 0xFFFF, 0xFFFF),
    (b"", 0x1234, 0x1234),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("data", "init", "crc"), CRC_VECTORS)
def test_crc16_vectors(impl: ModuleType, data: bytes, init: int, crc: int) -> None:
    assert impl.crc16_ccitt(data, init) == crc


@pytest.mark.parametrize("impl", IMPLS)
def test_crc16_incremental_and_bad_init(impl: ModuleType) -> None:
    assert impl.crc16_ccitt(b"56789", impl.crc16_ccitt(b"1234")) == 0x29B1
    with pytest.raises(ValueError):
        impl.crc16_ccitt(b"x", 0x10000)


LRC_VECTORS = [(b"", 0x00), (b"\x01\x02\x04", 0x07), (b"\xff\xff", 0x00), (b"123456789", 0x31)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("data", "value"), LRC_VECTORS)
def test_lrc_vectors(impl: ModuleType, data: bytes, value: int) -> None:
    assert impl.lrc(data) == value


@FAST
@given(st.binary(max_size=600), st.integers(0, 0xFFFF), st.integers(0, 600))
def test_checksums_c_equals_reference(data: bytes, init: int, split: int) -> None:
    assert posio.lrc(data) == ref.lrc(data)
    assert posio.crc16_ccitt(data, init) == ref.crc16_ccitt(data, init)
    head, tail = data[:split], data[split:]
    assert posio.crc16_ccitt(tail, posio.crc16_ccitt(head, init)) == ref.crc16_ccitt(data, init)


@FAST
@given(st.binary(max_size=260), st.integers(0, 7))
def test_copy_lrc_copies_exactly_and_sums(data: bytes, offset: int) -> None:
    # The decoder's one-pass check-and-copy (C only): every length and misalignment, and
    # not one byte written past the end.
    src = posio.ffi.new("uint8_t[]", bytes(offset) + data + b"\xee")
    dst = posio.ffi.new("uint8_t[]", offset + len(data) + 8)
    posio.ffi.memmove(dst, b"\x5a" * (offset + len(data) + 8), offset + len(data) + 8)
    value = posio.lib.posio_copy_lrc(dst + offset, src + offset, len(data))
    assert value == ref.lrc(data)
    copied = posio.ffi.buffer(dst)[:]
    assert copied == b"\x5a" * offset + data + b"\x5a" * 8


# ---- frame codec --------------------------------------------------------------

FRAME_VECTORS = [
    (b"", "02 00 03 03"),
    (b"A", "02 01 41 03 43"),
    (b"\x10\x02\x03OK", "02 05 10 02 03 4f 4b 03 13"),  # the FRAMING.md example
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("payload", "frame"), FRAME_VECTORS)
def test_encode_frame_vectors(impl: ModuleType, payload: bytes, frame: str) -> None:
    assert impl.encode_frame(payload).hex(" ") == frame


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_frame_limits(impl: ModuleType) -> None:
    big = bytes(range(250))
    frame = impl.encode_frame(big)
    assert len(frame) == 254 and frame[1] == 250 and frame[-2] == 0x03
    with pytest.raises(ValueError, match="250"):
        impl.encode_frame(bytes(251))


def _frame(payload: bytes) -> bytes:
    return ref.encode_frame(payload)


DECODE_VECTORS = [
    # (stream, payloads, (noise_bytes, bad_checksum, bad_length, bad_etx, truncated))
    (_frame(b"hi"), [b"hi"], (0, 0, 0, 0, 0)),
    (b"\xff\x00" + _frame(b"") + b"\x41", [b""], (3, 0, 0, 0, 0)),
    # Resync restarts after the failed STX: LEN, payload, ETX, bad CHK are noise.
    (_frame(b"abc")[:-1] + b"\x00" + _frame(b"ok"), [b"ok"], (6, 1, 0, 0, 0)),
    (b"\x02\xfb" + _frame(b"x"), [b"x"], (1, 0, 1, 0, 0)),
    (_frame(b"xyz")[:-2] + b"\x04\x00" + _frame(b"ok"), [b"ok"], (6, 0, 0, 1, 0)),
    # FRAMING.md resync example: the good frame hides inside the bad one.
    (bytes.fromhex("FF 02 06 02 01 41 03 43 00 03 00"), [b"A"], (5, 1, 0, 0, 0)),
    (b"\x02\x03\x02\x00\x03\x03\x99", [b""], (2, 1, 0, 0, 0)),
    (_frame(b"A1") + _frame(b"\x02\x03") + _frame(b""), [b"A1", b"\x02\x03", b""], (0,) * 5),
    # A damaged frame whose LEN is 0x02 starts a false candidate (LEN 0x61)
    # that holds the good frame back until flush() or more bytes.
    (_frame(b"ab")[:-1] + b"\x00" + _frame(b"ok"), [], (0, 1, 0, 0, 0)),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("stream", "payloads", "errors"), DECODE_VECTORS)
def test_decoder_vectors(
    impl: ModuleType, stream: bytes, payloads: list[bytes], errors: tuple[int, ...]
) -> None:
    dec = impl.FrameDecoder()
    assert dec.feed(stream) == payloads
    assert tuple(dec.errors[k] for k in common.ERROR_KEYS) == errors
    assert dec.frames == len(payloads)
    # Byte by byte gives the same frames and counters as all at once.
    dec2 = impl.FrameDecoder()
    got = [p for i in range(len(stream)) for p in dec2.feed(stream[i : i + 1])]
    assert got == payloads
    assert dec2.errors == dec.errors and dec2.buffered == dec.buffered


@pytest.mark.parametrize("impl", IMPLS)
def test_error_counts_come_in_error_keys_order(impl: ModuleType) -> None:
    # The driver's "line errors skipped (...)" log line lists them in this order.
    assert tuple(impl.FrameDecoder().errors) == common.ERROR_KEYS


@pytest.mark.parametrize("impl", IMPLS)
def test_decoder_flush_recovers_frame_behind_false_stx(impl: ModuleType) -> None:
    stream = _frame(b"ab")[:-1] + b"\x00" + _frame(b"ok")
    dec = impl.FrameDecoder()
    assert dec.feed(stream) == [] and dec.buffered == 11
    assert dec.flush() == [b"ok"]
    assert dec.buffered == 0
    assert dec.errors == {
        "noise_bytes": 4,  # 61 62 03 00 between the false STX and the real one
        "bad_checksum": 1,
        "bad_length": 0,
        "bad_etx": 0,
        "truncated": 1,
    }
    # Without flush, more traffic also frees it (the false candidate fails).
    dec2 = impl.FrameDecoder()
    assert dec2.feed(stream) == []
    assert dec2.feed(bytes(100)) == [b"ok"]
    assert dec.flush() == []  # nothing left: flush is idempotent


@pytest.mark.parametrize("impl", IMPLS)
def test_decoder_partial_frame_and_reset(impl: ModuleType) -> None:
    dec = impl.FrameDecoder()
    frame = _frame(b"payload")
    assert dec.feed(b"\x00" + frame[:5]) == []
    assert dec.buffered == 5
    assert dec.feed(frame[5:]) == [b"payload"]
    assert dec.buffered == 0
    dec.feed(frame[:3])
    dec.reset()
    assert dec.buffered == 0 and dec.frames == 0 and not any(dec.errors.values())
    assert dec.feed(frame[3:]) == []  # the tail alone is noise, not a frame
    assert dec.feed(b"") == []


@pytest.mark.parametrize("impl", IMPLS)
def test_decoder_buffer_stays_bounded(impl: ModuleType) -> None:
    # A stream of maximal frame prefixes that never complete.
    dec = impl.FrameDecoder()
    chunk = b"\x02\xfa" + bytes(250) + b"\x03"  # CHK never arrives: next STX...
    for _ in range(50):
        dec.feed(chunk[:100])
        assert dec.buffered < 254
        dec.feed(chunk[100:])
        assert dec.buffered < 254


def test_decoder_large_input_linear_path() -> None:
    payloads = [bytes([i % 256]) * (i % 251) for i in range(2000)]
    stream = b"".join(b"\x00\x01" + _frame(p) for p in payloads)
    assert len(stream) > 100_000  # far beyond the reused small output buffer
    dec = posio.FrameDecoder()
    assert dec.feed(stream) == payloads
    assert dec.errors["noise_bytes"] == 2 * len(payloads)


@st.composite
def link_streams(draw: st.DrawFn) -> bytes:
    """Valid frames mixed with noise, damaged, truncated and nested frames."""
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["frame", "noise", "flip", "cut", "nest", "badlen"]))
        payload = draw(st.binary(max_size=40) | st.binary(min_size=240, max_size=250))
        frame = _frame(payload)
        if kind == "noise":
            parts.append(draw(st.binary(min_size=1, max_size=30)))
        elif kind == "flip":
            i = draw(st.integers(0, len(frame) - 1))
            parts.append(frame[:i] + bytes([frame[i] ^ draw(st.integers(1, 255))]) + frame[i + 1 :])
        elif kind == "cut":
            parts.append(frame[: draw(st.integers(1, len(frame) - 1))])
        elif kind == "nest":
            inner = _frame(payload[:30])
            parts.append(b"\x02" + bytes([len(inner) + 2]) + inner + b"\x00\x03\x00")
        elif kind == "badlen":
            parts.append(b"\x02" + bytes([draw(st.integers(251, 255))]) + frame)
        else:
            parts.append(frame)
    return b"".join(parts)


def _chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    prev = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[prev:cut]
        prev = cut
    yield data[prev:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(link_streams(), st.lists(st.integers(0, 10_000), max_size=20))
def test_decoder_c_equals_reference_any_chunking(stream: bytes, cuts: list[int]) -> None:
    c_dec, py_dec, whole = posio.FrameDecoder(), ref.FrameDecoder(), posio.FrameDecoder()
    got: list[bytes] = []
    for piece in _chunks(stream, cuts):
        c_out = c_dec.feed(piece)
        assert c_out == py_dec.feed(piece)
        assert c_dec.errors == py_dec.errors
        assert c_dec.buffered == py_dec.buffered < 254
        got += c_out
    assert got == whole.feed(stream)
    assert c_dec.errors == whole.errors
    byte_dec = posio.FrameDecoder()
    assert [p for b in stream for p in byte_dec.feed(bytes([b]))] == got
    # End of traffic: flush agrees too, and everything it finds was on the wire.
    flushed = c_dec.flush()
    assert flushed == py_dec.flush()
    assert c_dec.errors == py_dec.errors and c_dec.buffered == 0
    assert all(_frame(p) in stream for p in got + flushed)


@FAST
@given(st.lists(st.binary(max_size=250), max_size=10), st.lists(st.integers(0, 3000)))
def test_clean_link_delivers_every_payload(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(posio.encode_frame(p) for p in payloads)
    assert stream == b"".join(ref.encode_frame(p) for p in payloads)
    dec = posio.FrameDecoder()
    assert [p for piece in _chunks(stream, cuts) for p in dec.feed(piece)] == payloads
    assert not any(dec.errors.values())


# ---- the records form: feed_records / flush_records ----------------------------


def _records(payloads: list[bytes]) -> bytes:
    """The records for payloads, built independently of both decoders."""
    return b"".join(bytes([len(p)]) + p for p in payloads)


def test_record_helpers_split_and_walk_records() -> None:
    records = b"\x02hi\x00\x03\x02\x03\x00"
    assert common.split_records(records, 3) == [b"hi", b"", b"\x02\x03\x00"]
    assert list(common.record_spans(records, 3)) == [(1, 3), (4, 4), (5, 8)]
    assert common.split_records(b"", 0) == [] and list(common.record_spans(b"", 0)) == []
    # Both implementations export the same helpers the driver uses.
    assert posio.record_spans is ref.record_spans is common.record_spans
    assert posio.split_records is ref.split_records is common.split_records


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("stream", "payloads", "errors"), DECODE_VECTORS)
def test_decoder_records_vectors(
    impl: ModuleType, stream: bytes, payloads: list[bytes], errors: tuple[int, ...]
) -> None:
    dec = impl.FrameDecoder()
    assert dec.feed_records(stream) == (_records(payloads), len(payloads))
    assert tuple(dec.errors[k] for k in common.ERROR_KEYS) == errors
    assert dec.line_errors == sum(errors)
    assert dec.frames == len(payloads)
    # Byte by byte, with an empty feed before each byte: the same records in total.
    dec2 = impl.FrameDecoder()
    got = b""
    count = 0
    for i in range(len(stream)):
        assert dec2.feed_records(b"") == (b"", 0)
        records, n = dec2.feed_records(stream[i : i + 1])
        got += records
        count += n
    assert (got, count) == (_records(payloads), len(payloads))
    assert dec2.errors == dec.errors and dec2.line_errors == dec.line_errors
    assert dec2.buffered == dec.buffered


@pytest.mark.parametrize("impl", IMPLS)
def test_flush_records_recovers_frame_behind_false_stx(impl: ModuleType) -> None:
    stream = _frame(b"ab")[:-1] + b"\x00" + _frame(b"ok")
    dec = impl.FrameDecoder()
    assert dec.feed_records(stream) == (b"", 0) and dec.buffered == 11
    assert dec.line_errors == 1
    assert dec.flush_records() == (b"\x02ok", 1)
    assert dec.buffered == 0 and dec.line_errors == 1 + 4 + 1  # + noise + truncated
    assert dec.flush_records() == (b"", 0)
    dec.reset()
    assert dec.line_errors == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_feed_records_takes_any_bytes_like(impl: ModuleType) -> None:
    stream = b"\x00" + _frame(b"one") + _frame(b"\x02two\x03")
    want = (_records([b"one", b"\x02two\x03"]), 2)
    for data in (stream, bytearray(stream), memoryview(stream)):
        records, count = impl.FrameDecoder().feed_records(data)
        assert type(records) is bytes and (records, count) == want


def test_feed_records_large_input_linear_path() -> None:
    # Far beyond the reused output buffer: the C wrapper drains it several times.
    payloads = [bytes([i % 256]) * (i % 251) for i in range(2000)]
    stream = b"".join(b"\x00\x01" + _frame(p) for p in payloads)
    dec = posio.FrameDecoder()
    assert dec.feed_records(stream) == (_records(payloads), len(payloads))
    assert dec.line_errors == 2 * len(payloads)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(link_streams(), st.lists(st.integers(0, 10_000), max_size=20), st.booleans())
def test_records_equal_feed_and_twin_any_chunking(
    stream: bytes, cuts: list[int], empty_feeds: bool
) -> None:
    """The records form gives what feed() gives, in C and in the twin, after every feed,
    whatever the split (frames across feeds, noise, damaged frames, empty feeds)."""
    c_rec, c_list = posio.FrameDecoder(), posio.FrameDecoder()
    py_rec, py_list = ref.FrameDecoder(), ref.FrameDecoder()
    decoders = (c_rec, c_list, py_rec, py_list)
    pieces = list(_chunks(stream, cuts))
    if empty_feeds:
        pieces = [p for piece in pieces for p in (b"", piece)] + [b""]
    for piece in pieces:
        records, count = c_rec.feed_records(piece)
        assert type(records) is bytes
        assert py_rec.feed_records(piece) == (records, count)
        payloads = c_list.feed(piece)
        assert payloads == py_list.feed(piece)
        assert common.split_records(records, count) == payloads
        assert [records[a:b] for a, b in common.record_spans(records, count)] == payloads
        assert records == _records(payloads)
        for dec in decoders:
            assert dec.errors == c_rec.errors and dec.buffered == c_rec.buffered
            assert dec.line_errors == sum(dec.errors.values())
            assert dec.frames == c_rec.frames
    records, count = c_rec.flush_records()
    assert py_rec.flush_records() == (records, count)
    flushed = c_list.flush()
    assert flushed == py_list.flush() == common.split_records(records, count)
    for dec in decoders:
        assert dec.errors == c_rec.errors and dec.buffered == 0
        assert dec.line_errors == sum(dec.errors.values())


# ---- printer raster -----------------------------------------------------------

# 10x2: row 0 alternates black/white; row 1 straddles the default level.
TINY = bytes([0, 255] * 5) + bytes([127] * 3 + [128] * 7)


@pytest.mark.parametrize("impl", IMPLS)
def test_threshold_vector(impl: ModuleType) -> None:
    assert impl.threshold(TINY, 10, 2).hex(" ") == "aa 80 e0 00"
    assert impl.threshold(TINY, 10, 2, level=0) == bytes(4)  # nothing is < 0
    assert impl.threshold(TINY, 10, 2, level=256).hex(" ") == "ff c0 ff c0"  # pad bits stay 0
    with pytest.raises(ValueError):
        impl.threshold(TINY, 10, 3)
    with pytest.raises(ValueError):
        impl.threshold(TINY, 10, 2, level=257)


# Hand-worked with the rule in posio.floyd_steinberg's docstring:
# 3x1 [100,100,100]: x0 black (e=100, +43 right); x1 v=143 white (e=-112,
#   -49 right); x2 v=51 black -> 101 -> a0.
# 2x2 of 100: row 0: x0 black (e=100: +43 right, +31 down, +8 down-right),
#   x1 v=143 white (e=-112: -21 down-left, -35 down) -> 10;
#   row 1: x0 v=110 black (e=110: +48 right), x1 v=100-27+48=121 black -> 11.
FS_VECTORS = [
    (bytes([100] * 3), 3, 1, "a0"),
    (bytes([100] * 4), 2, 2, "80 c0"),
    (bytes([0] * 9), 9, 1, "ff 80"),
    (bytes([255] * 9), 9, 1, "00 00"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("gray", "width", "height", "packed"), FS_VECTORS)
def test_floyd_steinberg_vectors(
    impl: ModuleType, gray: bytes, width: int, height: int, packed: str
) -> None:
    assert impl.floyd_steinberg(gray, width, height).hex(" ") == packed


@pytest.mark.parametrize("impl", IMPLS)
def test_floyd_steinberg_mid_gray_is_half_black(impl: ModuleType) -> None:
    out = impl.floyd_steinberg(bytes([128] * 64 * 64), 64, 64)
    black = sum(bin(b).count("1") for b in out)
    assert abs(black - 64 * 64 // 2) < 64


@pytest.mark.parametrize("impl", IMPLS)
def test_raster_bands_headers(impl: ModuleType) -> None:
    packed = bytes(range(60))  # 10 dots wide (2 bytes/row) x 30 rows
    bands = impl.raster_bands(packed, 10, 30)
    assert [b[:8].hex(" ") for b in bands] == [
        "1d 76 30 00 02 00 18 00",  # 24 rows
        "1d 76 30 00 02 00 06 00",  # the 6 left over
    ]
    assert bands[0][8:] == packed[:48] and bands[1][8:] == packed[48:]
    receipt = impl.raster_bands(bytes(48 * 800), 384, 800)
    assert len(receipt) == 34 and receipt[0][:8].hex(" ") == "1d 76 30 00 30 00 18 00"
    assert receipt[-1][:8].hex(" ") == "1d 76 30 00 30 00 08 00"
    assert impl.raster_bands(b"", 8, 0) == []
    assert impl.raster_bands(bytes(2 * 300), 16, 300, band_height=256)[0][6:8] == b"\x00\x01"
    with pytest.raises(ValueError):
        impl.raster_bands(packed, 10, 30, band_height=0)
    with pytest.raises(ValueError):
        impl.raster_bands(packed, 16, 31)


@FAST
@given(
    st.integers(1, 40),
    st.integers(0, 12),
    st.integers(0, 256),
    st.integers(1, 30),
    st.randoms(use_true_random=False),
)
def test_raster_c_equals_reference(
    width: int, height: int, level: int, band: int, rnd: random.Random
) -> None:
    gray = bytes(rnd.randrange(256) for _ in range(width * height))
    packed = posio.threshold(gray, width, height, level)
    assert packed == ref.threshold(gray, width, height, level)
    dithered = posio.floyd_steinberg(gray, width, height)
    assert dithered == ref.floyd_steinberg(gray, width, height)
    assert posio.raster_bands(dithered, width, height, band) == ref.raster_bands(
        dithered, width, height, band
    )


# ---- byte pump ----------------------------------------------------------------


def _nonblocking(fd: int) -> int:
    os.set_blocking(fd, False)
    return fd


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):  # a test may have closed one end
            os.close(fd)


@pytest.fixture
def raw_pty() -> Iterator[tuple[int, int]]:
    master, slave = pty.openpty()
    tty.setraw(slave)  # no echo, no line buffering, no CR/LF games
    _nonblocking(master)
    _nonblocking(slave)
    yield master, slave
    os.close(master)
    os.close(slave)


def _later(delay: float, action: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("impl", IMPLS)
def test_read_until_inter_byte_gap(impl: ModuleType, pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"abc")
    late = _later(0.4, lambda: os.write(w, b"def"))
    t0 = time.monotonic()
    assert impl.read_until(r, 100, 50, 3000) == b"abc"
    assert 0.04 <= time.monotonic() - t0 < 0.35
    late.join()
    assert impl.read_until(r, 100, 50, 3000) == b"def"


@pytest.mark.parametrize("impl", IMPLS)
def test_read_until_deadline(impl: ModuleType, pipe: tuple[int, int]) -> None:
    r, w = pipe
    t0 = time.monotonic()
    assert impl.read_until(r, 100, 20, 120) == b""
    assert 0.12 <= time.monotonic() - t0 < 0.6
    # A stream that never pauses long enough still stops at the deadline.
    stop = threading.Event()

    def drip() -> None:
        while not stop.is_set():
            os.write(w, b".")
            time.sleep(0.01)

    t = threading.Thread(target=drip, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        got = impl.read_until(r, 10_000, 200, 150)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        t.join()
    assert got and set(got) == {ord(".")}
    assert 0.15 <= elapsed < 0.6
    # Deadline 0: what is there now, no waiting.
    os.write(w, b"now")
    time.sleep(0.02)
    impl.read_until(r, 10_000, -1, 0)  # drains the drip leftovers and "now"
    assert impl.read_until(r, 10, -1, 0) == b""


@pytest.mark.parametrize("impl", IMPLS)
def test_read_until_max_bytes_and_eof(impl: ModuleType, pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"0123456789")
    assert impl.read_until(r, 4, 1000, 5000) == b"0123"
    os.close(w)
    assert impl.read_until(r, 100, 1000, 5000) == b"456789"  # data before EOF kept
    with pytest.raises(EOFError):
        impl.read_until(r, 100, 1000, 5000)


@pytest.mark.parametrize("impl", IMPLS)
def test_read_until_cancel_pipe(impl: ModuleType, pipe: tuple[int, int]) -> None:
    r, w = pipe
    cancel_r, cancel_w = os.pipe()
    try:
        os.write(w, b"ab")
        _later(0.15, lambda: os.write(cancel_w, b"x"))
        t0 = time.monotonic()
        with pytest.raises(common.ReadCancelled) as info:
            impl.read_until(r, 100, -1, 5000, cancel_r)
        assert info.value.partial == b"ab"
        assert 0.1 <= time.monotonic() - t0 < 1.0
        # The cancel is sticky until its owner drains it: a second read
        # returns at once, even with data waiting.
        os.write(w, b"cd")
        with pytest.raises(common.ReadCancelled) as info:
            impl.read_until(r, 100, -1, 5000, cancel_r)
        assert info.value.partial == b""
        assert os.read(cancel_r, 10) == b"x"
        assert impl.read_until(r, 100, 10, 5000, cancel_r) == b"cd"
    finally:
        os.close(cancel_r)
        os.close(cancel_w)


@pytest.mark.parametrize("impl", IMPLS)
def test_pump_os_errors(impl: ModuleType, pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.close(r)
    with pytest.raises(OSError) as info:
        impl.read_until(r, 10, 10, 100)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError) as info:  # reader gone: EPIPE (Python ignores SIGPIPE)
        impl.write_all(w, b"data", 4, 100)
    assert info.value.errno == errno.EPIPE
    assert info.value.written == 0  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        impl.write_all(w, b"x", 0, 100)
    with pytest.raises(ValueError):
        impl.read_until(w, 0, 10, 100)


def _small_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)  # fills after one page
    return r, _nonblocking(w)


@pytest.mark.parametrize("impl", IMPLS)
def test_write_all_through_full_pipe_with_slow_reader(impl: ModuleType) -> None:
    r, w = _small_pipe()
    data = os.urandom(200_000)
    received = bytearray()

    def reader() -> None:
        while len(received) < len(data):
            received.extend(os.read(r, 3000))
            time.sleep(0.0005)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        assert impl.write_all(w, data, 1000, 10_000) == len(data)
        t.join(10)
    finally:
        os.close(r)
        os.close(w)
    assert bytes(received) == data


@pytest.mark.parametrize("impl", IMPLS)
def test_write_all_timeout_reports_progress(impl: ModuleType) -> None:
    r, w = _small_pipe()
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            impl.write_all(w, bytes(50_000), 512, 100)
        assert 0.1 <= time.monotonic() - t0 < 0.6
        exc = info.value
        assert isinstance(exc, common.WriteTimeout) and exc.errno == errno.ETIMEDOUT
        assert 0 < exc.written < 50_000
        assert len(os.read(r, 100_000)) == exc.written
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("impl", IMPLS)
def test_pump_over_raw_pty(impl: ModuleType, raw_pty: tuple[int, int]) -> None:
    master, slave = raw_pty
    # Terminal -> reader direction: binary, including bytes a cooked tty eats.
    frame = posio.encode_frame(b"\x00\x03\x04\x11\x13\r\n\xff")
    assert impl.write_all(master, frame * 3, 5, 2000) == len(frame) * 3
    assert impl.read_until(slave, 1000, 50, 2000) == frame * 3
    # Reader -> terminal, in two bursts: the gap ends the first read.
    os.write(slave, frame[:4])
    _later(0.3, lambda: os.write(slave, frame[4:]))
    t0 = time.monotonic()
    first = impl.read_until(master, 1000, 40, 3000)
    assert first == frame[:4] and time.monotonic() - t0 < 0.28
    rest = impl.read_until(master, 1000, 40, 3000)
    dec = impl.FrameDecoder()
    assert dec.feed(first) + dec.feed(rest) == [b"\x00\x03\x04\x11\x13\r\n\xff"]


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=20_000), st.integers(1, 5000))
def test_write_all_c_equals_reference(data: bytes, chunk: int) -> None:
    for impl in (posio, ref):
        r, w = os.pipe()
        try:
            assert impl.write_all(_nonblocking(w), data, chunk, 2000) == len(data)
            assert (impl.read_until(r, len(data), 0, 0) if data else b"") == data
        finally:
            os.close(r)
            os.close(w)


def test_c_pump_releases_the_gil(pipe: tuple[int, int]) -> None:
    r, _w = pipe
    done = threading.Event()

    def blocked_read() -> None:
        posio.read_until(r, 10, -1, 600)
        done.set()

    t = threading.Thread(target=blocked_read)
    t.start()
    time.sleep(0.05)
    # If read_until held the GIL, this loop could not run until it returned.
    spins, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 0.2:
        spins += 1
    still_blocked = not done.is_set()
    t.join()
    assert still_blocked and spins > 1000
