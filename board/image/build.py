"""`make image`: the flashable arm64 image (Raspberry Pi-class boards, QEMU `virt`), from Debian's
and PyPI's packages only, reproducibly (SOURCE_DATE_EPOCH; docs/image.md says how and why).

Steps: the firmware's wheels, built for aarch64 in a throw-away Debian chroot (mmdebstrap, the
foreign architecture through qemu-user-static); the root filesystem (mmdebstrap, the wheels
installed into /opt/posfw, the units and rules of board/); a slot's squashfs and its kernel
partition; the boot partition (U-Boot's boot script and the A/B boot state); the data partition;
the GPT disk (systemd-repart, every partition copied in as blocks). Prints the disk's SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from board.image import signing
from board.image.bundle import COMPATIBLE
from board.qemu.image import ImageError, pack_initrd
from firmware.diag.buildinfo import firmware_version

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEFAULT_DIR = ROOT / "var" / "image"
SUITE = "bookworm"
ARCH = "arm64"
MIRROR = os.environ.get("IMAGE_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("IMAGE_SECURITY_MIRROR", "http://deb.debian.org/debian-security")


def sources() -> list[str]:
    """The release, its updates and its security fixes: a payment terminal's image carries them."""
    return [f"deb {MIRROR} {SUITE} main", f"deb {MIRROR} {SUITE}-updates main",
            f"deb {SECURITY_MIRROR} {SUITE}-security main"]

# What the device runs, and nothing to build or test with: systemd and udev, D-Bus and rauc (the
# updates), libubootenv's fw_printenv/fw_setenv (rauc's U-Boot backend), Python 3.11 (Debian's,
# the same minor as development), kmod (udev loads drivers), iproute2 and networkd (the acquirer
# link), SoftHSM2 (the card-vault key's token on this board), libpcsclite1 (pyscard's library),
# e2fsprogs and dosfstools (fsck at boot), GNU Unifont (Chinese on the LCD and receipts),
# busybox-static (the initramfs).
RUNTIME_PACKAGES = ("systemd", "systemd-sysv", "udev", "dbus", "rauc", "libubootenv-tool", "python3",
                    "kmod", "iproute2", "softhsm2", "libpcsclite1", "e2fsprogs", "dosfstools",
                    "fonts-unifont", "busybox-static")
# The builder's extra packages: a compiler for _posio and the two sdists (evdev against the kernel
# headers, pyscard against libpcsclite-dev with swig from the build lock).
BUILDER_PACKAGES = ("build-essential", "python3-dev", "python3-venv", "libpcsclite-dev", "libffi-dev",
                    "ca-certificates")
# What the initramfs loads before it can mount a slot (dependencies are added in load order).
INITRD_MODULES = ("virtio_pci", "virtio_blk", "squashfs")
SERVICE_UID = 990  # the firmware's user, fixed so the data partition's owner is known at build time

MiB = 1 << 20
# The disk, in order: (partition label, size, the file copied into it). Slots are sized for
# growth: a later bundle must fit the slot the image made.
BOOT_SIZE, KERNEL_SIZE, ROOT_SIZE, DATA_SIZE = 16 * MiB, 64 * MiB, 768 * MiB, 256 * MiB

Log = Callable[[str], None]


@dataclass(frozen=True)
class BuiltImage:
    disk: Path
    rootfs: Path  # a slot's squashfs (what a bundle carries)
    kernel: Path  # a slot's kernel partition (vfat: Image, initrd.img)
    sha256: str
    epoch: int
    figures: dict[str, float]


