"""Builds a signed RAUC update bundle (verity format) from a slot's images, rootfs.squashfs and
kernel.vfat, then checks it the way a terminal would: signature against the keyring (rauc info)
and payload against its verity hash (rauc extract). Prints its size and SHA-256.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from board.image.signing import IMAGE_DIR, KEY_DIR, REPO_ROOT, SigningError, SigningKeys, signing_keys
from firmware.diag.buildinfo import firmware_version, git_commit

COMPATIBLE = "posfw-qemu-arm64"  # board/image/rauc/system.conf [system] compatible
ROOTFS_IMAGE = "rootfs.squashfs"  # slot class rootfs (root-a / root-b)
KERNEL_IMAGE = "kernel.vfat"  # slot class kernel (kernel-a / kernel-b)
MANIFEST = "manifest.raucm"
RAUC = "rauc"
# The bundle's own squashfs: uid/gid 0 whoever builds it, so two builders get the same payload.
MKSQUASHFS_ARGS = "-all-root"


class BundleError(Exception):
    """The bundle could not be built, in words."""


class BundleRefused(Exception):
    """rauc refused a bundle; str() is rauc's own message (what an operator would be shown)."""


@dataclass(frozen=True)
class Manifest:
    compatible: str
    version: str
    build: str
    description: str
    rootfs: str = ROOTFS_IMAGE  # file names inside the bundle
    kernel: str = KERNEL_IMAGE
    bundle_format: str = "verity"  # "plain" only to prove the terminal refuses it

    def text(self) -> str:
        return (f"[update]\ncompatible={self.compatible}\nversion={self.version}\n"
                f"description={self.description}\nbuild={self.build}\n\n"
                f"[bundle]\nformat={self.bundle_format}\n\n"
                f"[image.rootfs]\nfilename={self.rootfs}\n\n"
                f"[image.kernel]\nfilename={self.kernel}\n")


@dataclass(frozen=True)
class Built:
    path: Path
    size: int
    sha256: str  # of the whole bundle: differs between builds (verity salt, signing time)
    payload_sha256: str  # of its squashfs (manifest + images): the same for the same inputs
    info: dict  # rauc info's JSON


def source_date_epoch(environ: Mapping[str, str] | None = None) -> int:
    """SOURCE_DATE_EPOCH if set, else the time of the last commit (so a rebuild of the same tree
    gives the same payload), else now."""
    value = (os.environ if environ is None else environ).get("SOURCE_DATE_EPOCH", "").strip()
    if value:
        if not value.isdigit():
            raise BundleError(f"SOURCE_DATE_EPOCH={value!r}: not a number of seconds")
        return int(value)
    try:
        done = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10, check=False)
        if done.returncode == 0 and done.stdout.strip().isdigit():
            return int(done.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return int(datetime.datetime.now(datetime.UTC).timestamp())


def build_string(epoch: int, commit: str | None) -> str:
    """The manifest's build field: the build time (from SOURCE_DATE_EPOCH) and the commit."""
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} {commit}" if commit else stamp


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def payload_sha256(bundle: Path) -> str:
    """SHA-256 of the bundle's squashfs (its first bytes_used bytes, from the superblock): the
    part of a verity bundle that the same inputs and SOURCE_DATE_EPOCH reproduce."""
    with open(bundle, "rb") as data:
        superblock = data.read(96)
        if len(superblock) < 48 or superblock[:4] != b"hsqs":
            raise BundleError(f"{bundle}: does not start with a squashfs")
        (bytes_used,) = struct.unpack_from("<Q", superblock, 40)
        data.seek(0)
        digest = hashlib.sha256()
        left = bytes_used
        while left > 0 and (chunk := data.read(min(left, 1 << 20))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def rauc_message(stderr: str) -> str:
    """rauc's error in its own words: stderr without its progress lines ("rauc-Message: ...")."""
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and "rauc-Message:" not in line and not line.startswith("(rauc:")]
    return "; ".join(lines) or "rauc gave no reason"


