"""Provisioning a terminal (a new one, or a deregistered one again), all or nothing: the whole
input (the master key and a merchant file, complete or the shipped template filled in) is checked
before anything is written, then the files are staged beside their places, fsynced and renamed in,
the keys go into the board's key store, and the journal's ACTIVE is the last step. Any failure puts
back what was there; a kill leaves the terminal deregistered.

The master key (TMK) arrives as the key ceremony gives it (docs/provisioning.md): a TR-31 key block
under a key-transport key (KBPK) whose clear value exists only in this short process (read from a
0600 file, wiped after use); or, on a development board only, as 32 clear hex digits. It goes into
the board's key store: a PKCS#11 token (a non-extractable object), the PIN pad of a "pinpad" board
(which unwraps the block with its own KBPK), or the development key file. Its check value is
printed, to be confirmed with the acquirer, and kept in the provisioning record (not secret): a
start whose store gives another check value goes to service mode (firmware/app/core/custody.py).

A development card-data key file (keys/card.key) on a board whose store is a token is imported into
the token, so the journal's old PANs stay readable, and destroyed (overwritten, then unlinked) once
the journal says ACTIVE.

Order of the steps, and why a kill between any two is safe: the new settings (and a development
board's key file) go in by rename (each holds its old or its new bytes, never a mix); the keys go
into the store; the record goes in by rename; the DEREGISTERED marker goes next, but the journal
still says DEREGISTERED, so the terminal still refuses everything; the journal's one transaction
(ACTIVE, audited) is the commit. Staging files a kill leaves behind are removed by the next run,
which provisions from the start (a token's keys are installed again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import stat
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from firmware.app import devices
from firmware.app.boards import BoardProfile, profile
from firmware.app.core import custody
from firmware.app.core.lifecycle import put_state
from firmware.app.process import private_files
from firmware.engine.deregistration import Lifecycle
from firmware.journal import wipe
from firmware.journal.durable import fsync_dir
from firmware.journal.store import Journal
from firmware.journal.vault import AAD, CardVault, LocalVaultKey
from firmware.ports import KeyStore, KeyStoreError, KeyStoreUnavailable
from firmware.settings.model import factory, problems
from firmware.settings.schema import VERSION_KEY

# The template ships with the settings it fills in (firmware/settings/), one folder above this file.
TEMPLATE = Path(__file__).resolve().parents[1] / "settings" / "merchant-template.json"
# What only the merchant and the acquirer know: a file without them is refused, never defaulted.
REQUIRED = (("merchant", "mid"), ("merchant", "tid"), ("comms", "host"), ("comms", "port"))
NEW, OLD = ".provision-new", ".provision-old"  # staging suffixes, beside each file


class ProvisionRefused(ValueError):
    """The input is wrong; nothing was written. .lines says every problem in words."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


TOKEN_PIN_FILE = Path("keys") / "token.pin"


@dataclass
class KeyInput:
    """How the TMK arrives: `clear` (a development board's 16 bytes) or `tr31` (the block) with
    `kbpk` (the clear key-transport key, wiped by wipe()); `check` the TMK's check value as the
    block or the clear key gives it (hex), found while checking the input."""

    clear: bytearray | None = None
    tr31: str | None = None
    kbpk: bytearray | None = None
    check: str = ""
    method: str = field(default="")

    def wipe(self) -> None:
        for secret in (self.clear, self.kbpk):
            if secret is not None:
                secret[:] = bytes(len(secret))


class TokenProvisioning(Protocol):
    """What provisioning asks of a PKCS#11 store beyond firmware.ports.KeyStore."""

    def install_tmk(self, clear: bytearray) -> str: ...

    def import_tmk_tr31(self, block: str, kbpk: bytearray) -> str: ...

    def create_vault_key(self, import_key: bytearray | None = None) -> None: ...


def tmk_check_value(tmk: bytes | bytearray) -> str:
    """The check value (hex) a key-loading device and the acquirer show for the TMK."""
    from psec.des import encrypt_tdes_ecb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography's TripleDES deprecation, psec inside
        return encrypt_tdes_ecb(bytes(tmk) + bytes(tmk[:8]), b"\0" * 8)[:4].hex().upper()


