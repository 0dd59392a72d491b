"""RAUC update bundles and their signing keys (board/image/bundle.py, signing.py), with the real
rauc 1.8: a bundle signed with the development key verifies and names its version and board; an
unsigned, wrong-key, truncated or tampered bundle is refused with rauc's words, which name the problem.

The images are small stand-ins (a squashfs of a few files, a 1 MiB FAT image): rauc copies a slot's
image byte for byte, so their size changes nothing but the time. Nothing is installed here (that
needs a booted A/B board: the QEMU image tests do it).
"""

from __future__ import annotations

import asyncio
import configparser
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import p11kit
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from board.image import bundle, signing
from drivers.update import verity
from drivers.update.rauc import RaucAgent
from firmware.ports import UpdateError

REPO = Path(__file__).resolve().parent.parent
SYSTEM_CONF = REPO / "board" / "image" / "rauc" / "system.conf"
EPOCH = 1_700_000_000  # SOURCE_DATE_EPOCH of these builds (2023-11-14T22:13:20Z)
SBIN = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/sbin"))

# Debian package of each program the tests run.
TOOLS = {"rauc": "rauc", "mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools",
         "mkfs.vfat": "dosfstools", "mcopy": "mtools"}
MISSING = sorted({package for tool, package in TOOLS.items() if shutil.which(tool, path=SBIN) is None})
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"Debian packages missing: {', '.join(MISSING)}")


def noise(size: int, seed: bytes) -> bytes:
    """Incompressible bytes that are the same every run (SHAKE-256 of a seed)."""
    return hashlib.shake_256(seed).digest(size)


def make_rootfs(path: Path, seed: bytes) -> Path:
    """A tiny squashfs, like the image's root (rauc wants a bundle payload over 4 KiB)."""
    tree = path.with_suffix(".d")
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text(f"NAME=posfw test root {seed.decode()}\n")
    (tree / "blob").write_bytes(noise(32 * 1024, seed))
    subprocess.run(["mksquashfs", str(tree), str(path), "-quiet", "-no-progress", "-all-root", "-noappend"],
                   check=True, capture_output=True, env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)})
    return path


