"""The arm64 image under qemu-system-aarch64 (-M virt, U-Boot, the whole disk) with the host's
parts around it, as board/qemu/rig.py wires the x86 dev guest: the acquirer simulator behind
user-mode networking, the emulated reader (with its PIN pad) and printer on the guest's ttyS0 and
ttyS1 (a PCI 16550 card of four ports), the ECR line on ttyS2, the LCD frames from ttyS3, keys
through QMP. The guest boots from its own disk and reboots by itself (updates, fallback); a
power cut is SIGKILL of qemu.

The factory (provision()): the terminal's data partition is personalised on the host before the
first boot, as a production line writes it before flashing: settings, the SoftHSM2 token with the
card-vault key, the TMK loaded into the emulated PIN pad by its ceremony.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from board.image import bootstate
from board.image.build import SERVICE_UID, MiB, make_data_ext4, make_vfat, partition_offsets
from board.qemu.guest import ACQUIRER_GUEST_ADDRESS, NETPIPE, Guest, GuestError
from board.qemu.rig import (
    MID,
    PASSWORD,
    TID,
    TMK_HEX,
    EcrLine,
    LcdWatch,
    QemuTerminal,
    SerialBridge,
    is_idle_frame,
)
from board.sim.acquirer import SimulatorThread
from board.sim.devrun import dev_pad
from board.sim.devrun import provision as dev_provision
from board.sim.peripherals import Peripherals
from firmware.ecr.auth import TillPairing, check_reply, sign

U_BOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")  # Debian's u-boot-qemu
TILL = "T01"  # the rig's till, paired on the keypad (pair_till) as a shop pairs its register
BOARD = "qemu-arm64"
DATA_DIR = "posfw"  # the firmware's directory on the data partition (/data/posfw in the guest)
# The guest's serial ports, in the order of the PCI card's four UARTs (ttyS0..ttyS3).
PORTS = ("ttyS0", "ttyS1", "ttyS2", "ttyS3")
READER, PRINTER, ECR, LCD = PORTS


@dataclass
class ImageGuest(Guest):
    """A Guest that boots a whole disk through U-Boot instead of a kernel and a command."""

    binary = "qemu-system-aarch64"
    memory_mb: int = 1024

    def qemu_argv(self, command: str, data_disk: Path | None, cwd: str, data_mount: str,
                  acquirer: tuple[str, int] | None = None,
                  host_forwards: tuple[tuple[int, int], ...] = ()) -> list[str]:
        if data_disk is None:
            raise GuestError("the image guest boots from its disk: give it")
        argv = [
            self.binary, "-M", "virt", "-cpu", "cortex-a57", "-accel", "tcg,thread=multi", "-smp", "2",
            "-m", str(self.memory_mb), "-nodefaults", "-display", "none", "-bios", str(U_BOOT),
            "-drive", f"file={data_disk},if=none,format=raw,id=disk,cache=writeback",
            "-device", "virtio-blk-pci,drive=disk",
            "-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
            "-device", "virtio-keyboard-pci",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]
        card = []
        for index, port in enumerate(PORTS, start=1):
            path = self.socket_dir / f"{port}.sock"
            self.serial_sockets[port] = path
            argv += ["-chardev", f"socket,id=s{index},path={path},server=on,wait=off"]
            card.append(f"chardev{index}=s{index}")
        argv += ["-device", "pci-serial-4x," + ",".join(card)]
        argv += ["-device", "qemu-xhci,id=usb"]  # a USB port for sticks (plug_stick)
        if acquirer is not None:
            forward = f"{sys.executable} {NETPIPE} {acquirer[0]} {acquirer[1]}"
            guest_ip, guest_port = ACQUIRER_GUEST_ADDRESS
            netdev = f"user,id=net0,restrict=on,guestfwd=tcp:{guest_ip}:{guest_port}-cmd:{forward}"
            argv += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=net0"]
        return argv


class PairedEcrLine(EcrLine):
    """The till's end of the ECR line once paired: every request carries the till, its sequence
    number and the MAC under the till key (docs/ecr.md "Paired tills"), as the board, which takes
    no unauthenticated request, wants; every reply's MAC is checked."""

    def __init__(self, link: socket.socket, ids: Iterator[int], till: str, key: bytes,
                 seq: Iterator[int]) -> None:
        super().__init__(link, ids)
        self.till, self._key, self._seq = till, key, seq
        self._sent: dict[int, int] = {}  # request id -> its seq

    def send(self, **request: Any) -> int:
        request.setdefault("id", next(self._ids))
        seq = next(self._seq)
        self._sent[int(request["id"])] = seq
        self._link.sendall(json.dumps(sign(request, self.till, seq, self._key)).encode() + b"\n")
        return int(request["id"])

    def answer(self, request_id: int, timeout: float = 60.0) -> dict[str, Any]:
        reply = super().answer(request_id, timeout)
        return check_reply(reply, self.till, self._sent.pop(request_id), self._key)


