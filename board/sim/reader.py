"""The emulated card reader: docs/reader-link.md spoken over a real pseudo-terminal, as a device would.

Owns the pty pair (and a stable symlink to its slave), the reader's state machine
(armed, chip slot, LEDs, repeated-SEQ replay), the chip slot's session (a ChipCardApp
powered with `P`, APDUs through `W`/`X`/`G`, `O`), the link side of its encrypting PIN pad
(`Y`, `J`, `Q`; the pad's keys and entry are board/sim/pinpad.py) and the control methods tests
and `make run` use to swipe, insert, type on the PIN pad, garble the line or unplug the reader.

Theory of operation: one thread owns the master fd and a wake pipe (selectors). Every
control method is posted to that thread and runs there, so the state has one writer;
readers of the state take the lock. Outgoing frames go through an outbox of
(due time, bytes) chunks, which is how frames are split with pauses between writes.
A chip exchange is answered when the card "has answered": at once, or after the card
delay knob (a slow card), or with status 2 after the card time (a mute card); the card
app is called at that moment, so a card pulled before it never sees the command.
A PIN entry (`J`) is answered the same way, when it ends: a key typed on the pad (the control
port's `pin_keys`), its timeout, or the terminal's `Q`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import os
import selectors
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from board.sim import chipcards
from board.sim.cards import TEST_CARDS, TestCard
from board.sim.chipcard import ChipCardApp
from board.sim.pinpad import KEYS_FILE, PAD_KEYS, EmulatedPinPad, PinPadError
from c_ext import posio
from drivers.reader import link_protocol as lp
from firmware.ports import MagstripeRead

__all__ = ["DEFAULT_ATR", "DEFAULT_CHIP_CARD", "AtrOnlyCard", "Command", "EmulatedReader",
           "ReaderControlError", "make_chip_card"]

log = logging.getLogger(__name__)

DEFAULT_VERSION = "posreader-sim 1.0"
# A plausible EMV ATR (T=1, direct convention); content is not interpreted anywhere.
DEFAULT_ATR = bytes.fromhex("3B6800000073C84013009000")
# The chip card `insert_chip()` (the dev console's `i`) puts in the slot: board.sim.chipcards.
DEFAULT_CHIP_CARD = "cup-debit"
# How long the emulated reader waits for a card's answer before calling it mute (status 2).
DEFAULT_CARD_TIME_S = 3.0
INTER_BYTE_GAP_S = 0.05  # same rule as the terminal: a pause this long ends a partial frame
READ_CHUNK = 4096

T = TypeVar("T")


class ReaderControlError(Exception):
    """A control request the emulated reader cannot carry out; the message says why."""


class AtrOnlyCard:
    """A chip card that has an ATR and no application: every APDU gets 6D00 (INS not supported).
    What `insert_chip(atr)` puts in the slot, for tests of the slot itself."""

    def __init__(self, atr: bytes = DEFAULT_ATR) -> None:
        self.atr = atr

    def power_up(self) -> bytes:
        return self.atr

    def power_down(self) -> None:
        return None

    def apdu(self, command: bytes) -> bytes:
        return b"\x6d\x00"


def make_chip_card(name: str, state_path: Path | None = None) -> ChipCardApp:
    """A test chip card by name from board.sim.chipcards (its counters in state_path, if given:
    a card already seen there goes on from where it was)."""
    if name not in chipcards.CARD_NAMES:
        raise ReaderControlError(f"no chip card named {name!r}; known: {', '.join(chipcards.CARD_NAMES)}")
    card: ChipCardApp = chipcards.make_card(name, state_path=state_path)
    return card


@dataclass(frozen=True)
class Command:
    """One command the terminal sent, as the reader understood it (no card data in commands)."""

    type: str
    seq: int
    args: dict[str, Any] = field(default_factory=dict)
    repeat: bool = False  # same SEQ and payload as the previous command: answered, not acted on
    at: float = 0.0  # time.monotonic() when it arrived


@dataclass
class _Arm:
    seq: int
    magstripe: bool
    chip: bool
    deadline: float | None


@dataclass
class _Pending:
    """A P or X the card has not answered yet."""

    seq: int
    payload: bytes  # the command's whole payload: its repeat is not acted on
    kind: str  # POWER_ON or EXCHANGE
    apdu: bytes
    due: float  # when the card answers (or is declared mute)
    mute: bool


class EmulatedReader:
    """A card reader on a pty; `device_path` is a symlink that always points at the live pty.

        reader = EmulatedReader(link_dir=tmp_path).start()
        driver = SerialLinkReader(str(reader.device_path))
        ...
        reader.swipe(TEST_CARDS["cup_debit"])
        reader.stop()
    """

    def __init__(self, link_dir: str | os.PathLike[str], *, link_name: str = "reader-tty",
                 version: str = DEFAULT_VERSION, card_time_s: float = DEFAULT_CARD_TIME_S,
                 pinpad: bool = True) -> None:
        self.link_dir = Path(link_dir)
        # The PIN pad's secure memory (TEST ONLY, 0600): beside the link, made at start().
        self.pinpad_keys_path: Path | None = self.link_dir / KEYS_FILE if pinpad else None
        self._pad: EmulatedPinPad | None = None
        self._pin_wait: tuple[int, bytes] | None = None  # (SEQ, payload) of the J being typed
        # (SEQ, payload, reply) of the J the last command (a Q) cancelled: a resend of it that
        # crossed the Q is answered again, not started (docs/reader-link.md, the cancel rule).
        self._cancelled_entry: tuple[int, bytes, bytes] | None = None
        self.device_path = self.link_dir / link_name
        self.version = version
        self.card_time_s = card_time_s
        self._wallet: dict[str, ChipCardApp] = {}  # the chip cards by name (_wallet_card)
        # Re-entrant: wait_until() predicates read the public properties, which lock too.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._actions: deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = deque()
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        # pty (emulator thread only, except start/stop)
        self._master = -1
        self._slave = -1
        self._selector: selectors.BaseSelector | None = None
        self._decoder = posio.FrameDecoder()
        self._gap_deadline: float | None = None
        self._outbox: deque[tuple[float, bytes]] = deque()
        # knobs
        self._chunking: tuple[int, float] | None = None
        self._split_next: tuple[tuple[int, ...], float] | None = None
        self._drop_replies = 0
        self._refusals: dict[str, lp.NakReason] = {}
        # device state (written by the thread under the lock)
        self._connected = False
        self._arm: _Arm | None = None
        self._chip_present = False
        self._chip_atr = b""
        self._card: ChipCardApp | None = None
        self._powered = False
        self._apdu_buf = b""  # W parts of the command APDU under way
        self._response = b""  # the last response APDU (for G)
        self._pending: _Pending | None = None
        self._card_delay_s = 0.0
        self._card_mute = False
        self._apdu_log: list[tuple[int, int]] = []  # (INS, length) of each APDU the card got
        self._chip_reported_seq: int | None = None  # SEQ of the arm whose K told the terminal
        self._last_event: tuple[str, int] | None = None  # (type, seq) of the last event sent
        self._last_command: tuple[int, bytes] | None = None
        self._last_reply: bytes | None = None
        self._commands: deque[Command] = deque(maxlen=1000)
        self._leds: dict[str, bool] = dict.fromkeys(lp.LED_COLOURS, False)
        self._beeps: list[int] = []
        self._events_sent: list[str] = []
        self._bad_payloads = 0

    # ---- lifecycle ---------------------------------------------------------

    def start(self) -> EmulatedReader:
        if self._thread is not None:
            raise ReaderControlError("the emulated reader is already running")
        self.link_dir.mkdir(parents=True, exist_ok=True)
        if self.pinpad_keys_path is not None and self._pad is None:
            try:
                self._pad = EmulatedPinPad(self.pinpad_keys_path)
            except PinPadError as exc:
                raise ReaderControlError(str(exc)) from None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._plug_in()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="emulated-reader", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake()
        thread.join(5.0)
        self._thread = None
        if self._master >= 0:
            self._unplug()
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> EmulatedReader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- state the tests read ---------------------------------------------

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._arm is not None

    @property
    def arm_flags(self) -> tuple[bool, bool] | None:
        """(magstripe, chip) of the current arm, or None when idle."""
        with self._lock:
            return None if self._arm is None else (self._arm.magstripe, self._arm.chip)

    @property
    def chip_present(self) -> bool:
        with self._lock:
            return self._chip_present

    @property
    def chip_powered(self) -> bool:
        """A chip session runs (P answered, no O, removal or power-up since)."""
        with self._lock:
            return self._powered

    @property
    def exchanging(self) -> bool:
        """A P or X waits for the card's answer."""
        with self._lock:
            return self._pending is not None

    @property
    def apdus_seen(self) -> list[tuple[int, int]]:
        """(INS, length) of every APDU the card in the slot was given (never the bytes)."""
        with self._lock:
            return list(self._apdu_log)

    @property
    def pinpad(self) -> EmulatedPinPad:
        """The PIN pad's secure memory (its KBPK for a test ceremony, check values). Read it from
        tests between link commands: the reader thread is its only writer."""
        if self._pad is None:
            raise ReaderControlError("this emulated reader has no PIN pad (pinpad=False), or it "
                                     "has not started")
        return self._pad

    @property
    def pin_entry_running(self) -> bool:
        """A `J` waits for the cardholder on the PIN pad."""
        with self._lock:
            return self._pin_wait is not None

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def last_commands(self) -> list[Command]:
        """Every command the terminal sent (latest last; repeats included, marked)."""
        with self._lock:
            return list(self._commands)

    @property
    def beeps(self) -> list[int]:
        """Durations (ms) of the beeps actually sounded (a repeated SEQ does not beep twice)."""
        with self._lock:
            return list(self._beeps)

    @property
    def leds(self) -> dict[str, bool]:
        with self._lock:
            return dict(self._leds)

    @property
    def events_sent(self) -> list[str]:
        """TYPE letters of the events sent so far, in order."""
        with self._lock:
            return list(self._events_sent)

    @property
    def bad_payloads(self) -> int:
        """Frames whose payload had no TYPE/SEQ (dropped; nothing to answer)."""
        with self._lock:
            return self._bad_payloads

    def commands_of(self, cmd_type: str) -> list[Command]:
        return [c for c in self.last_commands if c.type == cmd_type]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
        """Waits (no polling) until predicate() holds after some state change; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if predicate():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)

    def wait_armed(self, timeout: float = 2.0) -> bool:
        return self.wait_until(lambda: self.armed, timeout)

    def wait_command(self, cmd_type: str, count: int = 1, timeout: float = 2.0) -> bool:
        """True once at least `count` commands of this TYPE arrived."""
        return self.wait_until(lambda: len(self.commands_of(cmd_type)) >= count, timeout)

    # ---- card actions ------------------------------------------------------

    def swipe(self, card: TestCard | MagstripeRead | str | tuple[str | None, str | None, str | None]) -> bool:
        """A card pulled through the slot. card: a TestCard, its TEST_CARDS name, a
        MagstripeRead or (track1, track2, track3). True if an event went out (armed for magstripe)."""
        if isinstance(card, str):
            if card not in TEST_CARDS:
                raise ReaderControlError(f"no test card named {card!r}; known: {', '.join(TEST_CARDS)}")
            card = TEST_CARDS[card]
        if isinstance(card, TestCard):
            tracks: tuple[str | None, str | None, str | None] = (card.track1, card.track2, None)
        elif isinstance(card, MagstripeRead):
            tracks = (card.track1, card.track2, card.track3)
        else:
            tracks = tuple(card)  # type: ignore[assignment]
        return self.swipe_raw(*tracks)

    def swipe_raw(self, track1: str | None, track2: str | None, track3: str | None = None,
                  statuses: tuple[int, int, int] | None = None) -> bool:
        """A swipe with explicit tracks and per-track statuses (0 read, 1 blank, 2 unreadable).
        A swipe unreadable on every track goes out as `E` 1, as the protocol says."""
        tracks = (track1, track2, track3)
        if statuses is None:
            status3 = tuple(lp.TrackStatus.READ if t else lp.TrackStatus.BLANK for t in tracks)
        else:
            status3 = tuple(lp.TrackStatus(s) for s in statuses)
        if all(s is lp.TrackStatus.UNREADABLE for s in status3):
            return self.read_error(lp.ReadErrorCode.SWIPE_UNREADABLE, "parity error on every track")
        try:
            body = lp.magstripe_body(tracks, status3)  # type: ignore[arg-type]
        except lp.LinkError as exc:
            raise ReaderControlError(f"cannot encode that swipe: {exc}") from None
        return self._call(lambda: self._event_if_armed(lp.MAGSTRIPE, body, needs="magstripe"))

    def insert_chip(self, card: ChipCardApp | str | bytes | None = None) -> bool:
        """A card into the chip slot: a ChipCardApp, a board.sim.chipcards name, an ATR (a card
        without an application: AtrOnlyCard) or None for DEFAULT_CHIP_CARD. True if `K` went
        out (armed for chip)."""
        if card is None:
            card = DEFAULT_CHIP_CARD
        if isinstance(card, str):
            app = self._wallet_card(card)
        elif isinstance(card, bytes | bytearray):
            app = AtrOnlyCard(bytes(card))
        else:
            app = card
        atr = bytes(app.atr)
        if len(atr) > lp.ATR_MAX:
            raise ReaderControlError(f"an ATR is at most {lp.ATR_MAX} bytes, got {len(atr)}")
        return self._call(lambda: self._insert(app, atr))

    def _wallet_card(self, name: str) -> ChipCardApp:
        """The one card of that name this reader has seen: a card's counters (its ATC above
        all) go on from insertion to insertion, and from run to run through a counters-only
        state file beside the reader's link (a fresh card at ATC 0 would replay cryptograms
        the host has already authorised, and be declined)."""
        card = self._wallet.get(name)
        if card is None:
            card = make_chip_card(name, state_path=self.link_dir / f"chip-{name}.json")
            self._wallet[name] = card
        return card

    def pin_keys(self, keys: str | list[str]) -> bool:
        """Keys pressed on the PIN pad, in order: digits, CLEAR, ENTER, CANCEL. A string is read
        one character a key with `E` ENTER, `C` CLEAR and `X` CANCEL ("1234E"). True if a PIN
        entry was running when the first key went down (keys on an idle pad do nothing).
        Nothing of what is typed is logged or kept."""
        if isinstance(keys, str):
            names = {"E": "ENTER", "C": "CLEAR", "X": "CANCEL"}
            seq = [names.get(ch, ch) for ch in keys.upper() if not ch.isspace()]
        else:
            seq = [str(k).upper() for k in keys]
        bad = [k for k in seq if k not in PAD_KEYS]
        if bad:
            raise ReaderControlError(f"the PIN pad has keys {' '.join(PAD_KEYS)} (or in a string: "
                                     f"digits, E, C, X); {len(bad)} key(s) are not among them")
        if self._pad is None:
            raise ReaderControlError("this emulated reader has no PIN pad")
        return self._call(lambda: self._press(seq))

    def remove_chip(self) -> bool:
        """The card out of the chip slot. True if `R` went out."""
        return self._call(self._remove)

    def read_error(self, code: int, text: str = "") -> bool:
        """An `E` event (1 swipe unreadable needs a magstripe arm; 2, 3 a chip arm)."""
        try:
            error = lp.ReadErrorCode(code)
        except ValueError:
            raise ReaderControlError(f"read error code must be 1, 2 or 3, got {code!r}") from None
        needs = "magstripe" if error is lp.ReadErrorCode.SWIPE_UNREADABLE else "chip"
        body = lp.error_body(error, text or error.words)
        return self._call(lambda: self._event_if_armed(lp.READ_ERROR, body, needs=needs))

    # ---- line and device faults -------------------------------------------

    def send_garbage(self, data: bytes) -> None:
        """Raw bytes onto the line (noise, a damaged frame)."""
        self._call(lambda: self._send(bytes(data), framed=False))

    def send_payload(self, payload: bytes) -> None:
        """Any payload in a well-formed frame (for malformed-message tests)."""
        frame = posio.encode_frame(bytes(payload))
        self._call(lambda: self._send(frame, framed=False))

    def set_chunking(self, size: int | None, delay_s: float = 0.0) -> None:
        """Write every frame in pieces of `size` bytes with `delay_s` between them (None: whole)."""
        if size is not None and size < 1:
            raise ReaderControlError(f"chunk size must be >= 1, got {size}")
        self._call(lambda: setattr(self, "_chunking", None if size is None else (size, delay_s)))

    def split_next(self, offsets: tuple[int, ...], pause_s: float) -> None:
        """Cut the next frame the reader sends at these byte offsets, pausing pause_s at each cut."""
        cuts = tuple(sorted(offsets))
        if not cuts or cuts[0] < 1:
            raise ReaderControlError("split offsets must be >= 1")
        self._call(lambda: setattr(self, "_split_next", (cuts, pause_s)))

    def set_card_delay(self, seconds: float) -> None:
        """The card takes this long to answer each P and X (a slow card; 0: at once)."""
        if seconds < 0:
            raise ReaderControlError(f"card delay must be >= 0 s, got {seconds}")
        self._call(lambda: setattr(self, "_card_delay_s", float(seconds)))

    def set_card_mute(self, mute: bool) -> None:
        """The card stops answering: the next P or X ends with status 2 after card_time_s."""
        self._call(lambda: setattr(self, "_card_mute", bool(mute)))

    def drop_replies(self, count: int) -> None:
        """Act on the next `count` commands but lose their replies (a noisy line)."""
        self._call(lambda: setattr(self, "_drop_replies", max(0, count)))

    def refuse(self, cmd_type: str, reason: int = int(lp.NakReason.BUSY)) -> None:
        """Answer every `cmd_type` command with NAK `reason` until allow() is called."""
        nak = lp.NakReason(reason)
        self._call(lambda: self._refusals.__setitem__(cmd_type, nak))

    def allow(self, cmd_type: str | None = None) -> None:
        self._call(lambda: self._refusals.clear() if cmd_type is None
                   else self._refusals.pop(cmd_type, None))

    def disconnect(self) -> None:
        """Unplug: the pty's master closes (the terminal sees a hang-up) and the symlink goes."""
        self._call(self._unplug)

    def reconnect(self) -> None:
        """Plug back in: a new pty, the symlink repointed; the reader powers up idle."""
        self._call(self._plug_in)

    # ---- control port --------------------------------------------------------

    def control(self, cmd: str, **kw: Any) -> dict[str, Any]:
        """One control request from JSON: {"ok": true, ...} or {"ok": false, "error": words}."""
        handler = _CONTROL.get(cmd)
        if handler is None:
            return {"ok": False, "error": f"unknown reader command {cmd!r}; known: {', '.join(_CONTROL)}"}
        try:
            return {"ok": True, **handler(self, **kw)}
        except TypeError as exc:
            return {"ok": False, "error": f"bad arguments for {cmd!r}: {exc}"}
        except (ReaderControlError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"device_path": str(self.device_path), "connected": self._connected,
                    "armed": self._arm is not None,
                    "arm": None if self._arm is None else {"magstripe": self._arm.magstripe,
                                                           "chip": self._arm.chip},
                    "chip_present": self._chip_present, "chip_powered": self._powered,
                    "pinpad": None if self._pad is None else {
                        "entry_running": self._pin_wait is not None,
                        "display": self._pad.display,
                        "working_keys": list(self._pad.roles),
                        "tmk_check": (self._pad.tmk_check.hex().upper()
                                      if self._pad.tmk_check is not None else None)},
                    "leds": dict(self._leds),
                    "beeps": len(self._beeps), "version": self.version,
                    "bad_payloads": self._bad_payloads, **self._decoder_errors()}

    def _decoder_errors(self) -> dict[str, int]:
        return {f"line_{k}": v for k, v in self._decoder.errors.items()}

    # ---- the thread ------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Runs fn in the emulator thread and returns its result (directly if already there)."""
        if self._thread is None:
            raise ReaderControlError("the emulated reader is not running: call start()")
        if threading.current_thread() is self._thread:
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            self._actions.append((fn, done))
        self._wake()
        return done.result(timeout=5.0)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full pipe: the thread is being woken anyway
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        assert self._selector is not None
        while not self._stopping:
            try:
                self._step()
            except Exception:
                # A bug here must show in the test output, not silently stop the device.
                log.exception("emulated reader: internal error; carrying on")

    def _step(self) -> None:
        assert self._selector is not None
        events = self._selector.select(self._next_timeout())
        for key, mask in events:
            if key.fd == self._wake_r:
                self._drain_wake()
            elif key.fd == self._master:
                if mask & selectors.EVENT_READ:
                    self._read_master()
                if mask & selectors.EVENT_WRITE:
                    self._flush_outbox()
        self._run_actions()
        self._check_gap()
        self._check_arm_timeout()
        self._check_card_answer()
        self._check_pin_deadline()
        self._flush_outbox()

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        due = [t for t in (self._gap_deadline,
                           self._arm.deadline if self._arm else None,
                           self._pending.due if self._pending else None,
                           self._pad.deadline if self._pad else None,
                           self._outbox[0][0] if self._outbox else None) if t is not None]
        return max(0.0, min(due) - now) if due else None

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 64):
                pass
        except BlockingIOError:
            pass

    def _run_actions(self) -> None:
        while True:
            with self._lock:
                if not self._actions:
                    return
                fn, done = self._actions.popleft()
            try:
                done.set_result(fn())
            except Exception as exc:  # handed back to the caller's thread
                done.set_exception(exc)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # ---- pty -------------------------------------------------------------------

    def _plug_in(self) -> None:
        if self._master >= 0:
            raise ReaderControlError("the reader is already connected")
        master, slave = os.openpty()
        # Raw on the slave side: the line discipline must not echo commands back or
        # translate CR/LF, just as a USB-serial device does not.
        tty.setraw(slave)
        os.set_blocking(master, False)
        # Point the stable path at the new pty in one step (a half-made link must never be seen).
        tmp = self.device_path.with_name(self.device_path.name + ".new")
        tmp.unlink(missing_ok=True)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.device_path)
        self._decoder.reset()
        self._gap_deadline = None
        with self._lock:
            self._master, self._slave = master, slave
            self._connected = True
            # Power-up: idle, nothing reported about a card that may sit in the slot, and
            # no chip session (the card lost its power with the reader's).
            self._arm = None
            self._chip_reported_seq = None
            self._end_session()
            self._end_pin_entry()
            self._last_command = None
            self._last_reply = None
        if self._selector is not None:
            self._selector.register(master, selectors.EVENT_READ)
        self._notify()

    def _unplug(self) -> None:
        if self._master < 0:
            raise ReaderControlError("the reader is already disconnected")
        if self._selector is not None:
            self._selector.unregister(self._master)
        self.device_path.unlink(missing_ok=True)
        os.close(self._master)  # the terminal's side now reads a hang-up
        os.close(self._slave)
        self._outbox.clear()
        with self._lock:
            self._master = self._slave = -1
            self._connected = False
            self._arm = None
            self._end_session()
            self._end_pin_entry()
        self._notify()

    def _read_master(self) -> None:
        try:
            data = os.read(self._master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return  # the slave side is closed by everyone but us: cannot happen while we hold it
        for payload in self._decoder.feed(data):
            self._on_payload(payload)
        self._gap_deadline = time.monotonic() + INTER_BYTE_GAP_S if self._decoder.buffered else None

    def _check_gap(self) -> None:
        if self._gap_deadline is not None and time.monotonic() >= self._gap_deadline:
            self._gap_deadline = None
            for payload in self._decoder.flush():
                self._on_payload(payload)

    def _send(self, frame: bytes, *, framed: bool = True) -> None:
        """Queues bytes for the master, split per the chunking knobs when framed."""
        if self._master < 0:
            return  # unplugged: nothing reaches the terminal
        now = time.monotonic()
        at = max(now, self._outbox[-1][0]) if self._outbox else now
        pieces: list[tuple[float, bytes]]
        if framed and self._split_next is not None:
            cuts, pause = self._split_next
            self._split_next = None
            bounds = [0, *[c for c in cuts if c < len(frame)], len(frame)]
            pieces = [(at + i * pause, frame[a:b]) for i, (a, b) in enumerate(itertools.pairwise(bounds))]
        elif framed and self._chunking is not None:
            size, delay = self._chunking
            pieces = [(at + i * delay, frame[o:o + size]) for i, o in enumerate(range(0, len(frame), size))]
        else:
            pieces = [(at, frame)]
        self._outbox.extend(pieces)
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        if self._master < 0:
            return
        now = time.monotonic()
        while self._outbox and self._outbox[0][0] <= now:
            due, data = self._outbox[0]
            try:
                written = os.write(self._master, data)
            except BlockingIOError:
                written = 0
            if written < len(data):
                # The terminal is not reading: wait until the pty takes more.
                self._outbox[0] = (due, data[written:])
                self._want_write(True)
                return
            self._outbox.popleft()
        self._want_write(False)

    def _want_write(self, on: bool) -> None:
        if self._selector is None or self._master < 0:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        if self._selector.get_key(self._master).events != events:
            self._selector.modify(self._master, events)

    # ---- protocol --------------------------------------------------------------

    def _on_payload(self, payload: bytes) -> None:
        try:
            msg = lp.parse(payload)
        except lp.LinkError as exc:
            with self._lock:
                self._bad_payloads += 1
            log.warning("emulated reader: dropped a frame: %s", exc)
            self._notify()
            return
        pending = self._pending
        if pending is not None and (pending.seq, pending.payload) == (msg.seq, payload):
            # The terminal resent the P/X the card is still working on: the one reply follows.
            self._record(msg, {}, repeat=True)
            return
        if self._pin_wait == (msg.seq, payload):
            # The resent J of the entry under way: its one reply comes when the entry ends.
            self._record(msg, {}, repeat=True)
            return
        crossed, self._cancelled_entry = self._cancelled_entry, None
        if crossed is not None and crossed[:2] == (msg.seq, payload):
            self._record(msg, {}, repeat=True)
            self._reply_frame(crossed[2])
            return
        repeat = self._last_command == (msg.seq, payload)
        if repeat and self._last_reply is not None:
            self._record(msg, {}, repeat=True)
            self._reply_frame(self._last_reply)
            return
        reply_type, reply_body, args = self._act(msg)
        self._record(msg, args, repeat=False)
        if reply_type == "":
            # A chip command the card works on: _answer_pending replies (and keeps the reply for
            # a repeat); until then nothing is kept to replay.
            if self._pending is not None or self._pin_wait is not None:
                self._last_command, self._last_reply = None, None
            return
        reply = lp.encode(reply_type, msg.seq, reply_body)
        self._last_command = (msg.seq, payload)
        self._last_reply = reply
        self._reply_frame(reply)
        self._after_reply(msg, reply_type)

    def _record(self, msg: lp.Message, args: dict[str, Any], *, repeat: bool) -> None:
        with self._lock:
            self._commands.append(Command(msg.type, msg.seq, args, repeat, time.monotonic()))
        self._notify()

    def _reply_frame(self, reply: bytes) -> None:
        if self._drop_replies:
            self._drop_replies -= 1
            return
        self._send(reply)

    def _act(self, msg: lp.Message) -> tuple[str, bytes, dict[str, Any]]:
        """Carries out one command; (reply TYPE, reply body, what it asked for)."""
        nak = lp.NAK
        if msg.type not in lp.COMMANDS:
            return nak, lp.nak_body(lp.NakReason.UNKNOWN_COMMAND), {}
        refusal = self._refusals.get(msg.type)
        if refusal is not None:
            return nak, lp.nak_body(refusal), {}
        reply = msg.type.lower()
        try:
            if msg.type == lp.VERSION:
                return reply, self.version.encode("ascii", "replace"), {}
            if msg.type in lp.CHIP_COMMANDS:
                return self._chip_command(msg)
            if msg.type in lp.PINPAD_COMMANDS:
                return self._pinpad_command(msg)
            if msg.type == lp.ARM:
                req = lp.parse_arm(msg.body)
                if self._powered:
                    # The slot is in use: the terminal ends its chip session (O) before arming.
                    return nak, lp.nak_body(lp.NakReason.BUSY), {"busy": "chip session"}
                deadline = time.monotonic() + req.timeout_s if req.timeout_s else None
                with self._lock:
                    # Arming again replaces the old arm; its SEQ gets no event.
                    self._arm = _Arm(msg.seq, req.magstripe, req.chip, deadline)
                return reply, b"", {"magstripe": req.magstripe, "chip": req.chip, "timeout_s": req.timeout_s}
            if msg.type == lp.CANCEL:
                if msg.body:
                    raise lp.LinkError("cancel takes no body")
                with self._lock:
                    was_armed = self._arm is not None
                    self._arm = None
                    if (not was_armed and self._last_event is not None and self._last_event[0] == lp.CHIP_IN
                            and self._chip_reported_seq == self._last_event[1]):
                        # The K crossed this cancel on the wire: the terminal may have dropped
                        # it, so the next chip arm reports the card again.
                        self._chip_reported_seq = None
                return reply, b"", {"was_armed": was_armed}
            if msg.type == lp.BEEP:
                ms = lp.parse_beep(msg.body)
                with self._lock:
                    self._beeps.append(ms)
                return reply, b"", {"ms": ms}
            if msg.type == lp.LED:
                colour, on = lp.parse_led(msg.body)
                with self._lock:
                    self._leds[colour] = on
                return reply, b"", {"colour": colour, "on": on}
            # STATUS
            if msg.body:
                raise lp.LinkError("status takes no body")
            with self._lock:
                return reply, lp.status_body(self._arm is not None, self._chip_present, self._powered), {}
        except lp.LinkError as exc:
            log.info("emulated reader: NAK bad body for %r: %s", msg.type, exc)
            return nak, lp.nak_body(lp.NakReason.BAD_BODY), {"error": str(exc)}

    # ---- the PIN pad ----------------------------------------------------------------

    def _pinpad_command(self, msg: lp.Message) -> tuple[str, bytes, dict[str, Any]]:
        """Y, J, Q. ("", b"", args) for a J the cardholder now types (answered when it ends).
        Independent of the card slot: an arm or a chip session neither blocks nor is blocked."""
        reply, pad = msg.type.lower(), self._pad
        if msg.type == lp.PIN_CANCEL:
            if msg.body:
                raise lp.LinkError("PIN entry cancel takes no body")
            ended = self._cancel_pin_entry()
            return reply, bytes((1 if ended else 0,)), {"was_running": ended}
        if msg.type == lp.PINPAD:
            op, args = lp.parse_pad(msg.body)
            if pad is None:
                return reply, lp.pad_reply_body(lp.PadStatus.NO_PIN_PAD), {"op": op}
            # Never the arguments in the log: wrapped keys, MAC data, track blocks.
            return reply, pad.key_command(op, args), {"op": op, "length": len(args)}
        req = lp.parse_pin_entry(msg.body)
        args = {"timeout_s": req.timeout_s, "allow_empty": req.allow_empty, "prompt": req.prompt}
        if pad is None:
            return reply, lp.pad_reply_body(lp.PadStatus.NO_PIN_PAD), args
        refused = pad.start_entry(req, time.monotonic())
        if refused is not None:
            return reply, refused, args
        with self._lock:
            self._pin_wait = (msg.seq, msg.type.encode("ascii") + bytes((msg.seq,)) + msg.body)
        return "", b"", args

    def _press(self, keys: list[str]) -> bool:
        pad = self._pad
        assert pad is not None
        running = pad.entry_running
        for key in keys:
            body = pad.press(key)
            if body is not None:
                self._answer_pin_entry(body)
        self._notify()
        return running

    def _check_pin_deadline(self) -> None:
        if self._pad is not None:
            body = self._pad.expire(time.monotonic())
            if body is not None:
                self._answer_pin_entry(body)

    def _cancel_pin_entry(self) -> bool:
        """The terminal's Q: the running entry's J is answered `cancelled` (before the `q`)."""
        body = self._pad.cancel() if self._pad is not None else None
        wait = self._pin_wait
        if body is None or wait is None:
            return False
        self._answer_pin_entry(body)
        assert self._last_reply is not None
        self._cancelled_entry = (*wait, self._last_reply)
        return True

    def _answer_pin_entry(self, body: bytes) -> None:
        wait = self._pin_wait
        with self._lock:
            self._pin_wait = None
        if wait is None:
            return
        seq, payload = wait
        reply = lp.encode(lp.PIN_ENTRY.lower(), seq, body)
        # From now on a repeat of that J is answered with this reply, not typed again.
        self._last_command, self._last_reply = (seq, payload), reply
        self._reply_frame(reply)
        self._notify()

    def _end_pin_entry(self) -> None:
        """Power lost: the entry is gone and its J is never answered (caller holds the lock)."""
        if self._pad is not None:
            self._pad.power_down()
        self._pin_wait = None

    # ---- the chip slot -----------------------------------------------------------

    def _chip_command(self, msg: lp.Message) -> tuple[str, bytes, dict[str, Any]]:
        """P, W, X, G, O. ("", b"", args) when the card's answer comes later."""
        nak, reply = lp.NAK, msg.type.lower()
        if self._pending is not None:
            return nak, lp.nak_body(lp.NakReason.BUSY), {"busy": "exchange under way"}
        if msg.type == lp.POWER_OFF:
            if msg.body:
                raise lp.LinkError("power-off takes no body")
            was = self._powered
            if was and self._card is not None:
                self._card.power_down()
            with self._lock:
                self._end_session()
            return reply, b"", {"was_powered": was}
        if msg.type == lp.POWER_ON:
            if msg.body:
                raise lp.LinkError("power-on takes no body")
            if self._card is None:
                return reply, lp.chip_error_body(lp.ChipStatus.NO_CARD), {}
            with self._lock:
                self._end_session()
            self._start_card(msg, lp.POWER_ON, b"")
            return "", b"", {}
        if msg.type == lp.GET_PART:
            offset, rest = lp.parse_offset_part(msg.body, "response part")
            if rest:
                raise lp.LinkError("response part takes only the offset")
            if not self._response or offset >= len(self._response):
                raise lp.LinkError(f"no response bytes at offset {offset} (holding {len(self._response)})")
            return reply, self._response[offset:offset + lp.BODY_MAX], {"offset": offset}
        what = "APDU part" if msg.type == lp.APDU_PART else "APDU exchange"
        offset, data = lp.parse_offset_part(msg.body, what)
        if offset not in (0, len(self._apdu_buf)):
            raise lp.LinkError(f"{what} at offset {offset}; the reader holds {len(self._apdu_buf)} bytes")
        held = self._apdu_buf[:offset] + data
        if len(held) > lp.APDU_MAX:
            raise lp.LinkError(f"a command APDU is at most {lp.APDU_MAX} bytes")
        if msg.type == lp.APDU_PART:
            if not data:
                raise lp.LinkError("an APDU part carries at least one byte")
            self._apdu_buf = held
            return reply, b"", {"offset": offset, "length": len(data)}
        self._apdu_buf = b""
        if len(held) < lp.APDU_MIN:
            raise lp.LinkError(f"a command APDU is at least {lp.APDU_MIN} bytes, got {len(held)}")
        args = {"ins": held[1], "length": len(held)}  # never the APDU's bytes: a PIN may be in it
        if self._card is None:
            return reply, lp.chip_error_body(lp.ChipStatus.NO_CARD), args
        if not self._powered:
            return reply, lp.chip_error_body(lp.ChipStatus.NOT_POWERED), args
        self._response = b""
        self._start_card(msg, lp.EXCHANGE, held)
        return "", b"", args

    def _start_card(self, msg: lp.Message, kind: str, apdu: bytes) -> None:
        now = time.monotonic()
        mute = self._card_mute
        due = now + (self.card_time_s if mute else self._card_delay_s)
        payload = msg.type.encode("ascii") + bytes((msg.seq,)) + msg.body
        with self._lock:
            self._pending = _Pending(msg.seq, payload, kind, apdu, due, mute)
        self._check_card_answer()

    def _check_card_answer(self) -> None:
        pending = self._pending
        if pending is None or time.monotonic() < pending.due:
            return
        card = self._card
        body: bytes
        if pending.mute or card is None:
            body = lp.chip_error_body(lp.ChipStatus.MUTE)
            with self._lock:
                self._end_session()
        elif pending.kind == lp.POWER_ON:
            try:
                atr = card.power_up()
                body = lp.power_reply_body(atr)
                with self._lock:
                    self._powered = True
            except Exception:
                log.exception("emulated reader: the card app failed at power-up; answering mute")
                body = lp.chip_error_body(lp.ChipStatus.MUTE)
        else:
            with self._lock:
                self._apdu_log.append((pending.apdu[1], len(pending.apdu)))
            try:
                rapdu = card.apdu(pending.apdu)
                body = lp.exchange_reply_body(rapdu)
                self._response = rapdu
            except Exception:
                log.exception("emulated reader: the card app failed on an APDU; answering mute")
                body = lp.chip_error_body(lp.ChipStatus.MUTE)
                with self._lock:
                    self._end_session()
        self._answer_pending(pending, body)

    def _answer_pending(self, pending: _Pending, body: bytes) -> None:
        with self._lock:
            self._pending = None
        reply = lp.encode(pending.kind.lower(), pending.seq, body)
        # From now on a repeat of it is answered with this reply, not acted on.
        self._last_command = (pending.seq, pending.payload)
        self._last_reply = reply
        self._reply_frame(reply)
        self._notify()

    def _end_session(self) -> None:
        """No chip session any more (caller holds the lock, or is the thread at power-up)."""
        self._powered = False
        self._apdu_buf = b""
        self._response = b""
        self._pending = None

    def _after_reply(self, msg: lp.Message, reply_type: str) -> None:
        # A chip arm with an unreported card in the slot is answered at once.
        if msg.type == lp.ARM and reply_type == "a":
            arm = self._arm
            if arm is not None and arm.chip and self._chip_present and self._chip_reported_seq is None:
                self._emit(lp.CHIP_IN, self._chip_atr)

    def _emit(self, event_type: str, body: bytes) -> None:
        """Sends an event for the current arm and ends it."""
        arm = self._arm
        assert arm is not None
        with self._lock:
            self._arm = None
            self._last_event = (event_type, arm.seq)
            self._events_sent.append(event_type)
            if event_type == lp.CHIP_IN:
                self._chip_reported_seq = arm.seq
        self._send(lp.encode(event_type, arm.seq, body))
        self._notify()

    def _event_if_armed(self, event_type: str, body: bytes, *, needs: str) -> bool:
        arm = self._arm
        if arm is None or not getattr(arm, needs) or not self._connected:
            log.info("emulated reader: %s event ignored: not armed for %s", event_type, needs)
            return False
        self._emit(event_type, body)
        return True

    def _insert(self, card: ChipCardApp, atr: bytes) -> bool:
        if self._chip_present:
            raise ReaderControlError("a card is already in the chip slot: remove it first")
        with self._lock:
            self._chip_present = True
            self._chip_atr = atr
            self._card = card
            self._chip_reported_seq = None
        self._notify()
        if self._arm is not None and self._arm.chip and self._connected:
            self._emit(lp.CHIP_IN, atr)
            return True
        return False

    def _remove(self) -> bool:
        if not self._chip_present:
            raise ReaderControlError("there is no card in the chip slot")
        reported = self._chip_reported_seq
        pending = self._pending
        with self._lock:
            self._chip_present = False
            self._chip_atr = b""
            self._card = None
            self._chip_reported_seq = None
            self._end_session()
        if pending is not None:
            # Pulled during an exchange (or the activation): that command ends at once.
            self._answer_pending(pending, lp.chip_error_body(lp.ChipStatus.REMOVED))
        self._notify()
        if self._arm is not None and self._arm.chip and self._connected:
            self._emit(lp.CHIP_OUT, b"")
            return True
        if reported is not None and self._connected:
            # Not armed for chip, but the terminal was told the card is in: tell it it left.
            with self._lock:
                self._events_sent.append(lp.CHIP_OUT)
            self._send(lp.encode(lp.CHIP_OUT, reported))
            self._notify()
            return True
        return False

    def _check_arm_timeout(self) -> None:
        arm = self._arm
        if arm is not None and arm.deadline is not None and time.monotonic() >= arm.deadline:
            self._emit(lp.TIMED_OUT, b"")


# ---- control dispatch (JSON-like dicts) ---------------------------------------


def _ctl_swipe(r: EmulatedReader, card: str | None = None, track1: str | None = None,
               track2: str | None = None, track3: str | None = None) -> dict[str, Any]:
    if card is not None:
        delivered = r.swipe(card)
    elif track1 or track2 or track3:
        delivered = r.swipe((track1, track2, track3))
    else:
        raise ReaderControlError("swipe needs \"card\" (a test card name) or track1/track2/track3")
    return _delivered(delivered, "magstripe")


def _ctl_swipe_raw(r: EmulatedReader, track1: str | None = None, track2: str | None = None,
                   track3: str | None = None, statuses: list[int] | None = None) -> dict[str, Any]:
    if statuses is not None and len(statuses) != 3:
        raise ReaderControlError("statuses must list three track statuses (0 read, 1 blank, 2 unreadable)")
    st = None if statuses is None else (int(statuses[0]), int(statuses[1]), int(statuses[2]))
    return _delivered(r.swipe_raw(track1, track2, track3, st), "magstripe")


def _ctl_insert(r: EmulatedReader, card: str | None = None, atr: str | None = None) -> dict[str, Any]:
    """A chip card by name (board.sim.chipcards; default DEFAULT_CHIP_CARD), or a card with only
    this ATR (hex) and no application."""
    if atr is not None:
        if card is not None:
            raise ReaderControlError("insert_chip takes \"card\" or \"atr\", not both")
        try:
            raw = bytes.fromhex(atr)
        except ValueError:
            raise ReaderControlError("atr must be hex digits, e.g. \"3B6800000073C84013009000\"") from None
        return _delivered(r.insert_chip(raw), "chip")
    return _delivered(r.insert_chip(card), "chip")


def _ctl_card_delay(r: EmulatedReader, seconds: float) -> dict[str, Any]:
    r.set_card_delay(float(seconds))
    return {}


def _ctl_card_mute(r: EmulatedReader, mute: bool = True) -> dict[str, Any]:
    r.set_card_mute(bool(mute))
    return {}


def _ctl_garbage(r: EmulatedReader, hex: str | None = None, text: str | None = None) -> dict[str, Any]:
    if hex is not None:
        try:
            data = bytes.fromhex(hex)
        except ValueError:
            raise ReaderControlError("hex must be hex digits, e.g. \"FF0002\"") from None
    elif text is not None:
        data = text.encode("utf-8")
    else:
        raise ReaderControlError("garbage needs \"hex\" or \"text\"")
    r.send_garbage(data)
    return {"sent": len(data)}


def _ctl_chunking(r: EmulatedReader, size: int | None = None, delay_ms: float = 0.0) -> dict[str, Any]:
    r.set_chunking(size, delay_ms / 1000.0)
    return {}


def _ctl_commands(r: EmulatedReader, last: int = 20) -> dict[str, Any]:
    cmds = r.last_commands[-last:] if last > 0 else []
    return {"commands": [{"type": c.type, "seq": c.seq, "args": c.args, "repeat": c.repeat} for c in cmds]}


def _delivered(sent: bool, needs: str) -> dict[str, Any]:
    if sent:
        return {"delivered": True}
    return {"delivered": False, "note": f"the reader is not armed for {needs}: nothing was sent"}


def _ctl_remove(r: EmulatedReader) -> dict[str, Any]:
    return _delivered(r.remove_chip(), "chip")


def _ctl_read_error(r: EmulatedReader, code: int, text: str = "") -> dict[str, Any]:
    return _delivered(r.read_error(int(code), text), "that read")


def _ctl_pin_keys(r: EmulatedReader, keys: str | list[str]) -> dict[str, Any]:
    """Keys on the PIN pad: "1234E" (E ENTER, C CLEAR, X CANCEL) or ["1", ..., "ENTER"]."""
    if r.pin_keys(keys):
        return {"delivered": True}
    return {"delivered": False, "note": "the PIN pad is not asking for a PIN: nothing was typed"}


def _ctl_drop_replies(r: EmulatedReader, count: int) -> dict[str, Any]:
    r.drop_replies(int(count))
    return {}


def _ctl_refuse(r: EmulatedReader, command: str, reason: int = int(lp.NakReason.BUSY)) -> dict[str, Any]:
    try:
        r.refuse(str(command), int(reason))
    except ValueError:
        raise ReaderControlError(f"NAK reason must be 1, 2 or 3, got {reason!r}") from None
    return {}


def _ctl_allow(r: EmulatedReader, command: str | None = None) -> dict[str, Any]:
    r.allow(command)
    return {}


def _ctl_disconnect(r: EmulatedReader) -> dict[str, Any]:
    r.disconnect()
    return {}


def _ctl_reconnect(r: EmulatedReader) -> dict[str, Any]:
    r.reconnect()
    return {"device_path": str(r.device_path)}


_CONTROL: dict[str, Callable[..., dict[str, Any]]] = {
    "swipe": _ctl_swipe,
    "swipe_raw": _ctl_swipe_raw,
    "insert_chip": _ctl_insert,
    "remove_chip": _ctl_remove,
    "pin_keys": _ctl_pin_keys,
    "card_delay": _ctl_card_delay,
    "card_mute": _ctl_card_mute,
    "read_error": _ctl_read_error,
    "garbage": _ctl_garbage,
    "chunking": _ctl_chunking,
    "drop_replies": _ctl_drop_replies,
    "refuse": _ctl_refuse,
    "allow": _ctl_allow,
    "disconnect": _ctl_disconnect,
    "reconnect": _ctl_reconnect,
    "status": lambda r: r.snapshot(),
    "commands": _ctl_commands,
    "cards": lambda r: {"cards": sorted(TEST_CARDS), "chip_cards": list(chipcards.CARD_NAMES)},
}
