"""A CardReader over PC/SC (pcscd + pyscard): a CCID chip reader on a Linux POS, or vsmartcard's
virtual reader in development (board/sim/vpcd.py is the card in it).

This module owns the chip slot of one PC/SC reader: the reader's name (the board profile's, or
the first reader whose name contains the configured pattern), insertion and removal events
(SCardGetStatusChange in a worker thread, cancelled at once with SCardCancel), the card
connection (T=0 or T=1, whichever the card offers) and T=0's transport rules: on 61xx the driver
fetches the rest with GET RESPONSE, on 6Cxx it resends with Le = xx, so the caller gets one whole
response per command. PC/SC readers have no magstripe head: `read(magstripe=True)` reads the chip
only (a board with a stripe pairs this driver with a stripe reader, docs/boards.md).

Events follow the reader link's rules (docs/reader-link.md): a chip arm reports a card the
terminal was not told about at once (ChipInserted with its ATR), else waits for one; with a
reported card in the slot it waits for its removal (ChipRemoved). Never a card datum in the log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any

from firmware.ports import (
    ChipGone,
    ChipInserted,
    ChipRemoved,
    ReaderEvent,
    ReaderUnavailable,
    ReadFailed,
    ReadTimedOut,
)

log = logging.getLogger("posfw.reader.pcsc")

DEFAULT_PATTERN = ""  # no pattern: the first reader pcscd lists
_GET_RESPONSE = bytes.fromhex("00C00000")
_SLICE_S = 0.5  # longest single status wait (see _wait_event)
_MAX_CHAINED = 32  # GET RESPONSE / resend rounds before the card counts as misbehaving


def _scard() -> Any:
    """pyscard's PC/SC binding, imported on first use (a board without PC/SC never loads it)."""
    try:
        from smartcard import scard
    except ImportError as exc:  # the venv lacks it: `make` installs the locked pyscard
        raise ReaderUnavailable("pyscard is not installed (run make: requirements.txt has it)"
                                ) from exc
    return scard


def _words(hresult: int) -> str:
    scard = _scard()
    return f"{scard.SCardGetErrorMessage(hresult).rstrip('. ')} (0x{hresult & 0xFFFFFFFF:08X})"


