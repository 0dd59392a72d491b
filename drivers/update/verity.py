"""Checks a verity bundle's whole payload against the hash tree root its signed manifest names,
before anything is installed: what `rauc info` leaves out and `rauc install` only finds block by
block while it writes the other slot. Standard library only, so a terminal can run it too.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BLOCK = 4096  # rauc's verity data and hash block size
DIGEST = 32  # SHA-256


class PayloadCorrupted(Exception):
    """The payload does not match the signed root hash (or cannot be read as a verity bundle)."""


@dataclass(frozen=True)
class Verity:
    """The hash tree parameters from a bundle's signed manifest (rauc info's "Verity ..." lines)."""

    root: str  # hex
    salt: str  # hex
    tree_size: int  # bytes of hash tree between the payload and the signature


def signed_verity(bundle: Path, keyring: Path | None, *, rauc: str = "rauc") -> Verity:
    """The verity parameters `rauc info` prints once it has checked the signature against
    keyring (None: the one system.conf names, as on a terminal; its JSON output does not carry
    them). Raises PayloadCorrupted with rauc's words if rauc refuses the bundle, or when it names
    no hash tree (not a verity bundle)."""
    keyring_arg = [f"--keyring={keyring}"] if keyring is not None else []
    done = subprocess.run([rauc, *keyring_arg, "info", str(bundle)], capture_output=True,
                          text=True, timeout=300, check=False)
    if done.returncode != 0:
        words = [line.strip() for line in done.stderr.splitlines()
                 if line.strip() and "rauc-Message" not in line]
        raise PayloadCorrupted("; ".join(words) or "rauc refused the bundle")
    fields = {}
    for line in done.stdout.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and name.startswith("Verity "):
            fields[name] = value.strip().strip("'")
    try:
        return Verity(root=fields["Verity Hash"], salt=fields["Verity Salt"],
                      tree_size=int(fields["Verity Size"]))
    except (KeyError, ValueError) as exc:
        raise PayloadCorrupted("not a verity bundle: its manifest names no hash tree") from exc


def payload_size(bundle: Path, tree_size: int) -> int:
    """Bytes of payload (the squashfs the tree covers): the file less its signature, the 8-byte
    signature size at its end and the hash tree."""
    size = bundle.stat().st_size
    with open(bundle, "rb") as data:
        if size < 8:
            raise PayloadCorrupted("bundle payload is corrupted: the file is too short")
        data.seek(size - 8)
        (signature,) = struct.unpack(">Q", data.read(8))
    payload = size - 8 - signature - tree_size
    if signature > size or payload <= 0 or payload % BLOCK:
        raise PayloadCorrupted("bundle payload is corrupted: its size does not fit its hash tree")
    return payload


def tree_root(bundle: Path, size: int, salt: bytes) -> str:
    """The dm-verity (format 1) root of the first `size` bytes: each 4 KiB block hashed as
    SHA-256(salt + block), digests packed 128 to a zero-padded hash block, each level hashed the
    same way until one block remains, whose salted hash is the root."""
    level: list[bytes] = []
    with open(bundle, "rb") as data:
        for _ in range(size // BLOCK):
            block = data.read(BLOCK)
            if len(block) != BLOCK:
                raise PayloadCorrupted("bundle payload is corrupted: the file ends inside its payload")
            level.append(hashlib.sha256(salt + block).digest())
    per_block = BLOCK // DIGEST
    while True:
        blocks = [b"".join(level[i:i + per_block]).ljust(BLOCK, b"\0")
                  for i in range(0, len(level), per_block)]
        if len(blocks) == 1:
            return hashlib.sha256(salt + blocks[0]).hexdigest()
        level = [hashlib.sha256(salt + block).digest() for block in blocks]


def check_payload(bundle: Path, keyring: Path | None, *, rauc: str = "rauc") -> Verity:
    """Signature (rauc info) and then every payload block (here) of a verity bundle; raises
    PayloadCorrupted in words ("bundle payload is corrupted", rauc's own phrase) if either fails."""
    verity = signed_verity(bundle, keyring, rauc=rauc)
    size = payload_size(bundle, verity.tree_size)
    if tree_root(bundle, size, bytes.fromhex(verity.salt)) != verity.root.lower():
        raise PayloadCorrupted("bundle payload is corrupted: it does not match the signed hash tree")
    return verity


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m drivers.update.verity BUNDLE KEYRING", file=sys.stderr)
        return 2
    try:
        verity = check_payload(Path(argv[0]), Path(argv[1]))
    except (PayloadCorrupted, OSError) as exc:
        print(f"verity: {exc}", file=sys.stderr)
        return 1
    print(f"payload matches its signed root hash {verity.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
