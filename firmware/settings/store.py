"""Settings on disk: atomic save with a version history, restore, factory defaults, and load.

Theory of operation. The live file (settings.json) is only ever replaced by rename, so at
every instant it holds either the old or the new settings. Before each replacement the
live file is copied into <name>.history/<id>.json (with <id>.meta: when that version was
saved and why), and the newest HISTORY_KEEP versions are kept. A live file that fails to
parse or validate at load is reported (`problem`) and the newest good version is used;
factory defaults are used only at first start (no file and no history at all).

No old supervisor password hash is kept: whenever the live file's hash changes (a new
password, or copies an older firmware wrote, found at load) every history copy is
overwritten in place to hold the current hash instead, so the only hash on disk is the
current one. A version made live again (restore, restore previous, roll back) takes the
live file's hash and password_changed; the fall-back at load, when the live file cannot be
read, finds the current hash in the history copy it uses, and trading goes on.

The operators (security.operators: the cashiers and their PIN hashes) go with the live file the
same way: a version made live again keeps the live operators, so a restore never brings back a
removed cashier or an old PIN; only the supervisor's hash is rewritten in the history copies.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from firmware.digits import is_digits
from firmware.settings.model import SettingsInvalid, factory, field_problem, migrate, validate
from firmware.settings.schema import BY_KEY, GROUPS, SETTINGS_VERSION, VERSION_KEY

log = logging.getLogger("posfw.settings")
HISTORY_KEEP = 10

# Kept by factory_defaults(keep_identity=True): without them the terminal could no longer reach
# its acquirer (host, port) or be recognised by it (MID, TID), and resetting the supervisor
# password to the documented factory one would open refunds and settings to anyone at the counter.
IDENTITY_FIELDS = (("merchant", "mid"), ("merchant", "tid"), ("comms", "host"), ("comms", "port"),
                   ("security", "supervisor_hash"), ("security", "password_changed"),
                   ("security", "operators"))


# A supervisor password hash as settings files hold it (model.hash_password's format), after its
# key: the operators' PIN hashes have the same format and must not become the supervisor's.
_HASH = re.compile(rb'("supervisor_hash"\s*:\s*")scrypt\$\d+\$\d+\$\d+\$[0-9a-fA-F]*\$[0-9a-fA-F]*')


@dataclass(frozen=True)
class Version:
    id: str
    saved_at: float  # epoch seconds when this version was saved as the live file
    reason: str  # why it was saved (words)


class SettingsWriteError(OSError):
    """The settings could not be written; the live file is unchanged. str() says why in words."""

    def __init__(self, errno_: int, message: str) -> None:
        super().__init__(errno_, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


Data = dict[str, dict[str, Any]]


class SettingsStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.history_dir = self.path.parent / (self.path.name + ".history")
        self.meta_path = self.path.parent / (self.path.name + ".meta")
        self.problem: str | None = None  # set when the live file was unusable at load
        self.migrated: tuple[str, ...] = ()  # fields filled from factory at the last load
        self.last_backup = ""  # the history id the last write made of the file it replaced
        # Fields of newer firmware found in the live file at the last load, kept aside and
        # written back by every save (with the newer version), so that firmware finds them again.
        self.newer_fields: dict[str, Any] = {}  # group -> its unknown fields, or a whole new group
        self.newer_version = 0

    # ------------------------------------------------------------------ reading

    def load(self) -> Data:
        self.problem = None
        self.migrated = ()
        secret = self._secret()
        if secret is not None:  # copies an older firmware wrote hold the hashes of their day
            self._align_history(secret["supervisor_hash"])
        if not self.path.exists():
            if not self._ids():
                data = factory()
                self.save(data, reason="factory defaults (first start)")
                log.warning("no settings file: first start, factory defaults written to %s", self.path)
                return data
            self.problem = f"settings file {self.path} is missing"
        else:
            try:
                data = self._parse(self.path)
                return data
            except (ValueError, OSError, SettingsInvalid) as exc:
                self.problem = f"settings file {self.path} is unusable ({exc})"
        for version in self.history():
            try:
                data = self._parse(self.history_dir / f"{version.id}.json", secret)
            except (ValueError, OSError, SettingsInvalid):
                continue
            self.problem += f"; using the version saved {_when(version.saved_at)} ({version.reason})"
            log.error(self.problem)
            return data
        log.error(self.problem)
        raise RuntimeError(self.problem + ", and no good earlier version exists: restore the settings "
                           "file from a backup or call support")

    def history(self) -> list[Version]:
        """Every stored version, newest first."""
        out = []
        for vid in reversed(self._ids()):
            meta: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads((self.history_dir / f"{vid}.meta").read_text("utf-8"))
            saved_at = meta.get("saved_at") if isinstance(meta, dict) else None
            if not isinstance(saved_at, int | float):
                try:
                    saved_at = (self.history_dir / f"{vid}.json").stat().st_mtime
                except OSError:
                    saved_at = 0.0
            reason = meta.get("reason") if isinstance(meta, dict) else None
            out.append(Version(vid, float(saved_at), str(reason) if reason else "reason not recorded"))
        return out

    # ------------------------------------------------------------------ writing

    def save(self, data: Data, reason: str = "") -> str:
        """Validate, keep the current file in the history, write atomically.

        Returns the id of the backup made of the replaced file ("" when there was none), for
        a roll back. Raises SettingsInvalid (nothing written) or SettingsWriteError (the live
        file unchanged; e.g. the disk is full).
        """
        validate(data)
        reason = reason or "edited"
        backup = self._backup(replaced_by=reason)
        stored: dict[str, Any] = {group: dict(fields) for group, fields in data.items()}
        for group, kept in self.newer_fields.items():  # a newer firmware's, kept as they were
            if group not in stored:
                stored[group] = kept
            elif isinstance(kept, dict):
                for name, value in kept.items():
                    stored[group].setdefault(name, value)
        stored[VERSION_KEY] = max(SETTINGS_VERSION, self.newer_version)
        payload = json.dumps(stored, indent=2, ensure_ascii=False).encode("utf-8")
        _atomic_write(self.path, payload)
        # A new password: the copies (the backup just made too) hold the old hash no longer.
        self._align_history(str(data["security"]["supervisor_hash"]))
        # The meta is written after the rename: a crash in between only loses the reason.
        with contextlib.suppress(OSError):
            _atomic_write(self.meta_path, _meta(time.time(), reason))
        self.last_backup = backup
        log.info("settings saved (%s); backup %s", reason, backup or "none (first file)")
        return backup

    def restore(self, version_id: str, reason: str = "") -> Data:
        """Make a history version live (the current file is backed up first)."""
        if version_id not in self._ids():
            raise ValueError(f"there is no settings version {version_id!r}")
        try:
            data = self._parse(self.history_dir / f"{version_id}.json", self._secret())
        except (ValueError, OSError, SettingsInvalid) as exc:
            raise ValueError(f"settings version {version_id} is unusable ({exc})") from exc
        self.save(data, reason or f"restored version {version_id}")
        return data

    def restore_previous(self, reason: str = "restore previous") -> Data:
        """Make the newest good version that differs from the live settings live again.

        The live file is backed up first, so a second restore_previous undoes the first.
        """
        current, secret = self._current(), self._secret()
        for version in self.history():
            try:
                data = self._parse(self.history_dir / f"{version.id}.json", secret)
            except (ValueError, OSError, SettingsInvalid):
                continue
            if data != current:
                self.save(data, reason)
                return data
        raise RuntimeError("there is no earlier settings version to restore")

    def factory_defaults(self, keep_identity: bool = True, reason: str = "factory defaults") -> Data:
        """Factory values (the current file is backed up first).

        keep_identity keeps IDENTITY_FIELDS (MID/TID, host/port, supervisor password) from the
        current settings so the terminal stays reachable and guarded; see IDENTITY_FIELDS.
        """
        data = factory()
        current = self._current() if keep_identity else None
        if current is not None:
            for group, name in IDENTITY_FIELDS:
                data[group][name] = current[group][name]
        self.save(data, reason)
        return data

    # ------------------------------------------------------------------ internals

    def _parse(self, path: Path, secret: dict[str, Any] | None = None) -> Data:
        """A settings file, migrated and validated; `secret`: the supervisor hash and
        password_changed a history copy takes from the live file."""
        raw = json.loads(path.read_text("utf-8"))
        if secret is not None and isinstance(raw, dict) and isinstance(raw.get("security"), dict):
            raw["security"].update(secret)
        raw, newer, version = _set_aside_newer(raw)
        if path == self.path:
            self.newer_fields, self.newer_version = newer, version
        data, filled = migrate(raw)
        validate(data)
        if filled:
            self.migrated = filled
            log.warning("settings %s migrated: %s filled from factory defaults (added in a newer "
                        "firmware)", path.name, ", ".join(filled))
        return data

    def _current(self) -> Data | None:
        """The live settings if usable, else the newest good version, else None."""
        with contextlib.suppress(ValueError, OSError, SettingsInvalid):
            return self._parse(self.path)
        secret = self._secret()
        for version in self.history():
            with contextlib.suppress(ValueError, OSError, SettingsInvalid):
                return self._parse(self.history_dir / f"{version.id}.json", secret)
        return None

    def _secret(self) -> dict[str, Any] | None:
        """The live file's supervisor hash and password_changed (and its operators, when valid),
        which every version made live again keeps; None when the live file holds no valid hash
        (a history copy holds the current one then)."""
        with contextlib.suppress(ValueError, OSError, TypeError, KeyError, AttributeError):
            security = json.loads(self.path.read_text("utf-8"))["security"]
            hashed, changed = security["supervisor_hash"], security["password_changed"]
            if field_problem("security.supervisor_hash", hashed) is None and isinstance(changed, bool):
                secret = {"supervisor_hash": hashed, "password_changed": changed}
                operators = security.get("operators")
                if field_problem("security.operators", operators) is None:
                    secret["operators"] = operators
                return secret
        return None

    def _align_history(self, current: str) -> None:
        """Every history copy holds `current` where it held any supervisor hash, overwritten in
        place at the same length (hashes of one format have one length), so an old hash's bytes
        do not stay in the file's blocks either; a copy cut by a power loss meanwhile is one
        history version lost, never the live settings."""
        if not self.history_dir.is_dir():
            return
        wanted = current.encode("ascii")
        for path in sorted(self.history_dir.glob("*.json")):
            try:
                raw = path.read_bytes()
                aligned = _HASH.sub(lambda old: old.group(1) + wanted, raw)
                if aligned == raw:
                    continue
                if len(aligned) > len(raw):  # another hash format: cannot be done in place
                    _atomic_write(path, aligned)
                    continue
                with open(path, "r+b") as fh:
                    fh.write(aligned + b" " * (len(raw) - len(aligned)))  # JSON allows the spaces
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                log.error("settings history %s: the old password hash could not be replaced: %s",
                          path.name, exc)

    def _ids(self) -> list[str]:
        """History ids, oldest first (numeric order: older firmware used shorter stamps)."""
        if not self.history_dir.is_dir():
            return []
        stems = [p.stem for p in self.history_dir.glob("*.json") if is_digits(p.stem)]
        return sorted(stems, key=int)

    def _backup(self, replaced_by: str) -> str:
        """Copy the live file into the history; returns its id ("" if there is no live file)."""
        try:
            live = self.path.read_bytes()
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise SettingsWriteError(exc.errno or errno.EIO,
                                     f"settings not saved: cannot read the current file to back it up "
                                     f"({exc.strerror}); the live settings are unchanged") from exc
        meta: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(self.meta_path.read_text("utf-8"))
        if not isinstance(meta, dict):
            meta = {}
        saved_at = meta.get("saved_at")
        if not isinstance(saved_at, int | float):
            saved_at = self.path.stat().st_mtime
        self.history_dir.mkdir(parents=True, exist_ok=True)
        ids = self._ids()
        vid = str(time.time_ns())
        if ids and int(vid) <= int(ids[-1]):
            vid = str(int(ids[-1]) + 1)  # a coarse clock must not reorder or overwrite versions
        _atomic_write(self.history_dir / f"{vid}.json", live)
        _atomic_write(self.history_dir / f"{vid}.meta",
                      _meta(saved_at, str(meta.get("reason") or "reason not recorded"), replaced_by))
        for old in self._ids()[:-HISTORY_KEEP]:
            for suffix in (".json", ".meta"):
                with contextlib.suppress(FileNotFoundError):
                    (self.history_dir / f"{old}{suffix}").unlink()
        return vid


def _set_aside_newer(raw: Any) -> tuple[Any, dict[str, Any], int]:
    """A settings file without its version, and, when newer firmware wrote it (a higher version),
    the fields this firmware does not know, set aside. In a file of this firmware's version or
    older an unknown field stays in, and validation refuses it (a typo is not a newer field)."""
    if not isinstance(raw, dict):
        return raw, {}, 0
    raw = dict(raw)
    version = raw.pop(VERSION_KEY, 0)
    if not isinstance(version, int) or isinstance(version, bool) or version <= SETTINGS_VERSION:
        return raw, {}, 0
    newer: dict[str, Any] = {}
    for group in list(raw):
        fields = raw[group]
        if group not in GROUPS:
            newer[group] = raw.pop(group)
        elif isinstance(fields, dict):
            unknown = {n: v for n, v in fields.items() if f"{group}.{n}" not in BY_KEY}
            if unknown:
                newer[group] = unknown
                raw[group] = {n: v for n, v in fields.items() if n not in unknown}
    if newer:
        log.warning("settings written by newer firmware (version %d, this firmware %d): its fields "
                    "%s are kept as they are and not used", version, SETTINGS_VERSION,
                    ", ".join(f"{g}.{n}" if n else g for g, f in newer.items()
                              for n in (f if isinstance(f, dict) and g in GROUPS else [""])))
    return raw, newer, version


def _meta(saved_at: float, reason: str, replaced_by: str | None = None) -> bytes:
    meta: dict[str, Any] = {"saved_at": saved_at, "reason": reason}
    if replaced_by is not None:
        meta.update(replaced_at=time.time(), replaced_by=replaced_by)
    return json.dumps(meta, ensure_ascii=False).encode("utf-8")


def _atomic_write(path: Path, payload: bytes) -> None:
    """tmp + fsync + rename + directory fsync: path holds the old or the new bytes, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SettingsWriteError(exc.errno, "the disk is full: settings not saved, the live settings "
                                                "are unchanged; free some space or call support") from exc
        raise SettingsWriteError(exc.errno or errno.EIO, f"settings not saved ({exc.strerror or exc}); "
                                                         "the live settings are unchanged") from exc


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


HISTORY_TEXT = {"none": ("No earlier versions", "没有历史版本")}


def history_lines(versions: list[Version], lang: str) -> list[str]:
    """The History screen's rows: per version its date and time, then its reason (indented).

    Two rows per version so a 16-column LCD shows the whole date and time.
    """
    if not versions:
        entry = HISTORY_TEXT["none"]
        return [entry[1] if lang.startswith("zh") else entry[0]]
    lines = []
    for version in versions:
        lines.append(_when(version.saved_at))
        lines.append(" " + version.reason)
    return lines
