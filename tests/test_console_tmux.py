"""`make run`'s development console in a real terminal (tmux): a newcomer's first sale typed on
the PC keyboard, the card swiped with the console's hot key, the approval on the LCD box and the
receipt in the printer panel, read back from the tmux pane; Ctrl-C stops every process."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import free_port_block
from tmuxkit import Pane, type_a_sale

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux (Debian package tmux, installed by `make test`) is missing")


def test_a_complete_sale_in_the_make_run_console(tmp_path: Path) -> None:
    var = tmp_path / "var"
    command = f"make run RUN_ARGS='--var {var} --base-port {free_port_block()}'; sleep 60"
    pane = Pane(command, tmp_path / "tmux.sock")
    try:
        pane.wait_for("MENU  F1 Sale", "Keys (PC -> terminal)", "[NET]", timeout=60)
        screen = type_a_sale(pane)
        screen = pane.wait_for("RMB 12.34", "Thank you")  # the receipt, in the printer panel
        slips = sorted((var / "devices" / "slips").glob("*.txt"))
        assert slips and "12.34" in slips[0].read_text()
        # The chip sale of README's first minute: `i` inserts cup-debit, its PIN on the keypad,
        # "Please remove card" until `r` takes it out, then the result; the slip's chip lines.
        pane.keys("Enter")
        pane.wait_for("MENU  F1 Sale")
        pane.keys("2", "3", "4", "5")
        pane.wait_for("23.45")
        pane.keys("Enter")
        pane.wait_for("ENTER confirm")
        pane.keys("Enter")
        pane.wait_for("swipe card")
        pane.keys("i")
        pane.wait_for("Enter PIN")
        pane.keys("1", "2", "3", "4", "5", "6", "Enter")
        pane.wait_for("Please remove")
        pane.keys("r")
        chip_screen = pane.wait_for("Approved", "CNY 23.45")
        deadline = time.monotonic() + 20
        while len(slips := sorted((var / "devices" / "slips").glob("*.txt"))) < 4:
            assert time.monotonic() < deadline, "the chip sale's slips never printed"
            time.sleep(0.1)
        chip_slip = " ".join(slips[-1].read_text().split())
        assert "AID: A000000333010101" in chip_slip and "TC:" in chip_slip, chip_slip
        assert "APP LABEL: UnionPay Debit" in chip_slip and "TVR:" in chip_slip
        pane.keys("C-c")
        deadline = time.monotonic() + 20
        # The names `make run` starts them by: a name that matches no process would pass at once.
        for name in ("board.sim.firmware", "board.sim.peripherals", "board.sim.acquirer"):
            while subprocess.run(["pgrep", "-f", "--", f"{name}.*{var}"], capture_output=True,
                                 check=False).returncode == 0:
                assert time.monotonic() < deadline, f"{name} still runs 20 s after Ctrl-C"
                time.sleep(0.1)
    finally:
        pane.close()
    assert "Approved" in screen and "Approved" in chip_screen


def test_a_swipe_typed_with_the_enter_that_starts_the_card_wait_pays(tmp_path: Path) -> None:
    """ENTER and `s` in one burst: the console holds the card at the reader until the sale waits
    for it, and says "swiped" once the terminal took it."""
    var = tmp_path / "var"
    pane = Pane(f"make run RUN_ARGS='--var {var} --base-port {free_port_block()}'; sleep 60",
                tmp_path / "tmux.sock")
    try:
        pane.wait_for("MENU  F1 Sale", "Keys (PC -> terminal)", "[NET]", timeout=60)
        pane.keys("5", "6", "7", "8")
        pane.wait_for("56.78")
        pane.keys("Enter")
        pane.wait_for("ENTER confirm")
        pane.keys("Enter", "s")  # one write to the pty
        screen = pane.wait_for("Approved", "CNY 56.78", "swiped cup_credit")
        pane.keys("C-c")
    finally:
        pane.close()
    assert "not waiting" not in screen
    assert "control 127.0.0.1" not in screen  # the peripherals' start line is no slip