def make_kernel(path: Path) -> Path:
    """A 1 MiB FAT image holding a stand-in kernel, like a slot's kernel partition."""
    subprocess.run([shutil.which("mkfs.vfat", path=SBIN) or "mkfs.vfat", "-C", str(path), "1024"],
                   check=True, capture_output=True)
    kernel = path.with_name("Image")
    kernel.write_bytes(noise(8 * 1024, b"kernel"))
    subprocess.run(["mcopy", "-i", str(path), str(kernel), "::Image"], check=True, capture_output=True,
                   env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return path


def manifest(version: str = "9.8.7", fmt: str = "verity") -> bundle.Manifest:
    return bundle.Manifest(compatible=bundle.COMPATIBLE, version=version,
                           build=bundle.build_string(EPOCH, "0123456789ab"),
                           description=f"posfw {version} test", bundle_format=fmt)


def key_set(folder: Path, name: str) -> signing.SigningKeys:
    """A CA and a signing certificate of its own, in folder (a second CA is a 'wrong key')."""
    signing.make_ca(folder, common_name=name)
    cert, key = signing.issue_signing_cert(folder)
    return signing.SigningKeys(cert=str(cert), key=str(key), keyring=folder / signing.CA_CERT,
                               intermediate=None, source="test")


@dataclass
class Kit:
    root: Path
    rootfs: Path
    kernel: Path
    dev: signing.SigningKeys
    other: signing.SigningKeys  # another CA with the development CA's very name
    good: bundle.Built


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("bundle")
    rootfs = make_rootfs(root / "rootfs.squashfs", b"A")
    kernel = make_kernel(root / "kernel.vfat")
    dev = signing.development_keys(root / "keys")
    other = key_set(root / "other", "posfw development CA")
    good = bundle.build_bundle(root / "good.raucb", manifest(), rootfs, kernel, dev, epoch=EPOCH)
    return Kit(root, rootfs, kernel, dev, other, good)


def rauc_info(path: Path, keyring: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rauc", f"--keyring={keyring}", *extra, "info", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def field(text: str, name: str) -> str:
    """A field of `rauc info`'s text output, e.g. Version: '1.2.3'."""
    for line in text.splitlines():
        if line.strip().startswith(f"{name}:"):
            return line.split(":", 1)[1].strip().strip("'")
    raise AssertionError(f"rauc info printed no {name}: {text}")


def test_a_signed_bundle_verifies_and_names_its_version_and_board(kit: Kit) -> None:
    """rauc info with the development keyring (the image's) accepts the bundle and prints what was
    asked: board, version, build, and the two images with the SHA-256 of the files given.
    Planted: the manifest written without its version line (rauc info then shows none)."""
    done = rauc_info(kit.good.path, kit.dev.keyring)
    assert done.returncode == 0, done.stderr
    assert field(done.stdout, "Compatible") == "posfw-qemu-arm64"
    assert field(done.stdout, "Version") == "9.8.7"
    assert field(done.stdout, "Build") == "2023-11-14T22:13:20Z 0123456789ab"
    assert field(done.stdout, "Bundle Format") == "verity"
    assert "Verified inline signature by 'O = posfw development, CN = posfw development bundle signing'" \
        in done.stderr
    images = {name: image for entry in kit.good.info["images"] for name, image in entry.items()}
    assert images == {
        "rootfs": {**images["rootfs"], "filename": "rootfs.squashfs", "checksum": sha256(kit.rootfs)},
        "kernel": {**images["kernel"], "filename": "kernel.vfat", "checksum": sha256(kit.kernel)}}
    assert kit.good.size == kit.good.path.stat().st_size
    assert kit.good.sha256 == sha256(kit.good.path)


def strip_signature(data: bytes) -> bytes:
    """The bundle as it would be unsigned: its payload, then a signature size of 0."""
    (size,) = struct.unpack(">Q", data[-8:])
    return data[:len(data) - 8 - size] + struct.pack(">Q", 0)


def cms(data: bytes) -> tuple[int, int]:
    """Where the CMS signature lies in a bundle: (start, end)."""
    (size,) = struct.unpack(">Q", data[-8:])
    return len(data) - 8 - size, len(data) - 8


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def flip_in_payload(data: bytes) -> bytes:
    """One bit in the middle of the payload (the squashfs of manifest and images)."""
    (bytes_used,) = struct.unpack_from("<Q", data, 40)
    return flip(data, bytes_used // 2)


def drop_a_block(data: bytes) -> bytes:
    """A copy that lost 4 KiB in the middle of the payload but kept its end and signature."""
    start = 8192
    return data[:start] + data[start + 4096:]


def flip_last_signature_byte(data: bytes) -> bytes:
    """The CMS's last byte: inside the signature value itself."""
    return flip(data, cms(data)[1] - 1)


def change_signed_version(data: bytes) -> bytes:
    """The version in the signed manifest (inside the CMS) changed from 9.8.7 to 9.9.7."""
    start, end = cms(data)
    at = data.index(b"version=9.8.7", start, end) + len("version=9.")
    return data[:at] + b"9" + data[at + 1:]


@dataclass(frozen=True)
class Bad:
    make: Callable[[Kit], bytes]
    words: str  # what rauc's message must say
    info_refuses: bool  # whether `rauc info` alone refuses it (the payload needs rauc extract)


BAD = {
    "unsigned": Bad(lambda k: strip_signature(k.good.path.read_bytes()), "Signature size is 0", True),
    "signed by another CA of the same name": Bad(
        lambda k: other_ca_bundle(k).read_bytes(), "signature verification failed", True),
    "truncated to half": Bad(lambda k: k.good.path.read_bytes()[:k.good.size // 2],
                             "Invalid bundle format", True),
    "truncated by its last byte": Bad(lambda k: k.good.path.read_bytes()[:-1], "Invalid bundle format", True),
    "empty": Bad(lambda k: b"", "Invalid bundle format", True),
    "a payload byte flipped": Bad(lambda k: flip_in_payload(k.good.path.read_bytes()),
                                  "bundle payload is corrupted", False),
    "a payload block lost": Bad(lambda k: drop_a_block(k.good.path.read_bytes()),
                                "bundle payload is corrupted", False),
    "a signature byte flipped": Bad(lambda k: flip_last_signature_byte(k.good.path.read_bytes()),
                                    "signature verification failed", True),
    "the signed version changed": Bad(lambda k: change_signed_version(k.good.path.read_bytes()),
                                      "signature verification failed", True),
}


def other_ca_bundle(kit: Kit) -> Path:
    path = kit.root / "other-ca.raucb"
    if not path.exists():
        bundle.build_bundle(path, manifest(), kit.rootfs, kit.kernel, kit.other, epoch=EPOCH)
    return path


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_bad_bundle_is_refused_in_words(kit: Kit, case: str, tmp_path: Path) -> None:
    """Each bad bundle is refused by bundle.verify() (signature by rauc info, payload by rauc
    extract) with rauc's own message, which names the fault (what the operator is shown).
    `rauc info` alone misses the payload cases: a verity bundle's payload is checked only when it
    is read (rauc extract, or dm-verity while installing), so a check that stops at rauc info
    passes a corrupted payload. Planted: verify() without its rauc extract step (the two payload
    cases pass); that and rauc info --no-verify (the other-CA and the three tampered cases pass;
    --no-verify alone does not do it: rauc extract checks the signature again)."""
    bad = BAD[case]
    path = tmp_path / "bad.raucb"
    path.write_bytes(bad.make(kit))
    with pytest.raises(bundle.BundleRefused) as refused:
        bundle.verify(path, kit.dev.keyring)
    assert bad.words in str(refused.value), str(refused.value)
    assert "rauc-Message" not in str(refused.value)
    assert (rauc_info(path, kit.dev.keyring).returncode != 0) == bad.info_refuses


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_the_standalone_payload_check_refuses_each_bad_bundle(kit: Kit, case: str, tmp_path: Path) -> None:
    """drivers/update/verity.py, the check a terminal can run before `rauc install` touches the other
    slot, refuses every bad bundle above: the signature cases with rauc's words (it asks rauc info
    first), the payload cases with rauc extract's ("bundle payload is corrupted").
    Planted: check_payload() not comparing the root it computed (the payload cases pass)."""
    path = tmp_path / "bad.raucb"
    path.write_bytes(BAD[case].make(kit))
    with pytest.raises(verity.PayloadCorrupted) as refused:
        verity.check_payload(path, kit.dev.keyring)
    expected = "bundle payload is corrupted" if not BAD[case].info_refuses else BAD[case].words
    assert expected in str(refused.value), str(refused.value)


def test_the_standalone_payload_check_computes_rauc_s_root_hash(kit: Kit, tmp_path: Path) -> None:
    """The root computed from the payload is the one rauc signed, for a tree of one hash block
    (the small bundle) and of two levels (a payload over 128 blocks: 1 MiB of incompressible root).
    Planted: the salt after the block instead of before it; the last hash block not zero-padded."""
    big = make_rootfs(tmp_path / "big.squashfs", b"big")
    (tmp_path / "big.d" / "more").write_bytes(noise(1 << 20, b"more"))
    subprocess.run(["mksquashfs", str(tmp_path / "big.d"), str(big), "-quiet", "-no-progress", "-all-root",
                    "-noappend"], check=True, capture_output=True)
    two_level = bundle.build_bundle(tmp_path / "big.raucb", manifest(), big, kit.kernel, kit.dev, epoch=EPOCH)
    for built in (kit.good, two_level):
        signed = verity.signed_verity(built.path, kit.dev.keyring)
        size = verity.payload_size(built.path, signed.tree_size)
        assert verity.tree_root(built.path, size, bytes.fromhex(signed.salt)) == signed.root
        assert verity.check_payload(built.path, kit.dev.keyring) == signed
    assert verity.payload_size(two_level.path, signed.tree_size) > 128 * verity.BLOCK


def test_the_other_ca_bundle_is_good_under_its_own_keyring(kit: Kit) -> None:
    """The wrong-key case above fails for its key alone: under its own CA the same bundle verifies.
    Planted: a broken second key set (its signing certificate issued by the development CA)."""
    info = bundle.verify(other_ca_bundle(kit), kit.other.keyring)
    assert info["version"] == "9.8.7"


def conf_for_test(tmp_path: Path) -> Path:
    """system.conf with its data-directory in tmp_path: rauc creates that folder when it loads the
    config, and this host's /data is not the board's data partition."""
    text = SYSTEM_CONF.read_text()
    assert "data-directory=/data/rauc\n" in text
    conf = tmp_path / "system.conf"
    conf.write_text(text.replace("data-directory=/data/rauc", f"data-directory={tmp_path / 'rauc'}"))
    return conf


def test_the_image_config_refuses_a_plain_bundle(kit: Kit, tmp_path: Path) -> None:
    """board/image/rauc/system.conf (as rauc reads it) accepts our verity bundle and refuses a
    correctly signed plain one (whose payload nothing checks block by block) in words.
    Planted: bundle-formats=verity removed from system.conf (the plain bundle is accepted)."""
    conf = conf_for_test(tmp_path)
    plain = bundle.build_bundle(tmp_path / "plain.raucb", manifest(fmt="plain"), kit.rootfs, kit.kernel,
                                kit.dev, epoch=EPOCH, check=False)
    refused = rauc_info(plain.path, kit.dev.keyring, f"--conf={conf}")
    assert refused.returncode != 0
    assert "Bundle format 'plain' not allowed" in bundle.rauc_message(refused.stderr)
    accepted = rauc_info(kit.good.path, kit.dev.keyring, f"--conf={conf}")
    assert accepted.returncode == 0, accepted.stderr


def test_the_image_config_has_the_slots_decided(kit: Kit) -> None:
    """system.conf names the board, U-Boot, the keyring the image carries, a data directory on the
    image's data partition and the four slots (root A/B by partition label, each kernel the child
    of its root); the bundle's images are of exactly its slot classes. Planted: kernel.1's parent
    set to rootfs.0; data-directory=/var/lib/rauc (on the read-only root)."""
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(SYSTEM_CONF)
    assert conf["system"]["compatible"] == bundle.COMPATIBLE
    assert conf["system"]["bootloader"] == "uboot"
    assert conf["system"]["bundle-formats"] == "verity"
    # rauc's status on the data partition (the image's fstab), made by the image's tmpfiles.d
    overlay = REPO / "board" / "image" / "overlay"
    mounts = {fields[0]: fields[1] for line in (overlay / "etc" / "fstab").read_text().splitlines()
              if (fields := line.split()) and not fields[0].startswith("#")}
    data_directory = conf["system"]["data-directory"]
    assert Path(data_directory).is_relative_to(mounts["PARTLABEL=data"])
    tmpfiles = (overlay / "usr" / "lib" / "tmpfiles.d" / "posfw.conf").read_text()
    assert f"d {data_directory} 0700 root root -" in tmpfiles.splitlines()
    assert conf["keyring"]["path"] == signing.KEYRING_IN_IMAGE
    slots = {name: dict(conf[name]) for name in conf.sections() if name.startswith("slot.")}
    assert slots == {
        "slot.rootfs.0": {"device": "/dev/disk/by-partlabel/root-a", "type": "raw", "bootname": "A"},
        "slot.rootfs.1": {"device": "/dev/disk/by-partlabel/root-b", "type": "raw", "bootname": "B"},
        "slot.kernel.0": {"device": "/dev/disk/by-partlabel/kernel-a", "type": "raw", "parent": "rootfs.0"},
        "slot.kernel.1": {"device": "/dev/disk/by-partlabel/kernel-b", "type": "raw", "parent": "rootfs.1"},
    }
    classes = {name.split(".")[1] for name in slots}
    assert {name for entry in kit.good.info["images"] for name in entry} == classes


def test_development_keys_are_made_once_then_reused_and_kept_private(tmp_path: Path) -> None:
    """The first call makes the CA, the signing certificate (issued by that CA) and the keyring;
    the second returns the same files untouched; both private keys are 0600.
    Planted: development_keys() regenerating every time; a key written with mode 0644."""
    folder = tmp_path / "keys"
    first = signing.development_keys(folder)
    contents = {name: (folder / name).read_bytes() for name in signing.DEV_FILES}
    second = signing.development_keys(folder)
    assert second == first
    assert {name: (folder / name).read_bytes() for name in signing.DEV_FILES} == contents
    for name in (signing.CA_KEY, signing.SIGNING_KEY):
        assert (folder / name).stat().st_mode & 0o777 == 0o600, name
    ca = x509.load_pem_x509_certificate(contents[signing.CA_CERT])
    cert = x509.load_pem_x509_certificate(contents[signing.SIGNING_CERT])
    cert.verify_directly_issued_by(ca)
    assert contents[signing.KEYRING] == contents[signing.CA_CERT]
    assert first.source == "development" and first.keyring == folder / signing.KEYRING


def test_a_partial_key_set_is_refused_not_replaced(tmp_path: Path) -> None:
    """With the signing key gone, the CA is not silently replaced (images built with its keyring
    would refuse every bundle after): refused, naming the missing file; a key readable by others
    is refused too. Planted: development_keys() making a new set when one file is missing."""
    folder = tmp_path / "keys"
    signing.development_keys(folder)
    ca = (folder / signing.CA_CERT).read_bytes()
    (folder / signing.SIGNING_KEY).unlink()
    with pytest.raises(signing.SigningError, match=f"{signing.SIGNING_KEY} missing"):
        signing.development_keys(folder)
    assert (folder / signing.CA_CERT).read_bytes() == ca
    assert not (folder / signing.SIGNING_KEY).exists()
    other = tmp_path / "open"
    signing.development_keys(other)
    (other / signing.CA_KEY).chmod(0o644)
    with pytest.raises(signing.SigningError, match="readable by others"):
        signing.development_keys(other)


def test_a_key_set_whose_files_do_not_belong_together_is_refused(tmp_path: Path) -> None:
    """Two builds racing to make the set, or files copied from two sets: a signing certificate
    from another CA, a signing key that is not the certificate's, a keyring without the CA are
    each refused in words (a bundle signed so would be refused by every image). Planted:
    _check_development_set() returning at once."""
    def fresh(name: str) -> Path:
        folder = tmp_path / name
        signing.development_keys(folder)
        return folder

    other = fresh("other")
    # (the file replaced, the other set's file put there, what the refusal says)
    cases = [(signing.SIGNING_CERT, signing.SIGNING_CERT, "was not issued by"),
             (signing.SIGNING_KEY, signing.SIGNING_KEY, "is not the key of"),
             (signing.KEYRING, signing.CA_CERT, "does not hold")]
    for name, source, words in cases:
        folder = fresh(name)
        shutil.copyfile(other / source, folder / name)
        with pytest.raises(signing.SigningError, match=words):
            signing.development_keys(folder)


def test_a_vendor_key_from_the_environment_signs_and_only_its_keyring_accepts(kit: Kit,
                                                                             tmp_path: Path) -> None:
    """RAUC_KEY, RAUC_CERT and RAUC_KEYRING name a vendor's key set: it is used instead of the
    development key (which is not even made), its keyring accepts the bundle and the development
    keyring refuses it; one of the three missing is refused naming it.
    Planted: signing_keys() ignoring the environment (the bundle is signed with the development key)."""
    vendor = key_set(tmp_path / "vendor", "Vendor release CA")
    environ = {"RAUC_KEY": vendor.key, "RAUC_CERT": vendor.cert, "RAUC_KEYRING": str(vendor.keyring)}
    keys = signing.signing_keys(tmp_path / "dev-keys", environ)
    assert keys.source == "vendor" and keys.keyring == vendor.keyring
    assert signing.keyring_path(tmp_path / "dev-keys", environ) == vendor.keyring
    assert not (tmp_path / "dev-keys").exists()
    built = bundle.build_bundle(tmp_path / "vendor.raucb", manifest(), kit.rootfs, kit.kernel, keys,
                                epoch=EPOCH)
    assert bundle.verify(built.path, vendor.keyring)["compatible"] == bundle.COMPATIBLE
    with pytest.raises(bundle.BundleRefused, match="signature verification failed"):
        bundle.verify(built.path, kit.dev.keyring)
    with pytest.raises(signing.SigningError, match="RAUC_KEYRING not set"):
        signing.signing_keys(tmp_path / "dev-keys", {"RAUC_KEY": vendor.key, "RAUC_CERT": vendor.cert})
    with pytest.raises(signing.SigningError, match="no such file"):
        signing.signing_keys(tmp_path / "dev-keys", {**environ, "RAUC_CERT": str(tmp_path / "nope.pem")})


def test_a_keyring_of_two_cas_lets_a_fleet_move_to_a_new_key(kit: Kit, tmp_path: Path) -> None:
    """The rotation docs/image.md describes, with real rauc: a bundle signed with the new key is
    refused by the old keyring, and accepted, as is one signed with the old key, by the keyring of
    both CAs that signing.combine_keyrings() writes (the transition root carries it); a signing
    certificate is refused as a keyring entry. Planted: combine_keyrings() keeping only the first
    keyring's certificates (the new key's bundle is refused)."""
    new_ca = key_set(tmp_path / "new", "posfw release CA 2")
    new_bundle = bundle.build_bundle(tmp_path / "new.raucb", manifest(), kit.rootfs, kit.kernel, new_ca,
                                     epoch=EPOCH)
    with pytest.raises(bundle.BundleRefused, match="signature verification failed"):
        bundle.bundle_info(new_bundle.path, kit.dev.keyring)
    both = signing.combine_keyrings(tmp_path / "transition.pem",
                                    [kit.dev.keyring, new_ca.keyring, kit.dev.keyring])
    assert len(x509.load_pem_x509_certificates(both.read_bytes())) == 2
    assert bundle.verify(new_bundle.path, both)["version"] == "9.8.7"
    assert bundle.verify(kit.good.path, both)["version"] == "9.8.7"
    with pytest.raises(signing.SigningError, match="is not a CA certificate"):
        signing.combine_keyrings(tmp_path / "bad.pem", [kit.dev.keyring, Path(kit.dev.cert)])


def pki_with_intermediate(folder: Path) -> tuple[Path, Path, Path, Path]:
    """A vendor's PKI of three levels: root CA -> intermediate CA -> signing certificate.
    Returns (root certificate, intermediate certificate, signing certificate, signing key)."""
    folder.mkdir(parents=True)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
             signer: ec.EllipticCurvePrivateKey, path_length: int | None) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                        subject)]))
                   .issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(signing.NOT_BEFORE).not_valid_after(signing.NOT_AFTER)
                   .add_extension(x509.BasicConstraints(ca=path_length is not None, path_length=path_length),
                                  critical=True))
        return builder.sign(signer, hashes.SHA256())

    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = cert("Vendor root CA", root_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                          "Vendor root CA")]), root_key, 1)
    mid = cert("Vendor release CA", mid_key, root.subject, root_key, 0)
    leaf = cert("Vendor release signing", leaf_key, mid.subject, mid_key, None)
    paths = (folder / "root.pem", folder / "intermediate.pem", folder / "signing.pem", folder / "signing.key")
    for path, item in zip(paths[:3], (root, mid, leaf), strict=True):
        path.write_bytes(item.public_bytes(serialization.Encoding.PEM))
    paths[3].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return paths


