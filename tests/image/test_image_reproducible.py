"""Two builds of the image from the same inputs give the same bytes (`make image-test`, as root):
`make image`'s disk against a second build from scratch in another directory (its own wheels,
built again in a new chroot; its own root filesystem) with the same commit, the same
SOURCE_DATE_EPOCH and the same keyring. Where they differ, the test names the partitions and the
files of the root that differ, so the cause can be found.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

if os.environ.get("IMAGE_TESTS") != "1":
    pytest.skip("the image tests run under `make image-test` (IMAGE_TESTS=1; needs `make image`)",
                allow_module_level=True)

from board.image.build import build, partition_offsets, sha256

IMAGE_DIR = Path(os.environ.get("IMAGE_DIR", "var/image")).resolve()


def differing_partitions(first: Path, second: Path) -> list[str]:
    names = []
    for name, (offset, size) in partition_offsets(first).items():
        with first.open("rb") as a, second.open("rb") as b:
            a.seek(offset)
            b.seek(offset)
            if a.read(size) != b.read(size):
                names.append(name)
    return names


def differing_files(first: Path, second: Path) -> str:
    """unsquashfs -lls of both roots, compared (names, modes, sizes), and the files whose bytes
    differ."""
    result = subprocess.run(["diff", "-rq", str(first), str(second)], capture_output=True, text=True)
    return result.stdout[-3000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="building the image needs root")
@pytest.mark.timeout(3600)
def test_two_builds_give_the_same_sha256(tmp_path: Path) -> None:
    made = json.loads((IMAGE_DIR / "image.json").read_text())
    os.environ["SOURCE_DATE_EPOCH"] = str(made["source_date_epoch"])
    try:
        again = build(tmp_path / "again", reuse_wheels=False,
                      keyring=Path(made["keyring"]) if made.get("keyring") else None,
                      log=lambda line: print(f"[again] {line}"))
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    print(f"\n[image] first  {made['sha256']}\n[image] second {again.sha256} "
          f"({again.figures['build_s']:.0f} s)")
    if again.sha256 != made["sha256"]:
        parts = differing_partitions(IMAGE_DIR / "disk.img", again.disk)
        detail = ""
        if "root-a" in parts:
            for name, image in (("first", IMAGE_DIR / "rootfs.squashfs"), ("second", again.rootfs)):
                subprocess.run(["unsquashfs", "-q", "-d", str(tmp_path / name), str(image)], check=True)
            detail = differing_files(tmp_path / "first", tmp_path / "second")
        pytest.fail(f"the two images differ in {parts}:\n{detail}")
    assert sha256(again.disk) == made["sha256"]