def _run(argv: list[str], *, env: dict[str, str | None] | None = None, cwd: Path | None = None,
         log: Log | None = None) -> str:
    found = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin:/sbin")
    if found is None:
        raise ImageError(f"{argv[0]} is not installed (make image-deps installs what the image needs)")
    full_env = {**os.environ, **(env or {})}
    for name in [k for k, v in full_env.items() if v is None]:  # None: unset it for this program
        del full_env[name]
    result = subprocess.run([found, *argv[1:]], env=full_env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip())[-1500:]
        raise ImageError(f"{argv[0]} failed ({result.returncode}): {tail}")
    if log is not None and result.stderr.strip():
        log(result.stderr.strip()[-300:])
    return result.stdout


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH if set, else the time of the commit being built: the same commit gives
    the same image."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    return int(_run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct"]).strip())


def export_source(target: Path, log: Log) -> str:
    """The committed tree (git archive HEAD): what the image holds is what a commit names; work
    not committed is left out, and said."""
    if _run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).strip():
        log("note: uncommitted changes are not in the image (it is built from HEAD)")
    commit = _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"]).strip()
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return commit


# What the wheels are made of: a commit that changes none of these reuses the wheels it has.
WHEEL_SOURCES = ("firmware", "drivers", "c_ext", "pyproject.toml", "setup.py", "requirements-build.txt",
                 "requirements.txt", "board/image/wheels.sh")


def wheel_sources() -> dict[str, str]:
    """The committed tree's object id of each of WHEEL_SOURCES."""
    return {name: _run(["git", "-C", str(ROOT), "rev-parse", f"HEAD:{name}"]).strip()
            for name in WHEEL_SOURCES}


def _mmdebstrap(packages: tuple[str, ...], target: str, hooks: list[str], epoch: int, *,
                variant: str, form: str, log: Log) -> None:
    argv = ["mmdebstrap", f"--arch={ARCH}", f"--variant={variant}", "--mode=root", f"--format={form}",
            "--include=" + ",".join(packages)]
    argv += [f"--customize-hook={hook}" for hook in hooks]
    argv += [SUITE, target, *sources()]
    _run(argv, env={"SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8", "TZ": "UTC"})


def build_wheels(source: Path, wheels: Path, epoch: int, log: Log) -> list[str]:
    """The firmware's wheel and its dependencies' for aarch64, built in a throw-away chroot."""
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    # A clean environment: the host's pip settings (its mirrors, caches, find-links) mean nothing
    # in the chroot.
    env = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LC_ALL=C.UTF-8",
           f"SOURCE_DATE_EPOCH={epoch}", "PIP_DEFAULT_TIMEOUT=120"]
    # A machine that reaches PyPI through an intercepting proxy trusts its CA: hand it over.
    cert = os.environ.get("PIP_CERT")
    if cert and Path(cert).is_file():
        shutil.copy(cert, source / ".pip-ca.crt")
        env.append("PIP_CERT=/src/.pip-ca.crt")
    hooks = [
        f'cp -a {shlex.quote(str(source))} "$1/src"',
        f'chroot "$1" env -i {" ".join(env)} sh /src/board/image/wheels.sh',
        f'cp -a "$1/wheels/." {shlex.quote(str(wheels))}/',
    ]
    _mmdebstrap(BUILDER_PACKAGES, "/dev/null", hooks, epoch, variant="apt", form="null", log=log)
    names = sorted(p.name for p in wheels.glob("*.whl"))
    if not any(name.startswith("posfw-") for name in names):
        raise ImageError(f"the builder made no posfw wheel (made: {', '.join(names)})")
    return names


SERVICE_DROPIN = """\
# The image's settings for board/systemd/posfw.service (board/image/build.py writes this).
[Unit]
RequiresMountsFor=/data
# A firmware that cannot stay up (a bad update: five starts in ten minutes) reboots the board,
# which spends one of the slot's boot attempts: U-Boot then falls back to the other slot.
StartLimitAction=reboot
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
# Under QEMU's emulation the first start (bytecode from a squashfs, the token) takes a while.
TimeoutStartSec=300
Environment=BOARD=qemu-arm64
Environment=POSFW_REBOOT_REQUEST=/run/posfw/reboot-request
WorkingDirectory=/data/posfw
ExecStart=
ExecStart=/opt/posfw/bin/python -m firmware.app --panel board --board ${BOARD} --data /data/posfw
StateDirectory=
ReadWritePaths=
ReadWritePaths=/data/posfw /run/posfw
StandardOutput=journal+console
"""


