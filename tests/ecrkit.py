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


# -- paired tills (docs/ecr.md, "Paired tills") ----------------------------------------------

class TillLink(Link):
    """A paired till's TCP connection: ask() signs each request with the next seq and checks the
    reply's MAC, till and seq (firmware/ecr/auth.py); send()/reply() stay raw for crafted lines."""

    def __init__(self, port: int, till: str, key: bytes, seq: int = 0, timeout: float = 20.0) -> None:
        super().__init__(port, timeout)
        self.till, self.key, self.seq = till, key, seq

    def signed(self, **request: Any) -> dict[str, Any]:
        """The next request, signed (seq taken), not sent."""
        from firmware.ecr.auth import sign

        self.seq += 1
        return sign(request, self.till, self.seq, self.key)

    def ask_raw(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Send `obj` as it is (a crafted or replayed request); the reply, unchecked."""
        self.send(json.dumps(obj).encode())
        return self.reply()

    def ask(self, **request: Any) -> dict[str, Any]:
        from firmware.ecr.auth import check_reply

        signed = self.signed(**request)
        self.send(json.dumps(signed).encode())
        return check_reply(self.reply(), self.till, signed["seq"], self.key)


def pair_over(link: Link, till: str, code: str) -> bytes:
    """The till's side of pairing over `link` (the code read off the terminal's screen)."""
    key, _ = pair_recorded(link, till, code)
    if isinstance(key, Exception):
        raise key
    return key


def pair_recorded(link: Link, till: str, code: str) -> tuple[bytes | Exception, list[dict[str, Any]]]:
    """Pairing over `link` (SPAKE2: `pair`, its reply, `pair_confirm` or its abort, its reply),
    and the lines as they crossed it (what someone listening on the link records): the till key,
    or the AuthError that says why the till did not pair."""
    from firmware.ecr.auth import AuthError, TillPairing

    pairing = TillPairing(till, code)
    lines: list[dict[str, Any]] = [pairing.request("pair-1")]
    link.send(json.dumps(lines[-1]).encode())
    lines.append(link.reply())
    try:
        lines.append(pairing.answer(lines[-1], "pair-2"))
        link.send(json.dumps(lines[-1]).encode())
        lines.append(link.reply())
        return pairing.finish(lines[-1]), lines
    except AuthError as exc:
        return exc, lines


def paired_offline(data_dir: Path, till: str) -> bytes:
    """A till paired without the keypad (for tests of what comes after pairing, on a board
    with no panel): its key written into the stopped terminal's journal, sealed as the terminal
    seals it. Returns the key."""
    from helpers import open_store

    from firmware.app.services.tills import _CardVaultSealer
    from firmware.journal.store import Journal
    from firmware.journal.tills import TillBook
    from firmware.journal.vault import CardVault

    key = os.urandom(32)
    store = open_store(data_dir)  # the terminal's own key store, its card-vault key
    vault = CardVault(store)
    journal = Journal.open(data_dir / "journal.db", vault)
    try:
        TillBook(journal, _CardVaultSealer(vault)).pair(till, key, "test setup")
    finally:
        journal.close()
        store.close()
    return key


class SignedProcess:
    """A terminal process (helpers.TerminalProcess) driven by a paired till: request() signs
    with the next seq and checks the reply's MAC; start() waits out the start-up signed."""

    def __init__(self, term: Any, till: str, key: bytes) -> None:
        self.term, self.till, self.key, self.seq = term, till, key, 0

    def start(self) -> None:
        self.term.start(wait_idle=False)
        deadline = time.monotonic() + 80
        while self.request(op="status")["busy"]:
            assert time.monotonic() < deadline, "terminal stayed busy after start-up"
            time.sleep(0.05)

    def request(self, timeout: float = 30.0, **request: Any) -> dict[str, Any]:
        from firmware.ecr.auth import check_reply, sign

        self.seq += 1
        self.term.send_only(**sign(request, self.till, self.seq, self.key))
        return check_reply(self.term.reply(timeout), self.till, self.seq, self.key)

    def stop(self) -> None:
        self.term.stop()
