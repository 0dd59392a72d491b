"""Fixtures the QEMU board tests share: the built (cached) guest image and a bare guest.

Test modules import them (`from guestkit import image_fixture` gives the fixture `image`); not a
conftest.py: a second module named conftest would shadow tests/conftest.py, which other tests
import by that name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from board.qemu.guest import Guest
from board.qemu.image import DEFAULT_DIR, BuiltImage, build


@pytest.fixture(scope="module", name="image")
def image_fixture() -> BuiltImage:
    started = time.monotonic()
    built = build(Path(os.environ.get("QEMU_IMAGE_DIR", DEFAULT_DIR)), log=lambda line: None)
    print(f"\n[qemu] image ready in {time.monotonic() - started:.1f} s")
    return built


@pytest.fixture(name="guest")
def guest_fixture(image: BuiltImage, tmp_path: Path) -> Iterator[Guest]:
    g = Guest(image, console_path=tmp_path / "console.log")
    yield g
    g.close()
