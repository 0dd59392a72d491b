"""Chip sales end to end: the terminal, the emulated reader on a real pty with a test chip card
in its slot (board/sim/chipcards.py), and the acquirer simulator on loopback.

Each row of the chip matrix that needs the whole terminal is here: approval with the online PIN,
the signature card, the offline decline (nothing written or sent), the card declining after the
host approved (reversal with 55, written first), removal and CANCEL at the chip's steps, the
fallback to a swipe after chip failures, and a card left in the slot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from chipkit import chip_terminal, emulated_reader, until
from helpers import TID, run

from board.sim.reader import EmulatedReader
from firmware.app.core.contract import OperatorInput
from firmware.emv.record import decode_kept, summary
from firmware.engine.model import TxnRequest
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind


@pytest.fixture
def reader(tmp_path: Path):
    yield from emulated_reader(tmp_path)


def sale(data_dir, reader, card: str, amount: int = 2345, pin: str | None = "123456"):
    async def go():
        t = await chip_terminal(data_dir, reader)
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, amount),
                                               OperatorInput(pin=pin)))
        await until(lambda: reader.armed, what="the terminal armed the reader")
        reader.insert_chip(card)
        r = await task
        await t.close()
        return r
    return run(go())


def test_chip_sale_online_pin_is_approved_with_the_cards_tc(data_dir, sim, reader):
    r = sale(data_dir, reader, "cup-debit")
    assert r.status == "approved", r
    rec = r.record
    assert rec.entry_mode == "chip" and rec.pos_entry == "051" and rec.card_seq
    chip = summary(rec.chip_tags)
    assert chip is not None and chip.cryptogram_name == "TC" and chip.aid.startswith("A000000333")
    assert [row.amount for row in sim.ledger.rows(TID)] == [2345]


def chip_log(sim) -> list[dict]:
    return sim.call(sim._sim.control, {"cmd": "chip_log", "tid": TID})["chip_log"]


def test_signature_card_is_approved_without_a_pin(data_dir, sim, reader):
    r = sale(data_dir, reader, "cup-credit", pin=None)
    assert r.status == "approved", r
    assert r.record.pos_entry == "052" and not r.record.pin_entered
    assert [row.amount for row in sim.ledger.approved(TID)] == [2345]


def test_offline_decline_writes_and_sends_nothing(data_dir, sim, reader):
    r = sale(data_dir, reader, "offline-decline", pin=None)
    assert (r.status, r.message_key, r.record) == ("declined", "declined_offline", None)
    assert sim.ledger.rows(TID) == [] and chip_log(sim) == []


@pytest.mark.parametrize("card,fault", [("declines-2nd", None), ("cup-credit", "wrong_arpc"),
                                        ("cup-credit", "script_block")])
def test_card_declining_after_host_approval_is_reversed_with_55(data_dir, sim, reader, card, fault):
    if fault:
        sim.add_fault(fault, mti="0200")
    r = sale(data_dir, reader, card, pin=None)
    assert (r.status, r.message_key) == ("declined", "declined_by_card_reversed"), r
    assert r.record.state is TxnState.REVERSED
    chip = summary(r.record.chip_tags)
    assert chip is not None and chip.cryptogram_name == "AAC"
    assert sim.ledger.approved(TID) == []  # the host's approval was reversed
    events = [(row["mti"], row["event"]) for row in chip_log(sim)]
    assert events[0][0] == "0200" and events[-1][0] == "0400", events
    reversal = chip_log(sim)[-1]
    assert reversal["atc"] == chip_log(sim)[0]["atc"]  # 9F36 names the cryptogram reversed
    if fault == "script_block":
        assert "DF31" in decode_kept(r.record.chip_tags)


def test_issuer_script_results_go_to_the_host_in_the_script_advice(data_dir, sim, reader):
    """A harmless 72 script: the sale stands (approved, TC), the script result is reported to
    the host in a 0620 the next time the backlog runs (here: the next sale), and only once."""
    sim.add_fault("script_harmless", mti="0200")
    r = sale(data_dir, reader, "cup-credit", pin=None)
    assert r.status == "approved" and "DF31" in decode_kept(r.record.chip_tags)
    assert [row["mti"] for row in chip_log(sim)] == ["0200"]
    reader.remove_chip()
    second = sale(data_dir, reader, "cup-debit")
    assert second.status == "approved"
    mtis = [row["mti"] for row in chip_log(sim)]
    assert mtis.count("0620") == 1 and mtis.index("0620") < len(mtis) - 1, mtis
    advice = next(row for row in chip_log(sim) if row["mti"] == "0620")
    assert advice["atc"] == chip_log(sim)[0]["atc"]


def test_fallback_to_a_swipe_only_after_the_chip_failed_enough_times(data_dir, sim, reader):
    """chip_fallback_after = 3 (the factory setting): the chip card's swipe is refused ("insert
    chip") until its chip failed three times in this transaction (here: pulled out during an
    exchange each time); then the swipe is taken as a fallback, 22 = 801/802 and 60.5 = 2."""
    from board.sim.chipcards import magstripe_tracks

    async def go():
        t = await chip_terminal(data_dir, reader)
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 3456),
                                               OperatorInput(pin="123456")))
        await until(lambda: reader.armed, what="armed")
        reader.swipe_raw(None, magstripe_tracks("cup-debit"))
        await until(lambda: t.card_refusal == "insert_chip", what="swipe refused: insert chip")
        reader.set_card_delay(0.3)
        for failure in range(1, 4):
            reader.insert_chip("cup-debit")
            await until(lambda: reader.exchanging, what="a chip exchange")
            reader.remove_chip()
            want = "chip_failed_swipe" if failure == 3 else "chip_failed"
            await until(lambda w=want: t.card_refusal == w, what=f"failure {failure} said")
            if failure < 3:
                await until(lambda: reader.armed, what="armed again")
                reader.swipe_raw(None, magstripe_tracks("cup-debit"))
                await until(lambda: t.card_refusal == "insert_chip", what="still insert chip")
        await until(lambda: reader.armed, what="armed for the fallback swipe")
        reader.swipe_raw(None, magstripe_tracks("cup-debit"))
        r = await task
        await t.close()
        return r

    r = run(go())
    assert r.status == "approved", r
    assert r.record.entry_mode == "fallback" and r.record.pos_entry in ("801", "802")
    assert r.record.read_cap == "52"


class WaitingCardholder:
    """A panel stand-in: the application choice and the PIN wait until CANCEL (the flow's
    cancel raises OperatorCancelled into them) or forever."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def op_started(self, *a) -> None: ...
    def op_step(self, *a, **k) -> None: ...
    def op_finished(self, *a) -> None: ...
    def changed(self) -> None: ...
    def card_refused(self, key: str) -> None: ...

    async def release_reader(self) -> None: ...

    async def ask_pin(self, *a, **k):
        self.asked.append("pin")
        await asyncio.Event().wait()

    async def choose_application(self, labels):
        self.asked.append("choose")
        await asyncio.Event().wait()


