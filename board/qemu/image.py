"""Builds and caches what a QEMU guest boots: an ELF vmlinux, a busybox initramfs, ext4 data disks
and the guest's compiled bytecode.

Everything comes from Debian packages (apt-get download, dpkg-deb -x); the guest's userland is the
host's / shared read-only over 9p, so the project's venv runs in the guest as it is. Its Python
reads its .pyc files from a pycache prefix tree built here (board/qemu/bytecode.py: refreshed at
every build, so it follows the sources).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from board.qemu import bytecode

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "var" / "qemu"

# The drivers the guest needs; build time adds their dependencies, in load order, with
# depmod -b + modprobe --show-depends on the downloaded kernel (Debian package kmod).
TARGET_MODULES = ("virtio_pci", "virtio_blk", "virtio_input", "virtio_net", "evdev", "ext4", "9pnet_virtio",
                  "9p")
# crc32c-intel fails to load under TCG; crc32c_generic (also pulled in) does its job.
SKIPPED_MODULES = frozenset({"crc32c_intel"})

# Console lines the guest prints so the host can tell the phases apart.
READY_MARK = "QEMU-GUEST-READY"
EXIT_MARK = "QEMU-GUEST-EXIT="

# Kernel command-line words the kernel does not know reach /init as environment variables:
#   qcmd64   the shell command to run in the chroot, base64 (so quotes and spaces survive)
#   qdata    where the chroot sees the data disk (default /run/data, on the chroot's tmpfs /run)
#   qcwd     working directory for the command
#   qnet     set: bring up eth0 with QEMU user-mode networking's fixed addresses (10.0.2.15/24)
INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# The initramfs has no /dev/console node, so the kernel started us without stdio.
exec 0</dev/console 1>/dev/console 2>&1
for module in $(cat /lib/modules/order); do
    insmod /lib/modules/$module.ko || echo "qemu-init: insmod $module failed"
done
mkdir -p /host /host-data
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host \
    || echo "qemu-init: mounting the host root over 9p failed"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts
mount -t devpts devpts /host/dev/pts
# /run is the chroot's only writable place besides the data disk; the host's /tmp stays visible
# (read-only) so tests can hand the guest scripts from their tmp_path.
mount -t tmpfs -o mode=0755 run /host/run
mkdir -p -m 1777 /host/run/tmp
data="${qdata:-/run/data}"
if [ -b /dev/vda ]; then
    mount -t ext4 /dev/vda /host-data || echo "qemu-init: mounting /dev/vda failed"
    mkdir -p "/host$data"
    mount --bind /host-data "/host$data"
fi
ip link set lo up
if [ -n "$qnet" ] && [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 \
        || echo "qemu-init: bringing up eth0 failed"
fi
echo "$qcmd64" | base64 -d > /host/run/qemu-command.sh
echo "__READY__"
chroot /host /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 TMPDIR=/run/tmp QEMU_DATA="$data" LANG=C.UTF-8 \
    /bin/sh -c "cd '${qcwd:-/}' && . /run/qemu-command.sh"
status=$?
echo "__EXIT__$status"
sync
if [ -b /dev/vda ]; then
    umount "/host$data"
    umount /host-data
fi
poweroff -f
"""


class ImageError(RuntimeError):
    """A step of the image build failed; the message says which and why."""


@dataclass(frozen=True)
class BuiltImage:
    """The files a Guest boots from."""

    vmlinux: Path
    initrd: Path
    kernel_release: str
    # The guest's .pyc tree (PYTHONPYCACHEPREFIX, board/qemu/bytecode.py); None: none built, the
    # guest compiles what it imports at every boot.
    pycache: Path | None = None


def init_script() -> str:
    return (
        INIT_SCRIPT.replace("__READY__", READY_MARK)
        .replace("__EXIT__", EXIT_MARK)
    )


def _run(argv: list[str], cwd: Path | None = None) -> str:
    # depmod, mkfs.ext4 and debugfs live in /usr/sbin, which a user's PATH may leave out.
    found = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin:/sbin")
    if found is None:
        raise ImageError(f"{argv[0]} is not installed (make qemu-deps installs what the image needs)")
    argv = [found, *argv[1:]]
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return result.stdout


def current_kernel_package() -> str:
    """The versioned package Debian's linux-image-amd64 points at, e.g. linux-image-6.1.0-56-amd64."""
    for line in _run(["apt-cache", "depends", "linux-image-amd64"]).splitlines():
        word = line.strip().removeprefix("Depends:").strip()
        if word.startswith("linux-image-") and word != "linux-image-amd64":
            return word
    raise ImageError("apt-cache names no kernel for linux-image-amd64 (run apt-get update?)")