def _rootfs_hooks(wheels: Path, kernel_tree: Path, extra: Path) -> list[str]:
    q = shlex.quote
    overlay = HERE / "overlay"
    return [
        # The kernel: the current linux-image-*-arm64, unpacked (not installed: its initramfs is
        # ours); its modules go in the root, its Image to the kernel partition.
        'pkg=$(chroot "$1" apt-cache depends linux-image-arm64 | '
        "sed -n 's/.*Depends: \\(linux-image-[0-9].*\\)/\\1/p' | head -n 1) && "
        'chroot "$1" sh -c "cd /tmp && apt-get download -q=2 $pkg" && '
        f'rm -rf {q(str(kernel_tree))} && dpkg-deb -x "$1"/tmp/$pkg_*.deb {q(str(kernel_tree))} && '
        f'cp -a {q(str(kernel_tree))}/lib/modules "$1/usr/lib/" && '
        'chroot "$1" depmod -a "${pkg#linux-image-}" && rm -f "$1"/tmp/*.deb',
        f'cp -a {q(str(wheels))} "$1/wheels"',
        f'cp {q(str(HERE / "install.sh"))} "$1/tmp/install.sh" && '
        f'chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 sh /tmp/install.sh',
        # The unit's SupplementaryGroups (spi: SPI LCDs) must all exist, or systemd refuses to start it.
        f'chroot "$1" groupadd --system spi && chroot "$1" useradd --system --uid {SERVICE_UID} '
        '--user-group --home-dir /data/posfw --no-create-home --shell /usr/sbin/nologin '
        '--groups dialout,input,video,spi posfw',
        f'cp -a {q(str(overlay))}/. "$1/" && cp -a {q(str(extra))}/. "$1/"',
        f'cp {q(str(ROOT / "board/systemd/posfw.service"))} "$1/etc/systemd/system/posfw.service"',
        f'mkdir -p "$1/etc/udev/rules.d" && cp {q(str(ROOT / "board/udev/99-posfw.rules"))} '
        '"$1/etc/udev/rules.d/"',
        'mkdir -p "$1/data" "$1/boot/state" "$1/media" && echo posfw > "$1/etc/hostname"',
        'chroot "$1" systemctl enable -q posfw.service posfw-reboot.path posfw-boot-deadline.timer '
        'systemd-networkd.service',
        # No login on a payment terminal's console; nothing on a read-only root updates itself.
        'chroot "$1" systemctl mask -q serial-getty@ttyAMA0.service getty@tty1.service '
        'systemd-logind.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer '
        'e2scrub_reap.service',
        # State a build leaves that a boot makes anew (systemd: an empty machine-id on a
        # read-only root means "first boot, keep it in memory").
        # Not "$1"/tmp/*: mmdebstrap keeps its apt configuration there until its own clean-up,
        # which without it would run `apt-get update` on the build machine's lists (and empty them).
        # The package lists and apt's cache: mmdebstrap's clean-up removes them.
        'rm -rf "$1/wheels" "$1/tmp/install.sh" "$1"/var/cache/ldconfig/aux-cache "$1"/var/log/*.log '
        '"$1"/var/log/apt/* && : > "$1/etc/machine-id"',
    ]


def build_rootfs(tree: Path, wheels: Path, kernel_tree: Path, extra: Path, epoch: int, log: Log) -> None:
    shutil.rmtree(tree, ignore_errors=True)
    _mmdebstrap(RUNTIME_PACKAGES, str(tree), _rootfs_hooks(wheels, kernel_tree, extra), epoch,
                variant="minbase", form="directory", log=log)
    normalise_tree(tree)


