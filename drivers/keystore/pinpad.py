"""The host keys in the card reader's encrypting PIN pad: firmware.ports.HostKeys and
firmware.ports.PinPad over the reader link (docs/reader-link.md, "PIN pad").

Owns the meaning of the PIN pad frames on the terminal's side: building the `Y`/`J`/`Q` bodies
(drivers/reader/link_protocol.py), reading the pad's answers into results and key-store errors
in words, and what the terminal remembers of the pad (the roles it holds, its TMK's check value;
never a key). The frames travel on the card reader's own driver (SerialLinkReader: one port, one
SEQ space, the same reconnect rules), which this class only borrows.

The pad, not this process, holds the TMK and the working keys: install_working_keys hands it
field 62's entries still wrapped, mac_cipher and encrypt_track_block send it data and get
ciphertext, and enter_pin gets the format 0 PIN block under the PIK, typed on the pad's keys.
encrypt_pin raises KeyStoreError: a PIN pad never takes a clear PIN.

Use:
    reader = SerialLinkReader(path)          # the board's CardReader
    keys = PinPadKeys(reader)                # its HostKeys and PinPad
    await keys.pad_status()                  # once at start: what the pad kept across a restart
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from drivers.reader import link_protocol as lp
from firmware.ports import (
    WORKING_KEY_ROLES,
    KeyCheckFailed,
    KeyMissing,
    KeyStatus,
    KeyStoreError,
    KeyStoreUnavailable,
    PinCancelled,
    PinEntered,
    PinPadStatus,
    PinResult,
    PinSkipped,
    PinTimedOut,
    ReaderUnavailable,
    WrappedKey,
)

__all__ = ["ENTRY_GRACE_S", "PinPadKeys", "PinPadLink"]

log = logging.getLogger(__name__)

# How long after an entry's timeout the pad may be late with its `j` before the terminal stops
# waiting, cancels the entry itself (`Q`) and reports the timeout.
ENTRY_GRACE_S = 1.5
_KEY_WORDS = {"PIK": "PIN key (PIK)", "MAK": "MAC key (MAK)", "TDK": "track data key (TDK)"}


class PinPadLink(Protocol):
    """What PinPadKeys needs of the reader driver (drivers/reader/serial_link.SerialLinkReader)."""

    path: str
    reply_timeout_s: float

    async def pinpad_command(self, body: bytes) -> lp.Message: ...

    async def pin_entry(self, body: bytes, wait_s: float) -> lp.Message | None: ...

    async def cancel_pin_entry(self) -> bool: ...


class PinPadKeys:
    """firmware.ports.HostKeys + firmware.ports.PinPad, the keys in the reader's PIN pad."""

    def __init__(self, link: PinPadLink) -> None:
        self._link = link
        self._roles: set[str] = set()  # working keys the pad holds, as far as the terminal knows
        self._tmk_check: str | None = None
        self._status_known = False
        self._entry_lock: asyncio.Lock | None = None
        self._cancel: asyncio.Event | None = None  # set by cancel_pin for the running entry
        self._background: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"PinPadKeys({self._link.path!r}, keys={sorted(self._roles)})"

    @property
    def _where(self) -> str:
        return f"the PIN pad of the card reader on {self._link.path}"

    # ---- the link, in key-store words ----------------------------------------------

    def _refused(self, reply: lp.Message, what: str) -> KeyStoreError:
        try:
            reason = lp.parse_nak(reply.body)
        except lp.LinkError:
            return KeyStoreError(f"{self._where} refused the {what} with a malformed NAK")
        if reason is lp.NakReason.UNKNOWN_COMMAND:
            # A reader from before the PIN pad frames: it has none.
            return KeyStoreUnavailable(f"the card reader on {self._link.path} does not know the "
                                       f"PIN pad commands: it has no PIN pad")
        return KeyStoreError(f"{self._where} refused the {what}: {reason.words}")

    def _failed(self, reply: lp.PadReply, what: str) -> KeyStoreError:
        """The key-store error for a `y`/`j` whose status is not OK (nor an entry outcome)."""
        status = reply.status
        if status is lp.PadStatus.CHECK_FAILED:
            return KeyCheckFailed(reply.role, reply.expected, reply.got,
                                  "checked in the PIN pad; it kept its old keys")
        words = f"{self._where}: {what}: {reply.words}"
        if status is lp.PadStatus.NO_PIN_PAD:
            return KeyStoreUnavailable(words)
        if status in (lp.PadStatus.NO_TMK, lp.PadStatus.KEY_MISSING):
            return KeyMissing(words)
        return KeyStoreError(words)

    async def _pad(self, op: str, args: bytes = b"") -> bytes:
        """One `Y` operation; its data (status OK), or the key-store error in words."""
        what = lp.PAD_OPS[op]
        try:
            reply = await self._link.pinpad_command(lp.pad_body(op, args))
        except ReaderUnavailable as exc:
            raise KeyStoreUnavailable(f"{self._where} does not answer ({what}): {exc}") from None
        if reply.type == lp.NAK:
            raise self._refused(reply, what)
        try:
            answer = lp.parse_pad_reply(reply.body)
        except lp.LinkError as exc:
            raise KeyStoreError(f"{self._where} sent a damaged answer to the {what}: {exc}") from None
        if answer.status is not lp.PadStatus.OK:
            if answer.status is lp.PadStatus.NO_TMK:
                self._tmk_check, self._roles = None, set()
            raise self._failed(answer, what)
        return answer.data

    # ---- HostKeys --------------------------------------------------------------------

    async def install_working_keys(self, keys: list[WrappedKey]) -> None:
        try:
            args = lp.install_args(keys)
        except lp.LinkError as exc:
            raise KeyStoreError(str(exc)) from None
        await self._pad(lp.PAD_INSTALL, args)
        self._roles = {k.role for k in keys}

    def forget_working_keys(self) -> None:
        """Forgets them here at once, and tells the pad in the background (this method is sync;
        a pad that does not hear it keeps keys the next sign-on replaces)."""
        self._roles = set()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("%s: forget working keys outside the event loop; the pad keeps them "
                        "until the next sign-on", self._where)
            return
        self._spawn(loop, self._forget_on_pad())

    async def _forget_on_pad(self) -> None:
        try:
            await self._pad(lp.PAD_FORGET)
        except KeyStoreError as exc:
            log.warning("%s did not forget its working keys (%s); the next sign-on replaces them",
                        self._where, exc)

    def has_working_key(self, role: str) -> bool:
        return role in self._roles

    async def mac_cipher(self, data: bytes, *, double: bool, chain: bool) -> bytes:
        if len(data) % 8:
            raise KeyStoreError("MAC data must be a multiple of 8 bytes")
        out = bytearray()
        iv = bytes(lp.MAC_IV_LEN)
        for start in range(0, len(data), lp.MAC_DATA_MAX):
            piece = bytes(data[start:start + lp.MAC_DATA_MAX])
            cipher = await self._pad(lp.PAD_MAC, lp.mac_args(piece, iv=iv, double=double, chain=chain))
            if len(cipher) != len(piece):
                raise KeyStoreError(f"{self._where} answered {len(cipher)} bytes of MAC cipher for "
                                    f"{len(piece)}")
            out += cipher
            if chain:
                iv = cipher[-8:]  # a chaining value, not key material: CBC goes on from it
        return bytes(out)

    async def encrypt_pin(self, pin: str, pan: str) -> bytes:
        raise KeyStoreError("this board's PIN pad encrypts the PIN; the keypad PIN path is for "
                            "the sim board only")

    async def encrypt_track_block(self, block: bytes) -> bytes:
        if len(block) != 8:
            raise KeyStoreError("track data is encrypted one 8-byte block at a time")
        cipher = await self._pad(lp.PAD_TRACK, bytes(block))
        if len(cipher) != 8:
            raise KeyStoreError(f"{self._where} answered {len(cipher)} bytes for a track block")
        return cipher

    # ---- PinPad ----------------------------------------------------------------------

    async def enter_pin(self, pan: str, prompt: str, *, timeout: float,
                        allow_empty: bool) -> PinResult:
        try:
            body = lp.pin_entry_body(pan, prompt, timeout, allow_empty)
        except lp.LinkError as exc:
            raise KeyStoreError(f"cannot ask the PIN pad for a PIN: {exc}") from None
        if self._entry_lock is None:
            self._entry_lock = asyncio.Lock()
        if self._entry_lock.locked():
            raise KeyStoreError(f"{self._where} is already asking for a PIN (one entry at a time)")
        async with self._entry_lock:
            cancel = self._cancel = asyncio.Event()
            wait_s = timeout + ENTRY_GRACE_S + self._link.reply_timeout_s
            entry = asyncio.ensure_future(self._link.pin_entry(body, wait_s))
            cancelled = asyncio.ensure_future(cancel.wait())
            try:
                await asyncio.wait({entry, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                entry.cancel()  # writes `Q` at once
                raise
            finally:
                cancelled.cancel()
                self._cancel = None
            if cancel.is_set():
                # cancel_pin: the terminal's CANCEL wins, whatever the pad answered meanwhile.
                entry.cancel()  # nothing if its `j` came (the pad answers it before the `q`)
                with contextlib.suppress(asyncio.CancelledError, ReaderUnavailable):
                    await entry
                return PinCancelled()
            try:
                reply = entry.result()
            except ReaderUnavailable as exc:
                raise KeyStoreUnavailable(f"{self._where}: the PIN entry failed: {exc}") from None
            if reply is None:
                return await self._entry_overdue(timeout)
            return self._entry_result(reply, allow_empty)

    async def _entry_overdue(self, timeout: float) -> PinResult:
        """No `j` by the entry's time and the grace: cancel it here, and say it timed out."""
        log.warning("%s did not end a PIN entry %.0f s after its timeout; cancelling it",
                    self._where, ENTRY_GRACE_S)
        try:
            await self._link.cancel_pin_entry()
        except ReaderUnavailable as exc:
            raise KeyStoreUnavailable(f"{self._where} stopped answering during a PIN entry "
                                      f"({timeout:.0f} s): {exc}") from None
        return PinTimedOut()

    def _entry_result(self, reply: lp.Message, allow_empty: bool) -> PinResult:
        if reply.type == lp.NAK:
            raise self._refused(reply, "PIN entry")
        try:
            answer = lp.parse_pad_reply(reply.body)
        except lp.LinkError as exc:
            raise KeyStoreError(f"{self._where} sent a damaged answer to a PIN entry: {exc}") from None
        status = answer.status
        if status is lp.PadStatus.OK:
            if len(answer.data) != lp.PIN_BLOCK_LEN:
                raise KeyStoreError(f"{self._where} answered a PIN block of {len(answer.data)} "
                                    f"bytes, not {lp.PIN_BLOCK_LEN}")
            return PinEntered(answer.data)
        if status is lp.PadStatus.CANCELLED:
            return PinCancelled()
        if status is lp.PadStatus.TIMED_OUT:
            return PinTimedOut()
        if status is lp.PadStatus.SKIPPED:
            if not allow_empty:
                raise KeyStoreError(f"{self._where} skipped a PIN entry that did not allow it")
            return PinSkipped()
        raise self._failed(answer, "PIN entry")

    async def cancel_pin(self) -> None:
        cancel = self._cancel
        if cancel is None or cancel.is_set():
            return
        try:
            # The pad answers the entry's `J` (cancelled) before this `q`.
            await self._link.cancel_pin_entry()
        except ReaderUnavailable as exc:
            log.warning("%s did not confirm the cancel of a PIN entry (%s)", self._where, exc)
        finally:
            cancel.set()

    async def load_tmk_tr31(self, block: str) -> str:
        try:
            args = lp.tr31_args(block)
        except lp.LinkError as exc:
            raise KeyStoreError(str(exc)) from None
        data = await self._pad(lp.PAD_LOAD_TMK, args)
        if len(data) != lp.KCV_LEN:
            raise KeyStoreError(f"{self._where} answered a TMK check value of {len(data)} bytes")
        self._tmk_check, self._roles = data.hex().upper(), set()
        self._status_known = True
        return self._tmk_check

    async def pad_status(self) -> PinPadStatus:
        data = await self._pad(lp.PAD_STATUS)
        try:
            status = lp.parse_pad_status(data)
        except lp.LinkError as exc:
            raise KeyStoreError(f"{self._where} sent a damaged status: {exc}") from None
        self._tmk_check, self._roles = status.tmk_check, set(status.working_keys)
        self._status_known = True
        return status

    async def destroy_keys(self) -> list[str]:
        data = await self._pad(lp.PAD_DESTROY)
        if len(data) != 1:
            raise KeyStoreError(f"{self._where} answered the destroy with {len(data)} bytes")
        self._tmk_check, self._roles = None, set()
        bits = data[0]
        done = []
        if bits & lp.PAD_HAS_TMK:
            done.append(f"terminal master key (in {self._where})")
        done += [f"{_KEY_WORDS[r]} (in {self._where})" for r in lp.roles_of(bits)]
        return done

    # ---- for the board's key store ----------------------------------------------------

    def key_status(self) -> KeyStatus:
        """What the terminal last learnt of the pad (pad_status() refreshes it), as a
        firmware.ports.KeyStatus for the host-key half of a split store."""
        notes = ["the card-vault key is not in the PIN pad"]
        if not self._status_known:
            notes.append("the PIN pad has not been asked yet (pad_status)")
        return KeyStatus(kind="pinpad", where=self._where, tmk_check=self._tmk_check,
                         vault_key=False,
                         working_keys=tuple(r for r in WORKING_KEY_ROLES if r in self._roles),
                         notes=tuple(notes))

    async def close(self) -> None:
        """Ends the background work (a pending forget). The reader driver is the caller's."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _spawn(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
        task = loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
