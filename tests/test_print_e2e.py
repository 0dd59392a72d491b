"""Receipts on the emulated printer over a real pty, every row of the print table in
cancel-semantics.md, paper out mid-receipt, reprints, and a power loss mid-print
(the terminal process killed with SIGKILL, restarted, the copy printed again as REPRINT).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import TID, TerminalProcess, run, sale, set_language

from board.sim.firmware import sim_card
from board.sim.printer import EmulatedPrinter
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.printing.queue import CancelAction, PrintState

FULL_PAN = re.compile(r"\d{13,19}")


@pytest.fixture
def printer(tmp_path: Path):
    p = EmulatedPrinter(tmp_path).start()
    yield p
    p.stop()


async def printing_terminal(data_dir: Path, printer: EmulatedPrinter) -> Terminal:
    t = Terminal(AppConfig(data_dir=data_dir, printer_path=str(printer.path), print_poll_s=0.05))
    await t.start()
    return t


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def job_of(t: Terminal, index: int = 0):
    assert t.journal is not None
    return t.journal.print_jobs(open_only=False)[index]


def state_of(t: Terminal, job_id: int) -> PrintState:
    assert t.journal is not None
    return t.journal.print_job(job_id).state


def assert_no_full_pan(text: str) -> None:
    # The MID is the one long digit run a receipt may carry.
    assert [m for m in FULL_PAN.findall(text) if m != "123456789012345"] == []


# -- what a receipt looks like on paper ------------------------------------------------------------


def test_sale_prints_merchant_and_cardholder_copies_in_english(data_dir, sim, printer):
    async def go():
        t = await printing_terminal(data_dir, printer)
        r = await sale(t, 12345, "cup_credit")
        assert r.status == "approved"
        await until(lambda: len(printer.slips) == 2)
        await until(lambda: state_of(t, job_of(t).id) is PrintState.DONE)
        await t.close()
        return r

    r = run(go())
    merchant, cardholder = (s.text for s in printer.slips)
    assert "MERCHANT COPY" in merchant and "CARDHOLDER COPY" in cardholder
    for text in (merchant, cardholder):
        assert "123.45" in text and r.record.pan_masked in text
        assert r.record.invoice in text and r.record.rrn in text
        assert "REPRINT" not in text
        assert_no_full_pan(text)
    assert printer.unknown_commands == []


def test_chinese_receipt_prints_in_the_printers_chinese_text_mode(data_dir, sim, printer):
    set_language(data_dir, "zh_CN")

    async def go():
        t = await printing_terminal(data_dir, printer)
        r = await sale(t, 880, "cup_debit")
        await until(lambda: len(printer.slips) == 2)
        await t.close()
        return r

    r = run(go())
    merchant, cardholder = (s.text for s in printer.slips)
    assert "商户存根" in merchant and "持卡人存根" in cardholder
    assert "8.80" in merchant and r.record.pan_masked in merchant
    # Text mode, not raster: the Chinese lines arrived as GB18030 characters.
    chinese = [rec for rec in printer.slips[0].records if getattr(rec, "chinese", False)]
    assert chinese, "no line was printed in the Chinese text mode"
    assert all("[image" not in line for line in printer.slips[0].lines[3:])


# -- the print table of cancel-semantics.md --------------------------------------------------------


def test_cancel_queued_job_removes_it_and_it_never_prints(data_dir, sim, printer):
    printer.paper_out_after(0)  # the first receipt waits for paper; the second queues behind it

    async def go():
        t = await printing_terminal(data_dir, printer)
        await sale(t, 100)
        await sale(t, 200)
        first, second = t.journal.print_jobs()
        await until(lambda: state_of(t, first.id) is PrintState.PAUSED)
        assert t.prints.cancel(second.id) is CancelAction.DROP
        assert state_of(t, second.id) is PrintState.CANCELLED
        printer.load_paper()
        await until(lambda: state_of(t, first.id) is PrintState.DONE)
        await asyncio.sleep(0.3)
        await t.close()

    run(go())
    texts = [s.text for s in printer.slips]
    assert len(texts) == 2 and all("1.00" in x for x in texts)  # only the first receipt
    assert not any("2.00" in x for x in texts)


def test_cancel_while_printing_finishes_the_copy_then_prints_a_void_slip(data_dir, sim, printer):
    printer.set_speed(1500)  # a slow printer: the first copy takes a few seconds

    async def go():
        t = await printing_terminal(data_dir, printer)
        r = await sale(t, 4321)
        job = t.journal.print_jobs()[0]
        await until(lambda: printer.bytes_received > 200)
        assert state_of(t, job.id) is PrintState.PRINTING
        assert t.prints.cancel(job.id) is CancelAction.AFTER_CURRENT_COPY
        printer.set_speed(None)
        await until(lambda: len(printer.slips) == 2)
        await until(lambda: t.prints.spooler.idle.is_set())
        job = t.journal.print_job(job.id)
        await t.close()
        return r, job

    r, job = run(go())
    copy, void = (s.text for s in printer.slips)
    assert job.state is PrintState.CANCELLED and job.copies_done == 1
    assert "MERCHANT COPY" in copy and "43.21" in copy  # whole: the copy finished, with its cut
    assert printer.slips[0].cut
    assert "THE PRINTOUT ABOVE IS VOID" in void and r.record.invoice in void and "43.21" in void
    assert "CARDHOLDER COPY" not in void and all("CARDHOLDER COPY" not in s.text for s in printer.slips)


def test_cancel_while_paused_with_nothing_printed_is_cancelled_as_queued(data_dir, sim, printer):
    printer.paper_out_after(0)

    async def go():
        t = await printing_terminal(data_dir, printer)
        await sale(t, 555)
        job = t.journal.print_jobs()[0]
        await until(lambda: state_of(t, job.id) is PrintState.PAUSED)
        assert not t.journal.print_job(job.id).printed_any
        assert t.status()["printing"]["problem"] == "printer_paper_out"
        assert t.prints.cancel(job.id) is CancelAction.DROP
        printer.load_paper()
        await asyncio.sleep(0.4)
        job = t.journal.print_job(job.id)
        await t.close()
        return job

    job = run(go())
    assert job.state is PrintState.CANCELLED
    assert printer.slips == [] and printer.current.lines == []  # not a line of paper used


def test_cancel_while_paused_mid_copy_finishes_the_copy_when_paper_returns(data_dir, sim, printer):
    printer.paper_out_after(6)  # runs out a few lines into the merchant copy

    async def go():
        t = await printing_terminal(data_dir, printer)
        r = await sale(t, 777)
        job = t.journal.print_jobs()[0]
        await until(lambda: state_of(t, job.id) is PrintState.PAUSED)
        assert t.journal.print_job(job.id).printed_any
        assert t.prints.cancel(job.id) is CancelAction.AFTER_CURRENT_COPY
        await asyncio.sleep(0.3)
        assert state_of(t, job.id) is PrintState.PAUSED  # nothing happens until paper returns
        printer.load_paper()
        await until(lambda: len(printer.slips) == 2)
        await until(lambda: state_of(t, job.id) is PrintState.CANCELLED)
        await t.close()
        return r

    r = run(go())
    copy, void = (s.text for s in printer.slips)
    # The cut copy's first lines and its whole reprint share one slip (no cut between them).
    assert "REPRINT" in copy and "MERCHANT COPY" in copy and "7.77" in copy
    assert "THE PRINTOUT ABOVE IS VOID" in void and r.record.invoice in void
    assert all("CARDHOLDER COPY" not in s.text for s in printer.slips)


def test_paper_out_mid_receipt_pauses_and_resumes_with_the_copy_marked_reprint(data_dir, sim, printer):
    printer.paper_out_after(10)

    async def go():
        t = await printing_terminal(data_dir, printer)
        await sale(t, 2500)
        job = t.journal.print_jobs()[0]
        await until(lambda: state_of(t, job.id) is PrintState.PAUSED)
        paused = t.journal.print_job(job.id)
        status = t.status()["printing"]
        await asyncio.sleep(0.3)
        printer.load_paper()
        await until(lambda: state_of(t, job.id) is PrintState.DONE)
        await t.close()
        return paused, status

    paused, status = run(go())
    assert paused.reason == "printer_paper_out" and status["paper_out"]
    merchant, cardholder = (s.text for s in printer.slips)
    assert "REPRINT" in merchant and "25.00" in merchant  # the cut copy, whole, marked
    assert "CARDHOLDER COPY" in cardholder and "REPRINT" not in cardholder  # a first print


def test_cover_open_pauses_like_paper_out(data_dir, sim, printer):
    printer.open_cover()

    async def go():
        t = await printing_terminal(data_dir, printer)
        await sale(t, 300)
        job = t.journal.print_jobs()[0]
        await until(lambda: state_of(t, job.id) is PrintState.PAUSED)
        reason = t.journal.print_job(job.id).reason
        printer.close_cover()
        await until(lambda: state_of(t, job.id) is PrintState.DONE)
        await t.close()
        return reason

    assert run(go()) == "printer_cover_open"
    assert len(printer.slips) == 2 and "REPRINT" not in printer.slips[0].text


# -- reprints --------------------------------------------------------------------------------------


def test_reprint_last_and_by_voucher_are_marked_reprint(data_dir, sim, printer):
    async def go():
        t = await printing_terminal(data_dir, printer)
        first = await sale(t, 1111)
        await sale(t, 2222)
        await until(lambda: len(printer.slips) == 4)
        last = t.prints.reprint()
        by_trace = t.prints.reprint(first.record.invoice)
        missing = t.prints.reprint("999999")
        await until(lambda: len(printer.slips) == 8)
        await t.close()
        return last, by_trace, missing

    last, by_trace, missing = run(go())
    assert missing == "reprint_not_found"
    assert last.reprint and by_trace.reprint
    reprints = [s.text for s in printer.slips[4:]]
    assert all(text.count("REPRINT") >= 2 for text in reprints)  # at the top and by the amount
    assert "22.22" in reprints[0] and "11.11" in reprints[2]


def test_reprint_over_ecr(data_dir, sim, printer):
    from firmware.app.frontends.ecr_server import EcrServer
    from firmware.ecr.protocol import parse_request

    async def go():
        t = await printing_terminal(data_dir, printer)
        r = await sale(t, 990)
        await until(lambda: len(printer.slips) == 2)
        ecr = EcrServer(t, "127.0.0.1", 0, None, test_cards=sim_card)
        answer = await ecr.dispatch(parse_request(json.dumps(
            {"op": "reprint", "voucher": r.record.invoice}).encode()))
        bad = await ecr.dispatch(parse_request(b'{"op": "reprint", "voucher": "000999"}'))
        jobs = await ecr.dispatch(parse_request(b'{"op": "print_jobs", "all": true}'))
        await until(lambda: len(printer.slips) == 4)
        await t.close()
        return answer, bad, jobs

    answer, bad, jobs = run(go())
    assert answer["ok"] and answer["reprint"] and answer["kind"] == "receipt"
    assert not bad["ok"] and "No receipt" in bad["message"]
    assert [j["reprint"] for j in jobs["jobs"]] == [False, True]


# -- power loss mid-print --------------------------------------------------------------------------


def start_process(data_dir: Path, printer: EmulatedPrinter) -> TerminalProcess:
    proc = TerminalProcess(data_dir, extra_args=["--printer", str(printer.path)])
    proc.start()
    return proc


@pytest.mark.parametrize("print_again", [True, False])
def test_power_loss_mid_print_then_reprint_after_confirmation(data_dir, sim, printer, print_again):
    printer.set_speed(800)
    proc = start_process(data_dir, printer)
    try:
        r = proc.request(op="sale", amount=6060, card="cup_credit")
        assert r["ok"], r
        assert printer.wait_for(lambda p: p.bytes_received > 300, timeout=10)
        proc.kill()  # the power goes mid-copy
        printer.set_speed(None)
        printer.wait_for(lambda p: False, timeout=0.3)  # let the pty drain what was in flight
        cut_paper = printer.current.text
        assert "MERCHANT COPY" in cut_paper and printer.slips == []
        proc.start()
        jobs = proc.request(op="print_jobs")["jobs"]
        assert len(jobs) == 1 and jobs[0]["needs_confirm"] and jobs[0]["reprint"]
        time.sleep(0.5)
        assert printer.slips == []  # nothing prints before the operator says so
        answer = proc.request(op="print_confirm", job=jobs[0]["job"], print=print_again)
        assert answer["ok"], answer
        if print_again:
            assert printer.wait_for(lambda p: len(p.slips) == 2, timeout=10)
            merchant, cardholder = (s.text for s in printer.slips)
            assert "REPRINT" in merchant and "60.60" in merchant
            assert "CARDHOLDER COPY" in cardholder
        else:
            assert printer.wait_for(lambda p: len(p.slips) == 1, timeout=10)
            void = printer.slips[0].text
            assert "THE PRINTOUT ABOVE IS VOID" in void and r["voucher"] in void
        deadline = time.monotonic() + 5  # the job closes once the printer confirmed the copy
        while proc.request(op="print_jobs")["jobs"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.request(op="print_jobs")["jobs"] == []
    finally:
        proc.stop()
    rows = sim.ledger.rows(TID)
    assert len(rows) == 1  # paper never moves money: one sale at the host, whatever printed


# -- the merchant's logo ---------------------------------------------------------------------------


def test_logo_prints_through_the_raster_path_and_a_bad_logo_is_skipped(data_dir, sim, printer):
    from PIL import Image as PILImage

    logo = PILImage.new("L", (600, 200), 255)
    for x in range(100, 500):
        for y in range(50, 150):
            logo.putpixel((x, y), 0)
    logo.save(data_dir / "logo.png")  # wider than the paper: scaled to fit

    async def go():
        t = await printing_terminal(data_dir, printer)
        await sale(t, 1200)
        await until(lambda: len(printer.slips) == 2)
        await t.close()

    run(go())
    first = printer.slips[0]
    images = [rec.image for rec in first.records if getattr(rec, "image", None) is not None]
    assert images and images[0].width <= 384
    assert any("[image" in line for line in first.lines[:2])
    assert "12.00" in first.text

    (data_dir / "logo.png").write_bytes(b"not an image")
    printer2_slips = len(printer.slips)

    async def again():
        t = await printing_terminal(data_dir, printer)
        await sale(t, 1300)
        await until(lambda: len(printer.slips) == printer2_slips + 2)
        await t.close()

    run(again())
    assert "13.00" in printer.slips[-2].text and not any("[image" in x for x in printer.slips[-2].lines)
