"""A CardReader on the framed serial link of docs/reader-link.md (UART, USB-serial or a pty).

Owns the port (drivers.serial_io.SerialPort), the one task that reads it, matching
replies to commands by SEQ, events to the pending arm, reopening a reader that
hung up or went silent, and the terminal's side of a chip session (P, W/X/G, O).

Theory of operation:
- The pump task is the only reader of the port. It blocks in the pump's read_until
  (no deadline) in a worker thread, so an idle terminal uses no CPU, and decodes what
  each read returns at once. While a partial frame is held the read gets a 50 ms
  deadline instead: if nothing comes, the frame was cut short and flush() drops it.
  The decoder hands each read's frames back as records in one bytes object (no object
  per frame, c_ext/FRAMING.md); each payload goes from there to _dispatch: replies
  resolve the future waiting on their SEQ, events resolve the pending arm if their SEQ
  is the arm's, everything else is counted and dropped (a late event never reaches a
  later read).
- Commands write their frame and wait reply_timeout_s for the reply; with no reply
  they send the same frame again (same SEQ) once. Writes are serialised by a lock
  that also guards opening and closing the port.
- The link is "up" once the reader answered `V` on an open port. When the port hangs
  up, the pump closes it and the link goes down; whoever needs the reader waits for
  the connect task, which reopens the port with back-off and probes `V`. A pending
  read re-arms itself (new SEQ, the time left) once the link is up again.
- Cancelling read() writes `C` at once from the cancelled task and returns; a
  background task waits for `c` and, if it never comes, marks the link down so the
  next command probes `V` first.
- Chip: transmit() powers the card (`P`) at the first APDU of a session, sends the APDU
  (`W` parts and `X`), fetches a long response (`G`). `X` waits for the card, not the 500 ms
  of other commands: resent once after 500 ms (the reader replays, never re-runs it), then
  up to the APDU timeout; no reply then is a `V` probe: mute card or reader gone. A
  removal, a mute card or a lost link ends the session (_Chip.LOST): every transmit until
  power_off() or the next ChipInserted raises ChipGone at once. A transmit cancelled while
  its `X` is out leaves a background wait for that reply, which the next chip command
  awaits (bounded) so the reader is not busy when it comes.
- PIN pad: this class only carries its frames (`Y`, `J`, `Q`); what they mean is
  drivers/keystore/pinpad.py. `J` waits like `X` (resent once after 500 ms, then until the
  entry's time), and a cancelled wait sends `Q` at once, as a cancelled read sends `C`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import math
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from c_ext import posio
from drivers.reader import ReaderRefused
from drivers.reader import link_protocol as lp
from drivers.serial_io import PortGone, SerialPort
from firmware.ports import (
    ChipGone,
    ChipInserted,
    ChipRemoved,
    ReaderEvent,
    ReaderUnavailable,
    ReadFailed,
    ReadTimedOut,
)

__all__ = ["SerialLinkReader"]

log = logging.getLogger(__name__)

INTER_BYTE_GAP_MS = 50  # docs/reader-link.md: a longer pause ends (and drops) a partial frame
READ_MAX = 4096
WRITE_DEADLINE_MS = 500
CANCEL_WRITE_DEADLINE_MS = 20  # written from the cancelled task itself: must not hold it up
# How long after its timeout a reader may be late with `T` before the driver stops waiting.
TIMEOUT_GRACE_S = 1.0
# While a cancel stops the pump's blocked read, how often the cancel is repeated: the
# pump drains stale cancel bytes when it starts a read, which can swallow one.
_CANCEL_REPEAT_S = 0.05


class _LinkLost(Exception):
    """The port hung up (or is closed) while a command was under way."""


class _NoAnswer(Exception):
    """A command got no reply after its retry."""


class _Chip(enum.Enum):
    IDLE = 1  # no session: the next transmit powers the card
    POWERED = 2  # P answered: APDUs go to the card
    LOST = 3  # removed, mute or the link lost: ChipGone until power_off() or a new card


class _Wake(enum.Enum):
    EVENT = 1
    LINK_DOWN = 2
    GUARD = 3


@dataclass
class _Arm:
    magstripe: bool
    chip: bool
    deadline: float | None  # loop time the reader's timeout ends, None = no timeout
    future: asyncio.Future[ReaderEvent]
    seq: int | None = None  # SEQ of the A the reader holds (changes when re-armed)
    held: bool = False  # the reader acknowledged that A: a card presented now reaches this read


@dataclass
class _Waiter:
    expected: str  # reply letter
    future: asyncio.Future[lp.Message]


# Line errors on a noisy link are counted and logged at most this often while frames flow.
LINE_ERRORS_LOG_INTERVAL_S = 1.0


@dataclass
class LinkStats:
    """What the link has put up with since the reader was created (counts only, never bytes)."""

    noise_bytes: int = 0
    bad_checksum: int = 0
    bad_length: int = 0
    bad_etx: int = 0
    truncated: int = 0
    bad_messages: int = 0  # good frames whose payload broke the protocol
    stray_replies: int = 0  # replies nobody waits for (late answers to a retried command)
    stale_events: int = 0  # events for an arm that was cancelled or replaced
    retries: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class SerialLinkReader:
    """firmware.ports.CardReader over docs/reader-link.md.

    reconnect_window_s bounds how long a command (or a read without a timeout) waits
    for a reader that is gone; a read with a timeout waits at most that timeout.
    """

    def __init__(self, path: str, *, baudrate: int = 115200, reply_timeout_s: float = 0.5,
                 reopen_backoff_s: tuple[float, float] = (0.1, 2.0),
                 reconnect_window_s: float = 5.0,
                 decoder: posio.LinkDecoder | None = None) -> None:
        self.path = path
        self.reply_timeout_s = reply_timeout_s
        self.reopen_backoff_s = reopen_backoff_s
        self.reconnect_window_s = reconnect_window_s
        self._stats = LinkStats()
        self._line_errors_due = 0.0  # monotonic time the next per-read count is due
        self._port = SerialPort(path, baudrate)
        # The C decoder unless told otherwise (tests and tests/bench pass c_ext.reference's twin).
        self._decoder = posio.FrameDecoder() if decoder is None else decoder
        self._decoder_seen = dict.fromkeys(self._decoder.errors, 0)
        self._line_errors_seen = 0  # the decoder's line_errors when _decoder_seen was taken
        self._io_lock = threading.Lock()  # port open/close/write
        self._seq = 0
        self._replies: dict[int, _Waiter] = {}
        self._arm: _Arm | None = None
        self.events_taken = 0  # events handed to a read (stats.stale_events: the ones dropped)
        self._closed = False
        self._broken = False  # the pump died of a bug: refuse calls rather than hang
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._link_waiters = 0
        self._last_problem = "it has not answered yet"
        self._reopen_wanted = False
        self._chip_known_present = False  # the last chip event handed out was K
        self._removal_pending = False  # an R came while no chip read was pending
        self._version: str | None = None
        self._chip = _Chip.IDLE
        self._chip_lost = ""  # why the session is LOST, in words
        self._atr = b""
        self._abandoned: asyncio.Task[None] | None = None  # waits for a cancelled P/X's reply
        self._chip_lock: asyncio.Lock | None = None
        # A `Q` went out for the `J` being awaited: that `J` is never resent (a resend after the
        # `Q` would start a new entry nobody waits for).
        self._entry_cancel_sent = False
        # Created on the loop, in _start().
        self._port_open: asyncio.Event
        self._port_closed: asyncio.Event
        self._link_up: asyncio.Event
        self._link_down: asyncio.Event

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("up" if self._loop and self._link_up.is_set() else "down")
        return f"SerialLinkReader({self.path!r}, link={state})"

    # ---- CardReader ----------------------------------------------------------

    async def version(self) -> str:
        reply = await self._command(lp.VERSION)
        self._version = reply.body.decode("ascii", "replace")
        return self._version

    async def beep(self, ms: int = 100) -> None:
        await self._command(lp.BEEP, lp.beep_body(ms))

    async def led(self, colour: str, on: bool) -> None:
        await self._command(lp.LED, lp.led_body(colour, on))

    async def status(self) -> tuple[bool, bool]:
        """(armed, chip present) as the reader sees it."""
        reply = await self._command(lp.STATUS)
        return lp.parse_status(reply.body)

    async def read(self, *, magstripe: bool = True, chip: bool = True,
                   timeout_s: float = 60.0) -> ReaderEvent:
        """Arms the reader and waits for one event (see firmware.ports.CardReader.read).

        timeout_s is rounded up to whole seconds (the link's unit); 0 or less = no timeout.
        """
        if not (magstripe or chip):
            raise ValueError("read() needs magstripe, chip or both")
        timeout_field = lp.timeout_field(timeout_s)
        loop = await self._start()
        if self._arm is not None:
            raise RuntimeError("a read is already pending on this reader")
        if self._chip is _Chip.POWERED:
            # The reader refuses A (busy) while the card is powered: say so before sending it.
            raise ReaderRefused(f"the card reader on {self.path} holds a powered chip card: end the "
                                f"chip session with power_off() before reading")
        if chip and self._removal_pending:
            # The card the terminal was told about left while nobody was reading.
            self._removal_pending = False
            self._chip_known_present = False
            return ChipRemoved()
        deadline = loop.time() + timeout_field if timeout_field else None
        arm = _Arm(magstripe, chip, deadline, loop.create_future())
        self._arm = arm
        try:
            event = await self._run_read(arm)
        except asyncio.CancelledError:
            self._disarm(arm)
            raise
        finally:
            self._arm = None
        if isinstance(event, ChipInserted):
            self._chip_known_present = True
            self._chip, self._chip_lost = _Chip.IDLE, ""  # a new card: a new session
        elif isinstance(event, ChipRemoved):
            self._chip_known_present = False
            self._chip_gone("the chip card was removed")
        return event

    # ---- chip ----------------------------------------------------------------

    async def transmit(self, apdu: bytes, timeout_s: float = 5.0) -> bytes:
        """One command APDU to the inserted chip card; its response (data + SW1 SW2).

        Powers the card (`P`) at the first APDU of a session. Raises ChipGone (removed, mute,
        no card, no chip slot, or a session that already ended: words say which),
        ReaderUnavailable if the reader is gone, ValueError for an APDU of a bad length.
        """
        parts = lp.apdu_parts(bytes(apdu))  # LinkError (a ValueError) before anything is sent
        loop = await self._start()
        deadline = loop.time() + timeout_s
        async with self._chip_guard():
            await self._settle_abandoned(deadline)
            if self._chip is _Chip.LOST:
                raise ChipGone(self._chip_lost)
            if self._chip is _Chip.IDLE:
                await self._power_on(deadline)
            for cmd, body in parts[:-1]:
                await self._chip_simple(cmd, body, deadline)
            cmd, body = parts[-1]
            reply = await self._chip_exchange(cmd, body, deadline)
            answer = self._chip_reply(reply, exchange=True)
            rapdu = answer.data
            while len(rapdu) < answer.total:
                more = await self._chip_simple(lp.GET_PART, len(rapdu).to_bytes(2, "big"), deadline)
                if not more.body or len(rapdu) + len(more.body) > answer.total:
                    self._bad_message(f"response part of {len(more.body)} bytes at offset {len(rapdu)} "
                                      f"of {answer.total}")
                    self._chip_gone("the reader sent a damaged response; the chip session is over")
                    raise ChipGone(self._chip_lost)
                rapdu += more.body
            return rapdu

    async def power_on(self, timeout_s: float = 5.0) -> bytes:
        """Activates the inserted card (cold reset: a new session) and returns its ATR.
        transmit() does this by itself at a session's first APDU."""
        loop = await self._start()
        deadline = loop.time() + timeout_s
        async with self._chip_guard():
            await self._settle_abandoned(deadline)
            return await self._power_on(deadline)

    async def chip_present(self) -> bool:
        """Whether a chip card sits in the slot now (the reader's `S`)."""
        reply = await self._command(lp.STATUS)
        return lp.parse_status_flags(reply.body)[1]

    async def power_off(self) -> None:
        """Ends the chip session (`O`). Best effort: a reader that is gone lost the session with
        its power, so this never waits for one to come back."""
        loop = await self._start()
        async with self._chip_guard():
            await self._settle_abandoned(loop.time() + self.reconnect_window_s)
            self._chip, self._chip_lost = _Chip.IDLE, ""
            self._atr = b""
            if not self._link_up.is_set():
                return
            try:
                await self._command(lp.POWER_OFF)
            except ReaderUnavailable as exc:
                log.warning("card reader on %s: chip power-off not confirmed (%s)", self.path, exc)

    def _chip_guard(self) -> asyncio.Lock:
        if self._chip_lock is None:
            self._chip_lock = asyncio.Lock()
        return self._chip_lock

    def _chip_gone(self, reason: str) -> None:
        """The session is over (if there was one): later transmits raise ChipGone(reason)."""
        if self._chip is _Chip.POWERED:
            self._lose_chip(reason)

    def _lose_chip(self, reason: str) -> None:
        """No session from now on, whatever the state: transmits raise ChipGone(reason) until
        power_off() or the next ChipInserted."""
        self._chip, self._chip_lost = _Chip.LOST, reason
        log.info("card reader on %s: chip session over: %s", self.path, reason)

    async def _power_on(self, deadline: float) -> bytes:
        reply = await self._chip_exchange(lp.POWER_ON, b"", deadline)
        self._chip = _Chip.POWERED  # a failed P below ends it again, in words
        answer = self._chip_reply(reply, exchange=False)
        self._atr = answer.data
        return answer.data

    def _chip_reply(self, reply: lp.Message, *, exchange: bool) -> lp.ChipReply:
        try:
            answer = lp.parse_chip_reply(reply.body, exchange=exchange)
        except lp.LinkError as exc:
            self._bad_message(str(exc))
            self._lose_chip("the reader sent a damaged chip reply; the chip session is over")
            raise ChipGone(self._chip_lost) from None
        if answer.status is not lp.ChipStatus.OK:
            self._lose_chip(answer.status.words)
            log.info("card reader on %s: chip status %d (%s)", self.path, answer.status, answer.words)
            raise ChipGone(answer.status.words)
        return answer

    async def _chip_simple(self, cmd: str, body: bytes, deadline: float) -> lp.Message:
        """W or G: answered at once, like any command."""
        await self._ensure_link(deadline)
        try:
            reply = await self._exchange(cmd, body)
        except _LinkLost:
            self._chip_gone("the reader link was lost during the chip session")
            raise ReaderUnavailable(f"the card reader on {self.path} hung up during a chip "
                                    f"exchange") from None
        except _NoAnswer as exc:
            self._suspect(str(exc))
            self._chip_gone("the reader stopped answering during the chip session")
            raise ReaderUnavailable(f"the card reader on {self.path} did not answer the "
                                    f"{lp.COMMAND_NAMES[cmd]} command ({exc})") from None
        if reply.type == lp.NAK:  # the card got nothing: the session goes on
            raise ReaderRefused(f"the card reader on {self.path} refused the {lp.COMMAND_NAMES[cmd]} "
                                f"command: {self._nak_words(reply)}")
        return reply

    async def _chip_exchange(self, cmd: str, body: bytes, deadline: float) -> lp.Message:
        """P or X: the reply comes when the card has answered. Resent once (same SEQ) after
        reply_timeout_s, then awaited until the deadline; a cancel leaves it to _abandoned."""
        assert self._loop is not None
        loop = self._loop
        await self._ensure_link(deadline)
        seq = self._next_seq()
        frame = lp.encode(cmd, seq, body)
        waiter = _Waiter(cmd.lower(), loop.create_future())
        self._replies[seq] = waiter
        handed_over = False
        try:
            for attempt in range(2):
                if attempt:
                    self._stats.retries += 1
                try:
                    await self._write(frame)
                except _LinkLost:
                    break  # the pump fails the waiter in words
                left = deadline + self.reply_timeout_s - loop.time()
                wait = min(self.reply_timeout_s, left) if attempt == 0 else left
                done, _ = await asyncio.wait({waiter.future}, timeout=max(0.0, wait))
                if done:
                    break
            if waiter.future.done():
                try:
                    reply = waiter.future.result()
                except _LinkLost:
                    self._chip_gone("the reader link was lost during the chip session")
                    raise ReaderUnavailable(f"the card reader on {self.path} hung up during a chip "
                                            f"exchange; the chip session is lost") from None
                if reply.type == lp.NAK:
                    raise ReaderRefused(f"the card reader on {self.path} refused the "
                                        f"{lp.COMMAND_NAMES[cmd]} command: {self._nak_words(reply)}")
                return reply
        except asyncio.CancelledError:
            if not waiter.future.done():
                # The card may still be working: let its reply arrive before the next command.
                handed_over = True
                self._abandoned = loop.create_task(self._await_abandoned(seq, waiter, deadline))
            raise
        finally:
            if not handed_over:
                self._replies.pop(seq, None)
        # No reply: is it the card or the reader?
        self._replies.pop(seq, None)
        try:
            probe = await self._exchange(lp.VERSION)
        except (_LinkLost, _NoAnswer) as exc:
            self._suspect(f"no reply to a chip command nor to V ({exc})")
            self._chip_gone("the reader stopped answering during the chip session")
            raise ReaderUnavailable(f"the card reader on {self.path} does not answer "
                                    f"({lp.COMMAND_NAMES[cmd]}, then V)") from None
        del probe
        self._lose_chip("the chip card does not respond (no answer in time)")
        raise ChipGone(f"the chip card does not respond: no answer to the {lp.COMMAND_NAMES[cmd]} "
                       f"command in {self.reply_timeout_s + max(0.0, deadline - loop.time()):.1f} s")

    async def _await_abandoned(self, seq: int, waiter: _Waiter, deadline: float) -> None:
        """The reply to a cancelled P/X: dropped (counted), but its chip status still counts."""
        assert self._loop is not None
        try:
            left = deadline + self.reply_timeout_s - self._loop.time()
            done, _ = await asyncio.wait({waiter.future}, timeout=max(0.0, left))
            if not done:
                return
            try:
                reply = waiter.future.result()
            except _LinkLost:
                self._chip_gone("the reader link was lost during the chip session")
                return
            self._stats.stray_replies += 1  # nobody takes it
            if reply.type != lp.NAK and reply.body and reply.body[0] != lp.ChipStatus.OK:
                self._lose_chip(lp.ChipStatus(reply.body[0]).words
                                if reply.body[0] <= max(lp.ChipStatus) else "chip error")
        finally:
            self._replies.pop(seq, None)

    async def _settle_abandoned(self, deadline: float) -> None:
        task = self._abandoned
        if task is None or task.done():
            self._abandoned = None
            return
        assert self._loop is not None
        done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - self._loop.time()))
        if not done:
            raise ChipGone("the reader is still busy with an earlier, cancelled exchange")
        self._abandoned = None

    # ---- PIN pad transport (what the frames mean: drivers/keystore/pinpad.py) ----------

    async def pinpad_command(self, body: bytes) -> lp.Message:
        """One `Y` (a PIN pad key operation; body from lp.pad_body) and its `y` reply, or the
        `n` that refused it. ReaderUnavailable when the reader does not answer."""
        return await self._command(lp.PINPAD, body, nak_ok=True)

    async def pin_entry(self, body: bytes, wait_s: float) -> lp.Message | None:
        """Sends `J` (body from lp.pin_entry_body) and returns its `j` (or the `n` that refused
        it), which comes when the entry ends: resent once (same SEQ) after reply_timeout_s, as
        `X`, then awaited until wait_s from now. None when no reply came by then.
        ReaderUnavailable when the reader is gone or hangs up. Cancelling the awaiting task
        writes `Q` at once (the pad stops; its `j` to this `J` is dropped when it comes)."""
        loop = await self._start()
        deadline = loop.time() + wait_s
        await self._ensure_link(min(deadline, loop.time() + self.reconnect_window_s))
        seq = self._next_seq()
        frame = lp.encode(lp.PIN_ENTRY, seq, body)
        waiter = _Waiter(lp.PIN_ENTRY.lower(), loop.create_future())
        self._replies[seq] = waiter
        self._entry_cancel_sent = False
        try:
            for attempt in range(2):
                if attempt and self._entry_cancel_sent:
                    await asyncio.wait({waiter.future}, timeout=max(0.0, deadline - loop.time()))
                    break
                if attempt:
                    self._stats.retries += 1
                try:
                    await self._write(frame)
                except _LinkLost as exc:
                    raise ReaderUnavailable(f"the card reader on {self.path} is gone: the PIN "
                                            f"entry could not start ({exc})") from None
                wait = self.reply_timeout_s if attempt == 0 else deadline - loop.time()
                done, _ = await asyncio.wait({waiter.future}, timeout=max(0.0, wait))
                if done:
                    break
            if not waiter.future.done():
                return None
            try:
                reply = waiter.future.result()
            except _LinkLost:
                raise ReaderUnavailable(f"the card reader on {self.path} hung up during a PIN "
                                        f"entry") from None
            return reply
        except asyncio.CancelledError:
            if not waiter.future.done():
                self._cancel_pin_entry_now()
            raise
        finally:
            self._replies.pop(seq, None)

    async def cancel_pin_entry(self) -> bool:
        """`Q`: the pad ends a running entry (its `J` is answered `cancelled` before this `q`).
        True if an entry was running."""
        self._entry_cancel_sent = True
        reply = await self._command(lp.PIN_CANCEL)
        return reply.body[:1] == b"\x01"

    def _cancel_pin_entry_now(self) -> None:
        """Writes `Q` at once from the calling (cancelled) task, like _disarm's `C`."""
        if not self._port.is_open or self._loop is None:
            return  # gone: the pad lost the entry with the link
        self._entry_cancel_sent = True
        seq = self._next_seq()
        frame = lp.encode(lp.PIN_CANCEL, seq)
        waiter = _Waiter(lp.PIN_CANCEL.lower(), self._loop.create_future())
        self._replies[seq] = waiter
        try:
            self._write_now(frame, CANCEL_WRITE_DEADLINE_MS)
        except _LinkLost:
            self._replies.pop(seq, None)
            return
        self._spawn(self._confirm_cancel(seq, frame, waiter))

    async def close(self) -> None:
        """Stops the pump and closes the port; every later call raises ReaderUnavailable."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._connect_task, self._abandoned, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        pump = self._pump_task
        if pump is not None:
            pump.cancel()
            while not pump.done():
                self._port.cancel_pending_read()
                await asyncio.wait({pump}, timeout=_CANCEL_REPEAT_S)
        if tasks:
            await asyncio.wait(tasks)
        self._fail_waiters(_LinkLost("the reader driver was closed"))
        with self._io_lock:
            self._port.dispose()

    def waiting_for_card(self) -> bool:
        """A read is pending and the reader holds its arm (acknowledged, not given up): a card
        swiped now is this read's. (An arm being given up lingers in the reader until it has
        read the cancel; a card swiped into it is dropped as stale.)"""
        arm = self._arm
        return arm is not None and arm.held and arm.seq is not None and not arm.future.done()

    @property
    def stats(self) -> LinkStats:
        """The link's counters, line errors the decoder counted since the last read included."""
        if self._decoder.line_errors != self._line_errors_seen:
            self._count_line_errors()
        return self._stats

    @property
    def link_stats(self) -> dict[str, int]:
        return self.stats.as_dict()

    # ---- reading -------------------------------------------------------------

    async def _run_read(self, arm: _Arm) -> ReaderEvent:
        loop = asyncio.get_running_loop()
        unanswered = 0
        while True:
            # The reader may be gone: wait for it as long as the read would have waited.
            gone_by = arm.deadline if arm.deadline is not None else loop.time() + self.reconnect_window_s
            await self._ensure_link(gone_by)
            seconds = 0
            if arm.deadline is not None:
                seconds = max(1, math.ceil(arm.deadline - loop.time()))
            body = lp.arm_body(arm.magstripe, arm.chip, seconds)
            arm.seq, arm.held = self._next_seq(), False
            try:
                reply = await self._exchange(lp.ARM, body, seq=arm.seq)
            except _LinkLost:
                continue
            except _NoAnswer as exc:
                self._suspect(str(exc))
                unanswered += 1
                if unanswered == 3:  # it answers V but never A: retrying will not help
                    raise ReaderUnavailable(f"the card reader on {self.path} does not answer the arm "
                                            f"command ({exc})") from None
                continue
            unanswered = 0
            if reply.type == lp.NAK:
                raise ReaderRefused(f"the card reader on {self.path} refused to arm: "
                                    f"{self._nak_words(reply)}")
            arm.held = arm.seq is not None  # not if it was disarmed while the A was out
            wake = await self._wait_event(arm)
            if wake is _Wake.EVENT:
                return arm.future.result()
            if wake is _Wake.LINK_DOWN:
                log.info("card reader on %s: link lost during a read; re-arming once it answers", self.path)
                continue
            # The reader's own timeout should have ended the arm with T by now.
            log.warning("card reader on %s did not report its read timeout; disarming it", self.path)
            self._disarm(arm)
            return ReadTimedOut()

    async def _wait_event(self, arm: _Arm) -> _Wake:
        loop = asyncio.get_running_loop()
        guard = None
        if arm.deadline is not None:
            guard = max(0.0, arm.deadline + TIMEOUT_GRACE_S + self.reply_timeout_s - loop.time())
        link_down = loop.create_task(self._link_down.wait())
        waiting: set[asyncio.Future[Any]] = {arm.future, link_down}
        try:
            await asyncio.wait(waiting, timeout=guard,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            link_down.cancel()
        if arm.future.done():
            return _Wake.EVENT
        return _Wake.LINK_DOWN if link_down.done() and not link_down.cancelled() else _Wake.GUARD

    def _disarm(self, arm: _Arm) -> None:
        """Sends `C` for an arm the terminal gave up on, at once, from the calling task."""
        if arm.seq is None or not self._port.is_open:
            return  # never armed, or the reader is gone and lost its arm with it
        arm.seq = None  # anything still in flight for it is stale now
        seq = self._next_seq()
        frame = lp.encode(lp.CANCEL, seq)
        assert self._loop is not None
        waiter = _Waiter("c", self._loop.create_future())
        self._replies[seq] = waiter
        try:
            # Synchronous on purpose: the C must be on the wire before any later command.
            self._write_now(frame, CANCEL_WRITE_DEADLINE_MS)
        except _LinkLost:
            self._replies.pop(seq, None)
            return
        self._spawn(self._confirm_cancel(seq, frame, waiter))

    async def _confirm_cancel(self, seq: int, frame: bytes, waiter: _Waiter) -> None:
        try:
            for attempt in range(2):
                if attempt:
                    self._stats.retries += 1
                    await self._write(frame)
                done, _ = await asyncio.wait({waiter.future}, timeout=self.reply_timeout_s)
                if done:
                    waiter.future.result()  # _LinkLost if the port hung up meanwhile
                    return
            self._suspect("it did not answer a cancel")
        except _LinkLost:
            pass  # gone: it lost its arm with the link
        finally:
            self._replies.pop(seq, None)

    # ---- commands ------------------------------------------------------------

    async def _command(self, cmd: str, body: bytes = b"", *, nak_ok: bool = False) -> lp.Message:
        """Sends one command (reconnecting within the window) and returns its reply; a NAK
        raises ReaderRefused, or is returned with nak_ok."""
        loop = await self._start()
        name = lp.COMMAND_NAMES[cmd]
        deadline = loop.time() + self.reconnect_window_s
        for _attempt in range(3):
            await self._ensure_link(deadline)
            try:
                reply = await self._exchange(cmd, body)
            except _LinkLost:
                continue  # hung up under us: wait for it to come back, within the window
            except _NoAnswer as exc:
                self._suspect(str(exc))
                raise ReaderUnavailable(f"the card reader on {self.path} did not answer the {name} "
                                        f"command ({exc})") from None
            if reply.type == lp.NAK and not nak_ok:
                raise ReaderRefused(f"the card reader on {self.path} refused the {name} command: "
                                    f"{self._nak_words(reply)}")
            return reply
        raise ReaderUnavailable(f"the card reader on {self.path} keeps hanging up: {self._last_problem}")

    async def _exchange(self, cmd: str, body: bytes = b"", *, seq: int | None = None) -> lp.Message:
        """Sends one command and returns its reply or NAK; one retry with the same SEQ."""
        assert self._loop is not None
        if seq is None:
            seq = self._next_seq()
        frame = lp.encode(cmd, seq, body)
        waiter = _Waiter(cmd.lower(), self._loop.create_future())
        self._replies[seq] = waiter
        try:
            for attempt in range(2):
                if attempt:
                    self._stats.retries += 1
                await self._write(frame)
                # asyncio.wait, not wait_for: on 3.11 wait_for swallows a cancel that
                # arrives together with the reply, and an operator CANCEL must never be lost.
                done, _ = await asyncio.wait({waiter.future}, timeout=self.reply_timeout_s)
                if done:
                    return waiter.future.result()
            raise _NoAnswer(f"no reply to {lp.COMMAND_NAMES[cmd]} in 2 tries of {self.reply_timeout_s} s")
        finally:
            self._replies.pop(seq, None)

    def _next_seq(self) -> int:
        busy = set(self._replies)
        if self._arm is not None and self._arm.seq is not None:
            busy.add(self._arm.seq)
        for _ in range(256):
            self._seq = (self._seq + 1) & 0xFF
            if self._seq not in busy:
                return self._seq
        raise RuntimeError("all 256 SEQ numbers are waiting for replies")

    @staticmethod
    def _nak_words(reply: lp.Message) -> str:
        try:
            return lp.parse_nak(reply.body).words
        except lp.LinkError as exc:
            return f"a malformed NAK ({exc})"

    async def _write(self, frame: bytes) -> None:
        await asyncio.to_thread(self._write_now, frame, WRITE_DEADLINE_MS)

    def _write_now(self, frame: bytes, deadline_ms: int) -> None:
        with self._io_lock:
            if not self._port.is_open:
                raise _LinkLost(f"{self.path} is not open")
            try:
                self._port.write(frame, deadline_ms)
            except posio.WriteTimeout as exc:
                raise _LinkLost(f"{self.path}: the reader does not take data ({exc})") from None
            except PortGone as exc:
                raise _LinkLost(str(exc)) from None

    # ---- the link: start, connect, lose --------------------------------------

    async def _start(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise ReaderUnavailable(f"the card reader driver for {self.path} is closed")
        if self._broken:
            raise ReaderUnavailable(f"the card reader on {self.path} cannot be used: {self._last_problem}")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._port_open = asyncio.Event()
            self._port_closed = asyncio.Event()
            self._port_closed.set()
            self._link_up = asyncio.Event()
            self._link_down = asyncio.Event()
            self._link_down.set()
            self._pump_task = loop.create_task(self._pump(), name=f"reader-pump {self.path}")
            self._pump_task.add_done_callback(self._pump_ended)
        elif self._loop is not loop:
            raise RuntimeError("a SerialLinkReader belongs to the event loop that first used it")
        return loop

    async def _ensure_link(self, deadline: float) -> None:
        if self._link_up.is_set():
            return
        if self._closed:
            raise ReaderUnavailable(f"the card reader driver for {self.path} is closed")
        assert self._loop is not None
        self._link_waiters += 1
        try:
            if self._connect_task is None or self._connect_task.done():
                self._connect_task = self._loop.create_task(self._connect())
            timeout = max(0.0, deadline - self._loop.time())
            try:
                async with asyncio.timeout(timeout):  # unlike wait_for, never eats a cancel
                    await self._link_up.wait()
            except TimeoutError:
                raise ReaderUnavailable(
                    f"the card reader on {self.path} is not available: {self._last_problem}") from None
        finally:
            self._link_waiters -= 1

    async def _connect(self) -> None:
        """Opens the port (with back-off) and probes `V` until the reader answers or nobody waits."""
        delay, longest = self.reopen_backoff_s
        while not self._closed:
            if not self._port_open.is_set():
                try:
                    with self._io_lock:
                        self._port.open()
                except PortGone as exc:
                    self._last_problem = f"its device cannot be opened ({exc})"
                    if not await self._back_off(delay):
                        return
                    delay = min(delay * 2, longest)
                    continue
                self._port_closed.clear()
                self._port_open.set()
            try:
                reply = await self._exchange(lp.VERSION)
            except (_LinkLost, _NoAnswer) as exc:
                self._last_problem = f"it does not answer ({exc})"
                await self._reopen_port()
                if not await self._back_off(delay):
                    return
                delay = min(delay * 2, longest)
                continue
            if reply.type == lp.VERSION.lower():
                self._version = reply.body.decode("ascii", "replace")
            log.info("card reader on %s answers (%s)", self.path, self._version or "version refused")
            self._set_link(True, "")
            return

    async def _back_off(self, delay: float) -> bool:
        """Sleeps before the next attempt; False when nobody is waiting for the reader any more."""
        if self._link_waiters == 0:
            return False
        await asyncio.sleep(delay)
        return self._link_waiters > 0 and not self._closed

    async def _reopen_port(self) -> None:
        """Has the pump close the port (it is the only one that may, its read being on the fd)."""
        if not self._port_open.is_set():
            return
        self._reopen_wanted = True
        while self._port_open.is_set():
            self._port.cancel_pending_read()
            # On timeout the cancel byte was drained before the read began: send another.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CANCEL_REPEAT_S):
                    await self._port_closed.wait()

    def _suspect(self, reason: str) -> None:
        """The reader stopped answering on an open port: the next user probes `V` first."""
        if self._link_up.is_set():
            log.warning("card reader on %s: %s; probing it before the next command", self.path, reason)
        self._set_link(False, reason)

    def _set_link(self, up: bool, problem: str) -> None:
        if up:
            self._link_down.clear()
            self._link_up.set()
        else:
            self._last_problem = problem or self._last_problem
            self._link_up.clear()
            self._link_down.set()

    def _fail_waiters(self, exc: Exception) -> None:
        for waiter in self._replies.values():
            if not waiter.future.done():
                waiter.future.set_exception(exc)
                waiter.future.exception()  # retrieved here: a waiter that already left must not warn

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- the pump --------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            await self._port_open.wait()
            if self._reopen_wanted:
                self._close_port(self._last_problem)  # why it is being reopened
                continue
            # Whatever arrives is decoded at once (inter-byte 0: return after the first read).
            # Only with a partial frame held does the wait get a deadline: the inter-byte gap,
            # after which that frame counts as cut short.
            in_frame = self._decoder.buffered > 0
            try:
                data = await self._port.aread(READ_MAX, 0, INTER_BYTE_GAP_MS if in_frame else -1)
            except posio.ReadCancelled as exc:
                data, in_frame = exc.partial, False
            except PortGone as exc:
                self._close_port(f"its device hung up ({exc})")
                continue
            self._take(data, gap_ended=in_frame and not data)

    def _pump_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Nothing reads the reader any more: every later call fails in words, not silently.
            self._last_problem = f"its driver failed ({task.exception()!r})"
            self._set_link(False, self._last_problem)
            self._broken = True
            log.error("card reader on %s: the reading task failed", self.path, exc_info=task.exception())

    def _close_port(self, reason: str) -> None:
        was_up = self._link_up.is_set()
        with self._io_lock:
            self._port.close()
        self._take(b"", gap_ended=True)  # what the decoder held is lost with the link
        self._decoder.reset()
        self._decoder_seen = dict.fromkeys(self._decoder_seen, 0)
        self._line_errors_seen = 0
        self._reopen_wanted = False
        self._port_open.clear()
        self._port_closed.set()
        self._set_link(False, reason)
        self._fail_waiters(_LinkLost(reason))
        self._chip_gone("the reader link was lost: the chip session with it")
        if was_up:
            self._stats.reconnects += 1
            log.warning("card reader on %s: %s; reopening with back-off when needed", self.path, reason)

    def _take(self, data: bytes, gap_ended: bool) -> None:
        records, count = self._decode(data, gap_ended)
        for start, end in posio.record_spans(records, count):
            self._dispatch(records, start, end)

    def _decode(self, data: bytes, gap_ended: bool) -> tuple[bytes, int]:
        """The frames one read completed (and, when the gap ended it, what flush() found),
        as the decoder's (records, count); line errors go to the stats."""
        decoder = self._decoder
        records, count = decoder.feed_records(data)
        if gap_ended and decoder.buffered:
            more, extra = decoder.flush_records()
            records, count = records + more, count + extra
        # One counter to read per read; the five are compared and logged when it moved, at most
        # once a second on a noisy line (a read's worth of words per 4 KiB would cost more than
        # the decoding and flood the log), at a gap, and whenever the stats are read.
        if decoder.line_errors != self._line_errors_seen and (
                gap_ended or time.monotonic() >= self._line_errors_due):
            self._count_line_errors()
        return records, count

    def _count_line_errors(self) -> None:
        decoder, seen, stats = self._decoder, self._decoder_seen, self._stats
        self._line_errors_seen = decoder.line_errors
        self._line_errors_due = time.monotonic() + LINE_ERRORS_LOG_INTERVAL_S
        now = decoder.errors
        delta = {k: v - seen[k] for k, v in now.items() if v != seen[k]}
        self._decoder_seen = now
        for key, n in delta.items():
            setattr(stats, key, getattr(stats, key) + n)
        # Counts only: the bytes may be card data. The words are built only for a logger
        # that takes them (on a noisy link most reads come here).
        if delta and log.isEnabledFor(logging.WARNING):
            log.warning("card reader on %s: line errors skipped (%s)", self.path,
                        ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in delta.items()))

    def _dispatch(self, records: bytes, start: int, end: int) -> None:
        """Acts on one payload, records[start:end]."""
        try:
            msg = lp.parse(records, start, end)
        except lp.LinkError as exc:
            self._bad_message(str(exc))
            return
        if msg.is_reply:
            waiter = self._replies.get(msg.seq)
            if waiter is None or waiter.future.done():
                self._stats.stray_replies += 1
                log.debug("card reader on %s: reply %r nobody waits for", self.path, msg)
            elif msg.type in (waiter.expected, lp.NAK):
                waiter.future.set_result(msg)
            else:
                self._bad_message(f"reply {msg.type!r} to SEQ {msg.seq}, which waits for {waiter.expected!r}")
            return
        if msg.type not in lp.EVENTS:
            self._bad_message(f"the reader sent {msg.type!r}, which is not an event")
            return
        arm = self._arm
        if arm is not None and arm.seq == msg.seq and not arm.future.done():
            try:
                event = lp.event_from_message(msg)
            except lp.LinkError as exc:
                self._bad_message(str(exc))
                # The reader ended its arm with this event: tell the caller rather than wait forever.
                event = ReadFailed(f"the reader sent a damaged {msg.type!r} event; present the card again")
            arm.future.set_result(event)
            self.events_taken += 1
            return
        if msg.type == lp.CHIP_OUT and self._chip_known_present:
            self._chip_gone("the chip card was removed")
            # The card the terminal was told about left (R unarmed, for the K's arm): news
            # for a chip read, the pending one or else the next.
            if arm is not None and arm.chip and not arm.future.done():
                arm.future.set_result(ChipRemoved())
                self._disarm(arm)  # its own arm got no event: the reader still holds it
            else:
                self._removal_pending = True
            return
        self._stats.stale_events += 1
        log.debug("card reader on %s: dropped stale %r", self.path, msg)

    def _bad_message(self, what: str) -> None:
        self._stats.bad_messages += 1
        log.warning("card reader on %s: dropped a message that breaks the protocol: %s", self.path, what)
