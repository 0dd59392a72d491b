"""One QEMU guest: boots the image from image.py, runs a command in the host-root chroot, and gives the
host its console (a file), serial ports ttyS1-ttyS3 (unix sockets), QMP (keys, queries) and a power cut.

With a TPM state directory the guest also has a TPM 2.0: swtpm (Debian swtpm) runs on the host
beside qemu, started before it and killed by its pid with it, and appears in the guest as a
tpm-tis device (/dev/tpm0, and the kernel's resource manager /dev/tpmrm0).
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from board.qemu.image import EXIT_MARK, READY_MARK, BuiltImage

QEMU_BINARY = "qemu-system-x86_64"
SWTPM_BINARY = "swtpm"
SWTPM_START_S = 10.0  # swtpm creates its control socket within milliseconds; bounded anyway
# A guest with a TPM boots without ACPI and finds the TPM at its fixed address instead. Why:
# QEMU 7.2 with SeaBIOS puts a direct-boot initrd just below (RAM top - 160 KiB), room for
# 128 KiB of ACPI tables and 32 KiB of BIOS data; the TPM adds a 64 KiB event log there, so the
# initrd is copied over the tables (seen here: RSDT garbage, "ACPI: Interpreter disabled", no
# /dev/tpm0). tpm_tis.force=1 probes the TIS registers at 0xFED40000 (tpm_tis is built into
# Debian's kernel); interrupts=0: polling, as there is no ACPI to route its interrupt.
TPM_KERNEL_ARGS = "acpi=off tpm_tis.force=1 tpm_tis.interrupts=0"
# Without ACPI the kernel cannot power the machine off: `poweroff -f` ends with this line and
# the host quits qemu (the guest's /init has synced and unmounted the data disk before).
HALTED_MARK = "reboot: System halted"
# ttyS0 is the console; these are the peripherals' ports (reader, printer, host link).
SERIAL_PORTS = ("ttyS1", "ttyS2", "ttyS3")
LCD_PORT = "ttyS4"  # the guest LCD mirror: /dev/ttyS4 on a PCI serial card
PR_SET_PDEATHSIG = 1
# Where the guest reaches the acquirer: QEMU user-mode networking (restrict=on) forwards every TCP
# connection to this address to board/qemu/netpipe.py, which connects to the simulator on loopback.
ACQUIRER_GUEST_ADDRESS = ("10.0.2.100", 5000)
NETPIPE = Path(__file__).resolve().with_name("netpipe.py")
# The Linux kernel's limit for the x86 command line; the command travels there in base64.
KERNEL_CMDLINE_MAX = 2048


def _die_with_parent() -> None:
    """In the qemu child before exec: SIGKILL when the process that started it dies, so a killed
    test or torture run leaves no guest running (Linux prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class GuestError(RuntimeError):
    """The guest did not do what was asked in time, or QEMU refused; the message says what."""


class Swtpm:
    """One software TPM 2.0 for one guest: `swtpm socket --tpm2` with its state in `state_dir`
    (created on first start, kept between boots like a TPM's NVRAM) and its control socket at
    `socket_path`, which QEMU's `-tpmdev emulator` connects to.

    --terminate: swtpm ends when QEMU closes the connection (a power cut included); stop() also
    kills it by its pid, and it dies with the process that started it (PR_SET_PDEATHSIG).
    """

    def __init__(self, state_dir: Path, socket_path: Path, log_path: Path) -> None:
        self.state_dir = state_dir
        self.socket_path = socket_path
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        return [SWTPM_BINARY, "socket", "--tpm2", "--tpmstate", f"dir={self.state_dir}",
                "--ctrl", f"type=unixio,path={self.socket_path}", "--terminate",
                "--log", f"file={self.log_path},level=1"]

    def start(self) -> None:
        if shutil.which(SWTPM_BINARY) is None:
            raise GuestError(f"{SWTPM_BINARY} is not installed (Debian packages swtpm swtpm-tools; "
                             "make qemu-deps)")
        self.stop()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        preexec_fn=_die_with_parent)
        deadline = time.monotonic() + SWTPM_START_S
        # QEMU must find the socket at once (it refuses to start without its TPM backend).
        while not self.socket_path.exists():
            if self.process.poll() is not None:
                raise GuestError(f"swtpm ended at start (status {self.process.returncode}): "
                                 f"{self.log()[-1000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise GuestError(f"swtpm made no control socket within {SWTPM_START_S} s")
            time.sleep(0.01)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Ends this swtpm (by its pid: SIGTERM, then SIGKILL); its state stays in state_dir."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class QmpClient:
    """A minimal QMP client over a unix socket: greeting, qmp_capabilities, then one command at a time."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self._sock.close()
                if time.monotonic() > deadline:
                    raise GuestError(f"QMP socket {path} refused connections for {timeout} s") from None
                time.sleep(0.02)
        self._sock.settimeout(timeout)
        self._reader = self._sock.makefile("rb")
        self.events: list[dict] = []
        greeting = self._read_message()
        if "QMP" not in greeting:
            raise GuestError(f"QMP greeting expected, got {greeting!r}")
        self.execute("qmp_capabilities")

    def _read_message(self) -> dict:
        line = self._reader.readline()
        if not line:
            raise GuestError("QMP connection closed by QEMU")
        try:
            return json.loads(line)
        except ValueError:
            raise GuestError(f"QMP sent something that is not JSON: {line[:200]!r}") from None

    def command(self, message: dict) -> dict:
        """Sends one command dict and returns QEMU's reply (a dict with "return" or "error")."""
        self._sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            reply = self._read_message()
            if "event" in reply:
                self.events.append(reply)
                continue
            return reply

    def execute(self, name: str, **arguments: object) -> object:
        """Runs a command and returns its "return" value; a QMP error becomes GuestError."""
        message: dict = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        reply = self.command(message)
        if "error" in reply:
            raise GuestError(f"QMP {name} failed: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def close(self) -> None:
        self._reader.close()
        self._sock.close()


@dataclass
class Guest:
    """A guest booted from `image`; start() launches it, stop() or power_cut() ends it.

    The console (ttyS0) goes to `console_path`; ttyS1-ttyS3 are unix-socket servers in
    `socket_dir` (paths in `serial_sockets`) that the caller connects to before the guest writes.
    """

    image: BuiltImage
    console_path: Path
    memory_mb: int = 512
    socket_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qg-")))
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    serial_sockets: dict[str, Path] = field(default_factory=dict)
    # A TPM 2.0 for the guest: swtpm's state lives here (None: no TPM).
    tpm_state: Path | None = None
    swtpm: Swtpm | None = None
    _qmp: QmpClient | None = None
    binary = QEMU_BINARY  # the emulator (board/image's arm64 guest runs another)

    @property
    def qmp_path(self) -> Path:
        # Unix socket paths are limited to ~108 bytes, hence the short temp dir.
        return self.socket_dir / "qmp.sock"

    @property
    def tpm_socket(self) -> Path:
        return self.socket_dir / "swtpm.sock"

    def qemu_argv(self, command: str, data_disk: Path | None, cwd: str, data_mount: str,
                  acquirer: tuple[str, int] | None = None,
                  host_forwards: tuple[tuple[int, int], ...] = ()) -> list[str]:
        encoded = base64.b64encode(command.encode()).decode()
        # 8250.nr_uarts=5: ttyS4 exists, on a PCI 16550 (the LCD mirror; the ISA bus has four).
        append = (f"console=ttyS0 quiet 8250.nr_uarts=5 qcmd64={encoded} qcwd={cwd} "
                  f"qdata={data_mount}")
        if acquirer is not None:
            append += " qnet=1"
        if self.tpm_state is not None:
            append += " " + TPM_KERNEL_ARGS
        if len(append) >= KERNEL_CMDLINE_MAX:
            raise GuestError(f"command too long for the kernel command line ({len(append)} bytes)")
        argv = [
            QEMU_BINARY, "-accel", "tcg", "-m", str(self.memory_mb), "-smp", "1", "-nodefaults",
            "-display", "none", "-no-reboot",
            "-kernel", str(self.image.vmlinux), "-initrd", str(self.image.initrd), "-append", append,
            "-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-device", "virtio-keyboard-pci",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]
        for index, port in enumerate(SERIAL_PORTS, start=1):
            path = self.socket_dir / f"{port}.sock"
            self.serial_sockets[port] = path
            argv += ["-chardev", f"socket,id=s{index},path={path},server=on,wait=off",
                     "-serial", f"chardev:s{index}"]
        # ttyS4: the LCD mirror (drivers/display/serial_frames.py writes frames, lcd_mirror draws them)
        lcd = self.socket_dir / f"{LCD_PORT}.sock"
        self.serial_sockets[LCD_PORT] = lcd
        argv += ["-chardev", f"socket,id=lcd,path={lcd},server=on,wait=off",
                 "-device", "pci-serial,chardev=lcd"]
        if data_disk is not None:
            argv += ["-drive", f"file={data_disk},if=virtio,format=raw,cache=writeback"]
        if self.tpm_state is not None:
            # The TPM on the ISA bus, described to the kernel by QEMU's ACPI tables (tpm_tis is
            # built into Debian's kernel); its backend is this guest's swtpm.
            argv += ["-chardev", f"socket,id=chrtpm,path={self.tpm_socket}",
                     "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                     "-device", "tpm-tis,tpmdev=tpm0"]
        if host_forwards and acquirer is None:
            raise GuestError("a host forward needs the guest's network (give the acquirer too)")
        if acquirer is not None:
            # restrict=on: the guest reaches nothing but the forwarded address (no host, no outside).
            # A comma in the command would end QEMU's option value, hence the check.
            forward = f"{sys.executable} {NETPIPE} {acquirer[0]} {acquirer[1]}"
            if "," in forward:
                raise GuestError(f"the netpipe command may not contain a comma: {forward}")
            guest_ip, guest_port = ACQUIRER_GUEST_ADDRESS
            netdev = f"user,id=net0,restrict=on,guestfwd=tcp:{guest_ip}:{guest_port}-cmd:{forward}"
            # Inward forwards (restrict=on leaves explicit forwards working): the host's
            # 127.0.0.1:HOST reaches the guest's port GUEST; bound to loopback only.
            for host_port, guest_port in host_forwards:
                netdev += f",hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"
            argv += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=net0"]
        return argv

    def start(self, command: str, data_disk: Path | None = None, cwd: str = "/",
              data_mount: str = "/run/data", acquirer: tuple[str, int] | None = None,
              host_forwards: tuple[tuple[int, int], ...] = ()) -> None:
        """Boots the guest and runs `command` with /bin/sh in the chroot of the host's root.

        The data disk appears in the chroot at `data_mount` (also in $QEMU_DATA). With `acquirer`
        (a host address on loopback) the guest has eth0, and its connections to
        ACQUIRER_GUEST_ADDRESS reach that address; each (HOST, GUEST) of `host_forwards` lets the
        host's connections to 127.0.0.1:HOST reach the guest's TCP port GUEST. qemu dies with
        the thread that calls this (PR_SET_PDEATHSIG): call it from one that outlives the guest.
        """
        if self.process is not None and self.process.poll() is None:
            raise GuestError("the guest is already running")
        if shutil.which(self.binary) is None:
            raise GuestError(f"{self.binary} is not installed (make qemu-deps / make image-deps)")
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.socket_dir.glob("*.sock"):
            stale.unlink()
        argv = self.qemu_argv(command, data_disk, cwd, data_mount, acquirer, host_forwards)
        self.console_path.parent.mkdir(parents=True, exist_ok=True)
        if self.tpm_state is not None:
            # Before qemu, which connects to the control socket as it starts.
            self.swtpm = Swtpm(self.tpm_state, self.tpm_socket, self.tpm_state.parent / "swtpm.log")
            self.swtpm.start()
        with open(self.console_path, "wb") as console:
            self.started_at = time.monotonic()
            try:
                self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            except OSError:
                self._stop_swtpm()
                raise
        self._qmp = None

    def connect_serial(self, port: str, timeout: float = 10.0) -> socket.socket:
        """The host end of the guest's /dev/<port> (ttyS1-ttyS3), a connected unix stream socket."""
        if port not in self.serial_sockets:
            raise GuestError(f"no serial port {port!r}; the guest has {', '.join(SERIAL_PORTS)}")
        deadline = time.monotonic() + timeout
        while True:
            link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                link.connect(str(self.serial_sockets[port]))
                return link
            except (FileNotFoundError, ConnectionRefusedError):
                link.close()
                if self.process is not None and self.process.poll() is not None:
                    raise GuestError(f"qemu ended (status {self.process.returncode}) before {port} could "
                                     f"be connected; console:\n{self.console()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise GuestError(f"{port} socket refused connections for {timeout} s") from None
                time.sleep(0.02)

    def console(self) -> str:
        return self.console_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> float:
        """Waits until `text` is on the console; returns the seconds since start()."""
        deadline = time.monotonic() + timeout
        while True:
            if text in self.console():
                return time.monotonic() - self.started_at
            if self.process is None or self.process.poll() is not None:
                raise GuestError(f"the guest ended before printing {text!r}; console:\n"
                                 f"{self.console()[-2000:]}")
            if time.monotonic() > deadline:
                raise GuestError(f"{text!r} not on the console within {timeout} s; console:\n"
                                 f"{self.console()[-2000:]}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Waits until /init is about to run the command (modules loaded, disks mounted)."""
        return self.wait_for(READY_MARK, timeout)

    def wait_exit(self, timeout: float = 60.0) -> int:
        """Waits for the command to finish and the guest to power off; returns the command's status."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise GuestError(f"the guest did not power off within {timeout} s; console:\n"
                                 f"{self.console()[-2000:]}")
            if self.tpm_state is not None and self._halted():
                self.stop()  # QMP quit: the halted guest's power switch
                break
            time.sleep(0.05)
        self._close_qmp()
        self._stop_swtpm()
        for line in reversed(self.console().splitlines()):
            if line.startswith(EXIT_MARK):
                return int(line.removeprefix(EXIT_MARK).strip())
        raise GuestError(f"the guest powered off without an exit status; console:\n{self.console()[-2000:]}")

    def _halted(self) -> bool:
        """The guest's /init printed its exit status and the kernel halted (no ACPI power-off)."""
        console = self.console()
        mark = console.rfind(EXIT_MARK)
        return mark != -1 and HALTED_MARK in console[mark:]

    def qmp(self, command: dict) -> dict:
        """Sends one QMP command dict (e.g. {"execute": "query-status"}) and returns the reply dict."""
        if self._qmp is None:
            self._qmp = QmpClient(self.qmp_path)
        return self._qmp.command(command)

    def send_key(self, *qcodes: str, hold_ms: int = 50) -> None:
        """Presses the qcodes together (one chord), e.g. send_key("kp_5") or send_key("shift", "a")."""
        reply = self.qmp({"execute": "send-key", "arguments": {
            "keys": [{"type": "qcode", "data": code} for code in qcodes], "hold-time": hold_ms}})
        if "error" in reply:
            raise GuestError(f"send-key {qcodes} refused: {reply['error'].get('desc')}")

    def power_cut(self) -> None:
        """The terminal loses power: SIGKILL of this qemu process; the guest's page cache is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._close_qmp()
        self._stop_swtpm()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the guest: asks QEMU to quit, and kills it if it does not."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.qmp({"execute": "quit"})
                self.process.wait(timeout)
            except (GuestError, OSError, subprocess.TimeoutExpired):
                self.power_cut()
        self._close_qmp()
        self._stop_swtpm()

    def _stop_swtpm(self) -> None:
        if self.swtpm is not None:
            self.swtpm.stop()
            self.swtpm = None

    def _close_qmp(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None

    def close(self) -> None:
        """stop() and remove the socket directory."""
        self.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