def provision(factory: Path, devices: Path, reply_timeout: float | None) -> Path:
    """The data partition's contents, made on the host: posfw/ (settings, the SoftHSM2 token with
    the card-vault key, the provisioning record) owned by the image's service user, and the TMK in
    the emulated pad (devices/) by its ceremony over the reader link."""
    data = factory / DATA_DIR
    host, port = ACQUIRER_GUEST_ADDRESS
    dev_provision(data, port, host=host, reply_timeout=reply_timeout, board=BOARD)
    dev_pad(data, BOARD, devices)
    # The token's configuration names its directory as the guest sees it.
    conf = data / "keys" / "softhsm2.conf"
    if conf.exists():
        conf.write_text(conf.read_text().replace(str((data / "keys").resolve()), f"/data/{DATA_DIR}/keys"))
    for path in [factory, *factory.rglob("*")]:
        os.chown(path, SERVICE_UID if path != factory else 0, SERVICE_UID if path != factory else 0,
                 follow_symlinks=False)
    return factory


class ImageTerminal(QemuTerminal):
    """The flashed board: QemuTerminal's hands (press, ecr, lcd, power_cut) on the arm64 image.

        with ImageTerminal(tmp_path, disk=Path("var/image/disk.img")) as rig:
            rig.boot()
    """

    def __init__(self, workdir: Path, disk: Path, *, reply_timeout: float | None = 3.0) -> None:
        super().__init__(workdir, None, reply_timeout=reply_timeout, board=BOARD, tpm=False,
                         factory_cache=False)
        self.source_disk = Path(disk)
        self.disk = self.workdir / "disk.img"
        self.till_key: bytes | None = None  # once pair_till() has paired the rig's till
        self.till_seq = itertools.count(1)

    def setup(self, keep_disk: bool = False) -> ImageTerminal:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sim = SimulatorThread(self.workdir / "ledger.db", terminals=[(TID, MID, bytes.fromhex(TMK_HEX))])
        self.sim.start()
        self.peripherals = Peripherals(self.workdir / "devices", echo=False).start()
        if not (keep_disk and self.disk.exists()):
            subprocess.run(["cp", "--sparse=always", str(self.source_disk), str(self.disk)], check=True)
            factory = self.workdir / "factory"
            shutil.rmtree(factory, ignore_errors=True)
            provision(factory, self.workdir / "devices", self.reply_timeout)
            offset, size = partition_offsets(self.disk)["data"]
            make_data_ext4(self.disk, size, 0, contents=factory, offset=offset)
        self.bridges = {
            READER: SerialBridge("reader", self.peripherals.reader.device_path),
            PRINTER: SerialBridge("printer", self.peripherals.printer.path),
        }
        self.guest = ImageGuest(self.image, console_path=self.workdir / "console-1.log")  # type: ignore[arg-type]
        return self

    def start(self, command: str | None = None) -> None:
        assert self.guest is not None and self.sim is not None, "setup() first"
        self.boots += 1
        self.guest.console_path = self.workdir / f"console-{self.boots}.log"
        self.guest.start("", data_disk=self.disk, acquirer=("127.0.0.1", self.sim.port))
        for port, bridge in self.bridges.items():
            bridge.attach(self.guest.connect_serial(port))
        link = self.guest.connect_serial(ECR)
        self.ecr = (EcrLine(link, self._ecr_ids) if self.till_key is None
                    else PairedEcrLine(link, self._ecr_ids, TILL, self.till_key, self.till_seq))
        self.lcd = LcdWatch(self.guest.connect_serial(LCD), on_frame=self.on_frame)

    def pair_till(self, timeout: float = 120.0) -> None:
        """Pairs the rig's till as a shop does: Manage > ECR tills on the keypad (the supervisor's
        password), till 1, the code the LCD shows typed at the till, which proves it over the
        line (SPAKE2); from then on every request is signed (PairedEcrLine)."""
        assert self.ecr is not None and self.lcd is not None
        drawn = len(self.lcd.frames)
        self.press("MENU", "0", "0")
        self.lcd.wait(lambda f: "Supervisor" in " ".join(f.rows), timeout, since=drawn)
        self.press(PASSWORD, "ENTER")
        self.lcd.wait(lambda f: "Pair a till" in " ".join(f.rows), timeout, since=drawn)
        self.press("1", "1", "ENTER")
        self.lcd.wait(lambda f: re.search(r"Code \d{6}", " ".join(f.rows)) is not None, timeout,
                      since=drawn)
        found = re.search(r"Code (\d{6})", self.lcd.screen)
        assert found is not None, self.lcd.screen
        pairing = TillPairing(TILL, found.group(1))
        offer = self.ecr.request(timeout, **pairing.request(next(self._ecr_ids)))
        self.till_key = pairing.finish(
            self.ecr.request(timeout, **pairing.answer(offer, next(self._ecr_ids))))
        self.ecr = PairedEcrLine(self.ecr.detach(), self._ecr_ids, TILL, self.till_key, self.till_seq)
        self.lcd.wait(lambda f: "paired" in " ".join(f.rows), timeout, since=drawn)
        # Back out to the idle screen one CANCEL at a time, each only once the screen has settled
        # (the result screen goes back to the menu by itself): a CANCEL still on its way when a
        # sale starts would cancel the sale.
        for _ in range(6):
            self._settle()
            if is_idle_frame(self.lcd.frames[-1][1]):
                return
            drawn = len(self.lcd.frames)
            self.press("CANCEL")
            self.lcd.wait(lambda f: True, timeout, since=drawn)
        raise GuestError(f"the idle screen did not come back after pairing: {self.lcd.screen}")

    def plug_stick(self, files: dict[str, Path], name: str = "stick") -> Path:
        """A USB stick holding `files` (a FAT filesystem) plugged into the running board's USB
        port (QMP device_add), as a merchant plugs one in; the image mounts it at
        /media/usb-sda1 (the first stick). Returns the stick's image file."""
        assert self.guest is not None
        size = max(32 * MiB, 2 * sum(p.stat().st_size for p in files.values()) + 8 * MiB)
        stick = self.workdir / f"{name}.img"
        volume = self.workdir / f"{name}.vfat"
        make_vfat(files, volume, size, "POSUSB", "5e1f00aa", int(time.time()))
        # A stick has a partition table: the FAT in its first partition (sda1).
        stick.unlink(missing_ok=True)
        subprocess.run(["truncate", "-s", str(size + 2 * MiB), str(stick)], check=True)
        subprocess.run(["sfdisk", "-q", str(stick)], input=f"start=2048, size={size // 512}, type=c\n",
                       text=True, check=True, capture_output=True)
        subprocess.run(["dd", f"if={volume}", f"of={stick}", "bs=1M", "seek=1", "conv=notrunc,sparse",
                        "status=none"], check=True)
        for command in ({"execute": "blockdev-add", "arguments": {
                            "driver": "raw", "node-name": name,
                            "file": {"driver": "file", "filename": str(stick)}}},
                        {"execute": "device_add", "arguments": {
                            "driver": "usb-storage", "id": name, "drive": name, "bus": "usb.0"}}):
            reply = self.guest.qmp(command)
            if "error" in reply:
                raise GuestError(f"plugging the stick in failed: {reply['error'].get('desc')}")
        return stick

    def unplug_stick(self, name: str = "stick") -> None:
        """Pulls the stick out (QMP device_del, then its drive once the guest let it go)."""
        assert self.guest is not None
        reply = self.guest.qmp({"execute": "device_del", "arguments": {"id": name}})
        if "error" in reply:
            raise GuestError(f"pulling the stick out failed: {reply['error'].get('desc')}")
        deadline = time.monotonic() + 30
        while "error" in self.guest.qmp({"execute": "blockdev-del", "arguments": {"node-name": name}}):
            if time.monotonic() > deadline:
                raise GuestError(f"the guest never let go of the stick {name}")
            time.sleep(0.5)

    def read_data(self, directory: str, target: Path) -> Path:
        """A host copy of a directory of the data partition (the guest off), e.g. "/posfw"."""
        offset, _ = partition_offsets(self.disk)["data"]
        target.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["debugfs", "-R", f"rdump {directory} {target}",
                                 f"{self.disk}?offset={offset}"], capture_output=True, text=True)
        copied = target / Path(directory).name
        if not copied.is_dir():
            raise GuestError(f"{directory} is not on the data partition: {result.stderr.strip()[-300:]}")
        return copied

    def _settle(self, quiet_s: float = 2.0, timeout: float = 60.0) -> None:
        """Waits until the LCD has drawn nothing new for quiet_s."""
        assert self.lcd is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = len(self.lcd.frames)
            time.sleep(quiet_s)
            if len(self.lcd.frames) == count:
                return

    def read_data_after_cut(self, target: Path) -> Path:
        """The firmware's directory as a reboot would find it after a power cut: the data
        partition copied out, its ext4 journal replayed (e2fsck -p), then read (debugfs)."""
        offset, size = partition_offsets(self.disk)["data"]
        target.mkdir(parents=True, exist_ok=True)
        copy = target / "data.img"
        subprocess.run(["dd", f"if={self.disk}", f"of={copy}", "bs=1M", f"skip={offset // MiB}",
                        f"count={size // MiB}", "status=none"], check=True)
        fsck = subprocess.run(["e2fsck", "-p", str(copy)], capture_output=True, text=True)
        if fsck.returncode >= 4:
            raise GuestError(f"e2fsck could not repair the data partition: {fsck.stdout}{fsck.stderr}")
        subprocess.run(["debugfs", "-R", f"rdump /{DATA_DIR} {target}", str(copy)], capture_output=True,
                       check=True)
        return target / DATA_DIR

    def read_terminal_dir(self, target: Path) -> Path:
        return self.read_data(f"/{DATA_DIR}", target)

    def boot_state(self) -> dict[str, str]:
        """U-Boot's A/B state (BOOT_ORDER, BOOT_A_LEFT, BOOT_B_LEFT) off the boot partition."""
        return bootstate.read(self.disk, partition_offsets(self.disk)["boot"][0])
