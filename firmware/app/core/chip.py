"""One chip card's session in a transaction: the app side of the sans-I/O kernel (firmware/emv).

ChipSession carries the kernel's actions out: APDUs to the reader, the application choice and
the online PIN to the operator (or the ECR request's sim-board PIN), and gives the financial
flow a CardRead at the kernel's GoOnline (the first GENERATE AC answered ARQC). After the host's
answer, `complete` runs issuer authentication, scripts and the second GENERATE AC; `close`
ends the session whatever happened: a card left between its two GENERATE ACs is asked for an AAC
(the transaction is being reversed or was never sent), then powered off.

The clear PIN becomes an encrypted block at once (the key store's encrypt_pin, under the PIK)
and only the block is kept, for the request's field 52. Nothing of the card is logged but the
masked PAN, the AID and the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from firmware.app.core.contract import OperatorCancelled
from firmware.emv import kernel as emv
from firmware.emv.params import EmvParams
from firmware.emv.record import receipt_tags_hex
from firmware.engine import events as ev
from firmware.engine.model import CardRead
from firmware.host.messages import mask_pan
from firmware.ports import CardReader, ChipGone

log = logging.getLogger("posfw.app")
T = TypeVar("T")
REMOVAL_POLL_S = 0.3  # how often the slot is looked at while the cardholder is asked something

# Words for the kernel's outcomes before anything was sent (catalog keys in firmware/i18n.py).
DECLINED_BEFORE_ONLINE = {"offline_declined": "declined_offline", "not_accepted": "chip_not_accepted"}


class ChipFailed(Exception):
    """The chip could not be read (mute, removed, a malformed answer): one chip failure, which
    counts towards the fallback to a swipe (settings: transactions.chip_fallback_after)."""


@dataclass
class ChipHooks:
    """What the session asks of the operator side; each may raise OperatorCancelled."""

    choose: Callable[[list[str]], Awaitable[int | None]]
    ask_pin: Callable[[str], Awaitable[str | None]]
    encrypt_pin: Callable[[str, str], Awaitable[bytes | None]]  # (PIN, PAN) -> block; None: no keys
    step: Callable[[str], None]
    # A board with a PIN pad: the block typed on the pad, for the PAN (None: no keys); may raise
    # OperatorCancelled (the pad's CANCEL or timeout). None: the keypad path above (sim boards).
    pad_pin: Callable[[str], Awaitable[bytes | None]] | None = None


class ChipSession:
    """A chip card's life in one transaction (see the module docstring)."""

    def __init__(self, reader: CardReader, params: EmvParams, config: emv.KernelConfig,
                 amount: int, txn_type: int, now: datetime, hooks: ChipHooks) -> None:
        self.reader = reader
        self.hooks = hooks
        self.kernel = emv.ChipKernel(config, params, emv.TxnData(
            amount=amount, txn_type=txn_type, date=now.strftime("%y%m%d"),
            time=now.strftime("%H%M%S"), unpredictable_number=os.urandom(4),
            random_number=1 + os.urandom(1)[0] % 99))
        self.pin_block: bytes | None = None
        self.apdus = 0
        self.outcome: emv.Finished | None = None
        self._online = False  # the first GENERATE AC answered ARQC and the second is owed
        self._pan = ""

    # -- up to the host --------------------------------------------------------

    async def read(self) -> CardRead | ev.CardDeclined:
        """Runs the kernel from selection to the first GENERATE AC."""
        self.hooks.step("chip_reading")
        action = self.kernel.start()
        while True:
            if isinstance(action, emv.GoOnline):
                self._online = True
                return self._card(action.card)
            if isinstance(action, emv.Finished):
                self.outcome = action
                key = DECLINED_BEFORE_ONLINE.get(action.outcome)
                if key is not None:
                    log.info("chip: %s (%s)", action.outcome, action.reason)
                    return ev.CardDeclined(key, action.reason)
                raise ChipFailed(action.reason or action.outcome)
            action = await self._answer(action)

    def _card(self, chip: emv.ChipCard) -> CardRead:
        self._pan = chip.pan
        # The AID as RID/PIX: its run of digits would read as a card number to the log's mask.
        log.info("chip: ARQC for %s, AID %s/%s", mask_pan(chip.pan), chip.aid[:10], chip.aid[10:])
        return CardRead(
            entry_mode="chip", pan=chip.pan, expiry=chip.expiry, service_code=chip.service_code,
            track2=chip.track2, card_seq=chip.card_seq, icc_data=chip.field55.hex().upper(),
            chip_cvm=chip.cvm, chip_tags=receipt_tags_hex(self.kernel.tags()),
        )

    async def _answer(self, action: object) -> object:
        """Carries out one kernel action and returns the kernel's next one."""
        if isinstance(action, emv.SendApdu):
            self.apdus += 1
            try:
                response = await self.reader.transmit(action.apdu)
            except ChipGone as exc:
                return self.kernel.handle(emv.CardGone(str(exc)))
            return self.kernel.handle(emv.ApduResponse(response))
        if isinstance(action, emv.ChooseApplication):
            self.hooks.step("chip_choose")
            try:
                index = await self._while_present(
                    self.hooks.choose([c.label for c in action.candidates]))
            except ChipGone as exc:
                return self.kernel.handle(emv.CardGone(str(exc)))
            self.hooks.step("chip_reading")
            if index is None:
                raise OperatorCancelled
            return self.kernel.handle(emv.Chosen(index))
        if isinstance(action, emv.AskOnlinePin):
            if self.hooks.pad_pin is not None:  # typed on the PIN pad: only its block comes back
                try:
                    block = await self._while_present(self.hooks.pad_pin(self.kernel.pan))
                except ChipGone as exc:
                    return self.kernel.handle(emv.CardGone(str(exc)))
                self.hooks.step("chip_reading")
                self.pin_block = block
                return self.kernel.handle(emv.PinResult(entered=block is not None))
            try:
                pin = await self._while_present(self.hooks.ask_pin(action.pan_masked))
            except ChipGone as exc:
                return self.kernel.handle(emv.CardGone(str(exc)))
            self.hooks.step("chip_reading")
            block = None
            if pin is not None:
                block = await self.hooks.encrypt_pin(pin, self.kernel.pan)
            self.pin_block = block
            return self.kernel.handle(emv.PinResult(entered=block is not None))
        raise TypeError(f"no chip executor for {action!r}")

    async def _while_present(self, asking: Awaitable[T]) -> T:
        """The cardholder's answer (the application, the PIN), unless the card is pulled
        meanwhile: then the question goes away at once (ChipGone), not after the answer."""
        task = asyncio.ensure_future(asking)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=REMOVAL_POLL_S)
                if done:
                    return task.result()
                if not await self.reader.chip_present():
                    raise ChipGone("the card was removed while the cardholder was asked")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -- after the host ----------------------------------------------------------

    async def complete(self, response_code: str | None, icc_reply: str | None,
                       cancelled: bool) -> ev.ChipCompleted:
        """Issuer authentication, scripts and the second GENERATE AC."""
        if cancelled:
            await self.close()
            return ev.ChipCompleted(False, self._tags(), "cancelled")
        reply = bytes.fromhex(icc_reply) if icc_reply else None
        action = self.kernel.handle(emv.OnlineResult(response_code, reply))
        while not isinstance(action, emv.Finished):
            action = await self._answer(action)
        self._online = False
        self.outcome = action
        log.info("chip: second GENERATE AC: %s (%s)", action.outcome, action.reason)
        return ev.ChipCompleted(action.outcome == "approved", self._tags(), action.reason)

    def _tags(self) -> str:
        if self.outcome is not None:
            return receipt_tags_hex(self.outcome.tags)
        return receipt_tags_hex(self.kernel.tags())

    async def close(self) -> None:
        """Ends the card's session: an AAC is asked of a card still owed its second GENERATE AC
        (the host was not reached, or the transaction is being reversed), then power off."""
        if self._online:
            self._online = False
            action = self.kernel.abort()
            try:
                while not isinstance(action, emv.Finished):
                    action = await self._answer(action)
                self.outcome = action
            except Exception as exc:  # a card gone now changes nothing owed
                log.info("chip: the closing AAC was not given (%s)", exc)
        try:
            await self.reader.power_off()
        except Exception as exc:  # the session is over either way
            log.debug("chip power off: %s", exc)