def test_a_vendor_signing_certificate_below_an_intermediate_ca(kit: Kit, tmp_path: Path) -> None:
    """A vendor whose signing certificate hangs below an intermediate CA: RAUC_INTERMEDIATE puts the
    intermediate into the bundle's signature, and the image's keyring holds only the root. Without
    it the chain cannot be built: rauc bundle, which checks its own signature against the keyring,
    fails the build in words. Planted: sign() ignoring keys.intermediate."""
    root, mid, cert, key = pki_with_intermediate(tmp_path / "vendor")
    environ = {"RAUC_KEY": str(key), "RAUC_CERT": str(cert), "RAUC_KEYRING": str(root),
               "RAUC_INTERMEDIATE": str(mid)}
    keys = signing.signing_keys(tmp_path / "dev-keys", environ)
    assert keys.intermediate == mid
    built = bundle.build_bundle(tmp_path / "mid.raucb", manifest(), kit.rootfs, kit.kernel, keys, epoch=EPOCH)
    assert bundle.verify(built.path, root)["version"] == "9.8.7"
    without = signing.signing_keys(tmp_path / "dev-keys", {**environ, "RAUC_INTERMEDIATE": ""})
    with pytest.raises(bundle.BundleError, match="unable to get local issuer certificate"):
        bundle.build_bundle(tmp_path / "no-mid.raucb", manifest(), kit.rootfs, kit.kernel, without,
                            epoch=EPOCH)


