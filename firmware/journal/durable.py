"""Durability on the file system: a file's data, and a directory's entries, on the disk before
anything relies on them (the journal's export, its archive files, provisioning).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    """Its data on the disk before anything names it (a rename, a marker)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """The directory's entries (a rename, a new file) on the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