class PcscReader:
    """CardReader for one PC/SC reader; `name` is its exact name or a part of it ('' = first)."""

    def __init__(self, name: str = DEFAULT_PATTERN) -> None:
        self.name = name
        self._reader: str | None = None
        self._wait_ctx: int | None = None  # status waits only: SCardCancel cancels them
        self._card_ctx: int | None = None  # connect / transmit / disconnect
        self._card: int | None = None
        self._protocol = 0
        self._reported = False  # the terminal was told of the card in the slot (ChipInserted)
        self._closed = False
        # One thread for the card (a PC/SC handle is used by one thread at a time); waits run
        # in threads of their own so a card exchange never queues behind a 60 s arm.
        self._card_thread = concurrent.futures.ThreadPoolExecutor(1, "pcsc-card")
        self._lock = threading.Lock()

    # ---- context and reader --------------------------------------------------------------

    def _context(self) -> int:
        scard = _scard()
        hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            if hresult == scard.SCARD_E_NO_SERVICE:
                raise ReaderUnavailable(
                    "the PC/SC daemon pcscd is not running (Debian package pcscd; start it with "
                    f"systemctl start pcscd.socket): {_words(hresult)}")
            raise ReaderUnavailable(f"PC/SC: no context: {_words(hresult)}")
        return int(ctx)

    def _open(self) -> None:
        """Contexts and the reader's name; raises ReaderUnavailable in words."""
        with self._lock:
            if self._closed:
                raise ReaderUnavailable("the PC/SC reader driver was closed")
            if self._wait_ctx is None:
                self._wait_ctx = self._context()
            if self._card_ctx is None:
                self._card_ctx = self._context()
            scard = _scard()
            hresult, readers = scard.SCardListReaders(self._wait_ctx, [])
            if hresult == scard.SCARD_E_NO_SERVICE:
                self._drop_contexts()
                raise ReaderUnavailable(f"pcscd stopped: {_words(hresult)}")
            if hresult not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_NO_READERS_AVAILABLE):
                raise ReaderUnavailable(f"PC/SC: cannot list readers: {_words(hresult)}")
            readers = list(readers or [])
            match = [r for r in readers if r == self.name] or [
                r for r in readers if self.name.lower() in r.lower()]
            if not match:
                listed = ", ".join(readers) or "none"
                raise ReaderUnavailable(
                    f"no PC/SC reader {'matching ' + repr(self.name) if self.name else ''} "
                    f"(pcscd lists: {listed}): is the reader plugged in?")
            self._reader = match[0]

    def _drop_contexts(self) -> None:
        scard = _scard()
        for ctx in (self._wait_ctx, self._card_ctx):
            if ctx is not None:
                scard.SCardReleaseContext(ctx)
        self._wait_ctx = self._card_ctx = None
        self._card = None
        self._reported = False  # a new daemon: the slot is reported anew

    def _state(self, current: int, timeout_ms: int) -> tuple[int, int, bytes]:
        """SCardGetStatusChange on the reader: (hresult, event state, ATR)."""
        scard = _scard()
        hresult, states = scard.SCardGetStatusChange(
            self._wait_ctx, timeout_ms, [(self._reader, current)])
        if hresult != scard.SCARD_S_SUCCESS or not states:
            return hresult, 0, b""
        _, event, atr = states[0]
        return hresult, int(event), bytes(atr)

    # ---- CardReader ----------------------------------------------------------------------

    async def version(self) -> str:
        await asyncio.to_thread(self._open)
        return f"PC/SC {self._reader}"

    async def read(self, *, magstripe: bool = True, chip: bool = True,
                   timeout_s: float = 60.0) -> ReaderEvent:
        """Waits for the chip slot's next change the terminal was not told about (magstripe is
        ignored: no stripe head); a cancel stops the wait at once (SCardCancel)."""
        await asyncio.to_thread(self._open)
        if not chip:  # a stripe-only arm: nothing on this reader can answer it
            await asyncio.sleep(timeout_s if timeout_s > 0 else float("inf"))
            return ReadTimedOut()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s if timeout_s > 0 else None
        stop = threading.Event()
        wait = asyncio.ensure_future(asyncio.to_thread(self._wait_event, deadline, loop, stop))
        try:
            return await asyncio.shield(wait)
        except asyncio.CancelledError:
            stop.set()
            self._cancel_wait()
            # The worker returns at once on SCARD_E_CANCELLED; wait for it so the next arm
            # starts from a quiet context (bounded: a stuck pcscd does not hold the cancel).
            await asyncio.wait({wait}, timeout=2.0)
            if wait.done() and not wait.cancelled() and wait.exception() is None \
                    and isinstance(wait.result(), ChipInserted):
                # The insertion crossed the cancel and nobody took it: the next arm reports it
                # again (as the reader link does, docs/reader-link.md).
                self._reported = False
            raise

    def _cancel_wait(self) -> None:
        if self._wait_ctx is not None:
            _scard().SCardCancel(self._wait_ctx)

    def _wait_event(self, deadline: float | None, loop: asyncio.AbstractEventLoop,
                    stop: threading.Event) -> ReaderEvent:
        scard = _scard()
        current = scard.SCARD_STATE_UNAWARE  # the first round answers at once: the slot as it is
        while not stop.is_set():
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return ReadTimedOut()
            # Waits in slices: a cancel that lands between two calls (SCardCancel then has
            # nothing to cancel) still ends this thread within one slice.
            timeout_ms = int(min(_SLICE_S, left if left is not None else _SLICE_S) * 1000)
            hresult, event, atr = self._state(current, 0 if current == 0 else max(1, timeout_ms))
            if hresult in (scard.SCARD_E_TIMEOUT, scard.SCARD_E_CANCELLED):
                continue
            if hresult in (scard.SCARD_E_NO_SERVICE, scard.SCARD_F_COMM_ERROR):
                with self._lock:  # a dead daemon's contexts are dead too: the next read opens anew
                    self._drop_contexts()
                raise ReaderUnavailable(f"pcscd stopped during the wait: {_words(hresult)}")
            if hresult != scard.SCARD_S_SUCCESS:
                raise ReaderUnavailable(f"PC/SC reader {self._reader!r} is gone: "
                                        f"{_words(hresult)}")
            if event & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_UNAVAILABLE):
                raise ReaderUnavailable(f"PC/SC reader {self._reader!r} was unplugged or is "
                                        "unavailable")
            present = bool(event & scard.SCARD_STATE_PRESENT)
            if present and not self._reported:
                if event & scard.SCARD_STATE_MUTE:
                    return ReadFailed("chip not responding (mute card)")
                return self._connect(atr)
            if not present and self._reported:
                self._reported = False
                self._card_thread.submit(self._disconnect, scard.SCARD_LEAVE_CARD).result()
                return ChipRemoved()
            current = event & ~scard.SCARD_STATE_CHANGED
        return ReadTimedOut()  # nobody awaits it: the read was cancelled

    def _connect(self, atr: bytes) -> ReaderEvent:
        result = self._card_thread.submit(self._connect_card).result()
        if isinstance(result, ReadFailed):
            return result
        self._reported = True
        log.info("chip card in %s (ATR %d bytes, T=%d)", self._reader, len(atr),
                 0 if self._protocol == _scard().SCARD_PROTOCOL_T0 else 1)
        return ChipInserted(atr=atr)

    def _connect_card(self) -> ReadFailed | None:
        scard = _scard()
        self._disconnect(scard.SCARD_LEAVE_CARD)
        hresult, card, protocol = scard.SCardConnect(
            self._card_ctx, self._reader, scard.SCARD_SHARE_EXCLUSIVE,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        if hresult != scard.SCARD_S_SUCCESS:
            return ReadFailed(f"chip not responding: {_words(hresult)}")
        self._card, self._protocol = card, int(protocol)
        return None

    def _disconnect(self, disposition: int) -> None:
        if self._card is not None:
            _scard().SCardDisconnect(self._card, disposition)
            self._card = None

    async def transmit(self, apdu: bytes, timeout_s: float = 5.0) -> bytes:
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._card_thread, self._exchange, bytes(apdu))
        done, _ = await asyncio.wait({work}, timeout=timeout_s)
        if not done:
            # PC/SC has no transmit timeout; the worker ends when pcscd gives up on the card.
            raise ChipGone(f"the chip did not answer within {timeout_s:g} s (mute card)")
        return work.result()

    def _transmit_once(self, apdu: bytes) -> bytes:
        scard = _scard()
        if self._card is None:
            raise ChipGone("no chip card connected (no ChipInserted, or it was powered off)")
        hresult, response = scard.SCardTransmit(self._card, self._protocol, list(apdu))
        if hresult == scard.SCARD_S_SUCCESS and len(response) >= 2:
            return bytes(response)
        # The session is over whatever happened; the handle goes too (it is exclusive: kept, it
        # would refuse the next connect with a sharing violation).
        self._disconnect(scard.SCARD_LEAVE_CARD)
        if hresult in (scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD,
                       scard.SCARD_W_RESET_CARD, scard.SCARD_E_NOT_TRANSACTED,
                       scard.SCARD_W_UNPOWERED_CARD):
            raise ChipGone(f"the chip card was removed or reset during the exchange: "
                           f"{_words(hresult)}")
        if hresult == scard.SCARD_W_UNRESPONSIVE_CARD:
            raise ChipGone(f"the chip card stopped answering: {_words(hresult)}")
        if hresult in (scard.SCARD_E_NO_SERVICE, scard.SCARD_F_COMM_ERROR,
                       scard.SCARD_E_READER_UNAVAILABLE, scard.SCARD_E_UNKNOWN_READER):
            raise ReaderUnavailable(f"PC/SC reader {self._reader!r} is gone: {_words(hresult)}")
        if hresult == scard.SCARD_S_SUCCESS:  # vpcd's answer when the card left mid-command
            raise ChipGone(f"the chip card was removed or stopped answering during the exchange"
                           f" ({len(response)} bytes, no status word)")
        raise ChipGone(f"the chip exchange failed: {_words(hresult)}")

    def _exchange(self, apdu: bytes) -> bytes:
        """One command with T=0's rules applied (61xx: GET RESPONSE, 6Cxx: resend with Le=xx);
        under T=1 the card's answer is already whole and passes as it is."""
        response = self._transmit_once(apdu)
        if self._protocol != _scard().SCARD_PROTOCOL_T0:
            return response
        data = b""
        for _ in range(_MAX_CHAINED):
            sw1, sw2 = response[-2], response[-1]
            if sw1 == 0x6C:  # wrong Le: the same command again with the length the card wants
                response = self._transmit_once(self._with_le(apdu, sw2))
                continue
            if sw1 == 0x61:  # more data: fetch it
                data += response[:-2]
                response = self._transmit_once(_GET_RESPONSE + bytes([sw2]))
                continue
            return data + response
        raise ChipGone("the chip card kept answering 61xx/6Cxx: transport loop stopped")

    @staticmethod
    def _with_le(apdu: bytes, le: int) -> bytes:
        """The command with its Le byte replaced (case 2 or 4; a case 1/3 gets one appended)."""
        if len(apdu) == 5 or (len(apdu) > 5 and len(apdu) == 5 + apdu[4] + 1):
            return apdu[:-1] + bytes([le])
        return apdu + bytes([le])

    async def chip_present(self) -> bool:
        await asyncio.to_thread(self._open)

        def probe() -> bool:
            scard = _scard()
            hresult, event, _ = self._state(scard.SCARD_STATE_UNAWARE, 0)
            if hresult != scard.SCARD_S_SUCCESS:
                raise ReaderUnavailable(f"PC/SC reader {self._reader!r}: {_words(hresult)}")
            return bool(event & scard.SCARD_STATE_PRESENT)

        return await asyncio.to_thread(probe)

    async def power_off(self) -> None:
        """Deactivates the card (SCardDisconnect with unpower); it stays reported until removed."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._card_thread, self._disconnect,
                                   _scard().SCARD_UNPOWER_CARD)

    async def beep(self, ms: int = 100) -> None:
        """PC/SC has no standard beeper command: nothing to do."""

    async def led(self, colour: str, on: bool) -> None:
        """PC/SC has no standard LED command: nothing to do."""

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_wait()
        if self._card_ctx is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._card_thread, self._disconnect, _scard().SCARD_UNPOWER_CARD)
        self._card_thread.shutdown(wait=False)
        with self._lock:
            self._drop_contexts()