# Left by apt owned by _apt or by root depending on whether apt could drop its privileges at
# mmdebstrap's clean-up (two builds differed in this alone); the read-only root never runs apt.
APT_PARTIAL_DIRS = ("var/cache/apt/archives/partial", "var/lib/apt/lists/partial")


def normalise_tree(tree: Path) -> None:
    """What differs between two builds of the same inputs for no reason, made the same."""
    for name in APT_PARTIAL_DIRS:
        path = tree / name
        if path.exists():
            os.chown(path, 0, 0, follow_symlinks=False)
            path.chmod(0o700)


def _extra_files(target: Path, keyring: Path, release: dict[str, str]) -> None:
    """Files of the root made at build time: the unit's drop-in, rauc's configuration and keyring,
    /etc/posfw-release (what this root is: the firmware's version, the commit, the build's time)."""
    (target / "etc").mkdir(parents=True, exist_ok=True)
    (target / "etc/posfw-release").write_text("".join(f"{k}={v}\n" for k, v in release.items()))
    dropin = target / "etc/systemd/system/posfw.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "image.conf").write_text(SERVICE_DROPIN)
    system_conf = HERE / "rauc" / "system.conf"
    if system_conf.exists():
        (target / "etc/rauc").mkdir(parents=True, exist_ok=True)
        shutil.copy(system_conf, target / "etc/rauc/system.conf")
    (target / "etc/rauc").mkdir(parents=True, exist_ok=True)
    shutil.copy(keyring, target / "etc/rauc/keyring.pem")


