"""The development console's layout (board/sim/console.py) read back through a VT model: the
LCD box, its icon lines and the printer panel never draw over the key legend beside them, with
every icon shown (the display test) and with Chinese slips (two cells a character)."""

from __future__ import annotations

import asyncio
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
