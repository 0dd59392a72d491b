"""The engine's flows carried out: FlowRunner, a part of TerminalCore split out by concern.

TerminalCore (firmware/app/core/terminal.py) is FlowRunner + HostSession + the core proper;
this part holds the action executor: `_drive` feeds an engine flow the events of the actions it
asks for, `_perform` carries out one action (journal write, host request, card read, PIN entry,
the settlement's steps), and the financial operations (`financial`, the follow-ups' originals,
the reversal sent at once when an outcome is unknown). CardSlot is the sim board's card source.

The clear PIN becomes an encrypted block in `_perform` and is dropped at once; the tests record
every block through `_perform`'s globals (tests/conftest.py), so `encrypt_pin_block` is looked
up here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.app.boards import BoardProfile
from firmware.app.core import lifecycle
from firmware.app.core.contract import (
    OPERATOR_INPUT,
    OperatorCancelled,
    OperatorInput,
    PaperQueue,
)
from firmware.app.core.parts import CoreParts
from firmware.emv.params import EmvParams
from firmware.engine import events as ev
from firmware.engine.backlog import AdviceFlow, ReversalFlow
from firmware.engine.financial import FinancialFlow, FlowContext
from firmware.engine.model import CardRead, OriginalRef, TxnRequest, TxnResult
from firmware.engine.states import TxnEvent, TxnState
from firmware.engine.tracks import CardProblem, card_from_swipe
from firmware.engine.validation import Limits, Refusal, check_original
from firmware.host.errors import HostError, LocalProtocolError, NoReply, TlsRefused
from firmware.host.messages import TxnKind, mask_pan
from firmware.i18n import register, text
from firmware.journal.errors import JournalFull
from firmware.ports import (
    CardReader,
    ChipInserted,
    ChipRemoved,
    KeyStoreError,
    MagstripeRead,
    PinCancelled,
    PinEntered,
    PinPad,
    PinResult,
    PinSkipped,
    ReaderUnavailable,
    ReadFailed,
    ReadTimedOut,
)

if TYPE_CHECKING:
    from firmware.emv.kernel import KernelConfig

log = logging.getLogger("posfw.app")  # the core's log lines, whichever part writes them

# A PIN typed on the PIN pad (a board whose key store is "pinpad"): how long the cardholder has,
# and the prompt on the pad's own display (its language is the terminal's; the amount on it).
PAD_PIN_TIMEOUT_S = 60.0
MESSAGES: dict[str, tuple[str, str]] = {
    "pad_prompt": ("{amount} Enter PIN", "{amount} 请输入密码"),
    "pad_prompt_no_amount": ("Enter PIN", "请输入密码"),
}

register(MESSAGES)

# 9C, the transaction type the chip is told (EMV: 00 goods and services, 31 enquiry, 03/30 pre-auth
# per CUP practice; docs/chip.md). Kinds not listed read the chip as a sale does.
KERNEL_TXN_TYPE: dict[str, int] = {"sale": 0x00, "balance": 0x31, "preauth": 0x03, "refund": 0x20}
REMOVE_CARD_WAIT_S = 30.0  # "Please remove card" holds the keypad's result this long at most


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


class FlowRunner(CoreParts):
    """A part of TerminalCore split out by concern: carries out the engine's flows (the action
    executor) and the financial operations. Not used on its own; the attributes below are set by
    TerminalCore (its __init__ and open()) or are methods of the other parts, listed here or in
    CoreParts (parts.py) so that a reader sees where each `self.x` comes from."""

    # State, set by TerminalCore.__init__ and open()
    board: BoardProfile
    now: Callable[[], datetime]
    reader: CardReader | None
    card_slot: CardSlot
    prints: PaperQueue | None
    fault_hook: Callable[[object], None] | None
    service_problem: str | None
    card_refusal: str | None
    _chip_spent: bool  # a chip card whose session ended may still be in the slot
    _cancel: asyncio.Event
    _upload_total: dict[int, int]
    data_dir: Path  # read by lifecycle.refusal
    key_store: Any  # the board's KeyStore; a PIN pad board's has `pinpad`

    if TYPE_CHECKING:  # for the reader and the type checker only: at run time these are the
        # methods of HostSession, found through the class.
        def _link(self, up: bool) -> None: ...
        async def ensure_signed_on(self, who: str = "system") -> bool: ...
        async def _attempt(self, flow: ReversalFlow | AdviceFlow) -> bool: ...
        async def _settle_backlog_before_anything(self) -> TxnResult | None: ...

    # -- the action executor ----------------------------------------------------

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
                card, pin = await self._race(self._take_card(io, flow), cancellable)
            except OperatorCancelled:
                return ev.Cancel()
            except ReaderUnavailable as exc:
                log.error("card reader: %s", exc)
                self.notice = "reader_unavailable"
                return ev.Cancel()
            if card is None:
                return ev.Cancel()  # no card within the reader's wait
            if isinstance(card, ev.CardDeclined):
                return card
            io.pin = pin if pin is not None else io.pin
            return ev.CardPresented(card)
        if isinstance(action, ev.AskPin) and io.chip is not None and io.chip.pin_block is not None:
            return ev.PinEntered(io.chip.pin_block)  # taken at the chip's CVM step
        if isinstance(action, ev.CompleteChip):
            assert io.chip is not None
            self._step("chip_completing", cancellable=False)
            return await io.chip.complete(action.response_code, action.icc_reply,
                                          cancelled=self._cancel.is_set())
        if isinstance(action, ev.AskPin):
            pad = self._pinpad()
            if pad is not None and self.link.has_keys:
                # The cardholder types on the PIN pad; the terminal gets the block (never a PIN,
                # and a PIN that came with the request is not used: io.pin dropped unread).
                io.pin = None
                try:
                    result = await self._race(self._pad_pin(pad, flow.card.pan, flow.request.amount,
                                                            action.bypass_allowed), cancellable)
                except OperatorCancelled:  # the terminal's CANCEL: the pad's entry ends too
                    return ev.Cancel()
                return self._pad_event(result, action.bypass_allowed)
            if io.pin is None and self.observer is not None and self.link.has_keys:
                self._step("pin")
                try:
                    io.pin = await self._race(self.observer.ask_pin(
                        mask_pan(flow.card.pan),
                        flow.request.amount, action.bypass_allowed, action.tries_left), cancellable)
                except OperatorCancelled:
                    return ev.Cancel()
                if io.pin is None:
                    return ev.PinEntered(None) if action.bypass_allowed else ev.Cancel()
            if io.pin is None or not self.link.has_keys:
                if action.tries_left is not None:
                    return ev.NoPinAgain()  # the till asks the cardholder and sends it again
                return ev.PinEntered(None) if action.bypass_allowed else ev.Cancel()
            # The clear PIN becomes an encrypted block here and is dropped at once.
            block = await self._encrypt_pin(io.pin, flow.card.pan)
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
                             declined_after_stored=action.declined_after_stored,
                             chip_tags=action.chip_tags)
            if (copies or action.declined_after_stored) and self.prints is not None:
                self.prints.wake()
            if action.event is TxnEvent.QUARANTINE or action.declined_after_stored:
                log.error("trace %s: %s", record.stan, record.problem or
                          f"stored refund declined ({record.response_code})")
                self.notify_changed()
            return ev.OutcomeWritten(record)
        if isinstance(action, ev.AuditNote):
            j.audit(self.actor(io.source), action.action, action.detail, action.outcome)  # who asked
            return None
        if isinstance(action, ev.CloseScriptAdvice):
            j.script_advice_done(action.record_id, action.sent, action.why)
            return ev.Done()
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

    async def _take_card(self, io: OperatorInput, flow: Any
                         ) -> tuple[CardRead | ev.CardDeclined | None, str | None]:
        """The first card from the reader or the sim board's card slot, whichever comes."""
        if self.reader is None:
            return await self.card_slot.take()
        slot = asyncio.ensure_future(self.card_slot.take())
        read = asyncio.ensure_future(self._read_card(io, flow))
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

    async def _read_card(self, io: OperatorInput, flow: Any) -> CardRead | ev.CardDeclined | None:
        """Reads until a usable card, a timeout (None) or a cancel; a bad swipe or a chip that
        failed asks again. A chip card inserted is read from its chip (ChipSession); its
        swipe is refused ("insert chip") until its chip failed chip_fallback_after times in
        this transaction, when it is taken as a fallback (docs/chip.md)."""
        assert self.reader is not None
        tx = self._tx()
        chip_failures = 0
        fallback_after = int(tx.get("chip_fallback_after", 3))
        event: object = None
        if await self._chip_left_in():
            await self._wait_removed(60.0)
        elif await self.reader.chip_present():
            event = ChipInserted()  # inserted before the amount was keyed: read it now
        while True:
            if event is None:
                event = await self.reader.read(magstripe=True, chip=True, timeout_s=60.0)
            if isinstance(event, ChipInserted):
                # The chip kernel (firmware/emv) is loaded at the first card inserted, not at idle.
                from firmware.app.core.chip import ChipFailed

                event = None
                try:
                    return await self._read_chip(io, flow)
                except ChipFailed as exc:
                    chip_failures += 1
                    log.info("chip read failed (%d): %s", chip_failures, exc)
                    can_swipe = 0 < fallback_after <= chip_failures
                    self._step("card")  # back to waiting for a card, the reason under it
                    self._card_refused("chip_failed_swipe" if can_swipe else "chip_failed")
                    self._chip_spent = True
                    continue
            if isinstance(event, ReadTimedOut):
                return None
            if isinstance(event, ReadFailed):
                log.info("card read failed: %s", event.reason)
                self._card_refused("card_unreadable")
                event = None
                continue
            if isinstance(event, ChipRemoved):
                self._chip_spent = False
                event = None
                continue
            if not isinstance(event, MagstripeRead):
                event = None
                continue
            swipe, event = event, None
            allow = bool(tx["allow_fallback_swipe"]) or 0 < fallback_after <= chip_failures
            try:
                return card_from_swipe(swipe, today=self.now().date(), allow_fallback=allow)
            except CardProblem as exc:
                log.info("card refused at the reader: %s", exc.key)
                self._card_refused(exc.key)

    async def _read_chip(self, io: OperatorInput, flow: Any) -> CardRead | ev.CardDeclined:
        """A chip session up to the host: the kernel's selection to its first GENERATE AC."""
        from firmware.app.core.chip import ChipFailed, ChipHooks, ChipSession  # not at idle: see _read_card

        assert self.reader is not None and self.link is not None
        request = flow.request
        session = ChipSession(self.reader, self._emv_params(), self._kernel_config(),
                              request.amount or 0, KERNEL_TXN_TYPE.get(request.kind.value, 0x00),
                              self.now(), ChipHooks(
                                  choose=self._choose_application,
                                  ask_pin=lambda masked: self._chip_pin(io, masked, request.amount),
                                  encrypt_pin=self._encrypt_chip_pin,
                                  step=lambda step: self._step(step),
                                  pad_pin=self._chip_pad_pin(request.amount)))
        io.chip = session
        try:
            result = await session.read()
        except ChipFailed:
            io.chip = None
            await session.close()
            raise
        except BaseException:
            io.chip = None
            await asyncio.shield(session.close())  # a CANCEL mid-read: nothing was sent
            self._chip_spent = True
            raise
        if isinstance(result, ev.CardDeclined):
            io.chip = None
            await session.close()
            self._chip_spent = True
        return result

    def _emv_params(self) -> EmvParams:
        """The chip tables the host downloaded (the journal keeps them), or the built-in
        defaults where nothing was downloaded yet."""
        assert self.journal is not None
        return self.journal.emv_params()

    def _kernel_config(self) -> KernelConfig:
        from firmware.emv.kernel import KernelConfig  # not at idle: see _read_card

        merchant = self.settings.get("merchant", {})
        return KernelConfig(
            ifd_serial=self.term.tid[-8:].rjust(8, "0"), terminal_id=self.term.tid,
            merchant_id=self.term.mid,
            merchant_name=str(merchant.get("name", "")).encode("ascii", "ignore").decode()[:20],
            currency="0" + str(self._tx()["currency"]).zfill(3)[-3:])

    async def _choose_application(self, labels: list[str]) -> int | None:
        if self.observer is None:
            return 0  # nobody to ask: the card's own priority order decides
        return await self.observer.choose_application(labels)

    async def _chip_pin(self, io: OperatorInput, pan_masked: str, amount: int | None) -> str | None:
        if io.pin is not None:  # sim board: the test cardholder's PIN came with the request
            pin, io.pin = io.pin, None
            return pin
        if self.observer is None or self.link is None or not self.link.has_keys:
            return None
        self._step("pin")
        return await self.observer.ask_pin(pan_masked, amount, False, None)

    async def _encrypt_chip_pin(self, pin: str, pan: str) -> bytes | None:
        if self.link is None or not self.link.has_keys:
            return None
        # The clear PIN becomes an encrypted block here and is dropped at once.
        return await self._encrypt_pin(pin, pan)

    def _pinpad(self) -> PinPad | None:
        """The board's PIN pad (a "pinpad" key store), else None: the keypad PIN path."""
        return getattr(self.key_store, "pinpad", None)

    async def _pad_pin(self, pad: PinPad, pan: str, amount: int | None,
                       allow_empty: bool) -> PinResult:
        """The PIN typed on the PIN pad: the LCD says so (CANCEL on the terminal cancels the
        pad's entry: the caller's task is cancelled), the pad shows the amount and asks."""
        self._step("pin_pad")
        lang = str(self.settings.get("display", {}).get("language", "en"))
        prompt = (text("pad_prompt", lang, amount=f"{amount // 100}.{amount % 100:02d}")
                  if amount else text("pad_prompt_no_amount", lang))
        try:
            return await pad.enter_pin(pan, prompt, timeout=PAD_PIN_TIMEOUT_S,
                                       allow_empty=allow_empty)
        except KeyStoreError as exc:
            raise LocalProtocolError(f"the PIN pad cannot take the PIN: {exc}") from None

    @staticmethod
    def _pad_event(result: PinResult, bypass_allowed: bool) -> Any:
        """The pad's answer as the flow's event: its CANCEL is the cashier's CANCEL
        (docs/cancel-semantics.md), as is a PIN nobody finished in time."""
        if isinstance(result, PinEntered):
            return ev.PinEntered(result.block)
        if isinstance(result, PinSkipped) and bypass_allowed:
            return ev.PinEntered(None)
        if isinstance(result, PinCancelled):
            log.info("PIN entry cancelled on the PIN pad")
        else:
            log.info("PIN entry on the PIN pad ended without a PIN (%s)", type(result).__name__)
        return ev.Cancel()

    def _chip_pad_pin(self, amount: int | None) -> Callable[[str], Awaitable[bytes | None]] | None:
        """A chip card's online PIN on the PIN pad (None on a board without one): the block,
        or OperatorCancelled when the pad's entry ends without one."""
        pad = self._pinpad()
        if pad is None:
            return None

        async def pin_block(pan: str) -> bytes | None:
            if self.link is None or not self.link.has_keys:
                return None
            result = await self._pad_pin(pad, pan, amount, allow_empty=False)
            if isinstance(result, PinEntered):
                return result.block
            self._pad_event(result, False)  # said in the log
            raise OperatorCancelled
        return pin_block

    async def _encrypt_pin(self, pin: str, pan: str) -> bytes:
        """The keypad PIN path, SIM BOARDS ONLY (the PIN typed on the terminal's own keypad or
        sent by a sim till; a real board's PIN pad encrypts, _pad_pin): the key store makes the
        ISO 9564 format 0 block under its PIK."""
        assert self.link is not None and self.link.keys_store is not None
        try:
            return await self.link.keys_store.encrypt_pin(pin, pan)
        except KeyStoreError as exc:
            raise LocalProtocolError(f"the PIN block cannot be made: {exc}") from None

    async def _chip_left_in(self) -> bool:
        """A card whose session ended is still in the slot: it must come out first."""
        assert self.reader is not None
        present = await self.reader.chip_present()
        if not present:
            self._chip_spent = False
        return present and self._chip_spent

    async def _wait_removed(self, timeout_s: float) -> bool:
        """Shows "Remove card" until the chip card is out (or timeout_s passed)."""
        assert self.reader is not None
        self._step("remove_card", cancellable=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await self.reader.chip_present():
            left = deadline - loop.time()
            if left <= 0:
                return False
            event = await self.reader.read(magstripe=False, chip=True, timeout_s=min(left, 1.0))
            if isinstance(event, ChipRemoved):
                break
        self._chip_spent = False
        return True

    async def _end_chip(self, io: OperatorInput) -> None:
        """After the transaction: the card's session ends (an AAC where its second GENERATE AC
        is still owed), then, at the keypad, "Please remove card" until it is out (bounded);
        a till gets its answer at once. The next transaction insists on the removal anyway."""
        session, io.chip = io.chip, None
        if session is not None:
            await asyncio.shield(session.close())
            self._chip_spent = True
        # A card read (or cancelled, or declined) in this operation may still be in the slot.
        if self._chip_spent and io.source == "keypad" and self.observer is not None:
            with contextlib.suppress(Exception):
                await self._wait_removed(REMOVE_CARD_WAIT_S)

    def _card_refused(self, key: str) -> None:
        """A card the reader refused (catalog key): said at once where the operator looks (the
        LCD's card screen; the till's `status`), while the wait for a card goes on."""
        self.card_refusal = key
        if self.observer is not None:
            self.observer.card_refused(key)

    # -- financial operations ---------------------------------------------------

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

    async def _financial(self, request: TxnRequest, io: OperatorInput) -> TxnResult:
        refusal = self._refusal(request.kind)
        if refusal is not None:
            return refusal
        j = self.journal
        assert j is not None and self.link is not None
        if not await self.ensure_signed_on():
            return TxnResult("failed", self.sign_on_problem,
                             detail=getattr(self, "sign_on_detail", "sign-on failed"))
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
                key = "host_tls_refused" if isinstance(exc, TlsRefused) else "host_unreachable"
                return TxnResult("failed", key, detail=exc.detail)
            tx = self._tx()
            ctx = FlowContext(
                term=self.term, batch=j.current_batch(), now=self.now(), currency=tx["currency"],
                limits=Limits(max_amount=int(tx["max_amount"]),
                              allow_fallback_swipe=bool(tx["allow_fallback_swipe"])),
                reply_timeout=self._timeout(), pin_tries=int(tx["pin_tries"]),
                allow_pin_bypass=bool(tx["allow_pin_bypass"]),
                chip_capable=self.board.reads_chip,
                fallback_entry_code=str(self.settings["comms"].get("fallback_entry_code", "80")),
            )
            flow = FinancialFlow(request, ctx)
            try:
                result = await self._drive(flow, io, cancellable=True)
            finally:
                await self._end_chip(io)
            assert result is not None
            if result.status in ("reversal_pending", "cancelled_after_send", "card_declined"):
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
        if result.status == "card_declined":  # never "Approved": the card had the last word
            key = "declined_by_card_reversed" if record.state is TxnState.REVERSED \
                else "declined_by_card_reversal_pending"
            return replace(result, status="declined", message_key=key, record=record)
        if record.state is TxnState.REVERSED:
            return replace(result, status="reversed", message_key="reversal_sent", record=record)
        return replace(result, status="reversal_pending", message_key="reversal_pending",
                       record=record)
