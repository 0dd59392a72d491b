"""`make run`'s launcher (board/sim/devrun.py) as a real process: what --headless prints names
the ports and the data directory of this run (--base-port, --var), never the defaults."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import REPO, free_port_block


def read_until(proc: subprocess.Popen[bytes], marker: str, timeout: float = 60.0) -> str:
    """stdout up to `marker` (or an AssertionError with what came)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while marker.encode() not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{marker!r} never printed; got:\n{seen.decode()}"
            if sel.select(left):
                chunk = os.read(fd, 65536)
                assert chunk, f"stdout closed before {marker!r}; got:\n{seen.decode()}"
                seen += chunk
    return seen.decode()


def children_of(var: Path) -> list[str]:
    """The processes still running that devrun started for this data directory."""
    found = subprocess.run(["pgrep", "-af", "--", str(var)], capture_output=True, text=True, check=False)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


def test_headless_help_names_this_runs_ports_and_directory(tmp_path: Path) -> None:
    base = free_port_block()
    var = tmp_path / "var"
    proc = subprocess.Popen([sys.executable, "-m", "board.sim.devrun", "--headless",
                             "--var", str(var), "--base-port", str(base)],
                            cwd=REPO, stdout=subprocess.PIPE, start_new_session=True)
    try:
        text = read_until(proc, "Ctrl-C stops everything")
        proc.send_signal(signal.SIGINT)  # as soon as the help shows: devrun stops its children
        proc.wait(30)
        left = children_of(var)
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = children_of(var)
        assert not left, f"still running after Ctrl-C: {left}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever this test started, if a check failed
        proc.wait(30)
    assert f"127.0.0.1:{base} (control {base + 1})" in text
    assert f"control {base + 2}" in text
    assert f"--port {base + 3} sale" in text
    assert f"peripherals --port {base + 2} swipe" in text
    assert str(var / "terminal") in text and str(var / "devices" / "slips") in text
    for default in ("5800", "5801", "5802", "8583"):
        # The run's directory is taken out first: pytest numbers its temporary directories, and
        # /tmp/pytest-of-root/pytest-5800 happened once.
        ports_only = text.replace(str(var), "VAR").replace(str(base), "BASE")
        assert default not in ports_only, f"default port {default} in:\n{text}"


def test_a_port_in_use_is_named_before_anything_starts(tmp_path: Path) -> None:
    base = free_port_block()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 3))  # the ECR port
        holder.listen()
        done = subprocess.run([sys.executable, "-m", "board.sim.devrun", "--headless",
                               "--var", str(tmp_path / "var"), "--base-port", str(base)],
                              cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"port {base + 3} (the ECR link) already in use" in done.stderr
    assert "--base-port" in done.stderr
    assert not (tmp_path / "var").exists()  # nothing started, nothing provisioned