def _download_and_extract(package: str, scratch: Path) -> Path:
    """apt-get download into scratch, then dpkg-deb -x; returns the extracted tree."""
    scratch.mkdir(parents=True, exist_ok=True)
    _run(["apt-get", "download", package], cwd=scratch)
    debs = sorted(scratch.glob(f"{package}_*.deb"))
    if not debs:
        raise ImageError(f"apt-get download {package} left no .deb in {scratch}")
    tree = scratch / f"{package}.tree"
    shutil.rmtree(tree, ignore_errors=True)
    _run(["dpkg-deb", "-x", str(debs[-1]), str(tree)])
    return tree


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a compressed bzImage (the method of the kernel's scripts/extract-vmlinux).

    Tries every xz and gzip stream start in the file; the first that decompresses to an ELF wins.
    Booting the ELF through PVH skips the in-guest decompression, which costs seconds under TCG.
    """
    candidates: list[tuple[int, str]] = []
    for magic, kind in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip")):
        start = bzimage.find(magic)
        while start != -1:
            candidates.append((start, kind))
            start = bzimage.find(magic, start + 1)
    for start, kind in sorted(candidates):
        try:
            if kind == "xz":
                kernel = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
            else:
                kernel = zlib.decompressobj(wbits=31).decompress(bzimage[start:])
        except (lzma.LZMAError, zlib.error):
            continue
        if kernel.startswith(b"\x7fELF"):
            return kernel
    raise ImageError("no xz or gzip stream in the bzImage decompresses to an ELF kernel")


def module_load_order(modules_root: Path, targets: tuple[str, ...] = TARGET_MODULES) -> list[str]:
    """`targets` and everything they depend on, dependencies first, as modprobe would load them."""
    release = modules_root.name
    tree = modules_root.parents[2]
    _run(["depmod", "-b", str(tree), release])
    order: list[str] = []
    for target in targets:
        plan = _run(["modprobe", "-d", str(tree), "-S", release, "--show-depends", target])
        for line in plan.splitlines():
            words = line.split()
            if len(words) < 2 or words[0] != "insmod":
                continue  # "builtin X": nothing to load
            name = Path(words[1]).name.split(".ko")[0].replace("-", "_")
            if name not in order and name not in SKIPPED_MODULES:
                order.append(name)
    return order


def _find_module(modules_root: Path, name: str) -> bytes:
    """A module's bytes, whatever its spelling (_ or -) or compression (.ko, .ko.xz)."""
    for spelling in {name, name.replace("_", "-")}:
        for suffix in (".ko", ".ko.xz"):
            for found in modules_root.rglob(spelling + suffix):
                data = found.read_bytes()
                return lzma.decompress(data) if suffix == ".ko.xz" else data
    raise ImageError(f"module {name} is not in {modules_root}")


def build_initrd(busybox: Path, modules_root: Path, target: Path) -> list[str]:
    """Packs busybox, the modules and /init with cpio (newc) and gzip."""
    return pack_initrd(busybox, modules_root, init_script(), TARGET_MODULES, target)


def pack_initrd(busybox: Path, modules_root: Path, init: str, modules: tuple[str, ...], target: Path,
                epoch: int = 0) -> list[str]:
    """An initramfs of busybox, `modules` (with their dependencies, in load order, listed in
    /lib/modules/order) and `init`, as cpio (newc) and gzip; every time is `epoch` and the
    members are sorted, so the same inputs give the same bytes (the arm64 image, board/image,
    is reproducible). Returns the load order."""
    with tempfile.TemporaryDirectory(prefix="qemu-initrd-") as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        modules_dir = root / "lib" / "modules"
        modules_dir.mkdir(parents=True)
        order = module_load_order(modules_root, modules)
        for name in order:
            (modules_dir / f"{name}.ko").write_bytes(_find_module(modules_root, name))
        (modules_dir / "order").write_text(" ".join(order) + "\n")
        init_file = root / "init"
        init_file.write_text(init)
        init_file.chmod(0o755)
        members = sorted(root.rglob("*"))
        for path in [root, *members]:
            os.utime(path, (epoch, epoch))
        names = [str(p.relative_to(root)) for p in members]
        archive = subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc", "--owner=0:0", "--reproducible"],
            cwd=root, input="\n".join(names).encode() + b"\n", capture_output=True,
        )
        if archive.returncode != 0:
            raise ImageError(f"cpio failed: {archive.stderr.decode(errors='replace').strip()}")
    partial = target.with_suffix(".partial")
    partial.write_bytes(gzip.compress(archive.stdout, compresslevel=6, mtime=0))
    partial.replace(target)
    return order


