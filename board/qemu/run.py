"""`make qemu-run`: the firmware in a QEMU guest, operated from the development console.

Owns the host terminal while the guest runs: the guest's LCD (frames from its /dev/ttyS4) in
`make run`'s console layout (board/sim/console.py: legend, card, printer paper), PC keys sent
to the guest's keyboard as QMP send-key commands, the console's hot keys on the emulated reader
and printer, an optional TCP relay to the guest's ECR line, and giving the terminal back sane.

Theory of operation: stdin is in raw mode (no ISIG), so Ctrl-C is a byte this program reads
and not a SIGINT sent to the whole process group: QEMU, a child in that group, keeps running
until the rig stops it with QMP `quit`. Everything in-process that would print is redirected
while the console owns the screen: logging, sys.stdout and fd 2 go to <workdir>/qemu-run.log.
The paper panel reads a pipe the emulated peripherals tell each finished slip to, in the
words `make run`'s peripherals process prints on its stdout. The guest's own console is a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import queue
import selectors
import signal
import socket
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from board.qemu.guest import GuestError
from board.qemu.image import DEFAULT_DIR, EXIT_MARK, ImageError, build
from board.qemu.qmp_keys import KeyForwarder
from board.qemu.rig import QemuTerminal
from board.sim.console import LEGEND, PAPER_LINES, DevConsole
from board.sim.peripherals import serve
from drivers.display.terminal import SHOW_CURSOR
from firmware.app.boards import PROFILES
from firmware.ports import Frame

log = logging.getLogger("posfw.qemu.run")

DEFAULT_WORKDIR = Path("var/qemu-run")
# QEMU queues a send-key for twice its hold time (2 x 50 ms); one sent before that is lost.
KEY_GAP_S = 0.12
ESC_TIMEOUT_S = 0.05  # a lone Esc is CANCEL once nothing follows it for this long (as TerminalKeypad)
TICK_S = 0.5  # how often the boot counter and the guest's health are looked at
CTRL_C = 0x03
BOX_WIDTH = 39  # the console's LCD box column width (TerminalDisplay width in DevConsole)
# What --fresh removes from the workdir: the terminal's disk, the acquirer's ledger, the devices.
FRESH_GLOBS = ("data.img", "ledger.db*", "console-*.log", "qemu-run.log")
FRESH_DIRS = ("devices", "factory")


class QemuConsole(DevConsole):
    """`make run`'s console with the qemu board's extras: the boot counter and two status lines.

    Keys are read by the Session (raw mode), not by DevConsole's TerminalKeypad: that one only
    owns the tty's saved mode and flags here, restored by close_keypad().
    """

    def __init__(self, rows: int, cols: int, *, control_port: int, printer_feed_fd: int,
                 stream: TextIO, width: int) -> None:
        super().__init__(rows, cols, "qemu", control_port=control_port,
                         printer_feed_fd=printer_feed_fd, stream=stream, keypad_fd=0)
        self.width = width
        self.status_top = self.paper_top + PAPER_LINES + 1  # two lines under the paper panel

    def booting(self, seconds: float) -> None:
        """Where the LCD box will be: the boot counter (the first frame draws over it)."""
        self.write_at(3, 2, f"booting the guest… {seconds:.0f} s", BOX_WIDTH)
        self.stream.flush()

    def guest_state(self, text: str) -> None:
        """The guest's state in the legend column, under the card and the hot-key message."""
        self.write_at(2 + len(LEGEND) + 3, self.legend_col, text)
        self.stream.flush()

    def status(self, line: int, text: str) -> None:
        """Status line 0 or 1 below the paper, cut to the terminal's width (no wrap onto others)."""
        self.write_at(self.status_top + line, 1, text[:max(self.width - 1, 10)])
        self.stream.flush()

    def say(self, text: str) -> None:
        """The message line beside the card (where hot-key results go)."""
        self.message = text
        self.show_status()

    def close_keypad(self) -> None:
        """Gives the tty back its mode and flags as they were before the console."""
        self.keypad.close()


class KeySender:
    """Sends QMP commands one at a time on its own thread (a QMP call blocks), KEY_GAP_S apart."""

    def __init__(self, qmp: Callable[[dict[str, Any]], dict[str, Any]],
                 on_error: Callable[[str], None], gap_s: float = KEY_GAP_S) -> None:
        self._qmp = qmp
        self._on_error = on_error
        self._gap_s = gap_s
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="qmp-keys", daemon=True)
        self._thread.start()

    def put(self, command: dict[str, Any]) -> None:
        self._queue.put(command)

    def close(self) -> None:
        """Stops; keys still queued are dropped (the operator has quit)."""
        self._closing.set()
        self._queue.put(None)
        self._thread.join(3)

    def _run(self) -> None:
        while (command := self._queue.get()) is not None and not self._closing.is_set():
            try:
                reply = self._qmp(command)
            except (GuestError, OSError) as error:
                self._on_error(f"key not sent: {error}")
            else:
                if "error" in reply:
                    self._on_error(f"QEMU refused a key: {reply['error'].get('desc', reply['error'])}")
                else:
                    self.sent += 1
            time.sleep(self._gap_s)


