"""A real full disk for the tests: a small tmpfs (the `small_disk` fixture in conftest.py) and
`fill`, which writes until the kernel says ENOSPC."""

from __future__ import annotations

import os
from pathlib import Path


def fill(path: Path) -> Path:
    """Write until the kernel says ENOSPC, in shrinking chunks so no byte is left."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler
