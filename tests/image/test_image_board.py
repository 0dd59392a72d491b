"""The flashable image (`make image`) under qemu-system-aarch64 -M virt (TCG), as a merchant's board
lives it (`make image-test`; board/image/rig.py wires the host's parts). In order, on one board:

1. It boots to the idle screen through U-Boot (slot A); a sale swiped at the reader is approved;
   the journal is on the data partition.
2. Unsigned, wrong-key, truncated and tampered bundles on a USB stick are refused in words; the
   slots and the boot state do not change.
3. A signed bundle installs into B; the board reboots into B, the firmware's health check passes
   and marks B good; the sale of step 1 is still in the journal and settles.
4. A bundle whose firmware fails its health check (its printer is out of its reach) goes into A:
   A never proves itself, its boot attempts run out and the board falls back to B by itself.
5. Power cuts (SIGKILL of qemu) while a bundle is being written and during the first boot of the
   new slot: the board comes up on a good slot, and the journal and the acquirer's books agree.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

if os.environ.get("IMAGE_TESTS") != "1":
    pytest.skip("the image tests run under `make image-test` (IMAGE_TESTS=1; needs `make image`)",
                allow_module_level=True)

from helpers import assert_agree

from board.image import signing
from board.image.bundle import COMPATIBLE, Manifest, build_bundle
from board.image.rig import ImageTerminal
from board.qemu.books import open_books
from board.qemu.rig import PASSWORD, TID

# Each step boots the board under emulation, some several times: minutes, not the suite's 120 s.
pytestmark = pytest.mark.timeout(2400)
IMAGE_DIR = Path(os.environ.get("IMAGE_DIR", "var/image")).resolve()
BOOTED = re.compile(r"posfw-boot: slot (\w) ")
READY = re.compile(r"terminal ready: .* ([0-9.]+) s after the process started")
FIGURES: dict[str, float | str] = {}  # written to IMAGE_DIR/figures.json and printed at the end
STICK = "/media/usb-sda1"  # the image's udev rule mounts the first stick's first partition here
BOOT_TIMEOUT = 600.0


def boots(rig: ImageTerminal) -> list[str]:
    """The slots U-Boot chose since qemu started, in order."""
    return BOOTED.findall(rig.console())


def wait_boot(rig: ImageTerminal, count: int, timeout: float = BOOT_TIMEOUT) -> str:
    """Waits until U-Boot has chosen a slot `count` times; returns the last one chosen."""
    deadline = time.monotonic() + timeout
    while len(found := boots(rig)) < count:
        assert time.monotonic() < deadline, f"no boot #{count}; console:\n{rig.console()[-3000:]}"
        time.sleep(1)
    return found[count - 1]


def idle_after(rig: ImageTerminal, since: int, timeout: float = BOOT_TIMEOUT) -> None:
    assert rig.lcd is not None and rig.ecr is not None
    rig.wait_idle(timeout, since=since)
    rig.ecr.wait_listening(timeout)


def firmware_status(rig: ImageTerminal) -> dict:
    assert rig.ecr is not None
    answer = rig.ecr.request(op="firmware_status", timeout=60)
    assert answer.get("ok"), answer
    return answer


def slots(status: dict) -> dict[str, dict]:
    return {slot["name"]: slot for slot in status["slots"]}


def sell(rig: ImageTerminal, amount: int, card: str = "cup_credit") -> dict:
    """A sale asked by the till over ECR, the card swiped at the reader when the LCD asks."""
    assert rig.ecr is not None and rig.peripherals is not None
    assert rig.lcd is not None
    drawn = len(rig.lcd.frames)
    request = rig.ecr.send(op="sale", amount=amount)
    assert rig.peripherals.reader.wait_armed(60), "the sale never armed the card reader"
    # The cardholder swipes when the LCD asks, and a moment later (a swipe within milliseconds of
    # the prompt was answered "cancelled at step card" on this board: see the issue 18 note).
    rig.lcd.wait(lambda f: "swipe card" in " ".join(f.rows), 60, since=drawn)
    time.sleep(2)
    rig.peripherals.reader.swipe(card)
    answer = rig.ecr.answer(request, timeout=120)
    screens = [" | ".join(f.rows) for _at, f in rig.lcd.frames[drawn:]]
    assert answer.get("result") == "approved", (answer, screens)
    return answer


def update(rig: ImageTerminal, path: str, timeout: float = 1200.0, **extra: object) -> dict:
    """The till's update request; while a receipt (the last settlement's report) is still
    printing the terminal refuses, as it must, so the till asks again once it is out."""
    assert rig.ecr is not None
    deadline = time.monotonic() + 300
    while True:
        answer = rig.ecr.request(op="update", path=path, password=PASSWORD, timeout=timeout, **extra)
        if "receipt is printing" not in answer.get("message", "") or time.monotonic() > deadline:
            return answer
        time.sleep(5)


def plug(rig: ImageTerminal, name: str, files: dict[str, Path]) -> None:
    """A stick with `files` plugged in, waited for until the firmware finds it mounted at STICK
    (udev mounts it a moment after the kernel sees it)."""
    rig.plug_stick(files, name=name)
    first = next(iter(files))
    deadline = time.monotonic() + 90
    while "USB stick" in update(rig, f"{STICK}/{first}", timeout=120, check=True).get("message", ""):
        assert time.monotonic() < deadline, "the stick was never mounted"
        time.sleep(2)


@pytest.fixture(scope="module", autouse=True)
def figures():
    """The image's figures (docs/image.md "Figures"): sizes, boot, install and rollback times."""
    yield FIGURES
    FIGURES["machine"] = f"{os.cpu_count()} cores, {platform.machine()}, qemu-system-aarch64 TCG"
    (IMAGE_DIR / "figures.json").write_text(json.dumps(FIGURES, indent=2) + "\n")
    print("\n[image] figures:\n" + "\n".join(f"  {k}: {v}" for k, v in FIGURES.items()))


@pytest.fixture(scope="module")
def disk() -> Path:
    image = IMAGE_DIR / "disk.img"
    if not image.exists():
        pytest.fail(f"no image at {image}: run `make image` (make image-test does)")
    return image


@pytest.fixture(scope="module")
def bundles(disk: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundles the steps install or must refuse, from the image's own slot images."""
    work = tmp_path_factory.mktemp("bundles")
    keys = signing.development_keys(IMAGE_DIR / "keys")
    rootfs, kernel = IMAGE_DIR / "rootfs.squashfs", IMAGE_DIR / "kernel.vfat"
    epoch = int(time.time())

    def bundle(name: str, version: str, root: Path, signer: signing.SigningKeys = keys) -> Path:
        manifest = Manifest(compatible=COMPATIBLE, version=version, build=str(epoch),
                            description=f"image test: {name}")
        return build_bundle(work / f"{name}.raucb", manifest, root, kernel, signer, epoch=epoch).path

    made = {"good": bundle("good", "9.0.1", rootfs)}
    other = signing.development_keys(work / "other-keys")  # another CA: the board does not trust it
    made["wrong-key"] = bundle("wrong-key", "9.0.2", rootfs, other)
    raw = made["good"].read_bytes()
    made["truncated"] = work / "truncated.raucb"
    made["truncated"].write_bytes(raw[: len(raw) // 2])
    tampered = bytearray(raw)
    tampered[len(raw) // 3] ^= 0x01  # a byte of the payload: the signature still verifies
    made["tampered"] = work / "tampered.raucb"
    made["tampered"].write_bytes(bytes(tampered))
    # Unsigned: rauc bundle needs a key, so take the signed bundle's payload without its CMS.
    made["unsigned"] = work / "unsigned.raucb"
    size = int.from_bytes(raw[-8:], "big")
    made["unsigned"].write_bytes(raw[: len(raw) - 8 - size])
    # A firmware whose health check fails: its unit keeps the printer (/dev/ttyS1) out of reach,
    # as a release with a hardening mistake would.
    tree = work / "broken-root"
    subprocess.run(["unsquashfs", "-q", "-d", str(tree), str(rootfs)], check=True)
    dropin = tree / "etc/systemd/system/posfw.service.d/broken.conf"
    dropin.write_text("[Service]\nInaccessiblePaths=/dev/ttyS1\n")
    broken_root = work / "broken.squashfs"
    subprocess.run(["mksquashfs", str(tree), str(broken_root), "-noappend", "-quiet", "-no-progress",
                    "-comp", "zstd"], check=True)
    shutil.rmtree(tree)
    made["broken"] = bundle("broken", "9.0.3", broken_root)
    made["good-again"] = bundle("good-again", "9.0.4", rootfs)
    image = IMAGE_DIR / "disk.img"
    FIGURES.update(disk_mib=round(image.stat().st_size / 2**20),
                   disk_allocated_mib=round(image.stat().st_blocks * 512 / 2**20),
                   root_slot_mib=round(rootfs.stat().st_size / 2**20, 1),
                   bundle_mib=round(made["good"].stat().st_size / 2**20, 1))
    return made


@pytest.fixture(scope="module")
def rig(disk: Path, tmp_path_factory: pytest.TempPathFactory):
    terminal = ImageTerminal(tmp_path_factory.mktemp("board"), disk, reply_timeout=10.0)
    terminal.setup()
    yield terminal
    terminal.close()


def test_1_boots_to_idle_and_sells(rig: ImageTerminal) -> None:
    boot_s = rig.boot(timeout=BOOT_TIMEOUT)
    ready = READY.findall(rig.console())
    assert ready, "the firmware never logged that it was ready"
    FIGURES.update(boot_to_idle_s=round(boot_s, 1), firmware_start_to_ready_s=float(ready[0]))
    # The board takes requests from paired tills only: the shop pairs its till on the keypad.
    rig.pair_till()
    assert boots(rig) == ["A"]
    sold = sell(rig, 1234)
    assert rig.sim is not None
    assert [(r.kind, r.amount) for r in rig.sim.ledger.approved(TID)] == [("sale", 1234)]
    assert sold["pan"].startswith("622588") and "*" in sold["pan"]
    status = firmware_status(rig)
    assert slots(status)["A"]["booted"] and not slots(status)["B"]["booted"], status


def test_2_bad_bundles_are_refused_and_nothing_changes(rig: ImageTerminal, bundles: dict[str, Path]) -> None:
    before_status, before_boot = firmware_status(rig), rig.boot_state()
    bad = {name: bundles[name] for name in ("unsigned", "wrong-key", "truncated", "tampered")}
    plug(rig, "stick1", {f"{name}.raucb": path for name, path in bad.items()})
    words: dict[str, str] = {}
    for name in bad:
        answer = update(rig, f"{STICK}/{name}.raucb", timeout=600)
        assert answer.get("ok") is False, (name, answer)
        # The operator's words say it is refused and nothing changed; rauc's or the payload
        # check's own reason rides along for support.
        assert "nothing changed" in answer.get("message", ""), (name, answer)
        words[name] = answer.get("reason", "")
        assert words[name], (name, answer)
    FIGURES["refusals"] = "; ".join(f"{name}: {said}" for name, said in words.items())
    after = firmware_status(rig)
    assert slots(after) == slots(before_status)
    assert rig.boot_state() == before_boot
    rig.unplug_stick("stick1")


def test_3_signed_bundle_installs_into_b_boots_and_settles(rig: ImageTerminal,
                                                           bundles: dict[str, Path]) -> None:
    assert rig.lcd is not None
    plug(rig, "stick2", {"posfw-9.0.1.raucb": bundles["good"]})
    started = time.monotonic()
    drawn = len(rig.lcd.frames)
    answer = update(rig, f"{STICK}/posfw-9.0.1.raucb")
    assert answer.get("ok"), answer
    install_s = time.monotonic() - started
    assert wait_boot(rig, 2) == "B"
    idle_after(rig, drawn)
    FIGURES.update(install_s=round(install_s, 1),
                   install_to_idle_on_new_slot_s=round(time.monotonic() - started, 1))
    status = firmware_status(rig)
    b = slots(status)["B"]
    assert b["booted"] and b["state"] == "good" and b["version"] == "9.0.1", status
    assert rig.boot_state()["BOOT_ORDER"].startswith("B")
    assert rig.ecr is not None
    settled = rig.ecr.request(op="settle", password=PASSWORD, timeout=300)
    assert settled.get("ok"), settled
    assert settled.get("result") == "settled", settled
    rig.unplug_stick("stick2")


def test_4_a_slot_failing_its_health_check_falls_back(rig: ImageTerminal, bundles: dict[str, Path]) -> None:
    plug(rig, "stick3", {"posfw-9.0.3.raucb": bundles["broken"]})
    first = len(boots(rig)) + 1
    answer = update(rig, f"{STICK}/posfw-9.0.3.raucb")
    assert answer.get("ok"), answer
    started = time.monotonic()
    # A's three attempts, then B again.
    chosen = [wait_boot(rig, first + n, timeout=BOOT_TIMEOUT) for n in range(4)]
    assert chosen == ["A", "A", "A", "B"], chosen
    assert rig.lcd is not None
    idle_after(rig, 0)
    FIGURES["rollback_s"] = round(time.monotonic() - started, 1)  # install done to idle on B again
    status = firmware_status(rig)
    assert slots(status)["B"]["booted"] and slots(status)["A"]["state"] == "bad", status
    assert "Fallback" in status.get("message", ""), status
    rig.unplug_stick("stick3")


def test_5_power_cuts_during_install_and_first_boot(rig: ImageTerminal, bundles: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """B runs (good); A was left bad by step 4. A cut while the bundle is written to A: B boots,
    A is not chosen. A cut at A's first boot after a complete install: A boots again with one
    attempt fewer and proves itself. Then a sale, and the books agree."""
    assert rig.lcd is not None and rig.ecr is not None and rig.sim is not None
    plug(rig, "stick4", {"posfw-9.0.4.raucb": bundles["good-again"]})
    path = f"{STICK}/posfw-9.0.4.raucb"
    # Cut 1: while the slot is being written (the LCD shows the install's progress).
    drawn = len(rig.lcd.frames)
    rig.ecr.send(op="update", path=path, password=PASSWORD)
    rig.lcd.wait(lambda f: "%" in " ".join(f.rows), 600, since=drawn)
    time.sleep(3)
    rig.power_cut()
    rig.start()
    assert wait_boot(rig, 1) == "B", "a half-written slot was booted"
    idle_after(rig, 0)
    status = firmware_status(rig)
    assert slots(status)["B"]["booted"], status
    # Cut 2: the install completes, the board restarts into A; power goes at A's first boot.
    plug(rig, "stick5", {"posfw-9.0.4.raucb": bundles["good-again"]})
    answer = update(rig, path)
    assert answer.get("ok"), answer
    assert wait_boot(rig, 2) == "A"
    rig.power_cut()
    state = rig.boot_state()
    assert state["BOOT_ORDER"].startswith("A") and state["BOOT_A_LEFT"] == "2", state
    rig.start()
    assert wait_boot(rig, 1) == "A"
    idle_after(rig, 0)
    status = firmware_status(rig)
    a = slots(status)["A"]
    assert a["booted"] and a["state"] == "good" and a["version"] == "9.0.4", status
    sell(rig, 4321)
    # The books: the journal off the data partition (after a last cut) against the acquirer's.
    rig.power_cut()
    copy = rig.read_data_after_cut(tmp_path / "data")
    journal = open_books(copy)
    try:
        assert journal.integrity() == "ok"
        assert_agree(journal, rig.sim.ledger)
        assert sorted(r.amount for r in journal.records() if r.state.value == "APPROVED") == [1234, 4321]
    finally:
        journal.close()
