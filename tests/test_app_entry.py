"""The firmware's process entries (issue 15): `python -m firmware.app` as a device runs it, and
`python -m board.sim.firmware`, the same firmware with what only the sim board plugs in (test
cards named over the ECR link, the development console).

The firmware ships without either, and says so in words where one is asked for: `--panel
console` names the sim board's entry point and stops before anything is opened; a request
naming a test card gets one error reply that names it (never a traceback, never silence).

The check that refuses to start without the C extension finds the repository from its own
file; a module moved one folder down with the old `parent.parent` would look in firmware/c_ext,
find nothing and switch the check off without a word (the firmware would then start on the
slow path, against STYLE 7).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TerminalProcess

from firmware.app import process

REPO = Path(__file__).resolve().parents[1]
SIM_ENTRY = "python -m board.sim.firmware"


def python_m(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_c_extension_check_looks_in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (REPO / "c_ext").is_dir()
    # An extension that cannot be imported must stop the start; a check looking in the wrong
    # folder returns quietly instead.
    monkeypatch.setitem(sys.modules, "c_ext.posio", None)
    with pytest.raises(SystemExit):
        process.require_c_extension()


def test_python_m_board_sim_firmware_runs() -> None:
    done = python_m("board.sim.firmware", "--help")
    assert done.returncode == 0, done.stderr
    assert "--board" in done.stdout and "--console-control-port" in done.stdout
    assert done.stdout.startswith(f"usage: {SIM_ENTRY} ")


def test_the_console_panel_without_the_sim_board_names_its_entry_point(tmp_path: Path) -> None:
    data = tmp_path / "terminal"
    done = python_m("firmware.app", "--panel", "console", "--data", str(data))
    assert done.returncode != 0
    assert SIM_ENTRY in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not data.exists()  # said before anything was opened or written


@pytest.mark.parametrize("request_", [
    {"op": "sale", "amount": 100, "card": "visa"},
    {"op": "present_card", "card": "visa"},
    {"op": "held_resume", "order": 1, "card": "visa"},
], ids=lambda r: r["op"])
def test_a_test_card_on_a_terminal_served_without_them_gets_one_clear_error(
        data_dir: Path, sim, request_: dict[str, object]) -> None:
    term = TerminalProcess(data_dir, module="firmware.app")  # the firmware as a device runs it
    term.start()
    try:
        reply = term.request(id="with-card", **request_)
        assert reply["id"] == "with-card" and reply["ok"] is False, reply
        assert reply["result"] == "error" and SIM_ENTRY in reply["message"], reply
        # exactly one reply: the next line answers the next request
        assert term.request(id="after", op="status")["id"] == "after"
        assert term.request(op="last")["result"] == "none"  # nothing ran
    finally:
        term.stop()
    stderr = (data_dir / "stderr.log").read_text()
    assert "Traceback" not in stderr and "failed inside the terminal" not in stderr, stderr