def test_the_image_build_asks_signing_for_its_keyring(tmp_path: Path) -> None:
    """`python -m board.image.signing --print-keyring` prints the keyring the image must carry
    (build.py --keyring takes it): the development one, made on first use, or RAUC_KEYRING.
    Planted: the signing certificate's path printed instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAUC_")}
    argv = [sys.executable, "-m", "board.image.signing", "--key-dir", str(tmp_path / "keys"),
            "--print-keyring"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path / 'keys' / signing.KEYRING}\n"
    vendor = key_set(tmp_path / "vendor", "Vendor CA")
    env.update(RAUC_KEY=vendor.key, RAUC_CERT=vendor.cert, RAUC_KEYRING=str(vendor.keyring))
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.stdout == f"{vendor.keyring}\n"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "board.image.bundle", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, **env})


def test_the_command_line_builds_a_bundle_and_prints_its_size_and_sha256(kit: Kit, tmp_path: Path) -> None:
    """`python -m board.image.bundle --image-dir D` takes D's rootfs.squashfs and kernel.vfat, the
    firmware's version (pyproject.toml) and the development keys, writes D/posfw-VERSION.raucb and
    prints its true size and SHA-256; --rootfs builds the same from another root (the bundle whose
    firmware fails its health check). Planted: the SHA-256 printed of the payload, not the file."""
    images = tmp_path / "image"
    images.mkdir()
    shutil.copyfile(kit.rootfs, images / "rootfs.squashfs")
    shutil.copyfile(kit.kernel, images / "kernel.vfat")
    env = {"SOURCE_DATE_EPOCH": str(EPOCH)}
    done = run_cli("--image-dir", str(images), "--key-dir", str(tmp_path / "keys"), env=env)
    assert done.returncode == 0, done.stderr
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    out = images / f"posfw-{version}.raucb"
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
    assert lines["bundle"].strip() == str(out)
    assert lines["size"].strip() == f"{out.stat().st_size} bytes"
    assert lines["sha256"].strip() == sha256(out)
    info = bundle.verify(out, tmp_path / "keys" / signing.KEYRING)
    assert info["version"] == version and info["build"].startswith("2023-11-14T22:13:20Z")

    broken = make_rootfs(tmp_path / "broken.squashfs", b"B")
    done = run_cli("--image-dir", str(images), "--key-dir", str(tmp_path / "keys"), "--rootfs", str(broken),
                   "--version", f"{version}-broken", "--out", str(tmp_path / "broken.raucb"), env=env)
    assert done.returncode == 0, done.stderr
    info = bundle.verify(tmp_path / "broken.raucb", tmp_path / "keys" / signing.KEYRING)
    checksums = {name: image["checksum"] for entry in info["images"] for name, image in entry.items()}
    assert checksums == {"rootfs": sha256(broken), "kernel": sha256(kit.kernel)}
    assert info["version"] == f"{version}-broken"


def test_the_command_line_says_what_is_missing(tmp_path: Path) -> None:
    """No images in the image folder: exit 1 and a sentence naming the file, no traceback.
    Planted: stage() copying without looking first (a FileNotFoundError traceback)."""
    done = run_cli("--image-dir", str(tmp_path), "--key-dir", str(tmp_path / "keys"), env={})
    assert done.returncode == 1
    assert f"{tmp_path / 'rootfs.squashfs'}: no such image" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_payload_is_reproducible_the_bundle_file_is_not(kit: Kit, tmp_path: Path) -> None:
    """Two builds of the same images with the same SOURCE_DATE_EPOCH, the second under another
    umask and with the input's time moved: the bundle's squashfs (manifest and images) is the same
    to the byte and its files carry SOURCE_DATE_EPOCH as their time; the whole file differs, because
    rauc 1.8 draws a new verity salt and the signature carries its signing time (docs/image.md says
    so). Planted: rauc run without SOURCE_DATE_EPOCH (the payload is stamped with the build's time);
    stage() without its chmod (the copies take the umask's mode); rauc run with the builder's umask
    (the manifest rauc rewrites takes its mode)."""
    os.utime(kit.rootfs, (EPOCH + 500, EPOCH + 500))
    umask = os.umask(0o077)
    try:
        second = bundle.build_bundle(tmp_path / "again.raucb", manifest(), kit.rootfs, kit.kernel, kit.dev,
                                     epoch=EPOCH)
    finally:
        os.umask(umask)
    assert second.payload_sha256 == kit.good.payload_sha256
    assert second.sha256 != kit.good.sha256
    out = tmp_path / "extract"
    done = subprocess.run(["rauc", f"--keyring={kit.dev.keyring}", "extract", str(second.path), str(out)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert {path.name: int(path.stat().st_mtime) for path in out.iterdir()} == {
        "manifest.raucm": EPOCH, "rootfs.squashfs": EPOCH, "kernel.vfat": EPOCH}
    manifest_text = (out / "manifest.raucm").read_text()
    assert "build=2023-11-14T22:13:20Z 0123456789ab\n" in manifest_text
    assert json.dumps(second.info) == json.dumps(kit.good.info)


PKCS11_ENGINE = Path(f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'}"
                     "/engines-3/pkcs11.so")


@pytest.mark.skipif(not PKCS11_ENGINE.exists(), reason="Debian package missing: libengine-pkcs11-openssl "
                    "(OpenSSL's PKCS#11 engine, which rauc loads for a pkcs11: key)")
def test_a_key_in_a_pkcs11_token_signs_through_its_uri(kit: Kit, tmp_path: Path) -> None:
    """A vendor's key held by a token (SoftHSM2 here, an HSM in a factory): RAUC_KEY is a pkcs11:
    URI, rauc reads the module and PIN from RAUC_PKCS11_MODULE and RAUC_PKCS11_PIN, and the bundle
    verifies under the vendor's CA; with a wrong PIN the build fails in rauc's words. The key file
    is deleted once imported: only the token can have signed. Planted: sign() dropping the caller's
    environment (rauc finds no module and fails)."""
    vendor = key_set(tmp_path / "vendor", "Vendor HSM CA")
    conf = p11kit.init_token(tmp_path / "token", label="release", pin="1234")
    token_env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    imported = subprocess.run([p11kit.SOFTHSM_UTIL, "--import", vendor.key, "--token", "release",
                               "--label", "bundle-signing", "--id", "01", "--pin", "1234"],
                              env=token_env, capture_output=True, text=True, timeout=30, check=False)
    assert imported.returncode == 0, imported.stderr
    Path(vendor.key).unlink()
    uri = "pkcs11:token=release;object=bundle-signing;type=private"
    keys = signing.signing_keys(tmp_path / "dev-keys", {"RAUC_KEY": uri, "RAUC_CERT": vendor.cert,
                                                        "RAUC_KEYRING": str(vendor.keyring)})
    assert keys.key == uri
    environ = {**token_env, "RAUC_PKCS11_MODULE": p11kit.SOFTHSM_MODULE, "RAUC_PKCS11_PIN": "1234"}
    built = bundle.build_bundle(tmp_path / "hsm.raucb", manifest(), kit.rootfs, kit.kernel, keys,
                                epoch=EPOCH, environ=environ)
    assert bundle.verify(built.path, vendor.keyring)["version"] == "9.8.7"
    with pytest.raises(bundle.BundleError, match="PIN incorrect"):
        bundle.build_bundle(tmp_path / "wrong-pin.raucb", manifest(), kit.rootfs, kit.kernel, keys,
                            epoch=EPOCH, environ={**environ, "RAUC_PKCS11_PIN": "4321"})
    assert not (tmp_path / "wrong-pin.raucb").exists()


def rauc_with_keyring(folder: Path, keyring: Path) -> str:
    """The real rauc as the terminal runs it, its keyring given as system.conf gives it there."""
    wrapper = folder / "rauc"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("rauc", path=SBIN)} --keyring={keyring} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_the_terminal_s_update_agent_reads_a_good_bundle(kit: Kit, tmp_path: Path) -> None:
    """drivers/update/rauc.py's bundle_info against the real rauc: the board, the version."""
    agent = RaucAgent(rauc=rauc_with_keyring(tmp_path, kit.dev.keyring))
    info = asyncio.run(agent.bundle_info(str(kit.good.path)))
    assert (info.compatible, info.version) == (bundle.COMPATIBLE, "9.8.7")


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_the_terminal_s_update_agent_refuses_each_bad_bundle_before_installing(
        kit: Kit, case: str, tmp_path: Path) -> None:
    """The agent refuses every bad bundle at its check, before `rauc install` could touch the
    other slot: the signature cases in rauc's words, the payload cases (which rauc info passes)
    by its own check of every block. Planted: bundle_info without the payload check (the two
    payload cases pass)."""
    path = tmp_path / "bad.raucb"
    path.write_bytes(BAD[case].make(kit))
    agent = RaucAgent(rauc=rauc_with_keyring(tmp_path, kit.dev.keyring))
    with pytest.raises(UpdateError) as refused:
        asyncio.run(agent.bundle_info(str(path)))
    expected = "bundle payload is corrupted" if not BAD[case].info_refuses else BAD[case].words
    assert str(refused.value).startswith("the bundle was refused: "), str(refused.value)
    assert expected in str(refused.value), str(refused.value)
