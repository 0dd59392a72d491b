"""Provisioning a deregistered terminal again, all or nothing: the whole input (TMK and a merchant
file, complete or the shipped template filled in) is checked before anything is written, then the
files are staged beside their places, fsynced and renamed in, and the journal's ACTIVE is the last
step. Any failure puts back what was there; a kill leaves the terminal deregistered.

Order of the steps, and why a kill between any two is safe: the new key and settings files go in
by rename (each holds its old or its new bytes, never a mix); the DEREGISTERED marker goes next,
but the journal still says DEREGISTERED, so the terminal still refuses everything; the journal's
one transaction (ACTIVE, audited) is the commit. Staging files a kill leaves behind are removed
by the next run, which provisions from the start.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.app.core.lifecycle import put_state
from firmware.app.process import private_files
from firmware.engine.deregistration import Lifecycle
from firmware.journal import wipe
from firmware.journal.backup import fsync_dir
from firmware.journal.store import Journal
from firmware.settings.model import factory, problems

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


def checked_tmk(tmk_hex: str) -> bytes:
    """The TMK as 16 bytes, or ProvisionRefused (exactly 32 hex digits, nothing else)."""
    text = tmk_hex.strip()
    if len(text) != 32 or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ProvisionRefused(["the TMK must be 32 hex digits (16 bytes), as the key-loading "
                                "device gives it"])
    return bytes.fromhex(text)


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


def checked_input(tmk_hex: str, given: Any) -> tuple[bytes, dict[str, dict[str, Any]]]:
    """Both checks, every problem of both in one ProvisionRefused."""
    lines: list[str] = []
    tmk, settings = b"", {}
    try:
        tmk = checked_tmk(tmk_hex)
    except ProvisionRefused as exc:
        lines += exc.lines
    try:
        settings = checked_settings(given)
    except ProvisionRefused as exc:
        lines += exc.lines
    if lines:
        raise ProvisionRefused(lines)
    return tmk, settings


def read_settings_file(path: Path) -> Any:
    """The merchant file's JSON, or ProvisionRefused saying why it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
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


def provision(data_dir: Path, tmk_hex: str, given: Any,
              step_hook: Callable[[str], None] = lambda step: None) -> dict[str, dict[str, Any]]:
    """Bring a DEREGISTERED terminal back (the app stopped): a new TMK, the merchant's settings,
    a card-data key, the journal ACTIVE (audited). The acquirer binds the TID again first.
    Raises ProvisionRefused (nothing written) or the OSError that stopped it (everything put
    back). step_hook(name) runs before each step (tests stop or kill the process there)."""
    from firmware.journal.vault import CardVault

    tmk, settings = checked_input(tmk_hex, given)
    data_dir = Path(data_dir)
    keys = data_dir / "keys"
    tmk_path, settings_path = keys / "tmk.key", data_dir / "settings.json"
    meta_path, card_key = data_dir / "settings.json.meta", keys / "card.key"
    staged = [tmk_path, settings_path, meta_path, wipe.marker_path(data_dir)]
    for directory in (data_dir, keys):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _Staging.clear_leftovers(staged)
    staging = _Staging()
    had_card_key = card_key.exists()
    try:
        step_hook("stage")
        staging.write_new(tmk_path, tmk.hex().upper().encode())
        staging.write_new(settings_path, json.dumps(settings, indent=2, ensure_ascii=False).encode())
        staging.write_new(meta_path, json.dumps({"saved_at": time.time(),
                                                 "reason": "provisioned after deregistration"}).encode())
        for path in (tmk_path, settings_path, meta_path):
            step_hook(f"place {path.name}")
            staging.place(path)
        step_hook("card key")
        vault = CardVault.from_key_file(card_key)
        step_hook("marker")
        staging.remove(wipe.marker_path(data_dir))
        step_hook("journal")
        _journal_active(Journal.open(data_dir / "journal.db", vault), settings["merchant"]["tid"])
    except BaseException:
        staging.roll_back(staged)
        if not had_card_key:
            card_key.unlink(missing_ok=True)
        raise
    step_hook("commit")
    staging.commit()
    return settings


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
        description="Provision a deregistered terminal again (the firmware stopped). The settings "
                    f"file is the merchant's: {TEMPLATE.relative_to(TEMPLATE.parents[2])} filled in, "
                    "or a complete settings.json. Nothing is written unless all of it is right.")
    parser.add_argument("--data", type=Path, required=True, help="the terminal's data directory")
    parser.add_argument("--tmk", required=True, help="the new terminal master key, 32 hex digits")
    parser.add_argument("--settings", type=Path, required=True, help="the merchant's settings file")
    args = parser.parse_args(argv)
    private_files()
    try:
        settings = provision(args.data, args.tmk, read_settings_file(args.settings))
    except ProvisionRefused as exc:
        print("provisioning refused, nothing written:", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"provisioning failed, nothing changed: {exc.strerror or exc}"
              f"{f' ({exc.filename})' if exc.filename else ''}", file=sys.stderr)
        return 1
    print(f"terminal {settings['merchant']['tid']} in {args.data} provisioned: ACTIVE; it signs on "
          "at its next start")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
