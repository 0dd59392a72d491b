"""The systemd notify protocol (firmware/app/watchdog.py) against a real AF_UNIX datagram socket
standing where systemd's would be: READY=1 and STATUS from the firmware process itself, the
WATCHDOG=1 pets from the event loop (and none while the loop is stuck), nothing without
NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers import TerminalProcess

from firmware.app.watchdog import Notifier


@pytest.fixture
def listener(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(20)
    yield sock, str(path)
    sock.close()


def _next(sock: socket.socket, wanted: str) -> list[str]:
    """The next datagram holding the line `wanted` (others are skipped), as lines."""
    while True:
        lines = sock.recv(4096).decode().split("\n")
        if wanted in lines or any(line.startswith(wanted) for line in lines):
            return lines


def test_ready_and_status_reach_the_socket(listener) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    n.ready("ready: board sim")
    assert sock.recv(4096) == b"READY=1\nSTATUS=ready: board sim"
    n.stopping()
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
    n.close()


def test_an_abstract_socket_name_is_used_as_systemd_gives_it() -> None:
    name = f"posfw-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(20)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).send("STATUS=x")
        assert sock.recv(4096) == b"STATUS=x"
    finally:
        sock.close()


def test_pets_come_every_half_watchdog_period_from_the_loop(listener) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    assert n.interval == 0.1

    async def go() -> None:
        task = asyncio.create_task(n.pet())
        got = await asyncio.to_thread(lambda: [sock.recv(4096) for _ in range(3)])
        task.cancel()
        assert got == [b"WATCHDOG=1"] * 3
    asyncio.run(go())


def test_a_stuck_loop_stops_the_pets(listener) -> None:
    """While the loop is blocked no pet goes out: the gap between two pets spans the block."""
    sock, path = listener
    sock.settimeout(0.2)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})  # a pet every 10 ms
    arrivals: list[float] = []
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                sock.recv(4096)
            except TimeoutError:
                continue
            arrivals.append(time.monotonic())

    async def go() -> tuple[float, float]:
        reader = threading.Thread(target=receive)
        reader.start()
        task = asyncio.create_task(n.pet())
        await asyncio.sleep(0.05)
        start = time.monotonic()
        time.sleep(0.5)  # the loop is stuck: no task runs
        end = time.monotonic()
        deadline = end + 20
        while sum(t > end for t in arrivals) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the loop runs again: so do the pets
        task.cancel()
        done.set()
        reader.join()
        return start, end
    start, end = asyncio.run(go())
    # no pet arrived while the loop was stuck (one sent just before may land just after start)
    assert [t for t in arrivals if start + 0.05 < t < end] == []
    assert sum(t > end for t in arrivals) >= 3


def test_another_process_s_watchdog_and_no_socket_mean_nothing(tmp_path: Path) -> None:
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "s"), "WATCHDOG_USEC": "30000000",
                     "WATCHDOG_PID": str(os.getpid() + 1)}).interval is None
    quiet = Notifier({})
    assert not quiet.enabled and quiet.interval is None and quiet.send("READY=1") is False
    asyncio.run(quiet.pet())  # returns at once
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.send("READY=1") is False  # said in the log, never raised


def test_the_firmware_process_says_ready_pets_and_says_stopping(data_dir: Path, listener) -> None:
    sock, path = listener
    term = TerminalProcess(data_dir, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    term.start()
    try:
        ready = _next(sock, "READY=1")
        assert ready[0] == "READY=1" and ready[1].startswith("STATUS=ready: board sim, ECR port ")
        assert _next(sock, "WATCHDOG=1") == ["WATCHDOG=1"]
        assert term.request(op="status")["service_mode"] is None
    finally:
        term.stop()
    assert _next(sock, "STOPPING=1") == ["STOPPING=1", "STATUS=stopping"]


def test_the_process_knows_how_long_it_has_lived(tmp_path) -> None:
    """seconds_since_start() (the 'terminal ready ... after the process started' log line, the
    firmware's share of a board's boot): a child asked at once says a moment, one
    that slept first says at least that long (never less: the clock it reads does not go back)."""
    import subprocess
    import sys

    ask = ("import time, sys; time.sleep(float(sys.argv[1])); "
           "from firmware.app.process import seconds_since_start; print(seconds_since_start())")
    quick = float(subprocess.run([sys.executable, "-c", ask, "0"], capture_output=True, text=True,
                                 check=True).stdout)
    slow = float(subprocess.run([sys.executable, "-c", ask, "1.5"], capture_output=True, text=True,
                                check=True).stdout)
    assert quick >= 0 and slow >= 1.5
