"""Key custody at start-up: the board's key store checked against what provisioning recorded, and
its state in words for the screen, the ECR status and the diagnostics.

The store itself is opened by the assembled terminal (firmware/app/devices.py picks the driver);
this module owns what a start must confirm before any money moves: the store answers, it holds a
terminal master key (TMK) whose check value is the one the acquirer confirmed at the key ceremony,
and the card-vault key seals and unseals. Any of these failing puts the terminal in service mode
with the words of the KeyStoreError, never a traceback.

The provisioning record (keys/provisioned.json, written by firmware/app/provision.py, 0600) holds
nothing secret: the TMK's check value, the kind of store, how the TMK arrived, when. A check value
identifies a key without revealing it (4 bytes of an encryption of zeros).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from firmware.i18n import register
from firmware.ports import KeyCheckFailed, KeyMissing, KeyStatus, KeyStore

RECORD = Path("keys") / "provisioned.json"
PROBE_AAD = b"posfw/start-up-probe"

MESSAGES: dict[str, tuple[str, str]] = {
    "service_keys": ("Service mode - key store problem; call support", "维护模式 - 密钥存储故障, 请联系维护"),
    "keys_where": ("Keys: {where}", "密钥位置: {where}"),
    "keys_tmk": ("Master key check value {cv}", "主密钥校验值 {cv}"),
    "keys_no_tmk": ("No master key: provision the terminal", "无主密钥: 请重新装机"),
    "keys_vault": ("Card-data key present", "卡数据密钥已装载"),
    "keys_no_vault": ("No card-data key", "无卡数据密钥"),
    "keys_working": ("Working keys: {roles}", "工作密钥: {roles}"),
    "keys_no_working": ("No working keys: sign on", "无工作密钥: 请签到"),
    "keys_problem": ("Key store problem: {why}", "密钥存储故障: {why}"),
}

register(MESSAGES)


@dataclass(frozen=True)
class ProvisionRecord:
    """What provisioning recorded (no secret): see the module docstring."""

    tmk_check: str | None  # hex, upper case; None: provisioned without a TMK check (old data dir)
    key_store: str  # "memory", "pkcs11", "pinpad"
    method: str  # how the TMK arrived: "tr31", "clear (development)", "pinpad tr31"
    at: float


def read_record(data_dir: Path) -> ProvisionRecord | None:
    """The record, or None when there is none (a data directory provisioned before records)."""
    try:
        raw = json.loads((Path(data_dir) / RECORD).read_text(encoding="utf-8"))
        return ProvisionRecord(tmk_check=raw.get("tmk_check"), key_store=str(raw["key_store"]),
                               method=str(raw.get("method", "")), at=float(raw.get("at", 0)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyMissing(f"the provisioning record {RECORD} cannot be read ({type(exc).__name__}): "
                         "provision the terminal again (docs/provisioning.md)") from None


def record_bytes(record: ProvisionRecord) -> bytes:
    return json.dumps(asdict(record), indent=2).encode()


def new_record(tmk_check: str | None, key_store: str, method: str) -> ProvisionRecord:
    return ProvisionRecord(tmk_check.upper() if tmk_check else None, key_store, method, time.time())


def check_store(store: KeyStore, record: ProvisionRecord | None) -> KeyStatus:
    """Everything a start must confirm (module docstring), or the KeyStoreError saying what is
    wrong: KeyMissing (no TMK, no vault key), KeyCheckFailed (a TMK that is not the one
    provisioned), KeyStoreUnavailable (the token went away)."""
    status = store.status()
    if status.tmk_check is None:
        notes = "; ".join(status.notes)
        raise KeyMissing(f"no terminal master key in {status.where}"
                         + (f" ({notes})" if notes else "")
                         + ": provision the terminal (docs/provisioning.md)")
    if record is not None and record.tmk_check and \
            record.tmk_check.upper() != status.tmk_check.upper():
        raise KeyCheckFailed("TMK", bytes.fromhex(record.tmk_check), bytes.fromhex(status.tmk_check),
                             f"the master key in {status.where} is not the one provisioned; "
                             "provision the terminal again")
    # The vault key, one round trip (a development store makes its key file here, as always).
    store.unseal(store.seal(b"probe", PROBE_AAD), PROBE_AAD)
    return store.status()


def status_words(status: KeyStatus | None, problem: str | None, lang: str) -> list[str]:
    """The store's state as lines for the diagnostics and the ECR status (no key bytes)."""
    from firmware.i18n import text

    lines: list[str] = []
    if problem:
        lines.append(text("keys_problem", lang, why=problem))
    if status is None:
        return lines
    lines.append(text("keys_where", lang, where=status.where))
    lines.append(text("keys_tmk", lang, cv=status.tmk_check) if status.tmk_check
                 else text("keys_no_tmk", lang))
    lines.append(text("keys_vault" if status.vault_key else "keys_no_vault", lang))
    lines.append(text("keys_working", lang, roles=", ".join(status.working_keys))
                 if status.working_keys else text("keys_no_working", lang))
    lines.extend(status.notes)
    return lines


def write_private(path: Path, payload: bytes) -> None:
    """A 0600 file written whole and on the disk before its name (tmp + fsync + rename)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
