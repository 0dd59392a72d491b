"""`python -m board.sim.vpcd`: a test chip card in vsmartcard's virtual reader (vpcd, the pcscd
driver of Debian's vsmartcard-vpcd), so that a PC/SC application, our drivers/reader/pcsc.py
included, sees a card in a real PC/SC reader.

This module owns the card side of vpcd's TCP protocol, spoken here directly (the project venv has
no virtualsmartcard): every message is a 2-byte big-endian length then the payload; a 1-byte
payload from vpcd is a control (0 power off, 1 power on, 2 reset, 4 send the ATR), anything
longer is a command APDU, answered with the response APDU in one message. The card behind it is a
ChipCardApp (board.sim.chipcard): `make_card(NAME)` of board.sim.chipcards, or for the tests any
factory given as `--factory MODULE:FUNCTION` (called with the card name).

Insert = connect to vpcd, remove = disconnect: vpcd reports the card present while the TCP
connection stands. The host must be a loopback address (vpcd in pcscd listens on its port; the
test kit and `make run READER=pcsc` run pcscd in a network namespace of its own, so that port is
on no real interface). While running, a control socket (a Unix socket, `--control PATH`) takes
one line per connection and answers one line:

    insert [NAME]   insert the named card (default: the current one; a removed card first)
    remove          pull the card (mid-exchange too: an APDU in flight gets no answer)
    status          "inserted NAME" | "removed NAME", plus " busy" while an APDU is in flight

`python -m board.sim.vpcd ctl PATH insert cup-debit` sends one. Each card object lives as long as
the process (its ATC and PIN tries go on across remove/insert); never a card datum in the log.

`start_pcscd` runs a private pcscd with only this reader (the test kit and `make run READER=pcsc`):
pcscd 1.9.9 has its socket and pid file fixed at /run/pcscd and vpcd listens on every interface,
so it runs in mount and network namespaces of its own (`unshare`, root): a private directory is
bound over /run/pcscd (clients find the socket through PCSCLITE_CSOCK_NAME, which libpcsclite
reads once per process) and vpcd's port exists only on that namespace's loopback; the card
process joins it with `nsenter --net` (`card_command`). So parallel runs and a system pcscd never
meet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import ipaddress
import logging
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from board.sim.chipcard import ChipCardApp

log = logging.getLogger("posfw.sim.vpcd")

DEFAULT_PORT = 35963  # vpcd's default (0x8C7B), its CHANNELID in /etc/reader.conf.d/vpcd
PCSCD = "/usr/sbin/pcscd"
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
READER_NAME = "POS Virtual PCD"  # pcscd lists it as "POS Virtual PCD 00 00" (and 00 01)
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4

CardFactory = Callable[[str], ChipCardApp]


def default_factory(name: str) -> ChipCardApp:
    from board.sim.chipcards import make_card

    return make_card(name)


def load_factory(spec: str) -> CardFactory:
    """'package.module:function' -> that function (a card factory for tests)."""
    module, _, attr = spec.partition(":")
    factory = getattr(importlib.import_module(module), attr or "make_card")
    if not callable(factory):
        raise SystemExit(f"--factory {spec}: not callable")
    return factory  # type: ignore[no-any-return]


def check_loopback(host: str) -> None:
    """vpcd's port is a reader anyone on the network could put a card into: loopback only."""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"--host {host}: only a loopback address (127.0.0.1, ::1, localhost)")