GEN_AC = 0xAE


def gen_acs(reader: EmulatedReader) -> int:
    return sum(1 for ins, _ in reader.apdus_seen if ins == GEN_AC)


@pytest.mark.parametrize("step", ["reading", "choose", "pin", "online", "between_acs"])
def test_cancel_at_each_chip_step(data_dir, sim, reader, step):
    """CANCEL while the chip is read, the application is chosen, the PIN is typed: nothing
    written or sent, the card powered off. While online or between the two GENERATE ACs: the
    request is reversed and the card is asked for an AAC; never approved."""
    card = {"choose": "two-apps", "pin": "cup-debit"}.get(step, "cup-credit")
    if step == "online":
        sim.add_fault("delay", mti="0200", seconds=3.0)

    async def go():
        t = await chip_terminal(data_dir, reader)
        cardholder = WaitingCardholder()
        if step in ("choose", "pin"):
            t.observer = cardholder  # type: ignore[assignment]
        def hook(action):
            name = type(action).__name__
            if step == "between_acs" and name == "CompleteChip":
                t.cancel("keypad")  # the host's approval is in, the card's word is not
            if step == "online" and name == "SendRequest" and action.message.mti == "0200":
                asyncio.get_running_loop().call_later(0.3, t.cancel, "keypad")
        t.fault_hook = hook
        if step == "reading":
            reader.set_card_delay(0.3)
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 4567), OperatorInput()))
        await until(lambda: reader.armed, what="armed")
        reader.insert_chip(card)
        if step == "reading":
            await until(lambda: reader.exchanging, what="an exchange")
            t.cancel("keypad")
        elif step in ("choose", "pin"):
            await until(lambda: step in cardholder.asked, what=f"asked {step}")
            t.cancel("keypad")
        r = await task
        await t.close()
        return r

    r = run(go())
    if step in ("reading", "choose", "pin"):
        assert (r.status, r.record) == ("cancelled", None), r
        assert sim.ledger.rows(TID) == [] and gen_acs(reader) == 0
    else:
        assert r.status == "reversed" and r.message_key == "reversal_sent", r
        assert r.record.state is TxnState.REVERSED
        assert sim.ledger.approved(TID) == []
        assert gen_acs(reader) == 2  # the second one asked the card for an AAC
        assert summary(r.record.chip_tags) is not None
    assert not reader.chip_powered