class EcrRelay:
    """A TCP port on 127.0.0.1 relayed to the guest's ECR line (/dev/ttyS3), one till at a time.

    A second connection while one is open is closed at once; what the guest sends while no till
    is connected is dropped (as on a serial line nobody listens to). Ends when the guest's side does.
    """

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))  # raises OSError if taken
        self.port = self.listener.getsockname()[1]
        self.dropped = 0
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None

    def start(self, guest: socket.socket) -> None:
        self._thread = threading.Thread(target=self._run, args=(guest,), name="ecr-relay", daemon=True)
        self._thread.start()

    def close(self) -> None:
        os.write(self._wake_w, b"q")
        if self._thread is not None:
            self._thread.join(2)
        self.listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self, guest: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        selector.register(self.listener, selectors.EVENT_READ, "listen")
        selector.register(guest, selectors.EVENT_READ, "guest")
        till: socket.socket | None = None
        try:
            while True:
                for key, _ in selector.select():
                    if key.data == "wake":
                        return
                    if key.data == "listen":
                        conn, _ = self.listener.accept()
                        if till is not None:
                            conn.close()  # one till at a time: its answers must not go elsewhere
                        else:
                            till = conn
                            selector.register(till, selectors.EVENT_READ, "till")
                    elif key.data == "guest":
                        data = _recv(guest)
                        if not data:
                            return  # the guest went down
                        if till is None:
                            self.dropped += len(data)
                        else:
                            with contextlib.suppress(OSError):
                                till.sendall(data)
                    elif key.data == "till" and till is not None:
                        data = _recv(till)
                        if data:
                            guest.sendall(data)
                        else:
                            selector.unregister(till)
                            till.close()
                            till = None
        except OSError as error:
            log.warning("ECR relay stopped: %s", error)
        finally:
            if till is not None:
                till.close()
            guest.close()
            selector.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@dataclass
class Outcome:
    """How the session ended: 0 the operator quit; 1 the guest died or did not start (words say
    how); 130 a signal during set-up or shutdown."""

    code: int = 0
    words: str = ""


