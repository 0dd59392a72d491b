"""The development console's layout (board/sim/console.py) read back through a VT model: the
LCD box, its icon lines and the printer panel never draw over the key legend beside them, with
every icon shown (the display test) and with Chinese slips (two cells a character)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os

from test_display import Screen

from board.sim.console import LEGEND, PAPER_WIDTH, DevConsole
from firmware.ports import Frame, Icon, text_cells

ROWS, COLS = 4, 16


def legend_intact(screen: Screen, console: DevConsole) -> None:
    for i, text in enumerate(LEGEND):
        y = 1 + i  # the legend starts on line 2
        left = "".join(screen.chars[y][:console.legend_col - 1])
        assert "".join(screen.chars[y][console.legend_col - 1:]).rstrip() == text, screen.line(y)
        assert text_cells(left.rstrip()) < console.legend_col - 1, screen.line(y)


def left_of_legend(screen: Screen, console: DevConsole, line: int) -> str:
    """What a console line (1-based) shows left of the legend column."""
    return "".join(screen.chars[line - 1][:console.legend_col - 1]).rstrip()


def drawn(rows: int, cols: int, draw) -> tuple[Screen, DevConsole]:
    """A console on a real pty keypad and a text stream, `draw(console)` run on a live loop."""
    out = io.StringIO()
    keypad_master, keypad_slave = os.openpty()
    paper_read, paper_write = os.pipe()

    async def run() -> DevConsole:
        console = DevConsole(rows, cols, "sim", control_port=1, printer_feed_fd=paper_read,
                             stream=out, keypad_fd=keypad_slave)
        console.start()
        draw(console, paper_write)
        console.close()
        return console

    try:
        console = asyncio.run(run())
    finally:
        for fd in (keypad_master, keypad_slave, paper_read, paper_write):
            os.close(fd)
    screen = Screen(lines=45, columns=120)
    screen.feed(out.getvalue().rstrip("\n"))  # close() leaves the shell a new line
    return screen, console


def test_the_display_tests_icons_stay_under_the_box_and_leave_nothing_over_the_legend() -> None:
    every = frozenset(Icon)

    def draw(console: DevConsole, _paper: int) -> None:
        console.display.show(Frame(("Display test", "", "", ""), icons=every))
        shown.append(Screen(lines=45, columns=120))
        shown[-1].feed(console.stream.getvalue())  # type: ignore[attr-defined]
        console.display.show(Frame(("Sale", "", "", ""), icons=frozenset({Icon.LINK_UP, Icon.PAPER_OK})))

    shown: list[Screen] = []
    screen, console = drawn(ROWS, COLS, draw)
    legend_intact(shown[0], console)
    legend_intact(screen, console)
    box_bottom = 2 + ROWS + 1  # the box starts on line 2
    under = [left_of_legend(shown[0], console, box_bottom + i) for i in (1, 2)]
    for icon in every:  # the display test shows every icon, none cut
        assert any(f"[{icon_tag(icon)}]" in line for line in under), (icon, under)
    assert left_of_legend(screen, console, box_bottom + 1) == " [NET] [PAPER]"
    assert left_of_legend(screen, console, box_bottom + 2) == ""
    assert left_of_legend(screen, console, console.paper_top).startswith("Printer (emulated)")


def icon_tag(icon: Icon) -> str:
    from drivers.display.terminal import ICON_TAGS

    return ICON_TAGS[icon]


def test_a_chinese_slip_stays_in_the_printer_panel() -> None:
    slip = ("商户名称: 测试商户有限公司上海分公司第一门店\n"
            "交易类型: 消费 SALE\n"
            "金额: RMB 12.34 人民币壹拾贰元叁角肆分整整整\n").encode()

    def draw(console: DevConsole, paper: int) -> None:
        os.write(paper, slip)
        console._read_feed()  # what the loop does when the emulated printer's pipe has data

    screen, console = drawn(ROWS, COLS, draw)
    legend_intact(screen, console)
    panel = [left_of_legend(screen, console, console.paper_top + i) for i in range(1, 4)]
    assert panel[0].startswith("| 商户名称: 测试商户") and panel[1] == "| 交易类型: 消费 SALE"
    for line in panel:
        assert text_cells(line) <= PAPER_WIDTH, line


# ---- the `s` hot key and the terminal's card wait ---------------------------------------------

async def until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


def with_reader(tmp_path, body):
    """The emulated reader on a real pty with its control port, the terminal's reader driver on
    that pty, and a console whose `s` swipes through the control port: body(console, driver,
    emulated reader) runs on a live loop."""
    from board.sim.peripherals import Peripherals, serve
    from drivers.reader.serial_link import SerialLinkReader

    devices = Peripherals(tmp_path / "devices", echo=False).start()
    server = serve(devices, 0)
    keypad_master, keypad_slave = os.openpty()

    async def run():
        driver = SerialLinkReader(str(devices.reader.device_path))
        console = DevConsole(ROWS, COLS, "sim", control_port=server.server_address[1],
                             stream=io.StringIO(), keypad_fd=keypad_slave, card_wait=driver)
        console.start()
        try:
            return await body(console, driver, devices.reader)
        finally:
            console.close()
            await driver.close()

    try:
        return asyncio.run(run())
    finally:
        server.shutdown()
        devices.stop()
        os.close(keypad_master)
        os.close(keypad_slave)


def test_a_swipe_pressed_before_the_card_wait_starts_reaches_it(tmp_path) -> None:
    """`s` in the same burst as the ENTER that starts the card wait: the console has the key
    before the terminal has armed the reader. The card waits at the reader for that wait."""
    from firmware.ports import MagstripeRead

    async def body(console: DevConsole, driver, _reader):
        console.hot_key("s")
        await until(lambda: console.message != "", "the console to answer the hot key")
        said_first = console.message
        event = await asyncio.wait_for(driver.read(magstripe=True, chip=True, timeout_s=30), 15)
        await until(lambda: console.message.startswith("swiped"), "the console to say swiped")
        return said_first, event, console.message

    said_first, event, said = with_reader(tmp_path, body)
    assert said_first == "cup_credit held at the reader until the terminal asks for a card"
    assert isinstance(event, MagstripeRead) and event.track2 is not None
    assert said == "swiped cup_credit"


def test_a_swipe_never_lands_in_a_wait_the_terminal_gave_up(tmp_path) -> None:
    """A wait given up (its cancel not yet read by a slow reader, so the reader still holds the
    old arm) and a new one started: the card goes to the new one, and "swiped" only then."""
    from helpers import HeldUpReader

    from firmware.ports import MagstripeRead

    async def body(console: DevConsole, driver, reader):
        first = asyncio.ensure_future(driver.read(magstripe=True, chip=True, timeout_s=30))
        await until(driver.waiting_for_card, "the first wait to be armed")
        held = HeldUpReader(reader)
        first.cancel()  # the driver writes its cancel; the held reader keeps the old arm
        with contextlib.suppress(asyncio.CancelledError):
            await first
        lingering = reader.armed
        console.hot_key("s")
        second = asyncio.ensure_future(driver.read(magstripe=True, chip=True, timeout_s=30))
        for _ in range(20):
            await asyncio.sleep(0.01)  # give a wrong swipe its chance
        early = console.message.startswith("swiped")
        held.release()
        event = await asyncio.wait_for(second, 15)
        await until(lambda: console.message.startswith("swiped"), "the console to say swiped")
        return lingering, early, event, driver.stats.stale_events

    lingering, early, event, stale = with_reader(tmp_path, body)
    assert lingering, "the reader no longer held the given-up arm: the case was not made"
    assert not early
    assert isinstance(event, MagstripeRead) and stale == 0
