"""`make run`'s development console in a real terminal (tmux): a newcomer's first sale typed on
the PC keyboard, the card swiped with the console's hot key, the approval on the LCD box and the
receipt in the printer panel, read back from the tmux pane; Ctrl-C stops every process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux (Debian package tmux, installed by `make test`) is missing")


def free_port_block(count: int = 4) -> int:
    """A base port with `count` free ports after it (the console's host, control, peripherals, ECR)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no block of free ports on 127.0.0.1")


class Pane:
    def __init__(self, session: str) -> None:
        self.session = session

    def text(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.session], capture_output=True,
                              text=True, check=False).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.session, *keys], check=True)

    def wait_for(self, *texts: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.text()
            if all(t in screen for t in texts):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts!r} never appeared; the pane shows:\n{screen}")
            time.sleep(0.1)


def test_a_complete_sale_in_the_make_run_console(tmp_path: Path) -> None:
    session = f"pos-{uuid.uuid4().hex[:8]}"
    var = tmp_path / "var"
    command = f"make run RUN_ARGS='--var {var} --base-port {free_port_block()}'; sleep 60"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "45", "-c", str(REPO),
                    command], check=True)
    pane = Pane(session)
    try:
        pane.wait_for("MENU  F1 Sale", "Keys (PC -> terminal)", "[NET]", timeout=60)
        pane.keys("1", "2", "3", "4")
        pane.wait_for("12.34")
        pane.keys("Enter")
        pane.wait_for("ENTER confirm")
        pane.keys("Enter")
        pane.wait_for("Swipe card")
        pane.keys("s")  # the console's hot key: swipe the selected test card at the emulated reader
        screen = pane.wait_for("Approved", "CNY 12.34", "Auth ")
        screen = pane.wait_for("RMB 12.34", "Thank you")  # the receipt, in the printer panel
        slips = sorted((var / "devices" / "slips").glob("*.txt"))
        assert slips and "12.34" in slips[0].read_text()
        pane.keys("C-c")
        deadline = time.monotonic() + 20
        for name in ("firmware.app", "board.sim.peripherals", "board.sim.acquirer"):
            while subprocess.run(["pgrep", "-f", "--", f"{name}.*{var}"], capture_output=True,
                                 check=False).returncode == 0:
                assert time.monotonic() < deadline, f"{name} still runs 20 s after Ctrl-C"
                time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)
    assert "Approved" in screen
