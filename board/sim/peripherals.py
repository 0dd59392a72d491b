"""The sim board's peripherals in one process: the emulated card reader and ESC/POS
printer on real ptys, one JSON-lines control port for both, and every printed slip
saved as text and PNG. `make run` starts it; a second shell drives it:

    .venv/bin/python -m board.sim.peripherals swipe cup_debit
    .venv/bin/python -m board.sim.peripherals pin-keys 123456E     (on the reader's PIN pad)
    .venv/bin/python -m board.sim.peripherals paper-out --after 5
    .venv/bin/python -m board.sim.peripherals load-paper
    .venv/bin/python -m board.sim.peripherals state
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socketserver
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from board.sim.control import ControlClient, ControlError
from board.sim.printer import EmulatedPrinter, Slip
from board.sim.reader import EmulatedReader
from firmware.digits import is_digits

CONTROL_PORT = 5802


class Peripherals:
    """Reader + printer + the slip archive. control() takes {"device": ..., "cmd": ...}."""

    def __init__(self, device_dir: Path, *, printer_profile: str = "58mm", echo: bool = True) -> None:
        self.device_dir = Path(device_dir)
        # Where each finished slip is told (the paper of `make run`, or a console's paper pipe).
        self.echo_to: TextIO | None = sys.stdout if echo else None
        self.device_dir.mkdir(parents=True, exist_ok=True)
        self.slip_dir = self.device_dir / "slips"
        self.slip_dir.mkdir(exist_ok=True)
        self.reader = EmulatedReader(link_dir=self.device_dir)
        self.printer = EmulatedPrinter(self.device_dir, profile=printer_profile)
        self._saved = 0  # slips of this run archived so far
        # A kept device directory (make qemu-run keeps its own) goes on numbering, never overwrites.
        self._first_number = 1 + max((int(f.stem) for f in self.slip_dir.glob("*.txt") if is_digits(f.stem)),
                                     default=0)
        self._stop = threading.Event()
        self._archiver: threading.Thread | None = None

    def start(self) -> Peripherals:
        self.reader.start()
        self.printer.start()
        self._archiver = threading.Thread(target=self._archive, name="slip-archive", daemon=True)
        self._archiver.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.printer.stop()
        self.reader.stop()

    def _archive(self) -> None:
        """Saves each finished slip as NNNN.txt and NNNN.png (what the merchant would hold)."""
        while not self._stop.is_set():
            self.printer.wait_for(lambda p: len(p.slips) > self._saved or self._stop.is_set(),
                                  timeout=1.0)
            slips = self.printer.slips
            while self._saved < len(slips):
                self._save(self._first_number + self._saved, slips[self._saved])
                self._saved += 1

    def _save(self, number: int, slip: Slip) -> None:
        stem = self.slip_dir / f"{number:04d}"
        stem.with_suffix(".txt").write_text(slip.text + "\n", encoding="utf-8")
        slip.save_png(stem.with_suffix(".png"))
        if self.echo_to is not None:
            with contextlib.suppress(OSError, ValueError):  # the reader of the paper has gone
                print(f"\n--- printed slip {number} ({stem}.png) ---\n{slip.text}\n", file=self.echo_to,
                      flush=True)

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        request = dict(request)
        device = request.pop("device", None)
        cmd = request.pop("cmd", None)
        if not isinstance(cmd, str):
            return {"ok": False, "error": "a request needs \"cmd\" (and \"device\": reader|printer)"}
        if cmd == "ping":
            return {"ok": True, "pong": True}
        if device == "reader":
            return self.reader.control(cmd, **request)
        if device == "printer":
            return self.printer.control(cmd, **request)
        return {"ok": False, "error": f"unknown device {device!r}: use reader or printer"}


def serve(peripherals: Peripherals, port: int) -> socketserver.ThreadingTCPServer:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                    answer = peripherals.control(request)
                except ValueError as exc:
                    answer = {"ok": False, "error": f"bad request: {exc}"}
                self.wfile.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="peripherals-control", daemon=True).start()
    return server


# -- command line ---------------------------------------------------------------------------------

CLIENT_COMMANDS: dict[str, tuple[str, str]] = {
    # name on the command line -> (device, control command)
    "swipe": ("reader", "swipe"),
    "insert-chip": ("reader", "insert_chip"),
    "remove-chip": ("reader", "remove_chip"),
    "pin-keys": ("reader", "pin_keys"),
    "reader-state": ("reader", "status"),
    "paper-out": ("printer", "paper_out_after"),
    "load-paper": ("printer", "load_paper"),
    "open-cover": ("printer", "open_cover"),
    "close-cover": ("printer", "close_cover"),
    "slow": ("printer", "set_speed"),
    "state": ("printer", "state"),
}


def client(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m board.sim.peripherals",
                                     description="Drive the sim board's reader and printer.")
    parser.add_argument("command", choices=sorted(CLIENT_COMMANDS))
    parser.add_argument("card", nargs="?", help="test card name: for swipe (board/sim/cards.py), or "
                        "for insert-chip (board/sim/chipcards.py; default cup-debit); for pin-keys "
                        "the keys on the PIN pad: digits, E ENTER, C CLEAR, X CANCEL (1234E)")
    parser.add_argument("--after", type=int, default=0, help="paper-out: lines still printed")
    parser.add_argument("--bps", type=float, help="slow: bytes per second (omit for full speed)")
    parser.add_argument("--port", type=int, default=CONTROL_PORT)
    args = parser.parse_args(argv)
    device, cmd = CLIENT_COMMANDS[args.command]
    kw: dict[str, Any] = {}
    if args.command == "swipe":
        if not args.card:
            parser.error("swipe needs a card name, e.g. cup_debit")
        kw["card"] = args.card
    elif args.command == "insert-chip" and args.card:
        kw["card"] = args.card
    elif args.command == "pin-keys":
        if not args.card:
            parser.error("pin-keys needs the keys, e.g. 123456E (E ENTER, C CLEAR, X CANCEL)")
        kw["keys"] = args.card
    elif args.command == "paper-out":
        kw["lines"] = args.after
    elif args.command == "slow":
        kw["bytes_per_second"] = args.bps
    try:
        with ControlClient("127.0.0.1", args.port) as ctl:
            answer = ctl.request(cmd, device=device, **kw)
    except (OSError, ControlError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, ensure_ascii=False, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] != "serve":
        return client(argv)
    parser = argparse.ArgumentParser(prog="python -m board.sim.peripherals serve")
    parser.add_argument("serve")
    parser.add_argument("--dir", type=Path, default=Path("var/devices"))
    parser.add_argument("--port", type=int, default=CONTROL_PORT)
    parser.add_argument("--printer-profile", default="58mm")
    args = parser.parse_args(argv)
    peripherals = Peripherals(args.dir, printer_profile=args.printer_profile).start()
    server = serve(peripherals, args.port)
    # On stderr: stdout is the paper (make run's console reads its slips from it).
    print(f"reader {peripherals.reader.device_path}, printer {peripherals.printer.path}, "
          f"control 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    peripherals.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
