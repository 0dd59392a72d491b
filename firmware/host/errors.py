"""Exceptions of the host layer (ISO 8583 to the acquirer).

One base, HostError; local vs remote protocol errors (h11's split), key check
failures, and NoReply, which the engine treats as "outcome unknown".
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "HostError",
    "KeyCheckError",
    "KeyStoreFailed",
    "LocalProtocolError",
    "NoReply",
    "RemoteProtocolError",
]


class HostError(Exception):
    """Base of every error raised by firmware.host."""


class LocalProtocolError(HostError):
    """We tried to build or encode something the wire spec forbids.

    This is a bug or bad input on our side; nothing was sent.
    """


class RemoteProtocolError(HostError):
    """Bytes from the host do not follow the wire spec.

    `field` is the ISO 8583 field (or "length", "tpdu", "header", "t", "p")
    and `offset` the byte position in the payload (the bytes after the 2-byte
    length prefix), when known.
    """

    def __init__(self, detail: str, *, field: str | None = None, offset: int | None = None):
        self.detail = detail
        self.field = field
        self.offset = offset
        super().__init__(self._sentence())

    def _sentence(self) -> str:
        where = []
        if self.field is not None:
            where.append(f"field {self.field}")
        if self.offset is not None:
            where.append(f"at byte {self.offset}")
        if where:
            return f"host message malformed: {' '.join(where)}: {self.detail}"
        return f"host message malformed: {self.detail}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments need help to survive pickling (multiprocessing, copy).
        return (_rebuild_remote, (self.detail, self.field, self.offset))


def _rebuild_remote(detail: str, field: str | None, offset: int | None) -> RemoteProtocolError:
    return RemoteProtocolError(detail, field=field, offset=offset)


class KeyCheckError(HostError):
    """A working key from sign-on does not match its check value.

    Usually the terminal master key is wrong; the sign-on must be treated as failed.
    """


class KeyStoreFailed(HostError):
    """The key store could not do what the host link asked of it (no terminal master key, the
    token is absent or refuses, no working key for the job): the store's words. Nothing was
    sent, or, at sign-on, the old working keys stay."""


class NoReply(HostError):
    """No usable reply arrived: the outcome of the request is unknown.

    `reason` is one of the class constants; it decides the reversal reason code
    (TIMEOUT -> 98, BAD_MAC -> A0, otherwise 06).
    """

    TIMEOUT: ClassVar[str] = "timeout"
    LINK: ClassVar[str] = "link"
    MALFORMED: ClassVar[str] = "malformed"
    BAD_MAC: ClassVar[str] = "bad_mac"
    CANCELLED: ClassVar[str] = "cancelled"
    REASONS: ClassVar[frozenset[str]] = frozenset(
        {"timeout", "link", "malformed", "bad_mac", "cancelled"}
    )

    def __init__(self, reason: str, detail: str = "", auth_code: str | None = None):
        if reason not in self.REASONS:
            raise ValueError(f"unknown NoReply reason {reason!r}")
        self.reason = reason
        self.detail = detail
        # Field 38 of a reply refused for its MAC: the reversal sends it back (dialect section 5).
        self.auth_code = auth_code
        text = f"no reply from host ({reason})"
        super().__init__(f"{text}: {detail}" if detail else text)

    def __reduce__(self) -> tuple[object, ...]:
        return (NoReply, (self.reason, self.detail, self.auth_code))


class TlsRefused(NoReply):
    """The host's TLS handshake was refused before anything was sent: its certificate is not
    from the pinned CA, has expired, or names another host; or the host does not speak TLS.
    `detail` says which, in words. Never retried at once: another try would meet the same."""

    def __init__(self, detail: str) -> None:
        super().__init__(NoReply.LINK, detail)
