"""The journal layer's exceptions: each one says, in words, what the operator should do."""

from __future__ import annotations

from pathlib import Path


class JournalError(Exception):
    """Base of the journal layer."""


class JournalCorrupt(JournalError):
    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"the journal {path} failed its integrity check ({detail}); the terminal is in "
            "service mode and the file is kept untouched: call support, do not delete it"
        )


class JournalFull(JournalError):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"storage is full, the journal could not be written ({detail}); nothing was sent "
            "and nothing recorded was lost: free space or call support"
        )


class JournalTooNew(JournalError):
    def __init__(self, path: Path, found: int, supported: int, needed: int | None = None) -> None:
        self.found, self.supported, self.needed = found, supported, needed
        older = "" if needed is None else f" (it needs firmware of schema {needed} or later)"
        super().__init__(
            f"the journal {path} was written by newer firmware (schema {found}) that this "
            f"firmware (schema {supported}) cannot read{older}; the file is untouched: "
            "install the newer firmware again (docs/updates.md)"
        )