def checked_tmk(tmk_hex: str) -> bytes:
    """The TMK as 16 bytes, or ProvisionRefused (exactly 32 hex digits, nothing else)."""
    text = tmk_hex.strip()
    if len(text) != 32 or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ProvisionRefused(["the TMK must be 32 hex digits (16 bytes), as the key-loading "
                                "device gives it"])
    return bytes.fromhex(text)


def read_kbpk(path: Path) -> bytearray:
    """The clear key-transport key from its file (hex, owner-only), or ProvisionRefused."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        raw = bytearray(path.read_bytes())
    except OSError as exc:
        raise ProvisionRefused([f"cannot read the KBPK file {path}: {exc.strerror or exc}"]) from exc
    if mode & 0o077:
        raw[:] = bytes(len(raw))
        raise ProvisionRefused([f"the KBPK file {path} is readable by others (mode {mode:o}): "
                                f"chmod 600 {path}, and destroy it after the ceremony"])
    digits = bytearray(c for c in raw if chr(c) not in " \t\r\n")
    raw[:] = bytes(len(raw))
    try:
        if len(digits) not in (32, 48, 64):
            raise ValueError
        return bytearray.fromhex(digits.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProvisionRefused([f"the KBPK file {path} must hold the key-transport key as 32, "
                                "48 or 64 hex digits"]) from None
    finally:
        digits[:] = bytes(len(digits))


def checked_tr31(block: str, kbpk: bytearray) -> str:
    """The block opened here to check it (drivers/keystore/tr31.py: it verifies under the KBPK
    and holds a double-length TDES key-encryption key), or ProvisionRefused in its words; the
    TMK's check value (hex). The clear TMK is wiped at once."""
    from drivers.keystore.tr31 import unwrap_tmk

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clear = unwrap_tmk(block, kbpk)
    except KeyStoreError as exc:
        raise ProvisionRefused([f"the TR-31 key block cannot be used: {exc}"]) from None
    try:
        return tmk_check_value(clear)
    finally:
        clear[:] = bytes(len(clear))


def checked_keys(board: BoardProfile, tmk_hex: str | None, tr31: str | None,
                 kbpk: bytearray | None) -> KeyInput:
    """The key input for this board, or ProvisionRefused: a TR-31 block and its KBPK (any
    board), or a clear TMK (development boards only)."""
    if tr31 is not None:
        if tmk_hex is not None:
            raise ProvisionRefused(["give the TMK once: --tr31 (the ceremony's key block) or "
                                    "--tmk (development boards), not both"])
        if board.key_store == "pinpad":  # the PIN pad opens it under its own KBPK
            if kbpk is not None:
                kbpk[:] = bytes(len(kbpk))
                raise ProvisionRefused([f"board {board.name}'s PIN pad opens the TR-31 block under "
                                        "its own key-transport key: no --kbpk-file"])
            return KeyInput(tr31=tr31.strip(), method="pinpad tr31")
        if kbpk is None:
            raise ProvisionRefused(["a TR-31 key block needs its key-transport key: --kbpk-file"])
        return KeyInput(tr31=tr31.strip(), kbpk=kbpk, check=checked_tr31(tr31, kbpk), method="tr31")
    if tmk_hex is None:
        raise ProvisionRefused(["the TMK is missing: --tr31 BLOCK --kbpk-file FILE (the key "
                                "ceremony, docs/provisioning.md)"
                                + (", or --tmk HEX on this development board" if board.development
                                   else "")])
    if not board.development or board.key_store == "pinpad":
        block = "--tr31 BLOCK" + ("" if board.key_store == "pinpad" else " --kbpk-file FILE")
        raise ProvisionRefused([f"a clear TMK (--tmk) is for development boards only (never a "
                                f"PIN pad's); board {board.name} takes the key ceremony's TR-31 "
                                f"block: {block} (docs/provisioning.md)"])
    tmk = bytearray(checked_tmk(tmk_hex))
    return KeyInput(clear=tmk, check=tmk_check_value(tmk), method="clear (development)")