class VirtualCard:
    """One card slot in vpcd: which card, whether it is in, and its connection."""

    def __init__(self, factory: CardFactory, name: str, host: str, port: int) -> None:
        self.factory = factory
        self.host, self.port = host, port
        self.name = name
        self.cards: dict[str, ChipCardApp] = {}
        self.busy = False
        self._serving: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    def card(self) -> ChipCardApp:
        if self.name not in self.cards:
            self.cards[self.name] = self.factory(self.name)
        return self.cards[self.name]

    @property
    def inserted(self) -> bool:
        return self._serving is not None and not self._serving.done()

    async def insert(self, name: str | None = None) -> None:
        """Connects to vpcd as the card `name`; an inserted other card is removed first."""
        if name and name != self.name:
            await self.remove()
            self.name = name
        self.card()  # an unknown name fails here, before vpcd sees anything
        if self.inserted:
            return
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise ConnectionError(f"vpcd at {self.host}:{self.port} does not answer ({exc}):"
                                  " is pcscd running with the vpcd driver on that port?") from exc
        self._writer = writer
        self._serving = asyncio.create_task(self._serve(reader, writer, self.card()))
        log.info("card %s inserted", self.name)

    async def remove(self) -> None:
        task, writer = self._serving, self._writer
        self._serving = self._writer = None
        self.busy = False
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            log.info("card %s removed", self.name)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     card: ChipCardApp) -> None:
        try:
            while True:
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                msg = await reader.readexactly(size) if size else b""
                if len(msg) == 1:
                    answer = self._control(card, msg[0])
                    if answer is None:
                        continue
                else:
                    # In a thread: the control socket stays served while the card computes, so a
                    # test can pull the card with an APDU in flight.
                    self.busy = True
                    try:
                        answer = await asyncio.to_thread(card.apdu, msg)
                    finally:
                        self.busy = False
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            log.info("vpcd closed the connection: card %s out", self.name)
            writer.close()

    @staticmethod
    def _control(card: ChipCardApp, code: int) -> bytes | None:
        if code == CTRL_OFF:
            card.power_down()
        elif code in (CTRL_ON, CTRL_RESET):
            card.power_up()
        elif code == CTRL_ATR:
            return card.atr
        else:
            log.warning("unknown vpcd control %d ignored", code)
        return None

    def status(self) -> str:
        state = "inserted" if self.inserted else "removed"
        return f"{state} {self.name}" + (" busy" if self.busy else "")