def _set_times(root: Path, epoch: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def make_squashfs(tree: Path, target: Path, epoch: int) -> None:
    target.unlink(missing_ok=True)
    # mksquashfs refuses explicit times beside SOURCE_DATE_EPOCH in its environment.
    _run(["mksquashfs", str(tree), str(target), "-noappend", "-quiet", "-no-progress", "-comp", "zstd",
          "-mkfs-time", str(epoch), "-all-time", str(epoch), "-processors", "2"],
         env={"SOURCE_DATE_EPOCH": None})


def make_vfat(files: dict[str, Path], target: Path, size: int, label: str, volume_id: str,
              epoch: int) -> None:
    """A FAT image holding `files`, every time and id fixed (mkfs.vfat --invariant, mcopy -m)."""
    target.unlink(missing_ok=True)
    _run(["mkfs.vfat", "-C", "--invariant", "-n", label, "-i", volume_id, str(target), str(size // 1024)],
         env={"TZ": "UTC"})
    with tempfile.TemporaryDirectory(prefix="posfw-vfat-") as tmp:
        for name, source in files.items():
            staged = Path(tmp) / name
            shutil.copyfile(source, staged)
            os.utime(staged, (epoch, epoch))
            _run(["mcopy", "-m", "-i", str(target), str(staged), f"::{name}"],
                 env={"TZ": "UTC", "MTOOLS_SKIP_CHECK": "1"})


def make_data_ext4(target: Path, size: int, epoch: int, contents: Path | None = None,
                   offset: int = 0) -> None:
    """The data partition's ext4, empty or holding `contents`; fixed UUID, hash seed and times.
    With `offset`, written in place inside a disk image (mke2fs -E offset)."""
    uuid = "5e1f0a7a-2d1c-4a6b-9b1e-0d47a7a5f001"
    if offset == 0:
        target.unlink(missing_ok=True)
        _run(["truncate", "-s", str(size), str(target)])
    populate = ["-d", str(contents)] if contents is not None else []
    _run(["mkfs.ext4", "-q", "-F", "-L", "data", "-U", uuid,
          "-E", f"hash_seed={uuid},root_owner=0:0,offset={offset}", *populate, str(target),
          f"{size // 1024}k"],
         env={"E2FSPROGS_FAKE_TIME": str(epoch)})


def make_boot_script(target: Path) -> None:
    _run(["mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n", "posfw A/B boot",
          "-d", str(HERE / "boot.cmd"), str(target)], env={"SOURCE_DATE_EPOCH": "0"})


def make_boot_env(target: Path) -> None:
    """The initial A/B state: A first, three attempts each (what RAUC's U-Boot backend expects)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as text:
        text.write("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n")
        text.flush()
        _run(["mkenvimage", "-s", "0x4000", "-o", str(target), text.name])


# Partition table: label -> (size, type). The GPT's UUIDs derive from the seed (systemd-repart).
PARTITIONS = (("boot", BOOT_SIZE), ("kernel-a", KERNEL_SIZE), ("kernel-b", KERNEL_SIZE),
              ("root-a", ROOT_SIZE), ("root-b", ROOT_SIZE), ("data", DATA_SIZE))
REPART_SEED = "b0d1e5c3-7c1f-4c2a-8f7e-3a9d6c0f5e18"


def assemble_disk(disk: Path, sources: dict[str, Path]) -> None:
    """The GPT disk: each partition of PARTITIONS holds its source file's blocks (absolute paths)."""
    sources = {label: path.resolve() for label, path in sources.items()}
    with tempfile.TemporaryDirectory(prefix="posfw-repart-") as tmp:
        for index, (label, size) in enumerate(PARTITIONS, start=1):
            (Path(tmp) / f"{index:02d}-{label}.conf").write_text(
                "[Partition]\nType=linux-generic\n"
                f"Label={label}\nCopyBlocks={sources[label]}\n"
                f"SizeMinBytes={size}\nSizeMaxBytes={size}\n")
        disk.unlink(missing_ok=True)
        _run(["systemd-repart", "--empty=create", "--size=auto", "--dry-run=no", "--no-pager",
              f"--seed={REPART_SEED}", f"--definitions={tmp}", str(disk)])
    # systemd-repart 252 leaves a partition empty, without a word, when it cannot use a source.
    offsets = partition_offsets(disk)
    with disk.open("rb") as image:
        for label, source in sources.items():
            image.seek(offsets[label][0])
            with source.open("rb") as original:
                head = original.read(1 << 16)
            if image.read(len(head)) != head:
                raise ImageError(f"partition {label} of {disk} does not hold {source}")


def partition_offsets(disk: Path) -> dict[str, tuple[int, int]]:
    """label -> (byte offset, byte size), read back from the GPT (sfdisk --json)."""
    table = json.loads(_run(["sfdisk", "--json", str(disk)]))["partitiontable"]
    sector = table.get("sectorsize", 512)
    return {part["name"]: (part["start"] * sector, part["size"] * sector) for part in table["partitions"]}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(directory: Path = DEFAULT_DIR, *, reuse_wheels: bool = True, keyring: Path | None = None,
          log: Log = print) -> BuiltImage:
    if os.geteuid() != 0:
        raise ImageError("building the image needs root (mmdebstrap --mode=root, chroot): run it with sudo")
    started = time.monotonic()
    figures: dict[str, float] = {}
    directory = directory.resolve()  # systemd-repart's CopyBlocks= takes absolute paths only
    directory.mkdir(parents=True, exist_ok=True)
    epoch = source_date_epoch()
    work = directory / "work"
    work.mkdir(exist_ok=True)

    step = time.monotonic()
    source = work / "src"
    commit = export_source(source, log)
    wheels = directory / "wheels"
    stamp = wheels / "source.json"
    recipe = {"sources": wheel_sources(), "epoch": epoch, "packages": BUILDER_PACKAGES}
    if reuse_wheels and stamp.exists() and json.loads(stamp.read_text()) == recipe:
        log(f"wheels of these sources already built ({wheels})")
    else:
        names = build_wheels(source, wheels, epoch, log)
        stamp.write_text(json.dumps(recipe))
        log(f"built {len(names)} aarch64 wheels: {time.monotonic() - step:.0f} s")
    figures["wheels_s"] = time.monotonic() - step

    step = time.monotonic()
    tree, kernel_tree, extra = work / "rootfs", work / "kernel", work / "extra"
    shutil.rmtree(extra, ignore_errors=True)
    if keyring is None:
        # RAUC_KEYRING (a vendor's), else the development one
        keyring = signing.keyring_path(directory / "keys")
    log(f"the image trusts bundles signed under {keyring}")
    _extra_files(extra, keyring, {"VERSION": firmware_version(ROOT), "COMMIT": commit,
                                  "SOURCE_DATE_EPOCH": str(epoch), "COMPATIBLE": COMPATIBLE})
    build_rootfs(tree, wheels, kernel_tree, extra, epoch, log)
    figures["rootfs_s"] = time.monotonic() - step
    log(f"root filesystem (mmdebstrap, {SUITE} {ARCH}): {figures['rootfs_s']:.0f} s")

    step = time.monotonic()
    releases = sorted((kernel_tree / "lib/modules").iterdir())
    if len(releases) != 1:
        raise ImageError(f"expected one kernel release in {kernel_tree}, found {releases}")
    release = releases[0]
    initrd = work / "initrd.img"
    pack_initrd(tree / "usr/bin/busybox", release, (HERE / "init.sh").read_text(), INITRD_MODULES,
                initrd, epoch)
    kernel_image = next((kernel_tree / "boot").glob("vmlinuz-*"))
    kernel = directory / "kernel.vfat"
    make_vfat({"Image": kernel_image, "initrd.img": initrd}, kernel, KERNEL_SIZE, "KERNEL", "5e1f0001",
              epoch)
    rootfs = directory / "rootfs.squashfs"
    make_squashfs(tree, rootfs, epoch)
    boot_scr, boot_env = work / "boot.scr", work / "uboot.env"
    make_boot_script(boot_scr)
    make_boot_env(boot_env)
    boot = work / "boot.vfat"
    make_vfat({"boot.scr": boot_scr, "uboot.env": boot_env}, boot, BOOT_SIZE, "BOOT", "5e1f0000", epoch)
    data = work / "data.ext4"
    make_data_ext4(data, DATA_SIZE, epoch)
    disk = directory / "disk.img"
    assemble_disk(disk, {"boot": boot, "kernel-a": kernel, "kernel-b": kernel, "root-a": rootfs,
                         "root-b": rootfs, "data": data})
    figures["filesystems_s"] = time.monotonic() - step
    digest = sha256(disk)
    figures.update(build_s=time.monotonic() - started, rootfs_bytes=rootfs.stat().st_size,
                   kernel_bytes=kernel_image.stat().st_size, disk_bytes=disk.stat().st_size)
    (directory / "image.json").write_text(json.dumps({
        "sha256": digest, "commit": commit, "source_date_epoch": epoch, "compatible": COMPATIBLE,
        "kernel": release.name, "keyring": str(keyring), "figures": figures}, indent=2) + "\n")
    log(f"image {disk} ({disk.stat().st_size / MiB:.0f} MiB; root slot {rootfs.stat().st_size / MiB:.0f} MiB"
        f" squashfs), built in {figures['build_s']:.0f} s")
    log(f"SHA-256 {digest}")
    return BuiltImage(disk, rootfs, kernel, digest, epoch, figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m board.image.build", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("IMAGE_DIR", DEFAULT_DIR)))
    parser.add_argument("--rebuild-wheels", action="store_true",
                        help="build the wheels again even when this commit's are there")
    parser.add_argument("--keyring", type=Path, help="the update keyring the image trusts "
                        "(default: the development one, board/image/signing.py)")
    args = parser.parse_args(argv)
    try:
        build(args.dir, reuse_wheels=not args.rebuild_wheels, keyring=args.keyring)
    except ImageError as error:
        print(f"image build failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