def checked_settings(given: Any) -> dict[str, dict[str, Any]]:
    """The merchant file laid over the factory defaults, checked whole: every problem at once
    (unknown or wrong fields, and the REQUIRED ones missing), or ProvisionRefused."""
    if not isinstance(given, dict):
        raise ProvisionRefused(["the settings file must be a JSON object of groups "
                                f"(see {TEMPLATE.name})"])
    lines = [f"{group}.{name}: missing (the acquirer gives it)" for group, name in REQUIRED
             if not isinstance(given.get(group), dict) or name not in given[group]]
    merged = factory()
    for group, fields in given.items():
        if isinstance(fields, dict) and isinstance(merged.get(group), dict):
            merged[group].update(copy.deepcopy(fields))
        else:
            merged[group] = copy.deepcopy(fields)  # problems() names it
    lines += [f"{key}: {words}" for key, words in problems(merged).items()]
    if lines:
        raise ProvisionRefused(lines)
    return merged


def checked_input(board: BoardProfile, tmk_hex: str | None, given: Any, tr31: str | None = None,
                  kbpk: bytearray | None = None) -> tuple[KeyInput, dict[str, dict[str, Any]]]:
    """Both checks, every problem of both in one ProvisionRefused."""
    lines: list[str] = []
    keys, settings = KeyInput(), {}
    try:
        keys = checked_keys(board, tmk_hex, tr31, kbpk)
    except ProvisionRefused as exc:
        lines += exc.lines
    try:
        settings = checked_settings(given)
    except ProvisionRefused as exc:
        lines += exc.lines
    if lines:
        keys.wipe()
        raise ProvisionRefused(lines)
    return keys, settings


def read_settings_file(path: Path) -> Any:
    """The merchant file's JSON, or ProvisionRefused saying why it cannot be read. A terminal's
    own settings.json may be given: its `_version` (the settings store's) is not a setting."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(raw, dict):
            raw.pop(VERSION_KEY, None)
        return raw
    except OSError as exc:
        raise ProvisionRefused([f"cannot read {path}: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ProvisionRefused([f"{path} is not UTF-8 text"]) from exc
    except json.JSONDecodeError as exc:
        raise ProvisionRefused([f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                                f"column {exc.colno}"]) from exc


class _Staging:
    """Files put in place all together or not at all (see the module docstring)."""

    def __init__(self) -> None:
        self._placed: list[tuple[Path, bool]] = []  # (path, had an old version kept as OLD)
        self._removed: list[Path] = []

    @staticmethod
    def clear_leftovers(paths: list[Path]) -> None:
        for path in paths:
            for suffix in (NEW, OLD):
                path.with_name(path.name + suffix).unlink(missing_ok=True)

    @staticmethod
    def write_new(path: Path, payload: bytes) -> None:
        new = path.with_name(path.name + NEW)
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def place(self, path: Path) -> None:
        """NEW becomes the file; an old version is kept (hard link) until commit()."""
        old = path.with_name(path.name + OLD)
        had_old = path.exists()
        if had_old:
            os.link(path, old)
        self._placed.append((path, had_old))
        os.replace(path.with_name(path.name + NEW), path)
        fsync_dir(path.parent)

    def remove(self, path: Path) -> None:
        """The file goes, kept as OLD until commit()."""
        if path.exists():
            os.replace(path, path.with_name(path.name + OLD))
            self._removed.append(path)
            fsync_dir(path.parent)

    def commit(self) -> None:
        for path, _ in self._placed:
            path.with_name(path.name + OLD).unlink(missing_ok=True)
        for path in self._removed:
            path.with_name(path.name + OLD).unlink(missing_ok=True)

    def roll_back(self, staged: list[Path]) -> None:
        for path in reversed(self._removed):
            os.replace(path.with_name(path.name + OLD), path)
        for path, had_old in reversed(self._placed):
            if had_old:
                os.replace(path.with_name(path.name + OLD), path)
            else:
                path.unlink(missing_ok=True)
        self.clear_leftovers(staged)


@dataclass
class Provisioned:
    """What a provisioning run did, for the operator: the settings, the TMK's check value (to be
    confirmed with the acquirer), the store, and what moved into it."""

    settings: dict[str, dict[str, Any]]
    tmk_check: str
    where: str
    notes: list[str] = field(default_factory=list)


def write_token_pin(data_dir: Path, board: BoardProfile, pin: str) -> None:
    """The token's user PIN where the board's profile reads it (file:PATH): 0600, durable."""
    kind, _, where = board.token_pin.partition(":")
    if kind != "file":
        raise ProvisionRefused([f"board {board.name} reads its token PIN from {board.token_pin}, "
                                "not a file: set that instead of --token-pin-file"])
    custody.write_private(Path(data_dir) / where, pin.encode() + b"\n")


def provision(data_dir: Path, tmk_hex: str | None, given: Any,
              step_hook: Callable[[str], None] = lambda step: None, *, board: str = "sim",
              tr31: str | None = None, kbpk: bytearray | None = None,
              key_store: str | None = None, report: list[Provisioned] | None = None,
              reader_path: str | None = None) -> dict[str, dict[str, Any]]:
    """Provision the terminal (the app stopped): the TMK into the board's key store, the
    merchant's settings, a card-vault key, the journal ACTIVE (audited). The acquirer binds the
    TID first. Raises ProvisionRefused (nothing written) or the error that stopped it (every file
    put back; a token's new objects destroyed). step_hook(name) runs before each step (tests stop
    or kill the process there); `report` receives what was done; `reader_path` is a PIN pad
    board's card reader when its profile names none."""
    prof = profile(board)
    try:
        kind = devices.key_store_kind(prof, key_store)
    except KeyStoreError as exc:
        raise ProvisionRefused([str(exc)]) from None
    keys, settings = checked_input(prof, tmk_hex, given, tr31, kbpk)
    try:
        done = _provision(Path(data_dir), prof, kind, keys, settings, step_hook, reader_path)
    finally:
        keys.wipe()
    if report is not None:
        report.append(done)
    return done.settings