def test_an_unbalanced_settlement_uploads_a_chip_record_alone_with_its_55(data_dir, sim, reader):
    """Batch upload: stripe records go 8 to a 0320 (field 48); a chip record goes alone, with its
    55 (60.3 = 203), and the host books the ATC of its TC."""
    from helpers import PASSWORD, swipe

    async def go():
        t = await chip_terminal(data_dir, reader)
        sim.add_rule("96", mti="0400")  # the lost sale's reversal is refused: it stays owed
        sim.add_fault("close", mti="0200")
        lost = await t.financial(TxnRequest(TxnKind.SALE, 7700),
                                 OperatorInput(card=swipe("cup_credit")))  # domestic: that side
        assert lost.status == "reversal_pending", lost
        t.journal.resolve_manually(lost.record.id, "supervisor", "bank confirmed by phone")
        sim.clear_rules()
        sim.clear_faults()
        stripe = await t.financial(TxnRequest(TxnKind.SALE, 1200),
                                   OperatorInput(card=swipe("cup_credit")))
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 2345),
                                               OperatorInput(pin="123456")))
        await until(lambda: reader.armed, what="armed")
        reader.insert_chip("cup-debit")
        chip = await task
        reader.remove_chip()
        settled = await t.settle(PASSWORD)
        await t.close()
        return stripe, chip, settled

    stripe, chip, settled = run(go())
    assert (stripe.status, chip.status) == ("approved", "approved")
    assert (settled.status, settled.message_key) == ("settled", "settled_unbalanced"), settled
    uploads = [row for row in chip_log(sim) if row["mti"] == "0320"]
    assert len(uploads) == 1 and uploads[0]["atc"] == chip_log(sim)[0]["atc"], chip_log(sim)
    booked = {u["trace"] for u in sim.ledger.uploads(TID, int(chip.record.batch))}
    assert int(stripe.record.stan) in booked


def test_a_card_left_in_the_slot_must_come_out_before_the_next_sale_reads_a_chip(
        data_dir, sim, reader):
    """A till's sale is answered at once; the card stays in. The next sale says "Please remove
    card" and reads nothing until the card came out and went in again (the same card: its ATC
    goes on)."""
    from board.sim.chipcards import make_card

    card = make_card("cup-credit")
    steps: list[str] = []

    class Steps:
        def op_started(self, *a) -> None: ...
        def op_step(self, step, *a, **k) -> None:
            steps.append(step)
        def op_finished(self, *a) -> None: ...
        def changed(self) -> None: ...
        def card_refused(self, key) -> None: ...
        async def release_reader(self) -> None: ...

    async def go():
        t = await chip_terminal(data_dir, reader)
        t.observer = Steps()  # type: ignore[assignment]
        reader.insert_chip(card)
        first = await t.financial(TxnRequest(TxnKind.SALE, 1111), OperatorInput())
        assert reader.chip_present  # a till's answer does not wait for the card
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 2222), OperatorInput()))
        await until(lambda: "remove_card" in steps, what="Please remove card")
        apdus_before = len(reader.apdus_seen)
        reader.remove_chip()
        await until(lambda: reader.armed, what="armed for the next card")
        assert len(reader.apdus_seen) == apdus_before  # nothing was sent to the card left in
        reader.insert_chip(card)
        second = await task
        await t.close()
        return first, second

    first, second = run(go())
    assert first.status == "approved" and second.status == "approved", (first, second)
    assert [row.amount for row in sim.ledger.approved(TID)] == [1111, 2222]


TVR_SDA_FAILED, TVR_DDA_FAILED = 0x40, 0x08  # TVR byte 1 (EMV Book 3, C5)


@pytest.mark.parametrize("card,bit", [("bad-cert", TVR_DDA_FAILED), ("bad-sda", TVR_SDA_FAILED),
                                      ("cup-credit", 0)])
def test_offline_data_authentication_failure_is_told_to_the_host_in_the_tvr(
        data_dir, sim, reader, card, bit):
    """With the CA key the host loaded at sign-on, a bad certificate (DDA) or a broken signed
    hash (SDA) sets its TVR bit; the terminal's action codes send it online all the same, and the
    host sees the bit in 95 (it decides: the simulator approves). A good card sets none."""
    r = sale(data_dir, reader, card, pin=None)
    assert r.status == "approved", r
    tvr = bytes.fromhex(summary(r.record.chip_tags).tvr)
    assert tvr[0] & (TVR_SDA_FAILED | TVR_DDA_FAILED) == bit, tvr.hex()
    assert not tvr[0] & 0x80  # ODA was performed: the CA key is there
    host_tvr = bytes.fromhex(next(row["tvr"] for row in chip_log(sim) if row["mti"] == "0200"))
    assert host_tvr[0] & (TVR_SDA_FAILED | TVR_DDA_FAILED) == bit


