"""The terminal core, TerminalCore: the operation lock, and the engine's flows carried out against I/O.

Theory of operation: an operation (from the ECR link now, the keypad later)
takes the one operation lock, makes sure the terminal is signed on and owes
the host nothing (reversals, advices, an interrupted settlement), then runs an
engine flow, carrying out each action it returns (journal write, host request,
card read, PIN entry) and feeding the resulting event back. CANCEL is honoured
wherever the flow allows it. `fault_hook` lets tests stop between any two
actions, which is how a power loss at every step is proven.

The core imports no service and no front end. What it needs of them it asks through hooks that
do nothing here and that the assembled terminal (firmware/app/terminal.py) fills in: the paper
(`_open_paper`, a PaperQueue), the card reader (`_open_reader`), the work after open() (a
deregistration cut by a power loss) and before the start-up sign-on (held orders cut mid-sale).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from firmware.app.boards import BoardProfile, profile
from firmware.app.core import lifecycle
from firmware.app.core.contract import (
    OPERATOR_INPUT,
    OperatorCancelled,
    OperatorInput,
    PaperQueue,
    TerminalObserver,
)
from firmware.engine import events as ev
from firmware.engine.backlog import AdviceFlow, ReversalFlow
from firmware.engine.deregistration import Lifecycle
from firmware.engine.financial import FinancialFlow, FlowContext
from firmware.engine.model import (
    CardRead,
    OriginalRef,
    TxnRecord,
    TxnRequest,
    TxnResult,
)
from firmware.engine.settlement import SettlementFlow
from firmware.engine.states import TxnEvent, TxnState
from firmware.engine.tracks import CardProblem, card_from_swipe
from firmware.engine.validation import Limits, Refusal, check_original
from firmware.host.channel import HostChannel, HostLink
from firmware.host.errors import HostError, KeyCheckError, LocalProtocolError, NoReply
from firmware.host.keys import encrypt_pin_block
from firmware.host.messages import SideTotals, TxnKind, echo_request, mask_pan, signoff_request
from firmware.host.messages import Terminal as TermIds
from firmware.i18n import CATALOG, text
from firmware.journal.errors import JournalCorrupt, JournalError, JournalFull
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault, VaultError
from firmware.ports import (
    CardReader,
    MagstripeRead,
    ReaderUnavailable,
    ReadFailed,
    ReadTimedOut,
)
from firmware.security import PasswordGuard, locked_key
from firmware.settings.model import factory, hash_password, password_problem, password_words, verify_password
from firmware.settings.store import SettingsStore

log = logging.getLogger("posfw.app")


@dataclass
class AppConfig:
    data_dir: Path
    board: str = "sim"
    ecr_host: str = "127.0.0.1"
    ecr_port: int = 0
    host: str | None = None
    port: int | None = None
    reply_timeout: float | None = None
    ready_file: Path | None = None
    ecr_serial: str | None = None  # overrides the board profile's ECR serial port
    printer_path: str | None = None  # overrides the board profile's printer port ('' = none)
    reader_path: str | None = None  # overrides the board profile's card reader ('' = none)
    print_poll_s: float = 1.0  # how often a paused printer is asked whether it is ready
    # The keypad and LCD: None (headless, ECR only), "board" (the profile's drivers) or
    # "console" (the development console of `make run`, which python -m board.sim.firmware plugs in).
    panel: str | None = None
    idle_file: Path | None = None  # written when the idle screen is first drawn (cold-start bench)


class CardSlot:
    """The sim board's card source: a test card presented over ECR or the control link."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[CardRead, str | None]] = asyncio.Queue(maxsize=1)

    def present(self, card: CardRead, pin: str | None) -> None:
        self.clear()
        self._queue.put_nowait((card, pin))

    def clear(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def take(self) -> tuple[CardRead, str | None]:
        return await self._queue.get()


class TerminalCore:
    """The running terminal's core: journal, host link, settings and the operation lock.

    Run as firmware/app/terminal.py's Terminal, which plugs in the print desk, the board's
    reader and the services' start-up work; the core alone runs without paper or reader."""

    def __init__(self, cfg: AppConfig, now: Callable[[], datetime] = datetime.now) -> None:
        self.cfg = cfg
        self.board: BoardProfile = profile(cfg.board)
        self.now = now
        self.data_dir = Path(cfg.data_dir)
        self.settings_store = SettingsStore(self.data_dir / "settings.json")
        self.settings: dict[str, dict[str, Any]] = {}
        self.journal: Journal | None = None
        self.link: HostLink | None = None
        self.service_problem: str | None = None
        self.card_slot = CardSlot()
        self.password_guard = PasswordGuard()
        self.fault_hook: Callable[[object], None] | None = None
        self.notice: str | None = None  # shown on the idle screen / status
        self.sign_on_problem = "host_unreachable"  # catalog key: why the last sign-on failed
        self.card_refusal: str | None = None  # the reader's last refusal in the running operation
        self._lock = asyncio.Lock()
        self._cancel = asyncio.Event()
        self._running: str | None = None  # the operation under the lock, for the CANCEL audit
        self.last_result: TxnResult | None = None
        self.prints: PaperQueue | None = None
        self.reader: CardReader | None = None
        self.observer: TerminalObserver | None = None
        self.link_up: bool | None = None  # how the last exchange with the host went
        self._tmk = b""
        self._upload_total: dict[int, int] = {}  # settlement id -> records to upload (progress)
        self.backlog_left = 0  # reversals/advices still to be tried in the running backlog pass
        self.starting = False  # the start-up sign-on and backlog hold the operation lock

    # -- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """open() then connect(): ready for operations (as the ECR-only terminal starts)."""
        await self.open()
        await self.connect()

    async def open(self) -> None:
        """Settings, journal and its recovery, print queue, reader: no network yet."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        wiped = lifecycle.deregistered_on_disk(self.data_dir)
        # factory() hashes the factory password (scrypt): off the event loop, like every hash.
        if wiped:
            # The merchant's settings and keys are gone (deregistration): factory values in
            # memory only, nothing written, until the terminal is provisioned again.
            self.settings = await asyncio.to_thread(factory)
            self.settings["merchant"]["name"] = ""
        else:
            self.settings = await asyncio.to_thread(self.settings_store.load)
        if self.settings_store.problem:
            # The store logged the file and the reason; the screen says what it means.
            self.notice = "settings_restored"
        self.password_guard.configure(self.settings.get("security", {}))
        c = self.settings["comms"]
        if self.cfg.host:
            c["host"] = self.cfg.host
        if self.cfg.port:
            c["port"] = self.cfg.port
        if self.cfg.reply_timeout:
            c["reply_timeout"] = self.cfg.reply_timeout
        keys_dir = self.data_dir / "keys"
        if wiped:  # no key files may come back: a throwaway vault, a TMK that never signs on
            vault, tmk = CardVault(os.urandom(32)), bytes(16)
        else:
            vault = CardVault.from_key_file(keys_dir / "card.key")
            tmk = self._load_tmk(keys_dir / "tmk.key")
        try:
            self.journal = Journal.open(self.data_dir / "journal.db", vault)
        except JournalCorrupt as exc:
            self.service_problem = str(exc)
            log.error("SERVICE MODE: %s", exc)
            return
        self.password_guard.attach(self.journal)  # a lock outlives a restart
        report = self.journal.recover()
        if report.to_reverse or report.enquiries_failed or report.settlements_abandoned:
            log.warning("start-up recovery: %s", report)
        self._tmk = tmk
        self.link = self._make_link()
        self.prints = self._open_paper()
        self.reader = self._open_reader()
        await self._after_open()

    # -- hooks: what the services plug in (firmware/app/terminal.py) --------------

    def _open_paper(self) -> PaperQueue | None:
        """open(), the journal recovered: the print queue, started (None: no paper at all)."""
        return None

    def _open_reader(self) -> CardReader | None:
        """open(): the board's card reader (None: cards come from the card slot only)."""
        return None

    async def _after_open(self) -> None:
        """The end of open(), before any sign-on: work a power loss left half done."""

    def _before_start_up_sign_on(self) -> None:
        """Under the operation lock at start-up, the terminal ACTIVE, before the first sign-on."""

    def _make_link(self) -> HostLink:
        m, c = self.settings["merchant"], self.settings["comms"]
        channel = HostChannel(c["host"], int(c["port"]), connect_timeout=float(c["connect_timeout"]),
                              connect_attempts=1 + int(c.get("retries", 0)))
        return HostLink(channel, TermIds(tid=m["tid"], mid=m["mid"]), self._tmk,
                        mak_check=c["mak_check"])

    async def connect(self) -> None:
        """Sign on and clear what the host is owed (reversals, advices, a settlement)."""
        await (await self.start_connecting())

    async def start_connecting(self) -> asyncio.Task[None]:
        """Take the operation lock now, then sign on and clear what the host is owed in the
        background. From this moment every operation is answered "busy" with what is left to
        send, while `status`, the ECR link and the panel stay live: a till is never kept
        waiting for the port while reversals drain (each may take a whole reply timeout)."""
        await self._lock.acquire()
        return asyncio.create_task(self._connect_locked(), name="start-up backlog")

    async def _connect_locked(self) -> None:
        self.starting = True
        try:
            if self.journal is None or self.link is None:
                return
            if lifecycle.lifecycle(self) is not Lifecycle.ACTIVE:
                return  # deregistered: no sign-on until provisioned again
            self._before_start_up_sign_on()
            if await self.ensure_signed_on():
                await self._settle_backlog_before_anything()
        except Exception:
            # Whatever went wrong here must not keep the terminal from starting: the next
            # operation clears the backlog itself, and says in words what fails.
            log.exception("start-up sign-on and backlog failed; the next operation retries")
        finally:
            self.starting = False
            self._lock.release()
            self.notify_changed()

    def busy_message(self, lang: str) -> str:
        """Why an operation is refused as busy, in words (the ECR reply and the LCD)."""
        if self.backlog_left:
            return text("busy_backlog", lang).format(n=self.backlog_left)
        return text("busy_starting" if self.starting else "busy", lang)

    def notify_changed(self) -> None:
        """Something the idle screen shows changed: the front panel redraws its status."""
        if self.observer is not None:
            self.observer.changed()

    @staticmethod
    def _load_tmk(path: Path) -> bytes:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:  # as the card-data key (CardVault.from_key_file): owner only
                raise SystemExit(f"terminal master key {path} is readable by others (mode "
                                 f"{mode:o}): the terminal does not start; run chmod 600 {path}")
            tmk = bytes.fromhex(path.read_text().strip())
        except FileNotFoundError:
            raise SystemExit(f"terminal master key {path} is missing: provision the terminal "
                             "(see docs/provisioning.md)") from None
        if len(tmk) != 16:
            raise SystemExit(f"terminal master key {path} must hold 16 bytes as hex")
        return tmk

    async def close(self) -> None:
        if self.reader is not None:
            await self.reader.close()
        if self.prints is not None:
            await self.prints.close()
        if self.link is not None:
            await self.link.channel.close()
        if self.journal is not None:
            self.journal.close()

    # -- helpers ----------------------------------------------------------------

    @property
    def term(self) -> TermIds:
        assert self.link is not None
        return self.link.term

    def _tx(self) -> dict[str, Any]:
        return self.settings["transactions"]

    def _timeout(self) -> float:
        return float(self.settings["comms"]["reply_timeout"])

    def cancel(self, source: str = "ecr") -> None:
        """CANCEL from `source` ("keypad" or the ECR peer): the running operation stops where it
        may. Audited (who, from where, what was running) only when something runs: a CANCEL
        at idle is not an event."""
        self._cancel.set()
        if not self.busy or self.journal is None:
            return
        try:
            self.journal.audit(source, "cancel", f"while {self._running or 'terminal work'} ran",
                               "requested")
        except JournalError as exc:  # the CANCEL itself must still work on a full disk
            log.error("CANCEL from %s not audited: %s", source, exc)

    # -- for the app companions (held orders, review, deregistration) -----------

    def progress(self, step: str, done: int | None = None, total: int | None = None,
                 cancellable: bool = True) -> None:
        """A step of the running operation, for the LCD ("Uploading 12/40")."""
        self._step(step, done, total, cancellable)

    def cancel_requested(self) -> bool:
        """CANCEL arrived (keypad or ECR) since the running operation began."""
        return self._cancel.is_set()

    def exclusive(self) -> asyncio.Lock:
        """The one operation lock, for work that is not an operation() of its own (start-up)."""
        return self._lock

    def forget_keys(self) -> None:
        """Working keys and the terminal master key leave memory (deregistration)."""
        if self.link is not None:
            self.link.keys = None
            self.link.sign_on_required = True
        self._tmk = b""

    def _step(self, step: str, done: int | None = None, total: int | None = None,
              cancellable: bool = True) -> None:
        if self.observer is not None:
            self.observer.op_step(step, done, total, cancellable)

    def _link(self, up: bool) -> None:
        if self.link_up != up:
            self.link_up = up
            if self.observer is not None:
                self.observer.changed()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def _race(self, awaitable: Awaitable[Any], cancellable: bool) -> Any:
        task = asyncio.ensure_future(awaitable)
        if not cancellable:
            return await task
        waiter = asyncio.ensure_future(self._cancel.wait())
        try:
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            waiter.cancel()
            raise
        if task in done:
            waiter.cancel()
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise OperatorCancelled

    async def ensure_signed_on(self) -> bool:
        assert self.link is not None and self.journal is not None
        if not self.link.sign_on_required and self.link.keys is not None:
            return True
        self._step("signing_on", cancellable=False)
        stan = self.journal.allocate_stan()
        self.sign_on_problem = "host_unreachable"
        try:
            reply = await self.link.sign_on(stan, self.journal.current_batch(),
                                            self._tx()["operator"], timeout=self._timeout())
        except KeyCheckError as exc:
            log.error("sign-on failed: %s", exc)
            self.notice = "key_check_failed"  # a catalog key; the details go to the log and audit
            self.sign_on_problem = "key_check_failed"
            self.journal.audit("system", "sign-on", str(exc), "failed")
            return False
        except HostError as exc:
            log.warning("sign-on failed: %s", exc)
            self._link(False)
            return False
        self._link(True)
        if reply.fields.get("39") != "00":
            # A catalog key, so the idle screen says it in the operator's language; the code is
            # for support and goes to the log.
            log.warning("sign-on refused by the host (%s)", reply.fields.get("39"))
            self.notice = "sign_on_refused"
            return False
        host_batch = reply.fields.get("60", "")[2:8]
        self.journal.adopt_batch(host_batch)
        self.journal.audit("system", "sign-on", f"batch {self.journal.current_batch()}", "done")
        return True

    # -- the action executor ----------------------------------------------------

    async def _drive(self, flow: Any, io: OperatorInput, cancellable: bool) -> TxnResult | None:
        queue: deque[Any] = deque(flow.start())
        while queue:
            action = queue.popleft()
            if self.fault_hook is not None:
                self.fault_hook(action)
            if isinstance(action, ev.Finish):
                return action.result
            event = await self._perform(action, io, flow, cancellable)
            if cancellable and isinstance(action, OPERATOR_INPUT) and self._cancel.is_set():
                # CANCEL came while the operator was being asked (the password being checked,
                # say): nothing is sent, whatever the answer was (docs/cancel-semantics.md, first row).
                event = ev.Cancel()
            if event is not None:
                queue.extend(flow.handle(event))
        return None

    async def _perform(self, action: Any, io: OperatorInput, flow: Any, cancellable: bool) -> Any:
        j = self.journal
        assert j is not None and self.link is not None
        if isinstance(action, ev.AskAuthorisation):
            if io.authorised:
                return ev.Authorised(True)  # checked (and audited) on the keypad just before
            return ev.Authorised(await self.check_password(io.password, action.purpose, io.source))
        if isinstance(action, ev.AskCard):
            if io.card is not None:
                return ev.CardPresented(io.card)
            if self.observer is not None:
                await self.observer.release_reader()  # the idle card watch lets go first
            self._step("card")
            try:
                card, pin = await self._race(self._take_card(), cancellable)
            except OperatorCancelled:
                return ev.Cancel()
            except ReaderUnavailable as exc:
                log.error("card reader: %s", exc)
                self.notice = "reader_unavailable"
                return ev.Cancel()
            if card is None:
                return ev.Cancel()  # no card within the reader's wait
            io.pin = pin if pin is not None else io.pin
            return ev.CardPresented(card)
        if isinstance(action, ev.AskPin):
            if io.pin is None and self.observer is not None and self.link.keys is not None:
                self._step("pin")
                try:
                    io.pin = await self._race(self.observer.ask_pin(
                        mask_pan(flow.card.pan),
                        flow.request.amount, action.bypass_allowed, action.tries_left), cancellable)
                except OperatorCancelled:
                    return ev.Cancel()
                if io.pin is None:
                    return ev.PinEntered(None) if action.bypass_allowed else ev.Cancel()
            if io.pin is None or self.link.keys is None:
                if action.tries_left is not None:
                    return ev.NoPinAgain()  # the till asks the cardholder and sends it again
                return ev.PinEntered(None) if action.bypass_allowed else ev.Cancel()
            # The clear PIN becomes an encrypted block here and is dropped at once.
            block = encrypt_pin_block(io.pin, flow.card.pan, self.link.keys.pik)
            io.pin = None
            return ev.PinEntered(block)
        if isinstance(action, ev.WritePending):
            return ev.PendingWritten(j.begin(action.draft))
        if isinstance(action, ev.SendRequest):
            if cancellable:
                self._step("sending")
            try:
                reply = await self._race(
                    self.link.request(action.message, mac=action.mac, timeout=action.timeout),
                    cancellable,
                )
            except OperatorCancelled:
                return ev.Cancel()
            except NoReply as exc:
                log.warning("no usable reply (%s): %s", exc.reason, exc.detail)
                self._link(exc.reason not in (NoReply.LINK, NoReply.TIMEOUT))
                return ev.ReplyLost(exc.reason, exc.auth_code)
            except LocalProtocolError as exc:
                log.error("request could not be built: %s", exc)
                return ev.ReplyLost("malformed")
            except (HostError, OSError) as exc:
                log.warning("link error: %s", exc)
                self._link(False)
                return ev.ReplyLost("link")
            self._link(True)
            return ev.ReplyReceived(reply)
        if isinstance(action, ev.WriteOutcome):
            copies = self.prints.copies if action.receipt and self.prints is not None else ()
            record = j.apply(action.record_id, action.event, action.result,
                             action.reversal_reason, action.void_of, receipt_copies=copies,
                             problem=action.problem,
                             declined_after_stored=action.declined_after_stored)
            if (copies or action.declined_after_stored) and self.prints is not None:
                self.prints.wake()
            if action.event is TxnEvent.QUARANTINE or action.declined_after_stored:
                log.error("trace %s: %s", record.stan, record.problem or
                          f"stored refund declined ({record.response_code})")
                self.notify_changed()
            return ev.OutcomeWritten(record)
        if isinstance(action, ev.AuditNote):
            j.audit(io.source, action.action, action.detail, action.outcome)  # who asked
            return None
        if isinstance(action, ev.AllocateStan):
            return ev.StanAllocated(j.allocate_stan())
        if isinstance(action, ev.BeginSettlement):
            # From here the settlement cannot be cancelled by the operator (cancel-semantics.md).
            self._step("settling", cancellable=False)
            sid = j.begin_settlement(action.batch, action.stan, action.domestic, action.foreign,
                                     action.operator)
            return ev.SettlementBegun(sid)
        if isinstance(action, ev.RecordSettlementReply):
            j.record_settlement_reply(action.settlement_id, action.result_domestic,
                                      action.result_foreign)
            return ev.Done()
        if isinstance(action, ev.LoadUploadItems):
            items = tuple(j.upload_items(action.settlement_id, action.limit))
            if items and self.observer is not None:
                done = j.get_settlement(action.settlement_id).uploaded_count
                total = self._upload_total.setdefault(
                    action.settlement_id, done + len(j.upload_items(action.settlement_id, 1_000_000)))
                self._step("uploading", done, total, cancellable=False)
            return ev.UploadItemsLoaded(items)
        if isinstance(action, ev.MarkUploaded):
            j.mark_uploaded(action.settlement_id, action.record_ids)
            return ev.Done()
        if isinstance(action, ev.RecordEndStan):
            j.record_end_stan(action.settlement_id, action.stan)
            return ev.Done()
        if isinstance(action, ev.AbandonSettlement):
            j.abandon_settlement(action.settlement_id, action.reason)
            return ev.Done()
        if isinstance(action, ev.FinishSettlement):
            j.finish_settlement(action.settlement_id)  # queues the settlement report with DONE
            if self.prints is not None:
                self.prints.wake()
            return ev.Done()
        raise TypeError(f"no executor for {action!r}")

    async def _take_card(self) -> tuple[CardRead | None, str | None]:
        """The first card from the reader or the sim board's card slot, whichever comes."""
        if self.reader is None:
            return await self.card_slot.take()
        slot = asyncio.ensure_future(self.card_slot.take())
        read = asyncio.ensure_future(self._read_card())
        try:
            done, _ = await asyncio.wait({slot, read}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (slot, read):
                if not task.done():
                    task.cancel()  # cancelling the read disarms the reader at once
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        if slot in done:
            return slot.result()
        return read.result(), None

    async def _read_card(self) -> CardRead | None:
        """Reads until a usable swipe, a timeout (None) or a cancel; bad swipes ask again."""
        assert self.reader is not None
        tx = self._tx()
        while True:
            event = await self.reader.read(magstripe=True, chip=True, timeout_s=60.0)
            if isinstance(event, ReadTimedOut):
                return None
            if isinstance(event, ReadFailed):
                log.info("card read failed: %s", event.reason)
                self._card_refused("card_unreadable")
                continue
            if not isinstance(event, MagstripeRead):
                continue  # chip presence: EMV comes later; wait for a swipe
            try:
                return card_from_swipe(event, today=self.now().date(),
                                       allow_fallback=bool(tx["allow_fallback_swipe"]))
            except CardProblem as exc:
                log.info("card refused at the reader: %s", exc.key)
                self._card_refused(exc.key)

    def _card_refused(self, key: str) -> None:
        """A card the reader refused (catalog key): said at once where the operator looks (the
        LCD's card screen; the till's `status`), while the wait for a card goes on."""
        self.card_refusal = key
        if self.observer is not None:
            self.observer.card_refused(key)

    # -- passwords --------------------------------------------------------------

    async def check_password(self, password: str | None, purpose: str, source: str) -> bool:
        """The supervisor password, from `source` ("keypad" or the ECR peer), counted and audited.

        scrypt takes tens of milliseconds: it runs off the event loop so the LCD, the ECR link
        and CANCEL stay live; the attempt is counted and audited back on the loop (the journal
        connection is not shared with worker threads). While `source` is locked (its own tries
        or the ceiling of all sources: firmware/security.py) nothing is checked.
        """
        assert self.journal is not None
        left = self.password_guard.seconds_left(source)
        if left > 0:
            self.journal.audit(source, f"password for {purpose}", f"locked, {left:.0f} s left",
                               "refused")
            return False
        ok = password is not None and await asyncio.get_running_loop().run_in_executor(
            None, verify_password, password, str(self.settings["security"]["supervisor_hash"]))
        return self.record_password_result(ok, purpose, source)

    def record_password_result(self, ok: bool, purpose: str, source: str) -> bool:
        """Counts the attempt (locking after too many) and audits it, on the loop's thread."""
        assert self.journal is not None
        self.password_guard.record(self.journal, ok, source, purpose)
        return ok

    def password_refused(self, source: str) -> str:
        """The catalog key for a refused supervisor password from `source`: how long the lock
        lasts while it is locked, else "password_wrong"."""
        left = self.password_guard.seconds_left(source)
        return locked_key(left) if left > 0 else "password_wrong"

    def _password_words(self, result: TxnResult, source: str) -> TxnResult:
        """An operation refused for its password says "locked, N min left" while it is locked."""
        if result.status == "refused" and result.message_key == "password_wrong":
            return replace(result, message_key=self.password_refused(source))
        return result

    def language(self) -> str:
        """The display language the settings name ("en", "zh_CN")."""
        return str(self.settings.get("display", {}).get("language", "en"))

    async def new_password_hash(self, new: str, source: str) -> str | TxnResult:
        """The hash for a new supervisor password (scrypt off the loop), or the refusal in words
        of the rule it breaks (settings/model.py password_problem), audited."""
        rule = password_problem(new)
        if rule is not None:
            assert self.journal is not None
            self.journal.audit(source, "password change", rule, "refused")
            return TxnResult("refused", rule, detail=password_words(rule))
        return await asyncio.to_thread(hash_password, new)

    async def set_password(self, old: str, new: str, source: str) -> TxnResult:
        async with self._lock:
            if not await self.check_password(old, "password change", source):
                return TxnResult("refused", self.password_refused(source))
            hashed = await self.new_password_hash(new, source)
            if isinstance(hashed, TxnResult):
                return hashed
            data = {k: dict(v) for k, v in self.settings.items()}
            data["security"]["supervisor_hash"] = hashed
            data["security"]["password_changed"] = True
            await asyncio.to_thread(self.settings_store.save, data, "supervisor password changed")
            self.settings = data
            assert self.journal is not None
            self.journal.audit(source, "password change", "", "done")
            return TxnResult("approved", "approved", detail="supervisor password changed")

    async def resolve_owed(self, record_id: int, reason: str, source: str) -> TxnResult:
        """A supervisor closes what the host never acknowledged (a reversal) or what cannot be
        sent (a quarantined record), with a reason; audited, under the operation lock so no
        backlog pass is sending it meanwhile. The password was checked by the caller."""
        async def work() -> TxnResult:
            j = self.journal
            assert j is not None
            record = j.get(record_id)
            if record.state not in (TxnState.REVERSAL_DUE, TxnState.QUARANTINED):
                return TxnResult("refused", "anomaly_bad_action", record,
                                 detail=f"voucher {record.invoice} is {record.state.value}: nothing "
                                        "to resolve")
            record = j.resolve_manually(record_id, source, reason)
            return TxnResult("resolved", "resolved", record)

        return await self.operation("resolve", source, work)

    async def apply_settings(self, data: dict[str, dict[str, Any]], changed: list[str]) -> None:
        """The new settings take effect now: a new host link when its address or ids changed."""
        self.settings = data
        self.password_guard.configure(data.get("security", {}))
        relink = any(k.startswith("comms.") or k in ("merchant.tid", "merchant.mid") for k in changed)
        if relink and self.link is not None:
            await self.link.channel.close()
            self.link = self._make_link()  # signs on again before the next operation

    # -- the backlog: reversals, advices, interrupted settlement ----------------

    async def _attempt(self, flow: ReversalFlow | AdviceFlow) -> bool:
        await self._drive(flow, OperatorInput(), cancellable=False)
        return bool(flow.resolved)

    async def clear_backlog(self) -> None:
        """Send every due reversal (up to the retry count each) and every stored advice.

        One record that cannot be sent never holds up the others: it is quarantined (a state
        the idle screen, the review and `status` show, closed by a supervisor) and the pass
        goes on. backlog_left counts what is still to be tried, for "busy" replies.
        """
        j = self.journal
        assert j is not None
        retries = int(self._tx()["reversal_retries"])
        todo = [(ReversalFlow, r) for r in j.reversals_due()] + [(AdviceFlow, r)
                                                                  for r in j.advices_due()]
        try:
            for index, (flow_type, record) in enumerate(todo):
                self.backlog_left = len(todo) - index
                self.notify_changed()
                pan = self._pan_for_backlog(record)
                if pan is None:
                    continue
                for _ in range(retries if flow_type is ReversalFlow else 1):
                    if await self._attempt(flow_type(j.get(record.id), pan, self.term,
                                                     self._timeout())):
                        break
        finally:
            self.backlog_left = 0

    def _pan_for_backlog(self, record: TxnRecord) -> str | None:
        """The card number an owed message carries; a record whose number cannot be read back
        (the card-data key changed, the field is damaged) is quarantined instead."""
        j = self.journal
        assert j is not None
        try:
            return j.decrypt_pan(record.id)
        except (JournalError, VaultError) as exc:
            problem = f"the card number cannot be read back ({type(exc).__name__})"
            log.error("trace %s: %s: quarantined", record.stan, problem)
            j.apply(record.id, TxnEvent.QUARANTINE, problem=problem)
            return None

    async def _settle_backlog_before_anything(self) -> TxnResult | None:
        await self.clear_backlog()
        assert self.journal is not None
        if self.journal.open_settlement() is not None:
            self.notice = "settlement_resuming"
            log.warning("resuming an interrupted settlement")
            return await self._run_settlement(self._tx()["operator"])
        return None

    # -- operations -------------------------------------------------------------

    def _refusal(self, kind: TxnKind | None) -> TxnResult | None:
        gone = lifecycle.refusal(self)  # deregistered: every financial operation and settlement refused
        if gone is not None:
            return gone
        if self.service_problem:
            return TxnResult("refused", "service_mode", detail=self.service_problem)
        if not self.settings["security"].get("password_changed"):
            return TxnResult("refused", "change_password",
                             detail="the factory supervisor password must be changed first")
        if kind is not None and kind.value not in self._tx()["enabled"]:
            return TxnResult("refused", "type_disabled", detail=f"{kind.value} is disabled")
        return None

    async def financial(self, request: TxnRequest, io: OperatorInput) -> TxnResult:
        if io.request_key is not None:
            request = replace(request, request_key=io.request_key)
        return await self.operation(request.kind.value, io.source,
                                    lambda: self._financial(request, io), request.amount)

    async def operation(self, op: str, source: str, work: Callable[[], Awaitable[TxnResult]],
                        amount: int | None = None) -> TxnResult:
        """One operation at a time; the front panel hears of its start and end, whatever happens."""
        async with self._lock:
            self._cancel.clear()
            self.card_refusal = None
            self._running = f"{op} from {source}"
            self._started(op, source, amount)
            result = TxnResult("failed", "internal_error")
            try:
                result = self._password_words(await work(), source)
                self.last_result = result
                return result
            finally:
                self._running = None
                self._finished(op, source, result)

    def _started(self, op: str, source: str, amount: int | None = None) -> None:
        if self.observer is not None and source != "keypad":
            self.observer.op_started(op, source, amount)

    def _finished(self, op: str, source: str, result: TxnResult) -> None:
        """The keypad learns how an operation it did not start ended, and redraws its status."""
        if self.observer is not None:
            if source != "keypad":
                self.observer.op_finished(op, source, result)
            self.observer.changed()

    async def _financial(self, request: TxnRequest, io: OperatorInput) -> TxnResult:
        refusal = self._refusal(request.kind)
        if refusal is not None:
            return refusal
        j = self.journal
        assert j is not None and self.link is not None
        if not await self.ensure_signed_on():
            return TxnResult("failed", self.sign_on_problem, detail="sign-on failed")
        try:
            await self._settle_backlog_before_anything()
            if j.open_settlement() is not None:
                return TxnResult("refused", "settlement_interrupted",
                                 detail="an interrupted settlement must finish first")
            request = self._with_original(request)
            self._step("connecting")
            try:
                await self._race(self.link.channel.connect(), cancellable=True)
            except OperatorCancelled:
                return TxnResult("cancelled", "cancelled", detail="cancelled while connecting")
            except NoReply as exc:
                self._link(False)
                return TxnResult("failed", "host_unreachable", detail=exc.detail)
            tx = self._tx()
            ctx = FlowContext(
                term=self.term, batch=j.current_batch(), now=self.now(), currency=tx["currency"],
                limits=Limits(max_amount=int(tx["max_amount"]),
                              allow_fallback_swipe=bool(tx["allow_fallback_swipe"])),
                reply_timeout=self._timeout(), pin_tries=int(tx["pin_tries"]),
                allow_pin_bypass=bool(tx["allow_pin_bypass"]),
                chip_capable=self.board.reader_driver != "hid",  # a wedge has no chip slot
            )
            flow = FinancialFlow(request, ctx)
            result = await self._drive(flow, io, cancellable=True)
            assert result is not None
            if result.status in ("reversal_pending", "cancelled_after_send"):
                result = await self._reverse_now(result)
            return result
        except JournalFull as exc:
            log.error("%s", exc)
            return TxnResult("failed", "journal_full", detail=str(exc))

    def _with_original(self, request: TxnRequest) -> TxnRequest:
        """The original a follow-up names, filled in from this journal where it is here (its
        state, amount, card and every follow-up already made against it), for
        validation.check_original. A refund's original may be from elsewhere: then the
        operator's reference (RRN, date, batch and trace where known) stands alone."""
        j = self.journal
        assert j is not None
        orig = request.original
        if orig is None:
            return request
        if request.kind is TxnKind.REFUND:
            record = j.find_by_rrn(orig.rrn) if orig.rrn else None
            if record is None:
                return replace(request, original=replace(orig, record_id=None))
        else:
            # The merchant names the original by its voucher number: a void by the open batch's
            # newest record with it, a completion by the newest pre-auth with it (any batch).
            preauth = TxnKind.PREAUTH if request.kind is TxnKind.COMPLETION else None
            record = j.find_by_invoice(orig.invoice, orig.batch, preauth) if orig.invoice else None
            if record is None:
                return replace(request, original=replace(orig, record_id=None))
        follow_ups = j.follow_ups(record)
        return replace(request, original=OriginalRef(
            record_id=record.id, kind=record.kind, state=record.state, amount=record.amount,
            invoice=record.invoice, batch=record.batch, trace=record.stan, rrn=record.rrn,
            auth_code=record.auth_code, date=record.local_date, card_org=record.card_org,
            pan=j.decrypt_pan(record.id),
            refunded=sum(f.amount for f in follow_ups if f.kind is TxnKind.REFUND),
            follow_ups=tuple(f.kind for f in follow_ups),
        ))

    def check_follow_up(self, kind: TxnKind, original: OriginalRef) -> tuple[OriginalRef, Refusal | None]:
        """What the operator is shown when naming an original on the keypad: the original as
        the journal has it, and the refusal the transaction would get (the same rule)."""
        assert self.journal is not None
        request = self._with_original(TxnRequest(kind, original=original))
        assert request.original is not None
        return request.original, check_original(request, self.journal.current_batch())

    async def _reverse_now(self, result: TxnResult) -> TxnResult:
        """The outcome is unknown: reverse at once while the link may be up."""
        j = self.journal
        assert j is not None and result.record is not None
        record = j.get(result.record.id)
        pan = j.decrypt_pan(record.id)
        self._step("reversing", cancellable=False)
        for _ in range(int(self._tx()["reversal_retries"])):
            if await self._attempt(ReversalFlow(j.get(record.id), pan, self.term, self._timeout())):
                break
        record = j.get(record.id)
        if record.state is TxnState.REVERSED:
            return replace(result, status="reversed", message_key="reversal_sent", record=record)
        return replace(result, status="reversal_pending", message_key="reversal_pending",
                       record=record)

    async def settle(self, password: str | None, source: str = "ecr",
                     authorised: bool = False) -> TxnResult:
        return await self.operation("settle", source,
                                    lambda: self._settle(password, authorised, source))

    async def _settle(self, password: str | None, authorised: bool, source: str) -> TxnResult:
        refusal = self._refusal(None)
        if refusal is not None:
            return refusal
        if not authorised and not await self.check_password(password, "settlement", source):
            return TxnResult("refused", "password_wrong")
        self._step("signing_on", cancellable=False)
        if not await self.ensure_signed_on():
            return TxnResult("failed", self.sign_on_problem, detail="sign-on failed")
        return await self._run_settlement(self._tx()["operator"])

    async def _run_settlement(self, operator: str) -> TxnResult:
        j = self.journal
        assert j is not None
        resume = j.open_settlement()
        if resume is None:
            await self.clear_backlog()
            counts = j.unresolved_counts()
            if any(counts.values()):
                aside = (f"; {counts['QUARANTINED']} set aside that a supervisor must resolve"
                         if counts["QUARANTINED"] else "")
                return TxnResult(
                    "refused", "settlement_blocked",
                    detail=f"{counts['REVERSAL_DUE']} reversal(s) and {counts['ADVICE_DUE']} "
                           f"advice(s) are not yet acknowledged by the host{aside}",
                )
            batch = j.current_batch()
            dom, fgn = j.totals(batch)
        else:
            batch = resume.batch
            dom, fgn = SideTotals(*resume.domestic), SideTotals(*resume.foreign)
        flow = SettlementFlow(self.term, batch, operator, self._tx()["currency"],
                              self._timeout(), dom, fgn, resume)
        try:
            result = await self._drive(flow, OperatorInput(), cancellable=False)
        except JournalFull as exc:
            return TxnResult("failed", "journal_full", detail=str(exc))
        assert result is not None
        if result.status == "settled":
            self.notice = None
            j.purge_settled(int(self._tx()["retention_days"]))
        return result

    async def echo(self) -> tuple[bool, float, str]:
        async with self._lock:
            assert self.link is not None and self.journal is not None
            start = time.monotonic()
            try:
                reply = await self.link.request(
                    echo_request(self.term, self.journal.current_batch()), mac=False,
                    timeout=self._timeout(),
                )
            except HostError as exc:
                self._link(False)
                return False, time.monotonic() - start, str(exc)
            self._link(True)
            return reply.fields.get("39") == "00", time.monotonic() - start, reply.fields.get("39", "")

    async def sign_on(self) -> bool:
        async with self._lock:
            assert self.link is not None
            self.link.sign_on_required = True
            return await self.ensure_signed_on()

    async def sign_off(self) -> bool:
        async with self._lock:
            assert self.link is not None and self.journal is not None
            msg = signoff_request(self.journal.allocate_stan(), self.term, self.journal.current_batch())
            try:
                reply = await self.link.request(msg, mac=False, timeout=self._timeout())
            except HostError:
                return False
            self.link.keys = None
            self.link.sign_on_required = True
            self.journal.audit(self._tx()["operator"], "sign-off", "", reply.fields.get("39", ""))
            return reply.fields.get("39") == "00"

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "board": self.board.name,
            "service_mode": self.service_problem,
            "busy": self.busy,
        }
        if self.notice:
            # A till shows words, in the terminal's language; the key is for a till's own logic.
            lang = str(self.settings.get("display", {}).get("language", "en"))
            known = self.notice in CATALOG
            info["notice"] = text(self.notice, lang) if known else self.notice
            info["notice_key"] = self.notice if known else None
        else:
            info["notice"] = None
        if self.card_refusal is not None:  # a till polling status during a sale sees it
            lang = str(self.settings.get("display", {}).get("language", "en"))
            info["card_refused"] = {"key": self.card_refusal, "message": text(self.card_refusal, lang)}
        if self.journal is not None and self.link is not None:
            info.update({
                "tid": self.term.tid,
                "mid": self.term.mid,
                "signed_on": not self.link.sign_on_required and self.link.keys is not None,
                "batch": self.journal.current_batch(),
                "unresolved": self.journal.unresolved_counts(),
                "quarantined": [{"voucher": r.invoice, "batch": r.batch, "type": r.kind.value,
                                 "amount": r.amount, "problem": r.problem}
                                for r in self.journal.quarantined()],
                "refunds_declined": [{"voucher": r.invoice, "batch": r.batch, "amount": r.amount,
                                      "pan": r.pan_masked, "code": r.response_code,
                                      "message": text(r.response_code or "")}
                                     for r in self.journal.declined_after_stored()],
                "backlog_left": self.backlog_left,
                "settlement_open": self.journal.open_settlement() is not None,
                "password_changed": bool(self.settings["security"].get("password_changed")),
            })
        if self.prints is not None:
            info["printing"] = self.prints.status()
        return info