def _run_rauc(args: list[str], environ: Mapping[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # umask 022: `rauc bundle` rewrites manifest.raucm (with the images' checksums) in the staged
    # folder, and the file's mode, which the payload records, would follow the builder's umask.
    try:
        return subprocess.run([RAUC, *args], capture_output=True, text=True, timeout=timeout, check=False,
                              env=dict(os.environ if environ is None else environ), umask=0o022)
    except FileNotFoundError as exc:
        raise BundleError("rauc is not installed (Debian package rauc)") from exc


def stage(content: Path, manifest: Manifest, rootfs: Path, kernel: Path) -> None:
    """The folder `rauc bundle` packs: the manifest and copies of the two images, with fixed modes
    (not the builder's umask), so that the payload depends on the inputs alone. Their times need
    no setting: mksquashfs (4.5) clamps every time later than SOURCE_DATE_EPOCH to it, and fresh
    copies are always later."""
    content.mkdir()
    for source, name in ((rootfs, manifest.rootfs), (kernel, manifest.kernel)):
        if not source.is_file():
            raise BundleError(f"{source}: no such image (make image builds it)")
        shutil.copyfile(source, content / name)
    (content / MANIFEST).write_text(manifest.text(), encoding="utf-8")
    for path in (*content.iterdir(), content):
        path.chmod(0o755 if path.is_dir() else 0o644)


def sign(content: Path, out: Path, keys: SigningKeys, epoch: int,
         environ: Mapping[str, str] | None = None) -> None:
    """`rauc bundle` the staged folder into out (a new file; PKCS#11 keys need RAUC_PKCS11_MODULE
    and the PIN in environ, as rauc reads them). mksquashfs, which rauc runs, stamps the payload
    with SOURCE_DATE_EPOCH: set here, whether the caller's environment had it or not."""
    environ = {**(os.environ if environ is None else environ), "SOURCE_DATE_EPOCH": str(epoch)}
    args = ["bundle", f"--cert={keys.cert}", f"--key={keys.key}", f"--keyring={keys.keyring}",
            f"--mksquashfs-args={MKSQUASHFS_ARGS}"]
    if keys.intermediate is not None:
        args.append(f"--intermediate={keys.intermediate}")
    done = _run_rauc([*args, str(content), str(out)], environ)
    if done.returncode != 0:
        raise BundleError(f"rauc bundle failed: {rauc_message(done.stderr)}")


def bundle_info(bundle: Path, keyring: Path, *, conf: Path | None = None) -> dict:
    """rauc info --keyring: checks the signature (and the certificate chain up to the keyring)
    and returns the signed manifest as JSON. Does NOT read a verity bundle's payload: a flipped
    byte there passes (check_payload() finds it)."""
    args = [f"--keyring={keyring}", "info", "--output-format=json", str(bundle)]
    done = _run_rauc(([f"--conf={conf}"] if conf else []) + args)
    if done.returncode != 0:
        raise BundleRefused(rauc_message(done.stderr))
    return json.loads(done.stdout)


def check_payload(bundle: Path, keyring: Path, scratch: Path) -> dict[str, str]:
    """rauc extract into scratch: checks the signature again and then every block of the payload
    against the signed verity root hash. Returns {file name: SHA-256} of what came out."""
    out = scratch / "extract"
    done = _run_rauc([f"--keyring={keyring}", "extract", str(bundle), str(out)])
    if done.returncode != 0:
        raise BundleRefused(rauc_message(done.stderr))
    return {path.name: sha256_file(path) for path in sorted(out.iterdir())}


def verify(bundle: Path, keyring: Path, *, scratch_dir: Path | None = None) -> dict:
    """Both checks a terminal relies on: the signature (bundle_info) and the payload (check_payload),
    and that what was extracted is what the signed manifest names. Returns rauc info's JSON."""
    info = bundle_info(bundle, keyring)
    with tempfile.TemporaryDirectory(dir=scratch_dir, prefix="bundle-check-") as scratch:
        extracted = check_payload(bundle, keyring, Path(scratch))
    for entry in info.get("images", []):
        for image in entry.values():
            if extracted.get(image["filename"]) != image["checksum"]:
                raise BundleRefused(f"{image['filename']}: the extracted image does not match the signed "
                                    f"manifest's checksum")
    return info


def build_bundle(out: Path, manifest: Manifest, rootfs: Path, kernel: Path, keys: SigningKeys, *,
                 epoch: int, environ: Mapping[str, str] | None = None, check: bool = True) -> Built:
    """Stage, sign and (check) verify a bundle into out, replacing an older one only once the new
    one is complete."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".bundle-") as work:
        staged = Path(work) / "content"
        stage(staged, manifest, rootfs, kernel)
        new = Path(work) / out.name
        sign(staged, new, keys, epoch, environ)
        shutil.rmtree(staged)  # the copies of the images: space for the extract check
        info = verify(new, keys.keyring, scratch_dir=Path(work)) if check else bundle_info(new, keys.keyring)
        os.replace(new, out)
    return Built(path=out, size=out.stat().st_size, sha256=sha256_file(out),
                 payload_sha256=payload_sha256(out), info=info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build a signed RAUC bundle of the image's root and kernel slots.",
        epilog="A vendor key: RAUC_KEY, RAUC_CERT, RAUC_KEYRING (RAUC_INTERMEDIATE) in the environment; "
               "RAUC_KEY/RAUC_CERT may be pkcs11: URIs (with RAUC_PKCS11_MODULE, RAUC_PKCS11_PIN).")
    parser.add_argument("--image-dir", type=Path, default=IMAGE_DIR, help="where make image left its images")
    parser.add_argument("--version", help="bundle version (default: the firmware's, pyproject.toml)")
    parser.add_argument("--out", type=Path, help="bundle file (default IMAGE_DIR/posfw-VERSION.raucb)")
    parser.add_argument("--rootfs", type=Path, help=f"another root image (IMAGE_DIR/{ROOTFS_IMAGE})")
    parser.add_argument("--kernel", type=Path, help=f"another kernel image (IMAGE_DIR/{KERNEL_IMAGE})")
    parser.add_argument("--compatible", default=COMPATIBLE)
    parser.add_argument("--description", help="default: posfw VERSION for COMPATIBLE")
    parser.add_argument("--key-dir", type=Path, default=KEY_DIR, help="development keys (var/image/keys)")
    parser.add_argument("--no-check", action="store_true", help="skip the payload check (rauc extract)")
    args = parser.parse_args(argv)
    version = args.version or firmware_version(REPO_ROOT)
    if not version:
        print("bundle: no --version and none in pyproject.toml", file=sys.stderr)
        return 2
    try:
        epoch = source_date_epoch()
        keys = signing_keys(args.key_dir)
        manifest = Manifest(compatible=args.compatible, version=version,
                            build=build_string(epoch, git_commit(REPO_ROOT)),
                            description=args.description or f"posfw {version} for {args.compatible}")
        built = build_bundle(args.out or args.image_dir / f"posfw-{version}.raucb", manifest,
                             args.rootfs or args.image_dir / ROOTFS_IMAGE,
                             args.kernel or args.image_dir / KERNEL_IMAGE,
                             keys, epoch=epoch, check=not args.no_check)
    except (BundleError, SigningError) as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 1
    except BundleRefused as exc:
        print(f"bundle: the new bundle does not verify: {exc}", file=sys.stderr)
        return 1
    print(f"bundle:  {built.path}")
    print(f"version: {version} ({args.compatible}), build {manifest.build}, {keys.source} key")
    print(f"size:    {built.size} bytes")
    print(f"sha256:  {built.sha256}")
    print(f"payload sha256: {built.payload_sha256} (reproducible; the whole file is not: docs/image.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
