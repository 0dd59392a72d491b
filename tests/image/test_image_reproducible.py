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
import sys
from pathlib import Path

import pytest

if os.environ.get("IMAGE_TESTS") != "1":
    pytest.skip("the image tests run under `make image-test` (IMAGE_TESTS=1; needs `make image`)",
                allow_module_level=True)

from board.image.build import partition_offsets, sha256

IMAGE_DIR = Path(os.environ.get("IMAGE_DIR", "var/image")).resolve()
REPO = Path(__file__).resolve().parents[2]


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
    """The files whose bytes differ between two unpacked roots (diff -rq)."""
    result = subprocess.run(["diff", "-rq", str(first), str(second)], capture_output=True, text=True)
    return result.stdout[-3000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="building the image needs root")
@pytest.mark.timeout(3600)
def test_two_builds_give_the_same_sha256(tmp_path: Path) -> None:
    """The second build runs from a fresh checkout of the first one's commit (git worktree), in
    its own process, with the first one's SOURCE_DATE_EPOCH and keyring, and builds its wheels
    anew."""
    made = json.loads((IMAGE_DIR / "image.json").read_text())
    source = tmp_path / "src"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(source), made["commit"]],
                   check=True, capture_output=True)
    try:
        build = subprocess.run(
            [sys.executable, "-m", "board.image.build", "--dir", str(tmp_path / "again"),
             "--keyring", made["keyring"], "--rebuild-wheels"],
            cwd=source, env={**os.environ, "SOURCE_DATE_EPOCH": str(made["source_date_epoch"])},
            capture_output=True, text=True)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(source)],
                       capture_output=True)
    assert build.returncode == 0, build.stderr[-3000:] + build.stdout[-3000:]
    again = json.loads((tmp_path / "again" / "image.json").read_text())
    print(f"\n[image] first  {made['sha256']}\n[image] second {again['sha256']} "
          f"({again['figures']['build_s']:.0f} s)")
    if again["sha256"] != made["sha256"]:
        second = tmp_path / "again"
        parts = differing_partitions(IMAGE_DIR / "disk.img", second / "disk.img")
        detail = ""
        if "root-a" in parts:
            for name, image in (("first", IMAGE_DIR), ("second", second)):
                image = image / "rootfs.squashfs"
                subprocess.run(["unsquashfs", "-q", "-d", str(tmp_path / name), str(image)], check=True)
            detail = differing_files(tmp_path / "first", tmp_path / "second")
        pytest.fail(f"the two images differ in {parts}:\n{detail}")
    assert sha256(tmp_path / "again" / "disk.img") == made["sha256"]
