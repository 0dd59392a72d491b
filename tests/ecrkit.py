"""What the ECR link tests share: a till's raw line over TCP, the terminal with its ECR server
in-process, and the terminal as a process with its ECR link on a real pseudo-terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from helpers import REPO

from board.sim.firmware import sim_card
from firmware.app.core.terminal import AppConfig
from firmware.app.frontends.ecr_server import EcrServer
from firmware.app.terminal import Terminal


class Link:
    """A till's TCP connection: raw lines out, one JSON reply line at a time in."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buf = b""

    def send(self, line: bytes) -> None:
        self.sock.sendall(line + b"\n")

    def reply(self) -> dict[str, Any]:
        return json.loads(self.raw_reply())

    def raw_reply(self) -> bytes:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"the terminal closed the link; unread: {self._buf!r}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def ask(self, **request: Any) -> dict[str, Any]:
        self.send(json.dumps(request).encode())
        return self.reply()

    def closed_by_peer(self) -> bool:
        """True once the terminal has closed its end (EOF; anything before it is kept)."""
        self.sock.setblocking(False)
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return False
        except ConnectionError:
            return True
        finally:
            self.sock.setblocking(True)
        self._buf += chunk
        return not chunk

    def close(self) -> None:
        self.sock.close()


@contextlib.asynccontextmanager
async def ecr_terminal(data_dir: Path, board: str = "sim") -> AsyncIterator[tuple[Terminal, EcrServer]]:
    """The terminal and its ECR server, in this process, on a loopback port."""
    t = Terminal(AppConfig(data_dir=data_dir, board=board, printer_path="", reader_path=""))
    await t.start()
    server = EcrServer(t, "127.0.0.1", 0, None, test_cards=sim_card)
    await server.start()
    try:
        yield t, server
    finally:
        await server.close()
        await t.close()


def set_comms(data_dir: Path, **values: Any) -> None:
    """Change comms settings in a provisioned terminal's settings.json (before it starts)."""
    path = data_dir / "settings.json"
    settings = json.loads(path.read_text())
    settings["comms"].update(values)
    path.write_text(json.dumps(settings))


class SerialTerminal:
    """The terminal as a process with its ECR link on a pty; `master` is the till's end."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.master, self.slave = pty.openpty()
        tty.setraw(self.master)
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""

    def start(self) -> None:
        ready = self.data_dir / "ready"
        with open(self.data_dir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "board.sim.firmware", "--data", str(self.data_dir),
                 "--ecr-port", "0", "--ecr-serial", os.ttyname(self.slave), "--ready-file",
                 str(ready)], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=err)
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "terminal not ready"
            time.sleep(0.02)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def reply(self, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no reply line, got {self._buf!r}"
            if select.select([self.master], [], [], left)[0]:
                self._buf += os.read(self.master, 65536)
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        os.close(self.master)
        os.close(self.slave)


@contextlib.contextmanager
def serial_terminal(data_dir: Path) -> Iterator[SerialTerminal]:
    term = SerialTerminal(data_dir)
    try:
        term.start()
        yield term
    finally:
        term.stop()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait, on the event loop the terminal runs on, until predicate() holds (or fail)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
