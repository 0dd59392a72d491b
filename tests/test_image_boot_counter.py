"""The image's A/B boot counter (board/image/boot.cmd) in Debian's real U-Boot under
qemu-system-aarch64: which slot each state boots, what it writes back, the fallback when a slot's
attempts are spent, the restart when every slot's are. The disk is the image's partition layout
(board/image/build.py assemble_disk) with stand-in slots whose kernel partitions hold no kernel, so
every boot ends in U-Boot ("did not boot; resetting") and qemu exits (-no-reboot): a few seconds
each. The whole image boots in `make image-test` (tests/image).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from board.image import bootstate
from board.image.build import (
    BOOT_SIZE,
    KERNEL_SIZE,
    assemble_disk,
    make_boot_script,
    make_vfat,
    partition_offsets,
)

U_BOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
TOOLS = ("qemu-system-aarch64", "mkimage", "mkfs.vfat", "mcopy", "systemd-repart", "sfdisk")
missing = [tool for tool in TOOLS if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin")
           is None]
pytestmark = pytest.mark.skipif(bool(missing) or not U_BOOT.exists(),
                                reason=f"needs {missing or 'u-boot-qemu'} (make image-deps installs them)")

EPOCH = 1767225600  # FAT keeps no time before 1980
CHOSEN = re.compile(r"posfw-boot: slot (\w) \(order ([AB ]+), attempts left A=(\d+) B=(\d+)\)")


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("bootctr")
    script = work / "boot.scr"
    make_boot_script(script)
    boot = work / "boot.vfat"
    make_vfat({"boot.scr": script}, boot, BOOT_SIZE, "BOOT", "5e1f0000", EPOCH)
    kernel = work / "kernel.vfat"  # no Image in it: U-Boot's load fails, booti refuses, reset
    notes = work / "README"
    notes.write_text("a stand-in kernel partition\n")
    make_vfat({"README": notes}, kernel, KERNEL_SIZE, "KERNEL", "5e1f0001", EPOCH)
    stand_in = work / "slot.img"
    stand_in.write_bytes(b"\0" * 4096)
    data = work / "data.img"
    data.write_bytes(b"\0" * 4096)
    image = work / "disk.img"
    assemble_disk(image, {"boot": boot, "kernel-a": kernel, "kernel-b": kernel, "root-a": stand_in,
                          "root-b": stand_in, "data": data})
    return image


def boot_once(disk: Path, tmp_path: Path, state: dict[str, str] | None) -> tuple[str, dict[str, str]]:
    """Writes `state` (None: no state file), powers on until U-Boot resets; returns the console
    and the state U-Boot left."""
    copy = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(disk), str(copy)], check=True)
    boot_offset = partition_offsets(copy)["boot"][0]
    bootstate.write(copy, boot_offset, state)
    return run_uboot(copy)


def run_uboot(disk: Path) -> tuple[str, dict[str, str]]:
    """Powers the board on until U-Boot resets it; the console and the state it left."""
    result = subprocess.run(
        ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-m", "256", "-nodefaults",
         "-display", "none", "-no-reboot", "-bios", str(U_BOOT),
         "-drive", f"file={disk},if=none,format=raw,id=disk", "-device", "virtio-blk-pci,drive=disk",
         "-serial", "stdio"],
        capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    return result.stdout.decode(errors="replace"), bootstate.read(disk, partition_offsets(disk)["boot"][0])


def chosen(console: str) -> list[tuple[str, str, int, int]]:
    return [(m[1], m[2], int(m[3]), int(m[4])) for m in CHOSEN.finditer(console)]


def test_a_new_board_boots_slot_a_and_spends_one_attempt(disk: Path, tmp_path: Path) -> None:
    console, state = boot_once(disk, tmp_path, {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})
    assert chosen(console) == [("A", "A B", 2, 3)]
    assert "did not boot; resetting" in console
    assert state == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "3"}


def test_without_a_state_file_the_defaults_hold_and_the_state_is_written(disk: Path, tmp_path: Path) -> None:
    console, state = boot_once(disk, tmp_path, None)
    assert chosen(console) == [("A", "A B", 2, 3)]
    assert state == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "3"}


def test_an_installed_slot_boots_first(disk: Path, tmp_path: Path) -> None:
    """What `rauc install` leaves: B first with fresh attempts."""
    console, state = boot_once(disk, tmp_path, {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})
    assert chosen(console) == [("B", "B A", 3, 2)]
    assert state["BOOT_B_LEFT"] == "2" and state["BOOT_A_LEFT"] == "3"


def test_a_slot_without_attempts_is_passed_over_for_the_other(disk: Path, tmp_path: Path) -> None:
    """The fallback: B never proved itself (its attempts are spent), so A boots."""
    console, state = boot_once(disk, tmp_path, {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"})
    assert chosen(console) == [("A", "B A", 2, 0)]
    assert state == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}


def test_when_every_slot_is_spent_both_get_their_attempts_back(disk: Path, tmp_path: Path) -> None:
    console, state = boot_once(disk, tmp_path, {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "0"})
    assert "no slot has boot attempts left" in console
    assert chosen(console) == []
    assert state == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}


def test_a_corrupt_state_file_is_not_trusted(disk: Path, tmp_path: Path) -> None:
    """A torn write of uboot.env (power lost during fatwrite): U-Boot's import refuses the bad
    checksum and the defaults boot A."""
    copy = tmp_path / "seed.img"
    subprocess.run(["cp", "--sparse=always", str(disk), str(copy)], check=True)
    offset = partition_offsets(copy)["boot"][0]
    bad = bytearray(bootstate.encode({"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}))
    bad[10] ^= 0xFF
    staged = tmp_path / "uboot.env"
    staged.write_bytes(bytes(bad))
    subprocess.run(["mcopy", "-o", "-i", f"{copy}@@{offset}", str(staged), "::uboot.env"], check=True,
                   env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    with pytest.raises(bootstate.BootStateError):
        bootstate.read(copy, offset)
    console, state = run_uboot(copy)
    assert chosen(console) == [("A", "A B", 2, 3)]
    assert state["BOOT_ORDER"] == "A B"


def test_the_state_file_round_trips() -> None:
    variables = {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "1", "BOOT_B_LEFT": "3"}
    raw = bootstate.encode(variables)
    assert len(raw) == bootstate.ENV_SIZE
    assert bootstate.decode(raw) == variables
