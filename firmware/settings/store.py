"""Settings on disk: atomic save with a version history, and the last good version on load.

A file that fails to parse or validate is reported and the newest good
version from the history is used instead; defaults are never used silently.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from firmware.settings.model import SettingsInvalid, factory, validate

log = logging.getLogger("posfw.settings")
HISTORY_KEEP = 10


class SettingsStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.history_dir = self.path.parent / (self.path.name + ".history")
        self.problem: str | None = None  # set when the live file was unusable at load

    def load(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            data = factory()
            self.save(data, reason="factory defaults (first start)")
            return data
        try:
            data = json.loads(self.path.read_text("utf-8"))
            validate(data)
            return data
        except (ValueError, SettingsInvalid) as exc:
            self.problem = f"settings file {self.path} is unusable ({exc}); using the last good version"
            log.error(self.problem)
            for old in sorted(self.history_dir.glob("*.json"), reverse=True):
                try:
                    data = json.loads(old.read_text("utf-8"))
                    validate(data)
                    return data
                except (ValueError, SettingsInvalid):
                    continue
            raise RuntimeError(self.problem + ", but no good version exists: restore from support") from exc

    def save(self, data: dict[str, dict[str, Any]], reason: str = "") -> None:
        """Validate, keep the current file in the history, write atomically (fsync + rename)."""
        validate(data)
        self.history_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            # Copy, not move: the live file must exist at every instant of a save.
            stamp = f"{time.time():.6f}".replace(".", "")
            shutil.copy2(self.path, self.history_dir / f"{stamp}.json")
            old = sorted(self.history_dir.glob("*.json"))
            for extra in old[:-HISTORY_KEEP]:
                extra.unlink()
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        log.info("settings saved (%s)", reason or "edit")