def raw_input_mode(fd: int) -> None:
    """Keys arrive byte by byte with no echo and no signals (Ctrl-C is a byte); output is untouched
    (OPOST stays on), so a newline still returns the carriage."""
    mode = termios.tcgetattr(fd)
    mode[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
    mode[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)


def why_the_guest_stopped(rig: QemuTerminal) -> str:
    """In words, from qemu's exit status and the firmware's exit mark on the guest console."""
    assert rig.guest is not None and rig.guest.process is not None
    code = rig.guest.process.returncode
    path = rig.guest.console_path
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    marks = [line for line in text.splitlines() if line.startswith(EXIT_MARK)]
    if marks:
        cause = f"the firmware exited with status {marks[-1].removeprefix(EXIT_MARK).strip()}"
    elif code is not None and code < 0:
        cause = f"qemu was killed by signal {-code}"
    else:
        cause = f"qemu exited with status {code} without the firmware's exit mark"
    words = f"The guest stopped: {cause}.\nIts console log: {_shown(path)}"
    tail = text.splitlines()[-12:]
    if not tail:
        return words + " (empty)"
    return words + "\nIts last lines:\n" + "\n".join("  " + line for line in tail)


def _shown(path: Path) -> str:
    """A path as the operator typed it: relative to the current directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Session:
    """The console's event loop: keys in, frames and status out, until Ctrl-C or the guest dies."""

    def __init__(self, rig: QemuTerminal, console: QemuConsole, *, control_port: int,
                 relay: EcrRelay | None) -> None:
        self.rig = rig
        self.console = console
        self.control_port = control_port
        self.relay = relay
        self.forwarder = KeyForwarder()
        self.outcome: Outcome | None = None
        self.first_frame_s: float | None = None
        self._done = asyncio.Event()
        self._esc_timer: asyncio.TimerHandle | None = None
        self._sender: KeySender | None = None
        self._started = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> Outcome:
        loop = self._loop = asyncio.get_running_loop()
        self.console.start()
        self.console.booting(0)
        self._draw_status()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop)
        loop.add_reader(0, self._on_input)
        self.rig.on_frame = self._frame_from_thread
        try:
            try:
                await loop.run_in_executor(None, self.rig.start)
            except GuestError as error:
                guest = self.rig.guest
                if guest is not None and guest.process is not None and guest.process.poll() is not None:
                    return Outcome(1, why_the_guest_stopped(self.rig))  # it died while starting
                log_path = _shown(guest.console_path) if guest is not None else "?"
                return Outcome(1, f"The guest did not start: {error}\nIts console log: {log_path}")
            self._started = self.rig.guest.started_at if self.rig.guest else time.monotonic()
            if self.relay is not None:
                self.relay.start(self.rig.take_ecr())
            assert self.rig.guest is not None
            self._sender = KeySender(self.rig.guest.qmp,
                                     lambda words: loop.call_soon_threadsafe(self.console.say, words))
            while self.outcome is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_S):
                        await self._done.wait()
                self._tick()
            return self.outcome
        finally:
            loop.remove_reader(0)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if self._sender is not None:
                self._sender.close()

    def stop(self) -> None:
        """Ctrl-C (or a signal): the operator is done."""
        self._finish(Outcome(0, "stopped"))

    def _finish(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
        self._done.set()

    def _tick(self) -> None:
        guest = self.rig.guest
        if guest is not None and guest.process is not None and guest.process.poll() is not None:
            self._finish(Outcome(1, why_the_guest_stopped(self.rig)))
            return
        if self.first_frame_s is None:
            self.console.booting(time.monotonic() - self._started)
            self._draw_status()

    def _draw_status(self) -> None:
        guest = self.rig.guest
        if self.first_frame_s is None:
            self.console.guest_state(f"Guest: booting… {time.monotonic() - self._started:.0f} s")
        else:
            self.console.guest_state(f"Guest: up, LCD after {self.first_frame_s:.1f} s")
        console_log = _shown(guest.console_path) if guest is not None else "?"
        self.console.status(0, f"Guest console log: {console_log}")
        devices = f"Devices: .venv/bin/python -m board.sim.peripherals swipe visa --port {self.control_port}"
        if self.relay is not None:
            devices += f" | ECR: 127.0.0.1:{self.relay.port}"
        self.console.status(1, devices)

    def _frame_from_thread(self, frame: Frame) -> None:
        """LcdWatch's thread: hand the frame to the loop (gone once the console has closed)."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._on_frame, frame)

    def _on_frame(self, frame: Frame) -> None:
        if self.outcome is not None:
            return
        if self.first_frame_s is None:
            self.first_frame_s = time.monotonic() - self._started
            self._draw_status()
        try:
            self.console.display.show(frame)
        except ValueError as error:  # a frame this box cannot show (another row count)
            self.console.say(f"frame not shown: {error}")

    def _on_input(self) -> None:
        try:
            data = os.read(0, 1024)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the terminal hung up
            self.stop()
            return
        if CTRL_C in data:
            self.stop()
            return
        self._forward(self.forwarder.feed(data))
        others, self.forwarder.parser.others = self.forwarder.parser.others, []
        for byte in others:
            self.console.hot_key(chr(byte))
        if self._esc_timer is not None:
            self._esc_timer.cancel()
            self._esc_timer = None
        if self.forwarder.parser.pending:
            assert self._loop is not None
            self._esc_timer = self._loop.call_later(ESC_TIMEOUT_S, self._esc_timeout)

    def _esc_timeout(self) -> None:
        self._esc_timer = None
        self._forward(self.forwarder.flush())

    def _forward(self, commands: list[dict[str, Any]]) -> None:
        if self._sender is None:
            if commands:
                self.console.say("the guest is not up yet: key dropped")
            return
        for command in commands:
            self._sender.put(command)


@contextlib.contextmanager
def redirected_output(log_path: Path) -> Iterator[None]:
    """While the console owns the screen: logging, sys.stdout and fd 2 into log_path (a stray print
    or a thread's traceback must not scribble over the LCD box). Undone on the way out."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in finally
    saved_err = os.dup(2)
    saved_stdout = sys.stdout
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        sys.stderr.flush()
        os.dup2(log_file.fileno(), 2)
        sys.stdout = log_file
        yield
    finally:
        sys.stdout = saved_stdout
        sys.stderr.flush()
        os.dup2(saved_err, 2)
        os.close(saved_err)
        root.removeHandler(handler)
        root.setLevel(old_level)
        log_file.close()


def fresh_start(workdir: Path) -> None:
    """Removes what a run keeps (data disk, ledger, devices, logs); nothing else in the directory."""
    import shutil

    for pattern in FRESH_GLOBS:
        for path in workdir.glob(pattern):
            path.unlink()
    for name in FRESH_DIRS:
        shutil.rmtree(workdir / name, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m board.qemu.run", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="the terminal's data disk, the acquirer's ledger, logs (kept between runs)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: a factory-new data disk and an empty ledger")
    parser.add_argument("--image-dir", type=Path,
                        default=Path(os.environ.get("QEMU_IMAGE_DIR") or DEFAULT_DIR),
                        help="where the guest image is built/cached (default $QEMU_IMAGE_DIR or var/qemu)")
    parser.add_argument("--ecr-port", type=int,
                        help="relay this TCP port on 127.0.0.1 to the guest's ECR line (/dev/ttyS3)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="the firmware's log level (its log goes to the guest console log)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_interrupts()
    if not sys.stdin.isatty():
        print("make qemu-run needs a terminal: its console reads keys from stdin and draws the "
              "guest's LCD (run it in a terminal, not with stdin redirected)", file=sys.stderr)
        return 2
    relay = None
    if args.ecr_port is not None:
        try:
            relay = EcrRelay(args.ecr_port)
        except OSError as error:
            print(f"cannot listen on 127.0.0.1:{args.ecr_port} for the ECR relay: {error.strerror}",
                  file=sys.stderr)
            return 2
    workdir: Path = args.workdir
    if args.fresh and workdir.exists():
        fresh_start(workdir)
    try:
        image = build(args.image_dir, log=print)
    except ImageError as error:
        print(f"the qemu image is not ready: {error} (try `make qemu-image`)", file=sys.stderr)
        return 1
    rig = QemuTerminal(workdir, image, reply_timeout=None, log_level=args.log_level)
    saved_mode = termios.tcgetattr(0)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(redirected_output(workdir / "qemu-run.log"))
            print(f"preparing the terminal in {_shown(workdir)}…", file=sys.__stdout__, flush=True)
            stack.callback(_stop_world, rig)  # copes with a setup that stopped half-way
            if relay is not None:
                stack.callback(relay.close)
            try:
                rig.setup(keep_disk=True)
            except (GuestError, ImageError, RuntimeError) as error:
                outcome = Outcome(1, f"the terminal could not be set up: {error}")
            else:
                assert rig.peripherals is not None
                control = serve(rig.peripherals, 0)  # the console's hot keys, and a second shell's
                stack.callback(control.server_close)
                stack.callback(control.shutdown)
                paper_r, paper_w = os.pipe()
                stack.callback(os.close, paper_r)
                stack.callback(os.close, paper_w)
                paper = os.fdopen(paper_w, "w", encoding="utf-8", closefd=False)
                rig.peripherals.echo_to = paper  # each finished slip, in `make run`'s words
                stack.callback(setattr, rig.peripherals, "echo_to", None)
                outcome = run_console(rig, control.server_address[1], paper_r, relay, saved_mode)
    except KeyboardInterrupt:  # SIGTERM or SIGHUP outside the console's loop (setup or shutdown)
        outcome = Outcome(130, "interrupted")
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(0, termios.TCSADRAIN, saved_mode)
    if outcome.code == 0:
        print(f"the guest is stopped; the terminal's disk and the ledger stay in {_shown(workdir)} "
              "(--fresh starts over)")
    else:
        print(outcome.words, file=sys.stderr)
    return outcome.code


def run_console(rig: QemuTerminal, control_port: int, paper_fd: int, relay: EcrRelay | None,
                saved_mode: list[Any]) -> Outcome:
    """The console on this terminal until Ctrl-C or the guest's end; the tty comes back as it was."""
    profile = PROFILES["qemu"]
    stream = open(os.dup(1), "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    console = QemuConsole(profile.display_rows, profile.display_cols, control_port=control_port,
                          printer_feed_fd=paper_fd, stream=stream, width=os.get_terminal_size(0).columns)
    try:
        raw_input_mode(0)
        return asyncio.run(Session(rig, console, control_port=control_port, relay=relay).run())
    finally:
        install_interrupts()  # asyncio put SIGTERM and SIGHUP back to their defaults
        console.close_keypad()
        termios.tcsetattr(0, termios.TCSADRAIN, saved_mode)
        console.display.close()
        console.close()
        stream.write(SHOW_CURSOR)
        stream.close()


def _stop_world(rig: QemuTerminal) -> None:
    """The guest (QMP quit, then a kill), the simulator and the devices. A second Ctrl-C (a SIGINT
    again, the tty being sane) must not cut this short and leave QEMU running: it waits."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if rig.guest is not None and rig.guest.process is not None and rig.guest.process.poll() is None:
            print("stopping the guest…", file=sys.__stdout__, flush=True)
        rig.close()
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def install_interrupts() -> None:
    """SIGTERM and SIGHUP (the window closed) outside the console's loop: unwind and clean up."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)


if __name__ == "__main__":
    raise SystemExit(main())
