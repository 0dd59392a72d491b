"""cffi builder for the C extension `_posio` (out-of-line API mode, set_source).

Run `.venv/bin/python c_ext/build_posio.py [--force]` from anywhere: it compiles
c_ext/*.c (not the fuzz_*.c targets) and places `_posio.*.so` at the repository root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

from cffi import FFI
from cffi import __version__ as cffi_version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TMPDIR = ROOT / "build" / "posio"
MODULE = "_posio"
# Not part of the extension: the libFuzzer targets, built by clang (mk/c_ext.mk).
FUZZ_TARGETS = "fuzz_*.c"
# Python's own CFLAGS (-O3 -g ...) and any $CFLAGS come first on the command
# line; ours come last and so win.  -Werror keeps warnings from piling up
# unseen.  Hardening: stack canaries in every function with a local array
# or an address-taken local; _FORTIFY_SOURCE=2 (needs -O1 or more, which
# our -O2 guarantees) makes glibc check copies and reads into buffers of
# known size (the __*_chk symbols); -U first because some compilers or
# CFLAGS define it already and a redefinition is a warning, so an error.
CFLAGS = [
    "-O2",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-fstack-protector-strong",
    "-U_FORTIFY_SOURCE",
    "-D_FORTIFY_SOURCE=2",
]
# Full RELRO: relocations resolved at load (BIND_NOW), then the GOT is made
# read-only, so a stray write cannot redirect a library call.
LDFLAGS = ["-Wl,-z,relro,-z,now"]

# Mirrors posio.h.  The struct is declared with "..." so cffi takes its real
# layout from the header instead of trusting this copy.
CDEF = """
#define POSIO_STX ...
#define POSIO_ETX ...
#define POSIO_PAYLOAD_MAX ...
#define POSIO_FRAME_MAX ...
#define POSIO_OUT_RESERVE ...
#define POSIO_READ_DONE ...
#define POSIO_READ_CANCELLED ...
#define POSIO_READ_EOF ...

typedef struct {
    size_t len;
    uint64_t frames;
    uint64_t noise_bytes;
    uint64_t bad_length;
    uint64_t bad_etx;
    uint64_t bad_checksum;
    uint64_t truncated;
    uint64_t line_errors;
    ...;
} posio_decoder;

void posio_decoder_init(posio_decoder *d);
size_t posio_decoder_feed(posio_decoder *d, const uint8_t *in, size_t n,
                          uint8_t *out, size_t out_cap, size_t *out_len,
                          size_t *n_frames);
int posio_decoder_flush(posio_decoder *d, uint8_t *out, size_t out_cap,
                        size_t *out_len, size_t *n_frames);
size_t posio_encode_frame(const uint8_t *payload, size_t n, uint8_t *out,
                          size_t out_cap);

uint8_t posio_lrc(const uint8_t *data, size_t n);
uint8_t posio_copy_lrc(uint8_t *dst, const uint8_t *src, size_t n);
uint16_t posio_crc16_ccitt(const uint8_t *data, size_t n, uint16_t init);

void posio_threshold(const uint8_t *gray, size_t w, size_t h, int level,
                     uint8_t *out);
void posio_floyd_steinberg(const uint8_t *gray, size_t w, size_t h,
                           uint8_t *out, int32_t *scratch);
size_t posio_raster_bands(const uint8_t *packed, size_t stride, size_t h,
                          size_t band_h, uint8_t *out, size_t out_cap);

int posio_write_all(int fd, const uint8_t *data, size_t n, size_t chunk,
                    int64_t deadline_ms, size_t *written);
int posio_read_until(int fd, uint8_t *out, size_t max_bytes,
                     int64_t inter_byte_ms, int64_t deadline_ms, int cancel_fd,
                     size_t *got);

const char *posio_build_compiler(void);
const char *posio_build_flags(void);
const char *posio_build_time(void);
const char *posio_build_hardening(void);
"""


def c_sources() -> list[Path]:
    """The C files that make up the module, in a stable order."""
    return sorted(p for p in HERE.glob("*.c") if not p.match(FUZZ_TARGETS))


def _c_string(text: str) -> str:
    """A C string literal for a -D macro value (no shell is involved)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _build_time() -> str:
    # SOURCE_DATE_EPOCH lets a packager make the build reproducible.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    stamp = float(epoch) if epoch else time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def make_ffibuilder(relative_to: Path | None = None) -> FFI:
    """The FFI builder for `_posio`, with the build record baked in as macros. Paths are absolute
    (ffi.compile() works in its own directory) or, for setuptools, relative to `relative_to`."""

    def path(p: Path) -> str:
        return str(p if relative_to is None else p.relative_to(relative_to))

    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    ffibuilder = FFI()
    ffibuilder.cdef(CDEF)
    ffibuilder.set_source(
        MODULE,
        '#include "posio.h"\n',
        sources=[path(p) for p in c_sources()],
        include_dirs=[path(HERE)],
        depends=[path(HERE / "posio.h")],
        extra_compile_args=CFLAGS,
        extra_link_args=LDFLAGS,
        define_macros=[
            ("POSIO_BUILD_CC", _c_string(compiler.split()[0])),
            ("POSIO_BUILD_FLAGS", _c_string(" ".join(CFLAGS + LDFLAGS) + f" (cffi {cffi_version})")),
            ("POSIO_BUILD_TIME", _c_string(_build_time())),
        ],
    )
    return ffibuilder


def wheel_ffibuilder() -> FFI:
    """The builder setup.py names (`pip wheel .` runs in the source tree; setuptools takes only
    relative paths)."""
    return make_ffibuilder(relative_to=ROOT)


def target_path() -> Path:
    """Where the built module goes: the repository root, so `import _posio` works there."""
    return ROOT / (MODULE + sysconfig.get_config_var("EXT_SUFFIX"))


def up_to_date(target: Path) -> bool:
    """True if the installed module is newer than every input of the build."""
    if not target.exists():
        return False
    inputs = [*c_sources(), HERE / "posio.h", Path(__file__).resolve()]
    return target.stat().st_mtime >= max(p.stat().st_mtime for p in inputs)


def build(force: bool = False, verbose: bool = False) -> Path:
    """Compile `_posio` (unless up to date) and install it at the repository root."""
    target = target_path()
    if not force and up_to_date(target):
        print(f"{target.name} is up to date")
        return target
    TMPDIR.mkdir(parents=True, exist_ok=True)
    built = Path(make_ffibuilder().compile(tmpdir=str(TMPDIR), verbose=verbose))
    # Copy then rename: a process that already loaded the old module keeps
    # its inode, and no reader ever sees a half-written file.
    staging = target.with_name(target.name + ".tmp")
    shutil.copy2(built, staging)
    os.replace(staging, target)
    print(f"built {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("-v", "--verbose", action="store_true", help="show compiler commands")
    args = parser.parse_args(argv)
    build(force=args.force, verbose=args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
