"""Benchmark of the C extension _posio against its pure-Python twin.

Prints frame-decode throughput, frame decode through the reader driver's own read
path, and receipt raster timings (C vs Python, with ratios); no assertions beyond
"both sides did the same work".  main() leaves its figures in FIGURES for the bench
infrastructure.  Run: `.venv/bin/python tests/bench/bench_posio.py`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # _posio.*.so and c_ext live at the repository root

from c_ext import posio  # noqa: E402
from c_ext import reference as ref  # noqa: E402
from drivers.reader import serial_link  # noqa: E402

RECEIPT_W, RECEIPT_H = 384, 800  # 58 mm printer: 384 dots per line
DRIVER_TARGET = 50.0  # issue 19: frame decode through the driver's path >= 50x the twin

# name -> (value, unit): main() puts every figure it printed here when it ends, for the
# bench infrastructure to emit.
FIGURES: dict[str, tuple[float, str]] = {}


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of `repeat` runs, in seconds (least disturbed by the machine)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def link_traffic(size: int, seed: int = 1, clean: bool = False) -> bytes:
    """Reader traffic: mostly good frames, some noise and damaged frames.

    clean: the same frames with the noise left out and none damaged (a healthy link).
    """
    rnd = random.Random(seed)
    parts = []
    total = 0
    while total < size:
        frame = ref.encode_frame(rnd.randbytes(rnd.randrange(8, 200)))
        roll = rnd.random()
        if roll < 0.05:
            noise = rnd.randbytes(rnd.randrange(1, 20))
            if not clean:
                parts.append(noise)
        elif roll < 0.10:
            i = rnd.randrange(len(frame))
            if not clean:
                frame = frame[:i] + bytes([frame[i] ^ 0x55]) + frame[i + 1 :]
        parts.append(frame)
        total += len(frame)
    return b"".join(parts)


def receipt_image(seed: int = 2) -> bytes:
    """A gray receipt-like image: white paper, dark text-ish blocks, a gradient logo."""
    rnd = random.Random(seed)
    rows = []
    for y in range(RECEIPT_H):
        if y < 120:  # logo: horizontal gradient
            rows.append(bytes((x * 255 // (RECEIPT_W - 1)) for x in range(RECEIPT_W)))
        elif (y // 24) % 2 == 0:  # a "text line": speckled dark strokes
            rows.append(bytes(rnd.choice((20, 60, 240, 255)) for _ in range(RECEIPT_W)))
        else:
            rows.append(bytes([255]) * RECEIPT_W)
    return b"".join(rows)


def decode_all(impl: ModuleType, data: bytes, chunk: int) -> int:
    dec = impl.FrameDecoder()
    n = 0
    for i in range(0, len(data), chunk):
        n += len(dec.feed(data[i : i + chunk]))
    return n


def c_core_decode(data: bytes) -> int:
    """Feeds everything to the C decoder in one call and counts the frames it validated."""
    d = posio.ffi.new("posio_decoder *")
    posio.lib.posio_decoder_init(d)
    cap = len(data) + 2 * posio.lib.POSIO_OUT_RESERVE
    out = posio.ffi.new("uint8_t[]", cap)
    out_len = posio.ffi.new("size_t *")
    n_frames = posio.ffi.new("size_t *")
    used = posio.lib.posio_decoder_feed(d, posio.ffi.from_buffer("uint8_t[]", data), len(data),
                                        out, cap, out_len, n_frames)
    assert used == len(data)
    return int(n_frames[0])


class DriverPath:
    """The reader driver's own read path (SerialLinkReader._decode / _take) fed the pump's reads.

    The pump hands each read_until result to _take; here the reads are slices of the bench's
    link traffic, then an empty read whose inter-byte gap ended (the driver flushes). The
    driver is never opened: only the decode path and dispatch run, nothing touches a port.
    """

    def __init__(self, impl: ModuleType, data: bytes, chunk: int, dispatch: bool) -> None:
        self.impl = impl
        self.reads = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        self.dispatch = dispatch

    def run(self) -> tuple[float, int, dict[str, int]]:
        """One pass on a fresh driver: (CPU seconds, frames, link stats)."""
        reader = serial_link.SerialLinkReader("/dev/null/bench", decoder=self.impl.FrameDecoder())
        step = reader._take if self.dispatch else reader._decode
        frames = 0
        t0 = time.thread_time()
        if self.dispatch:
            for read in self.reads:
                step(read, False)
            step(b"", True)
        else:
            for read in self.reads:
                frames += step(read, False)[1]
            frames += step(b"", True)[1]
        spent = time.thread_time() - t0
        stats = reader.link_stats
        asyncio.run(reader.close())
        return spent, frames, stats


def driver_ratio(data: bytes, chunk: int, dispatch: bool, rounds: int) -> tuple[float, float, float, float]:
    """C and twin through the driver path, interleaved: (median ratio, lowest, highest, best C s).

    CPU time of this thread, not wall time: the machine is shared, and being descheduled
    would otherwise land in whichever side was running. Each round pairs C's best of 3
    with one twin pass.
    """
    c_side = DriverPath(posio, data, chunk, dispatch)
    py_side = DriverPath(ref, data, chunk, dispatch)
    c_run, py_run = c_side.run(), py_side.run()
    assert c_run[1:] == py_run[1:], "C and the twin must decode the same frames and count the same"
    ratios, best_c = [], float("inf")
    for _ in range(rounds):
        c_s = min(c_side.run()[0] for _ in range(3))
        best_c = min(best_c, c_s)
        ratios.append(py_side.run()[0] / c_s)
    return statistics.median(ratios), min(ratios), max(ratios), best_c


def noisy_reads(data: bytes, chunk: int) -> float:
    """The share of reads after which the decoder's line-error counts moved."""
    dec = posio.FrameDecoder()
    seen = noisy = 0
    for i in range(0, len(data), chunk):
        dec.feed_records(data[i : i + chunk])
        if dec.line_errors != seen:
            seen, noisy = dec.line_errors, noisy + 1
    return noisy / -(-len(data) // chunk)


def line(name: str, c_s: float, py_s: float, unit: str = "ms") -> None:
    scale = 1000.0
    print(
        f"  {name:<34} C {c_s * scale:9.3f} {unit}   Python {py_s * scale:9.1f} {unit}"
        f"   ratio {py_s / c_s:8.0f}x"
    )


def main() -> None:
    figures: dict[str, tuple[float, str]] = {}
    print(f"_posio bench  (C build: {posio.BUILD_INFO['compiler']}, {posio.BUILD_INFO['flags']})")

    data = link_traffic(2_000_000)
    mb = len(data) / 1e6
    frames = decode_all(posio, data, 4096)
    assert frames == decode_all(ref, data, 4096)  # same work on both sides
    print(f"\nframe decode: {mb:.1f} MB of link traffic, {frames} good frames")
    for chunk in (64, 4096, len(data)):
        c_s = best_of(lambda chunk=chunk: decode_all(posio, data, chunk), 5)
        py_s = best_of(lambda chunk=chunk: decode_all(ref, data, chunk), 1)
        label = "all at once" if chunk == len(data) else f"{chunk}-byte reads"
        print(
            f"  {label:<14} C {mb / c_s:8.1f} MB/s   Python {mb / py_s:6.2f} MB/s"
            f"   ratio {py_s / c_s:6.0f}x"
        )
        figures[f"frame decode, feed(), {label}"] = (py_s / c_s, "x")

    # The codec's own work, with no Python object per frame: one C call validates the whole
    # buffer into length-prefixed records. The end-to-end rows above also pay CPython's cost
    # of one bytes object and one list slot per frame (~0.1 us), which bounds their ratio.
    c_s = best_of(lambda: c_core_decode(data), 10)
    py_s = best_of(lambda: decode_all(ref, data, len(data)), 1)
    print(f"  {'codec core':<14} C {mb / c_s:8.1f} MB/s   Python {mb / py_s:6.2f} MB/s"
          f"   ratio {py_s / c_s:6.0f}x   (C: records in one buffer, no per-frame objects)")
    print("  (frame-decode target: >= 50x; see the note on per-frame object cost above)")
    figures["frame decode, codec core"] = (py_s / c_s, "x")

    # The figure issue 19 asks for: the same traffic through the driver's own read path
    # (records from the decoder, flush at a gap, line-error stats), in the driver's read size.
    # Dispatch (one Message per frame, matched to a waiter) is a separate row: it is protocol
    # work, the same on both sides, so it bounds the ratio of the whole _take.
    # The driver logs each payload that breaks the protocol (most of this random traffic) and
    # each read with line errors: silenced here (a handler's I/O would swamp both sides); the
    # level checks stay.
    logging.getLogger(serial_link.__name__).setLevel(logging.CRITICAL)
    read_max = serial_link.READ_MAX
    clean = link_traffic(2_000_000, clean=True)
    lines_with_errors = noisy_reads(data, read_max)
    print(f"\nframe decode, driver path: SerialLinkReader._decode over the same traffic in its"
          f" {read_max}-byte reads ({lines_with_errors:.0%} of them carry line errors); CPU time,"
          f" median of 5 rounds [lowest..highest]")
    for label, traffic, chunk, dispatch, key in (
        (f"{read_max}-byte reads", data, read_max, False, "frame decode, driver path"),
        ("64-byte reads", data, 64, False, "frame decode, driver path, 64-byte reads"),
        (f"{read_max}-byte reads, clean link", clean, read_max, False,
         "frame decode, driver path, clean link"),
        (f"{read_max}-byte reads + dispatch", data, read_max, True, "reader _take with dispatch"),
    ):
        ratio, low, high, c_s = driver_ratio(traffic, chunk, dispatch, rounds=5)
        print(f"  {label:<30} C {len(traffic) / 1e6 / c_s:8.1f} MB/s   ratio {ratio:6.1f}x"
              f"  [{low:.1f}..{high:.1f}]")
        figures[key] = (ratio, "x")
        if key == "frame decode, driver path":
            figures[key + ", C"] = (mb / c_s, "MB/s")
    headline = figures["frame decode, driver path"][0]
    verdict = "met" if headline >= DRIVER_TARGET else "NOT met"
    print(f"  frame decode, driver path: {headline:.1f}x; target >= {DRIVER_TARGET:.0f}x: {verdict}")
    print("  (after a read with line errors the driver updates its link stats: about a microsecond"
          " of Python per read on both sides,\n   which the clean link does without; + dispatch:"
          " every frame becomes a Message matched to a waiter, the same work on both sides)")

    gray = receipt_image()
    print(f"\nreceipt raster {RECEIPT_W}x{RECEIPT_H} dots -> GS v 0 bands of 24 rows")
    for name, fn in (("threshold", "threshold"), ("Floyd-Steinberg", "floyd_steinberg")):
        def pipeline(impl: ModuleType, fn: str = fn) -> list[bytes]:
            packed = getattr(impl, fn)(gray, RECEIPT_W, RECEIPT_H)
            return impl.raster_bands(packed, RECEIPT_W, RECEIPT_H)

        assert pipeline(posio) == pipeline(ref)
        c_s = best_of(lambda: pipeline(posio), 20)
        py_s = best_of(lambda: pipeline(ref), 1)
        line(f"{name} + raster_bands", c_s, py_s)
        figures[f"receipt raster, {name} + raster_bands"] = (py_s / c_s, "x")
    packed = posio.floyd_steinberg(gray, RECEIPT_W, RECEIPT_H)
    c_s = best_of(lambda: posio.raster_bands(packed, RECEIPT_W, RECEIPT_H), 50)
    py_s = best_of(lambda: ref.raster_bands(packed, RECEIPT_W, RECEIPT_H), 5)
    line("raster_bands alone", c_s, py_s)
    figures["receipt raster, raster_bands alone"] = (py_s / c_s, "x")
    print("\n(target for the raster pipelines: ratio >= 50x)")
    FIGURES.clear()
    FIGURES.update(figures)

    # The headline ratios for run_all's results.json, timed here once more in one block of their
    # own (the same calls and repeats as the rows above) and printed as recorded.
    from results import emit  # the recorder beside this script: run_all collects what it emits
    c_s = best_of(lambda: c_core_decode(data), 10)
    py_s = best_of(lambda: decode_all(ref, data, len(data)), 1)
    core = emit("frame_decode_codec_core_mb_s", mb / c_s, "MB/s", group="bench_posio",
                floor={"name": "python twin", "value": mb / py_s, "unit": "MB/s"}, ratio=py_s / c_s,
                target={"op": ">=", "value": 50, "of": "ratio"},
                note=f"{mb:.1f} MB of link traffic in one call; ratio: C / Python throughput")
    recorded = [f"codec core {core['ratio']:.0f}x"]
    for key, name, target in (
            ("frame decode, driver path", "frame_decode_driver_path_ratio", DRIVER_TARGET),
            ("frame decode, driver path, clean link", "frame_decode_driver_path_clean_ratio", None)):
        emit(name, figures[key][0], "x", group="bench_posio",
             target=None if target is None else {"op": ">=", "value": target, "of": "value"},
             note=f"SerialLinkReader._decode in {read_max}-byte reads, C against the Python twin "
                  "(CPU time, median of 5 interleaved rounds)"
                  + ("" if target else "; traffic without noise or damage"))
        recorded.append(f"{name} {figures[key][0]:.1f}x")
    for name, fn in (("threshold", "threshold"), ("floyd_steinberg", "floyd_steinberg")):
        def raster(impl: ModuleType, fn: str = fn) -> list[bytes]:
            return impl.raster_bands(getattr(impl, fn)(gray, RECEIPT_W, RECEIPT_H), RECEIPT_W, RECEIPT_H)

        c_s, py_s = best_of(lambda: raster(posio), 20), best_of(lambda: raster(ref), 1)
        entry = emit(f"raster_{name}_ms", c_s * 1e3, "ms", group="bench_posio",
                     floor={"name": "python twin", "value": py_s * 1e3, "unit": "ms"}, ratio=py_s / c_s,
                     target={"op": ">=", "value": 50, "of": "ratio"},
                     note=f"{name} + raster_bands, {RECEIPT_W}x{RECEIPT_H} dots; ratio: Python / C time")
        recorded.append(f"{name} {entry['ratio']:.0f}x")
    print(f"recorded (timed again): {', '.join(recorded)}")


if __name__ == "__main__":
    main()