async def _control_client(slot: VirtualCard, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
    try:
        words = (await reader.readline()).decode("ascii", "replace").split()
        verb, args = (words[0], words[1:]) if words else ("", [])
        try:
            if verb == "insert" and len(args) <= 1:
                await slot.insert(args[0] if args else None)
                reply = "ok " + slot.status()
            elif verb == "remove" and not args:
                await slot.remove()
                reply = "ok " + slot.status()
            elif verb == "status" and not args:
                reply = "ok " + slot.status()
            else:
                reply = "error: commands are insert [NAME], remove, status"
        except (KeyError, ConnectionError) as exc:
            reply = f"error: {exc.args[0] if exc.args else exc}"
        writer.write(reply.encode() + b"\n")
        await writer.drain()
    finally:
        writer.close()


async def serve(slot: VirtualCard, control: Path | None, *, inserted: bool,
                ready: Callable[[], None] = lambda: None) -> None:
    """Runs until SIGTERM/SIGINT: the card inserted at start unless `inserted` is False."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = None
    if control is not None:
        control.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(
            lambda r, w: _control_client(slot, r, w), path=str(control))
    try:
        if inserted:
            await slot.insert()
        ready()
        await stop.wait()
    finally:
        await slot.remove()
        if server is not None:
            server.close()
            control.unlink(missing_ok=True)  # type: ignore[union-attr]


def send_control(path: Path, command: str, timeout_s: float = 5.0) -> str:
    """One control command to a running virtual card; returns its one-line answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(command.encode("ascii") + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def wait_for_line(proc: subprocess.Popen[str], marker: str, what: str,
                  timeout_s: float = 20.0) -> None:
    """Waits (bounded) for a line holding marker on the child's stdout; a thread keeps reading
    it afterwards, so the child never blocks on a full pipe. Kills it and raises if none."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in iter(proc.stdout.readline, ""):  # type: ignore[union-attr]
            lines.put(line.rstrip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if marker in line:
            return
    proc.kill()
    raise RuntimeError(f"{what} did not start: {seen[-15:]}")


def reader_conf(port: int = DEFAULT_PORT) -> str:
    """pcscd's reader.conf.d entry for vpcd listening for the card on `port` (every interface)."""
    return (f'FRIENDLYNAME "{READER_NAME}"\nDEVICENAME /dev/null:{port}\n'
            f"LIBPATH {VPCD_DRIVER}\nCHANNELID {port}\n")


def start_pcscd(workdir: Path, run_dir: Path, port: int = DEFAULT_PORT) -> subprocess.Popen[str]:
    """A private pcscd with only the vpcd reader (see the module docstring); its socket is
    run_dir/pcscd.comm. Returns once pcscd says it is ready."""
    conf = workdir / "reader.conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "vpcd").write_text(reader_conf(port))
    run_dir.mkdir(parents=True, exist_ok=True)
    script = (f"ip link set lo up && mkdir -p /run/pcscd && mount --bind {run_dir} /run/pcscd"
              f" && exec nice -n 19 {PCSCD} --foreground --info -c {conf}")
    proc = subprocess.Popen(["unshare", "--mount", "--net", "sh", "-c", script], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # logs to stdout
    wait_for_line(proc, "daemon ready", "pcscd (in unshare --mount --net: needs root)")
    return proc


def card_command(pcscd_pid: int, card: str, control: Path, *, port: int = DEFAULT_PORT,
                 factory: str | None = None, inserted: bool = True) -> list[str]:
    """The command running this module's card in that pcscd's network namespace."""
    cmd = ["nsenter", f"--target={pcscd_pid}", "--net", "--", sys.executable, "-m",
           "board.sim.vpcd", "--card", card, "--port", str(port), "--control", str(control)]
    if factory:
        cmd += ["--factory", factory]
    if not inserted:
        cmd.append("--removed")
    return cmd


def start_card(pcscd_pid: int, card: str, control: Path, *, cwd: Path,
               env: dict[str, str] | None = None, **options: object) -> subprocess.Popen[str]:
    """The card process (card_command), returned once it says ready."""
    proc = subprocess.Popen(["nice", "-n", "19", *card_command(pcscd_pid, card, control,
                                                                **options)],  # type: ignore[arg-type]
                            cwd=cwd, text=True, env=env or dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for_line(proc, "ready", "the virtual card (board.sim.vpcd)")
    return proc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ctl"]:
        ctl = argparse.ArgumentParser(prog="python -m board.sim.vpcd ctl",
                                      description="send one command to a running virtual card")
        ctl.add_argument("control", type=Path, help="the card's --control socket")
        ctl.add_argument("command", nargs="+", help="insert [NAME] | remove | status")
        args = ctl.parse_args(argv[1:])
        answer = send_control(args.control, " ".join(args.command))
        print(answer)
        return 0 if answer.startswith("ok") else 1
    parser = argparse.ArgumentParser(
        prog="python -m board.sim.vpcd",
        description="a test chip card in vpcd's virtual PC/SC reader (see the module docstring)")
    parser.add_argument("--card", default="cup-debit", help="the test chip card's name")
    parser.add_argument("--host", default="127.0.0.1", help="vpcd's address (loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="vpcd's port")
    parser.add_argument("--control", type=Path, help="Unix socket for insert/remove/status")
    parser.add_argument("--removed", action="store_true", help="start with the card out")
    parser.add_argument("--factory", help="MODULE:FUNCTION making the card (tests)")
    args = parser.parse_args(argv)
    check_loopback(args.host)
    logging.basicConfig(level=logging.INFO, format="vpcd card: %(message)s")
    factory = load_factory(args.factory) if args.factory else default_factory
    slot = VirtualCard(factory, args.card, args.host, args.port)
    try:
        asyncio.run(serve(slot, args.control, inserted=not args.removed,
                          ready=lambda: print("ready", flush=True)))
    except (ConnectionError, KeyError) as exc:
        print(f"python -m board.sim.vpcd: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