def _provision(data_dir: Path, board: BoardProfile, kind: str, keys: KeyInput,
               settings: dict[str, dict[str, Any]], step_hook: Callable[[str], None],
               reader_path: str | None = None) -> Provisioned:
    key_dir = data_dir / "keys"
    tmk_path, settings_path = key_dir / "tmk.key", data_dir / "settings.json"
    meta_path, card_key = data_dir / "settings.json.meta", key_dir / "card.key"
    record_path = data_dir / custody.RECORD
    development = kind == "memory"
    placed = ([tmk_path] if development else []) + [settings_path, meta_path]
    staged = [*placed, record_path, wipe.marker_path(data_dir)]
    for directory in (data_dir, key_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _Staging.clear_leftovers(staged)
    staging = _Staging()
    had_card_key = card_key.exists()
    store: KeyStore | None = None
    undo_token = False
    try:
        step_hook("stage")
        if development:
            assert keys.clear is not None or keys.tr31 is not None
            staging.write_new(tmk_path, _development_tmk_hex(keys))
        staging.write_new(settings_path, json.dumps(settings, indent=2, ensure_ascii=False).encode())
        staging.write_new(meta_path, json.dumps({"saved_at": time.time(),
                                                 "reason": "provisioned"}).encode())
        for path in placed:
            step_hook(f"place {path.name}")
            staging.place(path)
        step_hook("keys")
        # The token (a PIN pad board's holds the card-vault key only; its TMK goes to the pad).
        store = devices.open_key_store(board, data_dir, "pkcs11" if kind == "pinpad" else kind)
        before = store.status()
        undo_token = not development and before.tmk_check is None and not before.vault_key
        if kind == "pinpad":
            assert keys.tr31 is not None
            check = asyncio.run(_pad_ceremony(board, reader_path, keys.tr31))
            notes = _vault_key_into_token(store, store, card_key, before.vault_key)  # type: ignore[arg-type]
        else:
            check, notes = _keys_into_store(store, kind, keys, card_key, before.vault_key)
        if keys.check and check.upper() != keys.check.upper():
            raise KeyStoreError(f"the key store gives the TMK check value {check}, the key block "
                                f"{keys.check}: nothing provisioned")
        step_hook("record")
        staging.write_new(record_path, custody.record_bytes(custody.new_record(check, kind,
                                                                               keys.method)))
        staging.place(record_path)
        step_hook("marker")
        staging.remove(wipe.marker_path(data_dir))
        step_hook("journal")
        _journal_active(Journal.open(data_dir / "journal.db", CardVault(store)),
                        settings["merchant"]["tid"])
        where = store.status().where
    except BaseException:
        staging.roll_back(staged)
        if development and not had_card_key:
            card_key.unlink(missing_ok=True)
        if store is not None and undo_token:
            with contextlib.suppress(KeyStoreError):
                store.destroy_all()  # the token as it was: empty
        raise
    finally:
        if store is not None:
            store.close()
    step_hook("commit")
    staging.commit()
    if not development:  # a development board's key files of before: in the token now
        for old, words in ((card_key, "card-data key"), (tmk_path, "master key")):
            if wipe.shred(old):
                fsync_dir(key_dir)
                notes.append(f"the development {words} file keys/{old.name} was destroyed")
    return Provisioned(settings, check, where, notes)


def _development_tmk_hex(keys: KeyInput) -> bytes:
    """A development board's key file content (its store reads the TMK from there)."""
    if keys.clear is not None:
        return keys.clear.hex().upper().encode()
    from drivers.keystore.tr31 import unwrap_tmk

    assert keys.tr31 is not None and keys.kbpk is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clear = unwrap_tmk(keys.tr31, keys.kbpk)
    try:
        return clear.hex().upper().encode()
    finally:
        clear[:] = bytes(len(clear))


def _keys_into_store(store: KeyStore, kind: str, keys: KeyInput, card_key: Path,
                     had_vault: bool) -> tuple[str, list[str]]:
    """The TMK into the store and a card-vault key made (or a development one imported):
    the TMK's check value as the store gives it, and notes for the operator."""
    notes: list[str] = []
    if kind == "memory":  # the key file is in place: the store reads it; its vault key file
        store.unseal(store.seal(b"probe", custody.PROBE_AAD), custody.PROBE_AAD)  # made here
        status = store.status()
        if status.tmk_check is None:
            raise KeyStoreError("; ".join(status.notes))
        return status.tmk_check, notes
    token: TokenProvisioning = store  # type: ignore[assignment]
    if keys.tr31 is not None:
        assert keys.kbpk is not None
        check = token.import_tmk_tr31(keys.tr31, keys.kbpk)
    else:
        assert keys.clear is not None
        check = token.install_tmk(keys.clear)
    notes.extend(_vault_key_into_token(store, token, card_key, had_vault))
    return check, notes


@dataclass
class _ReaderPath:
    reader_path: str | None
    printer_path: str | None = ""


async def _pad_ceremony(board: BoardProfile, reader_path: str | None, block: str) -> str:
    """The TR-31 block to the PIN pad in the board's card reader, which opens it under its own
    KBPK; the new TMK's check value as the pad gives it."""
    from drivers.keystore.pinpad import PinPadKeys

    reader = devices.make_reader(board, _ReaderPath(reader_path))
    if reader is None or not hasattr(reader, "pinpad_command"):
        raise KeyStoreUnavailable(f"board {board.name}'s master key goes into the PIN pad of its "
                                  "card reader: give the reader's device (--reader)")
    pad = PinPadKeys(reader)  # type: ignore[arg-type]
    try:
        return await pad.load_tmk_tr31(block)
    finally:
        await pad.close()
        await reader.close()


def _vault_key_into_token(store: KeyStore, token: TokenProvisioning, card_key: Path,
                          had_vault: bool) -> list[str]:
    """A development card-data key file moves into the token (the journal's PANs stay
    readable); with no file, the token makes a fresh key unless it has one."""
    if not card_key.exists():
        if not had_vault:
            token.create_vault_key()
            return ["a new card-vault key was made in the token"]
        return ["the token's card-vault key was kept"]
    key = bytearray(card_key.read_bytes())
    try:
        if had_vault:  # a run cut before the file went: the same key, or refuse
            probe = LocalVaultKey(bytes(key)).seal(b"same key?", AAD)
            try:
                store.unseal(probe, AAD)
            except KeyStoreError:
                raise KeyStoreError("the token already holds a card-vault key that is not the one "
                                    f"in {card_key}: the journal's card numbers cannot move; "
                                    "call support") from None
            return ["the development card-data key was already in the token"]
        token.create_vault_key(import_key=key)
        return ["the development card-data key keys/card.key moved into the token"]
    finally:
        key[:] = bytes(len(key))


def _journal_active(journal: Journal, tid: str) -> None:
    """The commit point: the life cycle ACTIVE, the deregistration's state gone, audited."""
    try:
        with journal.transaction() as cur:
            cur.execute("DELETE FROM terminal_state WHERE name LIKE 'dereg_%'")
            put_state(cur, {"lifecycle": Lifecycle.ACTIVE.value})
            journal.audit_in(cur, "supervisor", "provisioned", f"terminal {tid}", "ACTIVE")
    finally:
        journal.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware.app.provision",
        description="Provision a terminal (the firmware stopped): its master key into the board's "
                    "key store, the merchant's settings, a card-vault key. The settings file is the "
                    f"merchant's: {TEMPLATE.relative_to(TEMPLATE.parents[2])} filled in, or a "
                    "complete settings.json. Nothing is written unless all of it is right. The key "
                    "ceremony: docs/provisioning.md.")
    parser.add_argument("--data", type=Path, required=True, help="the terminal's data directory")
    parser.add_argument("--board", default="sim", help="the board profile the terminal runs "
                        "(firmware/app/boards.py; default sim)")
    parser.add_argument("--tr31", metavar="BLOCK", help="the terminal master key as a TR-31 key "
                        "block under the key-transport key (the key ceremony)")
    parser.add_argument("--kbpk-file", type=Path, metavar="FILE", help="the clear key-transport "
                        "key (KBPK), hex, mode 0600; destroy it after the ceremony")
    parser.add_argument("--tmk", metavar="HEX", help="a clear terminal master key, 32 hex digits "
                        "(development boards only)")
    parser.add_argument("--token-pin-file", type=Path, metavar="FILE", help="the key token's user "
                        "PIN, kept as the board's token_pin file (keys/token.pin, 0600)")
    parser.add_argument("--reader", metavar="DEVICE", help="a PIN pad board's card reader, when "
                        "its profile names none")
    parser.add_argument("--settings", type=Path, required=True, help="the merchant's settings file")
    args = parser.parse_args(argv)
    private_files()
    report: list[Provisioned] = []
    try:
        prof = profile(args.board)
        kbpk = read_kbpk(args.kbpk_file) if args.kbpk_file is not None else None
        if args.token_pin_file is not None:
            pin = args.token_pin_file.read_text(encoding="utf-8").strip()
            if not pin:
                raise ProvisionRefused([f"the token PIN file {args.token_pin_file} is empty"])
            write_token_pin(args.data, prof, pin)
        provision(args.data, args.tmk, read_settings_file(args.settings), board=args.board,
                  tr31=args.tr31, kbpk=kbpk, report=report, reader_path=args.reader)
    except ProvisionRefused as exc:
        print("provisioning refused, nothing written:", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        return 1
    except KeyStoreError as exc:
        print(f"provisioning failed, nothing changed: the key store: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"provisioning failed, nothing changed: {exc.strerror or exc}"
              f"{f' ({exc.filename})' if exc.filename else ''}", file=sys.stderr)
        return 1
    done = report[0]
    print(f"terminal {done.settings['merchant']['tid']} in {args.data} provisioned: ACTIVE; it "
          "signs on at its next start")
    print(f"terminal master key check value: {done.tmk_check} (in {done.where}): confirm it with "
          "the acquirer before the first sign-on")
    for note in done.notes:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