def test_the_card_pulled_while_online_is_a_decline_by_the_card_and_reversed(
        data_dir, sim, reader):
    sim.add_fault("delay", mti="0200", seconds=0.6)

    async def go():
        t = await chip_terminal(data_dir, reader)

        def hook(action):
            if type(action).__name__ == "SendRequest" and action.message.mti == "0200":
                asyncio.get_running_loop().call_later(0.2, reader.remove_chip)
        t.fault_hook = hook
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 3300), OperatorInput()))
        await until(lambda: reader.armed, what="armed")
        reader.insert_chip("cup-credit")
        r = await task
        await t.close()
        return r

    r = run(go())
    assert (r.status, r.message_key) == ("declined", "declined_by_card_reversed"), r
    assert r.record.state is TxnState.REVERSED and sim.ledger.approved(TID) == []


def test_an_expired_card_is_not_accepted_and_nothing_is_sent(data_dir, sim, reader):
    r = sale(data_dir, reader, "expired")
    assert (r.status, r.message_key, r.record) == ("declined", "chip_not_accepted", None), r
    assert sim.ledger.rows(TID) == []


def test_two_applications_the_first_by_priority_without_a_panel(data_dir, sim, reader):
    r = sale(data_dir, reader, "two-apps")
    assert r.status == "approved" and summary(r.record.chip_tags).aid == "A000000333010101"


def test_no_pse_selects_from_the_terminals_aid_list(data_dir, sim, reader):
    r = sale(data_dir, reader, "no-pse")
    assert r.status == "approved" and summary(r.record.chip_tags).aid == "A000000333010101"


def test_nothing_sensitive_from_the_chip_reaches_the_disk(data_dir, sim, reader):
    """After chip sales (approved, declined by the card and reversed), no file of the terminal
    holds the PAN (as text, or as 5A's BCD), the track 2 equivalent data (57, as bytes or as
    text) or the cardholder name (5F20): looked for while the terminal still runs (the journal's
    WAL holds every page written) and again after it closed."""
    from board.sim.chipcards import PROFILES

    needles: dict[str, bytes] = {}
    for name in ("cup-debit", "declines-2nd"):
        profile = PROFILES[name]
        t2 = profile.track2.replace("=", "D")
        t2_bcd = bytes.fromhex(t2 + "F" * (len(t2) % 2))
        needles |= {
            f"{name} PAN": profile.pan.encode(),
            f"{name} PAN BCD": bytes.fromhex(profile.pan + "F" * (len(profile.pan) % 2)),
            f"{name} 57": t2_bcd, f"{name} 57 hex": t2_bcd.hex().encode(),
            f"{name} 57 HEX": t2_bcd.hex().upper().encode(),
            f"{name} 57 as text": profile.track2.encode(),
            f"{name} holder": profile.holder.encode(),
            f"{name} holder hex": profile.holder.encode().hex().upper().encode(),
        }

    def found() -> list[tuple[str, str]]:
        return [(what, path.name) for path in data_dir.rglob("*") if path.is_file()
                for what, needle in needles.items() if needle in path.read_bytes()]

    async def go():
        t = await chip_terminal(data_dir, reader)
        outcomes = []
        for name in ("cup-debit", "declines-2nd"):
            task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 2000),
                                                   OperatorInput(pin="123456")))
            await until(lambda: reader.armed, what="armed")
            reader.insert_chip(name)
            outcomes.append((await task).message_key)
            reader.remove_chip()
        running = found()
        await t.close()
        return outcomes, running

    outcomes, running = run(go())
    assert outcomes == ["00", "declined_by_card_reversed"]
    assert running == [] and found() == []


def test_a_card_pulled_while_the_pin_is_asked_ends_the_question_at_once(data_dir, sim, reader):
    """The PIN screen goes as soon as the card is out (not after the cardholder typed a PIN for
    a card that is gone); the chip failure is said, the sale waits for a card again, and CANCEL
    ends it with nothing sent."""
    refused: list[str] = []

    class Cardholder(WaitingCardholder):
        def card_refused(self, key: str) -> None:
            refused.append(key)

    async def go():
        t = await chip_terminal(data_dir, reader)
        cardholder = Cardholder()
        t.observer = cardholder  # type: ignore[assignment]
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 4321), OperatorInput()))
        await until(lambda: reader.armed, what="armed")
        reader.insert_chip("cup-debit")
        await until(lambda: "pin" in cardholder.asked, what="the PIN asked")
        reader.remove_chip()
        await until(lambda: "chip_failed" in refused, timeout=3.0, what="the pulled card said")
        await until(lambda: reader.armed, what="waiting for a card again")
        t.cancel("keypad")
        r = await task
        await t.close()
        return r

    r = run(go())
    assert (r.status, r.record) == ("cancelled", None), r
    assert sim.ledger.rows(TID) == [] and gen_acs(reader) == 0
