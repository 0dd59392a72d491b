"""The terminal core, TerminalCore: the operation lock, and the engine's flows carried out against I/O.

TerminalCore is three parts, split by concern: this file (the core proper: AppConfig, settings,
open and close, the operation lock, CANCEL, passwords, status), FlowRunner (flows.py: the
action executor and the financial operations) and HostSession (session.py: sign-on, the
backlog, settlement, echo, sign-off).

Theory of operation: an operation (from the ECR link now, the keypad later)
takes the one operation lock, makes sure the terminal is signed on and owes
the host nothing (reversals, advices, an interrupted settlement), then runs an
engine flow, carrying out each action it returns (journal write, host request,
card read, PIN entry) and feeding the resulting event back. CANCEL is honoured
wherever the flow allows it. `fault_hook` lets tests stop between any two
actions, which is how a power loss at every step is proven.

The core imports no service and no front end. What it needs of them it asks through hooks that
do nothing here and that the assembled terminal (firmware/app/terminal.py) fills in: the key store
(`_open_key_store`, the board's driver), the paper (`_open_paper`, a PaperQueue), the card reader
(`_open_reader`), the work after open() (a deregistration cut by a power loss) and before the
start-up sign-on (held orders cut mid-sale).

Keys: the core holds a KeyStore (firmware/ports.py), never a clear key of a token board. A store
that cannot be opened or whose checks fail (firmware/app/core/custody.py) puts the terminal in
service mode with words: no journal, no money work, the reason in `status` and on the screen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from firmware.app.boards import BoardProfile, profile
from firmware.app.core import custody, lifecycle
from firmware.app.core.checkpoint import IDLE_S, IdleCheckpoint
from firmware.app.core.contract import PaperQueue, TerminalObserver
from firmware.app.core.flows import CardSlot, FlowRunner
from firmware.app.core.operators import Operators
from firmware.app.core.session import HostSession
from firmware.engine.deregistration import Lifecycle
from firmware.engine.model import TxnResult
from firmware.host.channel import HostLink
from firmware.host.messages import Terminal as TermIds
from firmware.i18n import CATALOG, text
from firmware.journal import archive
from firmware.journal.errors import JournalCorrupt, JournalError, JournalFull, JournalTooNew
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.ports import (
    CardReader,
    HostKeys,
    KeyStatus,
    KeyStore,
    KeyStoreError,
    KeyStoreUnavailable,
    UpdateAgent,
)
from firmware.security import PasswordGuard, locked_key
from firmware.settings.model import factory, hash_password, password_problem, password_words, verify_password
from firmware.settings.store import SettingsStore

log = logging.getLogger("posfw.app")
# The archive check (_schedule_archive_check): first a minute after start, then daily.
ARCHIVE_CHECK_AFTER_START_S = 60.0
ARCHIVE_CHECK_EVERY_S = 86_400.0


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
    key_store: str | None = None  # overrides the board profile's key store (boards.KEY_STORES)
    idle_checkpoint_s: float = IDLE_S  # quiet this long, the journal's WAL is checkpointed


class TerminalCore(FlowRunner, HostSession):
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
        self.host_keys: HostKeys | None = None  # open(): the board's key store, host half
        self.service_problem: str | None = None
        self.service_notice = "service_mode"  # the catalog key the screen shows in service mode
        self.key_store: KeyStore | None = None
        self.key_status: KeyStatus | None = None  # as the start-up check found it
        self.key_problem: str | None = None  # why the key store cannot be used, in words
        self.card_slot = CardSlot()
        self.password_guard = PasswordGuard()
        self.operators = Operators(self)  # who is signed in at the keypad; the audit's who
        self.fault_hook: Callable[[object], None] | None = None
        self.notice: str | None = None  # shown on the idle screen / status
        self.sign_on_problem = "host_unreachable"  # catalog key: why the last sign-on failed
        self.card_refusal: str | None = None  # the reader's last refusal in the running operation
        self._chip_spent = False  # a chip card whose session ended may still be in the slot
        self._lock = asyncio.Lock()
        self._cancel = asyncio.Event()
        self._running: str | None = None  # the operation under the lock, for the CANCEL audit
        self.last_result: TxnResult | None = None
        self.prints: PaperQueue | None = None
        self.reader: CardReader | None = None
        self.idle_checkpoint: IdleCheckpoint | None = None  # open(): the journal's, at idle
        self.observer: TerminalObserver | None = None
        self.link_up: bool | None = None  # how the last exchange with the host went
        self._upload_total: dict[int, int] = {}  # settlement id -> records to upload (progress)
        self.backlog_left = 0  # reversals/advices still to be tried in the running backlog pass
        self.starting = False  # the start-up sign-on and backlog hold the operation lock
        # The board's update agent (firmware/app/terminal.py plugs it in; None: updates are not
        # this core's business, as in the core alone). The updates service speaks to it.
        self.update_agent: UpdateAgent | None = None
        self._archive_timer: asyncio.TimerHandle | None = None
        self._archive_watch: asyncio.Future[None] | None = None

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
        if wiped:  # no key may come back: a throwaway vault, a link that never signs on
            vault = CardVault.throwaway()
            self._key_store_to_destroy()
        else:
            store = await self._checked_key_store()
            if store is None:
                return
            vault = CardVault(store)
            self.host_keys = store
        try:
            self.journal = Journal.open(self.data_dir / "journal.db", vault)
        except (JournalCorrupt, JournalTooNew) as exc:
            # Damaged, or written by newer firmware this one cannot read (a fall back after an
            # update whose journal migration was not additive): untouched, said in words.
            self.service_problem = str(exc)
            log.error("SERVICE MODE: %s", exc)
            return
        self.password_guard.attach(self.journal)  # a lock outlives a restart
        report = self.journal.recover()
        if report.to_reverse or report.enquiries_failed or report.settlements_abandoned:
            log.warning("start-up recovery: %s", report)
        self.link = self._make_link()
        self.prints = self._open_paper()
        self.reader = self._open_reader()
        self._schedule_archive_check(ARCHIVE_CHECK_AFTER_START_S)
        self.idle_checkpoint = IdleCheckpoint(self.journal.checkpoint_at_idle, self._quiet,
                                              self.cfg.idle_checkpoint_s)
        await self._after_open()

    def _schedule_archive_check(self, delay: float) -> None:
        """The archive files are checked in idle time, never at start-up (the hot journal's own
        check is all a start pays for): a minute after it, then daily. A timer, not a waiting
        task, so a power cut (the loop dropped) leaves nothing half-done behind."""
        self._archive_timer = asyncio.get_running_loop().call_later(
            delay, lambda: setattr(self, "_archive_watch", asyncio.ensure_future(
                self._check_archive_once())))

    async def _check_archive_once(self) -> None:
        """Waits while an operation runs, then reads every archive file in a thread of its own.
        Diagnostics shows the result; a failed one is logged and audited."""
        try:
            while self._lock.locked():
                await asyncio.sleep(1.0)
            j = self.journal
            rows = j.archive_log() if j is not None else []
            if j is None or not rows:
                return
            result = await asyncio.to_thread(archive.check, j.archive_dir, rows)
            j.archive_check = result
            if not result.ok:
                log.error("archive check: %s", "; ".join(result.problems))
                j.audit("system", "archive check", "; ".join(result.problems)[:500], "FAILED")
        finally:
            if self._archive_timer is not None:  # not closed meanwhile
                self._schedule_archive_check(ARCHIVE_CHECK_EVERY_S)

    async def _checked_key_store(self) -> KeyStore | None:
        """The board's key store, opened and checked (custody.check_store); None, the terminal
        in service mode with the words of what is wrong, when it cannot be used."""
        try:
            self.key_store = self._open_key_store()
            refresh = getattr(self.key_store, "refresh", None)
            if refresh is not None:  # a PIN pad's keys, asked over its link
                await refresh()
            record = custody.read_record(self.data_dir)
            self.key_status = custody.check_store(self.key_store, record)
        except KeyStoreError as exc:
            self._key_service_mode(str(exc))
            return None
        except Exception as exc:  # a driver's own failure (a library missing, a dead module)
            log.exception("key store failed to open")
            self._key_service_mode(f"the key store failed ({type(exc).__name__}); see the log")
            return None
        if record is None:
            log.warning("no provisioning record (%s): the master key's check value %s is not "
                        "compared with the one provisioned", custody.RECORD, self.key_status.tmk_check)
        log.info("key store: %s, master key check value %s", self.key_status.where,
                 self.key_status.tmk_check)
        return self.key_store

    def _key_store_to_destroy(self) -> None:
        """A wiped terminal opens its store only so that a wipe cut by a power loss can still
        destroy what is left in it (deregistration's resume); nothing is checked or used."""
        try:
            self.key_store = self._open_key_store()
        except Exception as exc:  # said in the deregistration's report if it is still needed
            self.key_problem = str(exc) if isinstance(exc, KeyStoreError) else type(exc).__name__
            log.info("deregistered: the key store is not open (%s)", self.key_problem)

    def _key_service_mode(self, why: str) -> None:
        self.key_problem = why
        self.service_problem = f"key store: {why}"
        self.service_notice = "service_keys"
        log.error("SERVICE MODE: key store: %s", why)
        if self.key_store is not None:
            try:
                self.key_status = self.key_store.status()
            except KeyStoreError:
                self.key_status = None

    def key_words(self, lang: str) -> list[str]:
        """The key store's state in words (diagnostics, the ECR status)."""
        status = self.key_status
        if self.key_store is not None and self.key_problem is None:
            try:
                status = self.key_store.status()
            except KeyStoreError as exc:
                return custody.status_words(None, str(exc), lang)
        return custody.status_words(status, self.key_problem, lang)

    # -- hooks: what the services plug in (firmware/app/terminal.py) ------------

    def _open_key_store(self) -> KeyStore:
        """open(): the board's key store (firmware/app/devices.py picks its driver). Raises
        KeyStoreError in words."""
        raise KeyStoreUnavailable("no key store is plugged into this terminal core")

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
        self._poke_idle()

    def _poke_idle(self) -> None:
        """Activity: the journal's idle checkpoint waits for a quiet while from now."""
        if self.idle_checkpoint is not None:
            self.idle_checkpoint.poke()

    def _quiet(self) -> bool:
        """No operation holds the lock and no copy is printing: the checkpoint may run."""
        return not self.busy and not (self.prints is not None and self.prints.printing)

    async def close(self) -> None:
        if self._archive_timer is not None:
            self._archive_timer.cancel()
            self._archive_timer = None
        if self._archive_watch is not None:
            self._archive_watch.cancel()
        if self.idle_checkpoint is not None:
            self.idle_checkpoint.close()
        aclose = getattr(self.key_store, "aclose", None)
        if aclose is not None:  # a PIN pad's half ends its link work before the reader closes
            await aclose()
        if self.reader is not None:
            await self.reader.close()
        if self.prints is not None:
            await self.prints.close()
        if self.link is not None:
            await self.link.channel.close()
        if self.journal is not None:
            self.journal.close()
        if self.key_store is not None and aclose is None:
            self.key_store.close()

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
            self.journal.audit(self.actor(source), "cancel", f"while {self._running or 'terminal work'} ran",
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
            self.link.forget_keys()
        elif self.key_store is not None:
            self.key_store.forget_working_keys()

    def destroy_keys(self) -> list[str]:
        """Every key object of the store destroyed (deregistration's wipe), one line each in
        words; a store that cannot be reached is said in words too (the wipe goes on)."""
        self.forget_keys()
        if self.key_store is None:
            return [f"key store NOT reached, its keys not destroyed: {self.key_problem or 'not open'}"]
        try:
            return [f"{line} destroyed" for line in self.key_store.destroy_all()]
        except KeyStoreError as exc:
            log.error("deregistration: the key store's objects were not destroyed: %s", exc)
            return [f"key store NOT reached, its keys not destroyed: {exc}"]

    async def destroy_pad_keys(self) -> list[str]:
        """A PIN pad board's keys in its pad erased (deregistration), one line each in words; a
        pad that does not answer is said in words."""
        destroy = getattr(self.key_store, "destroy_pad", None)
        if destroy is None:
            return []
        try:
            return [f"{line} destroyed" for line in await destroy()]
        except KeyStoreError as exc:
            log.error("deregistration: the PIN pad's keys were not destroyed: %s", exc)
            return [f"PIN pad NOT reached, its keys not destroyed: {exc}"]

    def _step(self, step: str, done: int | None = None, total: int | None = None,
              cancellable: bool = True) -> None:
        if self.observer is not None:
            self.observer.op_step(step, done, total, cancellable)

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def actor(self, source: str) -> str:
        """Who and from where, as the audit names them: "07 keypad" (the operator signed in at
        the keypad, or the implicit one), an ECR source naming its till, "system"."""
        return self.operators.actor(source)

    # -- passwords --------------------------------------------------------------

    async def check_password(self, password: str | None, purpose: str, source: str,
                             who: str | None = None) -> bool:
        """The supervisor password, from `source` ("keypad" or the ECR peer), counted and audited
        (`who`: the audit's operator and source, when not the source's operator: a sign-in as 00).

        scrypt takes tens of milliseconds: it runs off the event loop so the LCD, the ECR link
        and CANCEL stay live; the attempt is counted and audited back on the loop (the journal
        connection is not shared with worker threads). While `source` is locked (its own tries
        or the ceiling of all sources: firmware/security.py) nothing is checked.
        """
        assert self.journal is not None
        left = self.password_guard.seconds_left(source)
        if left > 0:
            self.journal.audit(who or self.actor(source), f"password for {purpose}",
                               f"locked, {left:.0f} s left", "refused")
            return False
        ok = password is not None and await asyncio.get_running_loop().run_in_executor(
            None, verify_password, password, str(self.settings["security"]["supervisor_hash"]))
        return self.record_password_result(ok, purpose, source, who)

    def record_password_result(self, ok: bool, purpose: str, source: str,
                               who: str | None = None) -> bool:
        """Counts the attempt (locking after too many) and audits it, on the loop's thread."""
        assert self.journal is not None
        self.password_guard.record(self.journal, ok, source, purpose, who=who or self.actor(source))
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
            self.journal.audit(self.actor(source), "password change", rule, "refused")
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
            self.journal.audit(self.actor(source), "password change", "", "done")
            return TxnResult("approved", "approved", detail="supervisor password changed")

    async def apply_settings(self, data: dict[str, dict[str, Any]], changed: list[str]) -> None:
        """The new settings take effect now: a new host link when its address or ids changed."""
        self.settings = data
        self.password_guard.configure(data.get("security", {}))
        relink = any(k.startswith("comms.") or k in ("merchant.tid", "merchant.mid") for k in changed)
        if relink and self.link is not None:
            await self.link.channel.close()
            self.link.forget_keys()  # the keys of the old sign-on go with the old link
            self.link = self._make_link()  # signs on again before the next operation

    # -- the operation lock: one operation at a time ----------------------------

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
                if self.journal is not None:
                    # who asked for what, from where (the journal's own rows of the operation
                    # name its operator code only); a full disk refuses the operation here
                    try:
                        self.journal.audit(self.actor(source), "operation", op, "requested")
                    except JournalFull as exc:
                        log.error("%s from %s not started: %s", op, source, exc)
                        result = TxnResult("failed", "journal_full", detail=str(exc))
                        return result
                result = self._password_words(await work(), source)
                self.last_result = result
                return result
            finally:
                self._running = None
                self._finished(op, source, result)
                self._poke_idle()

    def _started(self, op: str, source: str, amount: int | None = None) -> None:
        if self.observer is not None and source != "keypad":
            self.observer.op_started(op, source, amount)

    def _finished(self, op: str, source: str, result: TxnResult) -> None:
        """The keypad learns how an operation it did not start ended, and redraws its status."""
        if self.observer is not None:
            if source != "keypad":
                self.observer.op_finished(op, source, result)
            self.observer.changed()

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "board": self.board.name,
            "service_mode": self.service_problem,
            "busy": self.busy,
            "key_store": self.key_words(self.language()),
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
                "signed_on": not self.link.sign_on_required and self.link.has_keys,
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
                # the operator signed in at the keypad (None: nobody, or no operators set up)
                "operator": self.operators.signed_in,
                "operators": self.operators.configured,
            })
        if self.prints is not None:
            info["printing"] = self.prints.status()
        return info
