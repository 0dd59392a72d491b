"""The A/B boot state U-Boot's boot script and RAUC share (board/image/boot.cmd): BOOT_ORDER and
BOOT_x_LEFT in a checksummed U-Boot environment file, uboot.env, on the boot partition. Reads and
writes it inside a disk image (mtools at the partition's offset), for the tests and the rig.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import zlib
from pathlib import Path

ENV_SIZE = 0x4000  # /etc/fw_env.config and boot.cmd's `env export -s`
ENV_FILE = "uboot.env"


class BootStateError(RuntimeError):
    """The state file is missing or its checksum is wrong (U-Boot then starts from defaults)."""


def decode(raw: bytes) -> dict[str, str]:
    """The variables of an environment image: CRC32 (little-endian) of the rest, then
    NUL-terminated name=value pairs, an empty one ending them."""
    if len(raw) != ENV_SIZE:
        raise BootStateError(f"{ENV_FILE} is {len(raw)} bytes, not {ENV_SIZE}")
    body = raw[4:]
    if zlib.crc32(body) != int.from_bytes(raw[:4], "little"):
        raise BootStateError(f"{ENV_FILE}'s checksum is wrong")
    pairs = body.split(b"\0\0", 1)[0].split(b"\0")
    return dict(pair.decode().split("=", 1) for pair in pairs if b"=" in pair)


def encode(variables: dict[str, str]) -> bytes:
    body = b"".join(f"{name}={value}".encode() + b"\0" for name, value in sorted(variables.items()))
    body = body + b"\0" * (ENV_SIZE - 4 - len(body))
    return zlib.crc32(body).to_bytes(4, "little") + body


def _mtools_env() -> dict[str, str]:
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}


def read(disk: Path, offset: int) -> dict[str, str]:
    """The state in the FAT partition at `offset` of `disk`."""
    result = subprocess.run(["mtype", "-i", f"{disk}@@{offset}", f"::{ENV_FILE}"], capture_output=True,
                            env=_mtools_env())
    if result.returncode != 0:
        raise BootStateError(f"no {ENV_FILE} on the boot partition: {result.stderr.decode().strip()}")
    return decode(result.stdout)


def write(disk: Path, offset: int, variables: dict[str, str] | None) -> None:
    """Replaces the state (None: removes the file, as a board whose state was never written)."""
    target = f"::{ENV_FILE}"
    if variables is None:
        subprocess.run(["mdel", "-i", f"{disk}@@{offset}", target], capture_output=True, env=_mtools_env())
        return
    with tempfile.NamedTemporaryFile(suffix=".env") as staged:
        staged.write(encode(variables))
        staged.flush()
        subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{offset}", staged.name, target], check=True,
                       capture_output=True, env=_mtools_env())
