"""drivers.printer.escpos_serial against the emulated printer over a real pty: what prints comes back
exactly, and paper, cover, power, cable, slow printer and line noise end as the Printer protocol
says (PrinterPaused with printed_any, PrinterUnavailable in words, in bounded time)."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from board.sim.printer import EmulatedPrinter
from c_ext import posio
from drivers.printer.escpos_serial import EscPosSerialPrinter, PrinterLostMidCopy
from firmware.ports import (
    Align,
    Cut,
    Document,
    Feed,
    Image,
    Printer,
    PrinterPaused,
    PrinterStatus,
    PrinterUnavailable,
    TextLine,
)

CUT_FEED = [""] * 6  # python-escpos cut() feeds six lines first
STATUS_QUERY_BYTES = 9  # DLE EOT 1, 2, 4


def run(coro: Awaitable[Any], timeout: float = 15.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@pytest.fixture
def printer(tmp_path: Path):
    device = EmulatedPrinter(tmp_path).start()
    yield device
    device.stop()


def with_driver(printer: EmulatedPrinter, body: Callable[[EscPosSerialPrinter], Awaitable[Any]],
                **options: Any) -> Any:
    async def session() -> Any:
        driver = EscPosSerialPrinter(str(printer.path), **options)
        try:
            return await body(driver)
        finally:
            await driver.close()
    return run(session())


ENGLISH = Document(title="sale", blocks=(
    TextLine("DEMO SHOP", Align.CENTER, bold=True, double=True),
    TextLine("MERCHANT NO. 898100012340001", Align.LEFT),
    TextLine("CARD 621483******1234", Align.LEFT, bold=True),
    TextLine("AMOUNT        RMB 128.00", Align.RIGHT, bold=True),
    TextLine(""),
    TextLine("THANK YOU", Align.CENTER),
    Feed(2),
    Cut(),
))

CHINESE = Document(title="sale-zh", blocks=(
    TextLine("演示商户", Align.CENTER, bold=True, double=True),
    TextLine("商户名称: 演示商户 DEMO SHOP"),
    TextLine("交易类型: 消费 SALE", bold=True),
    TextLine("金额: RMB 128.00", Align.RIGHT, double=True),
    TextLine("持卡人签名 签字确认", Align.CENTER),
    Cut(partial=False),
))


def many_lines(count: int) -> Document:
    return Document(blocks=(*(TextLine(f"line {i:02d}") for i in range(count)), Cut()))


def expected_lines(doc: Document) -> list[str]:
    lines: list[str] = []
    for block in doc.blocks:
        if isinstance(block, TextLine):
            lines.append(block.text)
        elif isinstance(block, Feed):
            lines += [""] * block.lines
    return lines + CUT_FEED


# ---- printing comes back exactly ----------------------------------------------------------------------


@pytest.mark.parametrize("doc", [ENGLISH, CHINESE], ids=["english", "chinese"])
def test_document_reads_back_exactly_with_attributes(printer: EmulatedPrinter, doc: Document) -> None:
    progress: list[tuple[int, int]] = []

    async def body(driver: EscPosSerialPrinter) -> None:
        assert isinstance(driver, Printer) and driver.columns == 32
        await driver.print_document(doc, lambda done, total: progress.append((done, total)))

    with_driver(printer, body)
    (slip,) = printer.slips  # print_document returned after the printer confirmed: no waiting
    assert slip.lines == expected_lines(doc)
    assert slip.cut == ("full" if doc is CHINESE else "partial")
    sent = [b for b in doc.blocks if isinstance(b, TextLine)]
    for record, line in zip(slip.records, sent, strict=False):
        assert (record.align, record.bold, record.double, record.chinese) == \
               (line.align.value, line.bold, line.double, not line.text.isascii())
    assert printer.unknown_commands == []
    total = progress[-1][1]
    assert progress[-1] == (total, total) and [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_image_comes_back_as_the_same_pixels(printer: EmulatedPrinter) -> None:
    width, height = 120, 50
    gray = bytes((x * 2 + y * 5) % 256 for y in range(height) for x in range(width))
    doc = Document(blocks=(TextLine("LOGO", Align.CENTER), Image(gray, width, height), Cut()))
    with_driver(printer, lambda driver: driver.print_document(doc))
    (slip,) = printer.slips
    assert slip.lines == ["LOGO", "[image 384x50]", *CUT_FEED]
    image = slip.records[1].image
    assert image is not None
    expected = posio.floyd_steinberg(gray, width, height)
    stride, left = (width + 7) // 8, (384 - width) // 2 // 8
    for y in range(height):
        assert image.packed[y * 48 + left:y * 48 + left + stride] == expected[y * stride:(y + 1) * stride]
        assert not any(image.packed[y * 48:y * 48 + left])
        assert not any(image.packed[y * 48 + left + stride:(y + 1) * 48])


def test_raster_mode_prints_a_picture_of_the_slip(printer: EmulatedPrinter) -> None:
    progress: list[tuple[int, int]] = []
    with_driver(printer, lambda driver: driver.print_document(CHINESE, lambda d, t: progress.append((d, t))),
                mode="raster")
    (slip,) = printer.slips
    assert [line for line in slip.lines if line] == ["[image 384x168]"]  # 2 double + 3 single lines
    picture = PILImage.open(io.BytesIO(slip.png_bytes()))
    assert picture.width == 384 and picture.convert("L").getextrema() == (0, 255)
    assert progress[-1] == (len(progress) and progress[-1][1], progress[-1][1])


def test_80mm_profile(tmp_path: Path) -> None:
    with EmulatedPrinter(tmp_path, profile="80mm") as device:
        doc = Document(blocks=(TextLine("W" * 48), TextLine("宽" * 12, double=True)))

        async def body(driver: EscPosSerialPrinter) -> None:
            assert driver.columns == 48
            await driver.print_document(doc)

        with_driver(device, body, profile="80mm")
        assert device.slips[0].lines == ["W" * 48, "宽" * 12, *CUT_FEED]


# ---- paper, cover -------------------------------------------------------------------------------------


def test_paper_out_before_a_copy_sends_nothing(printer: EmulatedPrinter) -> None:
    printer.paper_out_after(0)

    async def body(driver: EscPosSerialPrinter) -> PrinterPaused:
        await driver.status()  # opened, and the port drained
        before = printer.bytes_received
        with pytest.raises(PrinterPaused) as paused:
            await driver.print_document(ENGLISH)
        assert printer.bytes_received - before == STATUS_QUERY_BYTES  # the status query, nothing else
        return paused.value

    paused = with_driver(printer, body)
    assert paused.printed_any is False
    assert paused.status == PrinterStatus(online=False, paper_out=True, paper_near_end=True)
    assert str(paused) == "printer_paper_out"
    assert printer.slips == [] and printer.current.records == []


def test_paper_out_mid_copy_then_load_paper(printer: EmulatedPrinter) -> None:
    printer.paper_out_after(6)

    async def body(driver: EscPosSerialPrinter) -> PrinterPaused:
        with pytest.raises(PrinterPaused) as paused:
            await driver.print_document(many_lines(20))
        printer.load_paper()
        assert await driver.status() == PrinterStatus()
        await driver.print_document(ENGLISH)
        return paused.value

    paused = with_driver(printer, body)
    assert paused.printed_any is True
    assert paused.status.paper_out and not paused.status.online
    assert printer.decoder.lines_discarded > 0
    # The half copy stays on the roll without a cut; the next copy follows it on the same paper.
    (slip,) = printer.slips
    assert slip.lines == [f"line {i:02d}" for i in range(6)] + expected_lines(ENGLISH)


def test_cover_open_before_and_during_a_copy(printer: EmulatedPrinter) -> None:
    printer.open_cover()

    async def body(driver: EscPosSerialPrinter) -> tuple[PrinterPaused, PrinterPaused]:
        with pytest.raises(PrinterPaused) as before:
            await driver.print_document(ENGLISH)
        printer.close_cover()

        def open_at_first_report(done: int, total: int) -> None:
            if done < total:
                printer.open_cover()

        with pytest.raises(PrinterPaused) as during:
            await driver.print_document(many_lines(12), open_at_first_report)
        printer.close_cover()
        assert (await driver.status()).ready
        return before.value, during.value

    before, during = with_driver(printer, body)
    assert before.printed_any is False and before.status.cover_open and str(before) == "printer_cover_open"
    assert during.printed_any is True and during.status.cover_open and not during.status.online


# ---- slow printer, power, cable -----------------------------------------------------------------------


def test_slow_printer_completes_with_progress(printer: EmulatedPrinter) -> None:
    rate = 8000
    printer.set_speed(rate)
    doc = Document(blocks=(*many_lines(12).blocks[:-1], Image(bytes(range(256)) * 48, 384, 32), Cut()))
    progress: list[tuple[int, int]] = []
    started = time.monotonic()
    with_driver(printer, lambda driver: driver.print_document(doc, lambda d, t: progress.append((d, t))),
                mode="raster")
    elapsed = time.monotonic() - started
    (slip,) = printer.slips
    assert slip.lines[0] == "[image 384x320]"
    sent = printer.bytes_received
    assert elapsed > 0.8 * sent / rate  # it really went at the printer's pace
    total = progress[-1][1]
    assert progress[-1] == (total, total) and len(progress) >= total // 4


def test_power_off_is_unavailable_within_bounded_time(printer: EmulatedPrinter) -> None:
    printer.power_off()

    async def body(driver: EscPosSerialPrinter) -> list[tuple[str, float]]:
        outcomes = []
        for call in (driver.status, lambda: driver.print_document(ENGLISH)):
            started = time.monotonic()
            with pytest.raises(PrinterUnavailable) as info:
                await call()
            assert not isinstance(info.value, PrinterLostMidCopy)  # nothing of a copy went out
            outcomes.append((str(info.value), time.monotonic() - started))
        printer.power_on()
        assert (await driver.status()).ready
        return outcomes

    for words, seconds in with_driver(printer, body):
        assert "no answer from the printer" in words and "switched on" in words
        assert seconds < 1.5


def test_power_off_mid_copy_counts_as_printed(printer: EmulatedPrinter) -> None:
    async def body(driver: EscPosSerialPrinter) -> None:
        with pytest.raises(PrinterLostMidCopy, match="no answer") as info:
            await driver.print_document(many_lines(12), lambda done, total: printer.power_off())
        assert info.value.printed_any is True

    with_driver(printer, body)
    assert printer.slips == [] and len(printer.current.records) < 12


def test_unplug_and_replug(printer: EmulatedPrinter) -> None:
    async def body(driver: EscPosSerialPrinter) -> None:
        assert (await driver.status()).ready
        printer.unplug()
        with pytest.raises(PrinterUnavailable, match=r"is gone .*plug the printer in again"):
            await driver.status()
        printer.replug()
        await driver.print_document(ENGLISH)  # the next call opens the new port
        printer.unplug()
        printer.replug()  # back before the driver noticed: the next call just works
        assert (await driver.status()).ready
        with pytest.raises(PrinterLostMidCopy, match="is gone"):
            await driver.print_document(many_lines(12), lambda done, total: printer.unplug())
        printer.replug()
        await driver.print_document(ENGLISH)

    with_driver(printer, body)
    # The copy cut short by the cable stays on the roll (4 lines went before the first check).
    assert [s.lines for s in printer.slips] == [
        expected_lines(ENGLISH), [f"line {i:02d}" for i in range(4)] + expected_lines(ENGLISH)]


def test_cancelling_a_status_wait_stops_at_once(printer: EmulatedPrinter) -> None:
    printer.power_off()

    async def body(driver: EscPosSerialPrinter) -> float:
        task = asyncio.ensure_future(driver.print_document(ENGLISH))
        deadline = time.monotonic() + 3
        while printer.bytes_received < 3 and time.monotonic() < deadline:  # the query went out
            await asyncio.sleep(0.005)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_in = time.monotonic() - started
        printer.power_on()
        await driver.print_document(ENGLISH)
        return cancelled_in

    assert with_driver(printer, body, status_timeout_s=5.0) < 0.3
    assert len(printer.slips) == 1


# ---- line noise and bad input -------------------------------------------------------------------------


def test_garbage_status_byte_is_retried_once_then_refused(printer: EmulatedPrinter) -> None:
    async def body(driver: EscPosSerialPrinter) -> None:
        printer.garbage_status(0xFF, times=1)
        assert await driver.status() == PrinterStatus()
        printer.garbage_status(0x00, times=2)
        with pytest.raises(PrinterUnavailable, match=r"garbage twice .*0x00 is not a reply to DLE EOT 1"):
            await driver.status()
        assert (await driver.status()).ready

    with_driver(printer, body)


def test_stray_bytes_are_drained(printer: EmulatedPrinter, caplog: pytest.LogCaptureFixture) -> None:
    async def body(driver: EscPosSerialPrinter) -> None:
        assert (await driver.status()).ready
        printer.send_noise(b"\x1a\x13boot ok\r\n")  # in the pty when this returns
        await driver.print_document(ENGLISH)

    with caplog.at_level(logging.WARNING, logger="drivers.printer.escpos_serial"):
        with_driver(printer, body)
    assert printer.slips[0].lines == expected_lines(ENGLISH)
    assert caplog.records == []  # drained before asking: not mistaken for a reply and retried


def test_bad_document_is_refused_before_anything_is_sent(printer: EmulatedPrinter) -> None:
    async def body(driver: EscPosSerialPrinter) -> None:
        with pytest.raises(ValueError, match="block 1: text line needs 40 columns"):
            await driver.print_document(Document(blocks=(TextLine("ok"), TextLine("x" * 40))))

    with_driver(printer, body)
    assert printer.bytes_received == 0


def test_constructor_checks_and_closed_driver(printer: EmulatedPrinter) -> None:
    with pytest.raises(ValueError, match="unknown printer mode 'pdf'"):
        EscPosSerialPrinter("/dev/null", mode="pdf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status_every_lines"):
        EscPosSerialPrinter("/dev/null", status_every_lines=0)
    with pytest.raises(ValueError, match="unknown printer profile"):
        EscPosSerialPrinter("/dev/null", profile="a4")

    async def body(driver: EscPosSerialPrinter) -> None:
        await driver.close()
        with pytest.raises(PrinterUnavailable, match="was closed"):
            await driver.status()

    with_driver(printer, body)


def test_missing_port_is_unavailable_in_words(tmp_path: Path) -> None:
    async def body() -> None:
        driver = EscPosSerialPrinter(str(tmp_path / "nothing"))
        with pytest.raises(PrinterUnavailable, match="nothing"):
            await driver.status()
        await driver.close()

    run(body())
