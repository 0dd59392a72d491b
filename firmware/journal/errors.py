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
    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            f"the journal {path} has schema {found} but this firmware knows up to {supported}: "
            "install the newer firmware"
        )
