"""`make qemu-run`'s console in a real terminal (tmux): the firmware booted in a QEMU guest, a sale
typed on the PC keyboard and sent as QMP keys, the card swiped with the console's hot key, the
approval on the mirrored LCD and the receipt in the printer panel; Ctrl-C stops the guest and gives
the terminal back as it was. Also: a guest that dies is reported in words, and no tty is refused.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tmuxkit import Pane, type_a_sale

# Boots a kernel under TCG: only `make qemu-test` (QEMU_TESTS=1) runs this, never plain pytest.
if os.environ.get("QEMU_TESTS") != "1":
    pytest.skip("QEMU board tests run with `make qemu-test` (QEMU_TESTS=1)", allow_module_level=True)
if shutil.which("tmux") is None:
    pytest.skip("tmux (Debian package tmux, installed by `make test`) is missing", allow_module_level=True)

from board.qemu.image import DEFAULT_DIR, build

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
EXIT_MARK = "QEMU-RUN-EXIT="
TOOLS_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"  # mkfs.ext4 for the data disk


def qemu_pids(workdir: Path) -> list[int]:
    """This test's own QEMU: the one whose command line holds its workdir (the data disk's path)."""
    found = subprocess.run(["pgrep", "-f", f"qemu-system.*{workdir}/"], capture_output=True, text=True,
                           check=False).stdout
    return [int(pid) for pid in found.split()]


def console_command(workdir: Path, *args: str) -> str:
    """The console in the pane, then its exit status and whether the tty's settings came back."""
    run = shlex.join([str(PYTHON), "-m", "board.qemu.run", "--workdir", str(workdir), *args])
    image_dir = os.environ.get("QEMU_IMAGE_DIR", str(DEFAULT_DIR))
    return (f"export PATH={shlex.quote(TOOLS_PATH)} QEMU_IMAGE_DIR={shlex.quote(image_dir)}; "
            f"before=$(stty -g); {run}; echo {EXIT_MARK}$?; "
            f'if [ "$(stty -g)" = "$before" ]; then echo TTY-SANE; else echo TTY-CHANGED; fi; sleep 120')


@pytest.fixture(scope="module", autouse=True)
def image() -> None:
    build(Path(os.environ.get("QEMU_IMAGE_DIR", DEFAULT_DIR)), log=lambda line: None)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "qemu-run"
    for pid in qemu_pids(tmp_path / "qemu-run"):  # a failed test's guest: ours, by its workdir
        os.kill(pid, signal.SIGKILL)


def test_a_sale_in_the_qemu_console_and_ctrl_c_gives_the_terminal_back(workdir: Path) -> None:
    started = time.monotonic()
    pane = Pane(console_command(workdir, "--fresh"), workdir.parent / "tmux.sock")
    try:
        pane.wait_for("booting the guest", "console-1.log", timeout=30)
        pane.wait_for("MENU  F1 Sale", "[NET]", "Keys (PC -> terminal)", timeout=90)
        booted = time.monotonic() - started
        screen = type_a_sale(pane)  # the card through the emulated reader on the guest's ttyS1
        assert "swiped cup_credit" in screen
        screen = pane.wait_for("RMB 12.34", "Thank you")  # the receipt from ttyS2, in the paper panel
        paper = [line for line in screen.splitlines() if line.startswith("| ")]
        assert any("RMB 12.34" in line for line in paper), screen
        slips = sorted((workdir / "devices" / "slips").glob("*.txt"))
        assert slips and "RMB 12.34" in slips[0].read_text()
        assert pane.cursor_visible() is False  # the console hides it while it draws

        pane.keys("C-c")
        screen = pane.wait_for(EXIT_MARK, timeout=30)
        assert f"{EXIT_MARK}0" in screen, screen
        screen = pane.wait_for("TTY-")
        assert "TTY-SANE" in screen, f"the terminal's settings were not restored:\n{screen}"
        assert pane.cursor_visible()
        assert qemu_pids(workdir) == [], "QEMU still runs after Ctrl-C"
        print(f"\n[qemu-run] idle screen in the pane after {booted:.1f} s; "
              f"whole test {time.monotonic() - started:.1f} s")
    finally:
        pane.close()


def test_a_guest_that_dies_is_reported_with_its_console_log(workdir: Path) -> None:
    pane = Pane(console_command(workdir, "--fresh"), workdir.parent / "tmux.sock")
    try:
        # The counter ticks once QEMU runs with every port connected: the guest dies while booting.
        pane.wait_for_pattern(r"Guest: booting… [1-9]", timeout=30)
        deadline = time.monotonic() + 10
        while not (pids := qemu_pids(workdir)):
            assert time.monotonic() < deadline, "no QEMU process for this workdir"
            time.sleep(0.1)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # the guest dies under the console
        screen = pane.wait_for(EXIT_MARK, "TTY-", timeout=30)
        assert "The guest stopped: qemu was killed by signal 9" in screen, screen
        assert f"Its console log: {workdir}/console-1.log" in screen, screen
        assert f"{EXIT_MARK}1" in screen and "TTY-SANE" in screen, screen
        assert pane.cursor_visible()
    finally:
        pane.close()


def test_without_a_terminal_it_says_so_and_starts_nothing(workdir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "board.qemu.run", "--workdir", str(workdir)], cwd=REPO,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "needs a terminal" in done.stderr
    assert not workdir.exists()