def make_data_disk(path: Path, size_mb: int = 64, contents: Path | None = None) -> Path:
    """A fresh ext4 image: the terminal's data partition, empty or holding a copy of `contents`.

    mkfs.ext4 -d writes the files into the new filesystem itself, so provisioning a device's
    partition needs neither root nor a loop mount.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    _run(["truncate", "-s", f"{size_mb}M", str(path)])
    populate = ["-d", str(contents)] if contents is not None else []
    _run(["mkfs.ext4", "-q", "-F", "-L", "posdata", *populate, str(path)])
    return path


def read_data_disk(image: Path, directory: str, target: Path) -> Path:
    """Copies `directory` of an ext4 image (the guest powered off) into `target`, without mounting.

    debugfs (e2fsprogs) reads the filesystem as the kernel left it; after a power cut run the
    guest once more first, so the kernel replays the ext4 journal.
    """
    target.mkdir(parents=True, exist_ok=True)
    _run(["debugfs", "-R", f"rdump {directory} {target}", str(image)])
    copied = target / Path(directory).name
    if not copied.is_dir():
        raise ImageError(f"{directory} is not on {image}")
    return copied


def _recipe(kernel_package: str) -> str:
    """What the cached files were built from; a change in any of it rebuilds them."""
    text = json.dumps({"kernel": kernel_package, "busybox": "busybox-static", "init": init_script(),
                       "modules": TARGET_MODULES, "skipped": sorted(SKIPPED_MODULES)})
    return hashlib.sha256(text.encode()).hexdigest()


def build(directory: Path = DEFAULT_DIR, log=print) -> BuiltImage:
    """Builds (or reuses, when the stamp matches) vmlinux, initrd.img and a blank data.img."""
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    vmlinux, initrd, stamp = directory / "vmlinux", directory / "initrd.img", directory / "stamp.json"
    kernel_package = current_kernel_package()
    release = kernel_package.removeprefix("linux-image-")
    recipe = _recipe(kernel_package)
    try:
        cached = json.loads(stamp.read_text()).get("recipe") == recipe
    except (OSError, ValueError):
        cached = False
    if cached and vmlinux.exists() and initrd.exists():
        log(f"qemu image up to date in {directory} ({kernel_package}); {time.monotonic() - started:.1f} s")
        return BuiltImage(vmlinux, initrd, release, build_bytecode(directory, log))

    stamp.unlink(missing_ok=True)
    scratch = directory / "scratch"
    step = time.monotonic()
    kernel_tree = _download_and_extract(kernel_package, scratch)
    busybox_tree = _download_and_extract("busybox-static", scratch)
    log(f"downloaded and unpacked {kernel_package} and busybox-static: {time.monotonic() - step:.1f} s")

    step = time.monotonic()
    bzimages = sorted((kernel_tree / "boot").glob("vmlinuz-*"))
    if not bzimages:
        raise ImageError(f"{kernel_package} holds no boot/vmlinuz-*")
    partial = vmlinux.with_suffix(".partial")
    partial.write_bytes(extract_vmlinux(bzimages[0].read_bytes()))
    partial.replace(vmlinux)
    log(f"decompressed {bzimages[0].name} to {vmlinux} ({vmlinux.stat().st_size >> 20} MiB): "
        f"{time.monotonic() - step:.1f} s")

    step = time.monotonic()
    module_roots = sorted((kernel_tree / "lib" / "modules").glob("*"))
    if not module_roots:
        raise ImageError(f"{kernel_package} holds no lib/modules")
    order = build_initrd(busybox_tree / "bin" / "busybox", module_roots[0], initrd)
    log(f"packed {initrd} ({initrd.stat().st_size >> 10} KiB; modules {' '.join(order)}): "
        f"{time.monotonic() - step:.1f} s")

    data = directory / "data.img"
    if not data.exists():
        make_data_disk(data)
        log(f"made blank ext4 data disk {data}")
    shutil.rmtree(scratch, ignore_errors=True)
    stamp.write_text(json.dumps({"recipe": recipe, "kernel": kernel_package}) + "\n")
    pycache = build_bytecode(directory, log)
    log(f"qemu image built in {directory}: {time.monotonic() - started:.1f} s")
    return BuiltImage(vmlinux, initrd, release, pycache)


def build_bytecode(directory: Path, log=print) -> Path:
    """The guest's .pyc tree in directory/pycache, refreshed from the sources (the first build
    compiles everything, later ones what changed: board/qemu/bytecode.py)."""
    prefix = directory / "pycache"
    step = time.monotonic()
    try:
        summary = bytecode.build(prefix)
    except RuntimeError as error:
        raise ImageError(str(error)) from None
    log(f"guest bytecode in {prefix}: {summary} (interpreter start included: "
        f"{time.monotonic() - step:.1f} s)")
    return prefix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m board.qemu.image", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build or refresh the cached guest image")
    build_cmd.add_argument("--dir", type=Path, default=Path(os.environ.get("QEMU_IMAGE_DIR", DEFAULT_DIR)))
    args = parser.parse_args(argv)
    try:
        build(args.dir)
    except ImageError as error:
        print(f"qemu image build failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
