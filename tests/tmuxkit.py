"""A tmux pane for console tests: the command runs in a session on the test's own tmux server (a
socket in its directory), so the server has the test's environment and closing it ends only what
the test started. Needs the Debian package tmux (`make test` installs it).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Pane:
    """One tmux session on its own server (a socket in the test's directory): the server gets the
    test's environment, and killing it ends only what this test started."""

    def __init__(self, command: str, socket_path: Path, width: int = 120, height: int = 45) -> None:
        self.socket = socket_path
        self.session = "console"
        subprocess.run(self._tmux("new-session", "-d", "-s", self.session, "-x", str(width),
                                  "-y", str(height), "-c", str(REPO), command), check=True)

    def _tmux(self, *args: str) -> list[str]:
        return ["tmux", "-S", str(self.socket), *args]

    def text(self) -> str:
        return subprocess.run(self._tmux("capture-pane", "-p", "-t", self.session), capture_output=True,
                              text=True, check=False).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(self._tmux("send-keys", "-t", self.session, *keys), check=True)

    def cursor_visible(self) -> bool:
        shown = subprocess.run(self._tmux("display-message", "-p", "-t", self.session, "#{cursor_flag}"),
                               capture_output=True, text=True, check=True).stdout.strip()
        return shown == "1"

    def wait_for_pattern(self, pattern: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, screen := self.text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never matched; the pane shows:\n{screen}")
            time.sleep(0.1)
        return screen

    def wait_for(self, *texts: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.text()
            if all(t in screen for t in texts):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts!r} never appeared; the pane shows:\n{screen}")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(self._tmux("kill-server"), check=False, capture_output=True)
        self.socket.unlink(missing_ok=True)


def type_a_sale(pane: Pane) -> str:
    """12.34 typed on the PC keyboard, confirmed, the selected test card swiped with the console's
    hot key `s`; returns the pane once the LCD shows the approval."""
    pane.keys("1", "2", "3", "4")
    pane.wait_for("12.34")
    pane.keys("Enter")
    pane.wait_for("ENTER confirm")
    pane.keys("Enter")
    pane.wait_for("swipe card")
    pane.keys("s")
    # 4 x 16: the auth code is one DOWN away; the last row is the result's ENTER hint
    return pane.wait_for("Approved", "CNY 12.34", "ENTER: continue")
