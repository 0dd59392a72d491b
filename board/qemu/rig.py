"""The qemu board's host side: the firmware in a QEMU guest with everything it talks to around it.

Owns wiring one guest to the host's parts and giving tests, the torture loop and `make qemu-run`
one handle on them:
- the acquirer simulator on 127.0.0.1, reached by the guest only through QEMU user-mode
  networking (restrict=on, guestfwd to board/qemu/netpipe.py);
- the emulated card reader and printer of board/sim on ptys, bridged to the guest's /dev/ttyS1
  and /dev/ttyS2 (bytes sent while the guest is off are lost, as on a real UART);
- the ECR link on /dev/ttyS3 (JSON lines, the board's till port), the LCD frames from /dev/ttyS4;
- the keypad as QMP key presses on the guest's virtio keyboard;
- the data partition: an ext4 image provisioned on the host with mkfs.ext4 -d (keys, settings),
  holding the journal once the terminal runs; power_cut() is SIGKILL of qemu;
- on the qemu-pcsc board, the chip card of board/sim/vpcd.py as a host process, reaching the
  vpcd driver of the guest's pcscd through a QEMU hostfwd bound to 127.0.0.1 (`card()` inserts
  and removes it);
- the TPM 2.0 (swtpm beside qemu, its state under the rig's workdir, kept between boots like a
  TPM's NVRAM) and the guest's tpm2-pkcs11 token on the data partition, initialised at the
  factory by one boot of its own (docs/qemu.md "The TPM").
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import secrets
import selectors
import shlex
import shutil
import socket
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from board.qemu.guest import ACQUIRER_GUEST_ADDRESS, Guest, GuestError
from board.qemu.image import BuiltImage, build, make_data_disk, read_data_disk
from board.qemu.lcd_mirror import FrameLineReader
from board.qemu.qmp_keys import qcode
from board.sim.acquirer import SimulatorThread
from board.sim.devrun import DEV_MID, DEV_PASSWORD, DEV_TID, DEV_TMK
from board.sim.devrun import provision as dev_provision
from board.sim.peripherals import Peripherals
from board.sim.pinpad import KEYS_FILE as PAD_KEYS_FILE
from board.sim.vpcd import DEFAULT_PORT as VPCD_PORT
from board.sim.vpcd import PCSCD, reader_conf, send_control, wait_for_line
from drivers.keystore.vault_cbc import ENC_KEY_LABEL, MAC_KEY_LABEL
from firmware.app.boards import profile as board_profile
from firmware.digits import is_digits
from firmware.i18n import CATALOG
from firmware.ports import Frame, Key
from firmware.ui.settings_screens import CATALOG as SETTINGS_TEXTS

REPO = Path(__file__).resolve().parents[2]
GUEST_DATA = "/run/data"  # where the guest mounts the data partition (/dev/vda)
TERMINAL_DIR = "terminal"  # the firmware's data directory on that partition
# The dev terminal of `make run`: its TID, MID, TMK and supervisor password.
TID, MID, TMK_HEX, PASSWORD = DEV_TID, DEV_MID, DEV_TMK, DEV_PASSWORD

_CLOCK = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")


# Screens that also show a date and time on a row of its own (the settings history).
_NOT_IDLE_TITLES = frozenset(SETTINGS_TEXTS["history"])
# The idle screen's notices that can fill a small display (the clock row gives way to them).
IDLE_NOTICES = ("print_interrupted", "printer_paper_out")


def is_idle_frame(frame: Frame) -> bool:
    """The idle screen: the only one with a row holding just the date and time, or the only one
    showing the notices that push even the clock off a small display."""
    if frame.rows and frame.rows[0].strip() in _NOT_IDLE_TITLES:
        return False
    if any(_CLOCK.fullmatch(row.strip()) for row in frame.rows):
        return True
    shown = "".join(row.strip() for row in frame.rows).replace(" ", "")
    return any(text.replace(" ", "")[:12] in shown
               for key in IDLE_NOTICES for text in CATALOG[key])


# qemu-pcsc: the guest's pcscd reads its vpcd reader from here (the root is read-only; /run is
# the guest's tmpfs). Its socket is pcsc-lite's default /run/pcscd/pcscd.comm, where the
# firmware's libpcsclite looks: no PCSCLITE_CSOCK_NAME needed in the guest.
GUEST_PCSC_CONF = "/run/pcsc/reader.conf.d"
GUEST_PCSCD_SOCKET = "/run/pcscd/pcscd.comm"
PCSCD_START_S = 30  # under TCG pcscd takes a second or two


def pcscd_command() -> str:
    """Shell lines starting the guest's pcscd with only the vpcd reader (listening on VPCD_PORT,
    which the host reaches through the hostfwd) and waiting for its socket."""
    conf = f"{GUEST_PCSC_CONF}/vpcd"
    return (f"mkdir -p {GUEST_PCSC_CONF} /run/pcscd && printf %s {shlex.quote(reader_conf(VPCD_PORT))}"
            f" > {conf} && {{ {PCSCD} --foreground -c {GUEST_PCSC_CONF} & }}\n"
            f"n=0; while [ ! -S {GUEST_PCSCD_SOCKET} ]; do n=$((n+1)); "
            f"if [ $n -gt {PCSCD_START_S * 10} ]; then echo 'qemu-pcsc: pcscd did not start'; "
            f"exit 1; fi; sleep 0.1; done\n")


# The TPM in the guest: tpm2-pkcs11 keeps its token store (a SQLite file of wrapped key blobs
# that only this TPM can load) on the data partition, as the root is read-only, and reaches the
# TPM through the kernel's resource manager (a TPM holds three loaded objects; /dev/tpmrm0 swaps
# them per process). tpm2_ptool's tools read TPM2TOOLS_TCTI. Log level 0: errors only.
GUEST_TPM_STORE = f"{GUEST_DATA}/tpm2"
GUEST_TPM_ENV = {"TPM2_PKCS11_STORE": GUEST_TPM_STORE, "TPM2_PKCS11_TCTI": "device:/dev/tpmrm0",
                 "TPM2TOOLS_TCTI": "device:/dev/tpmrm0", "TPM2_PKCS11_LOG_LEVEL": "0"}
TOKEN_LABEL = "posfw"
TOKEN_PIN_FILE = "keys/token.pin"  # under the terminal's data directory, 0600 (the board profile)
TPM_INIT_DONE = "qemu-tpm: token initialised"
TPM_INIT_FAILED = "qemu-tpm: token initialisation failed"


def tpm_env_command() -> str:
    """The shell line giving the guest's processes the TPM token's environment."""
    return "export " + " ".join(f"{name}={shlex.quote(value)}"
                                for name, value in GUEST_TPM_ENV.items()) + "\n"


def tpm_token_init_command(label: str = TOKEN_LABEL) -> str:
    """Shell lines for the factory's boot: a fresh tpm2-pkcs11 store with a primary key in the
    TPM, the token, and the card vault's two AES-256 keys made inside the TPM (tpm2-pkcs11 has no
    C_GenerateKey: tpm2_ptool addkey). The user PIN is the terminal's token.pin; the SO PIN is
    random and forgotten (no object recovery: a terminal is re-provisioned instead). tpm2_ptool
    takes PINs only as arguments: they are in this boot's process list while it runs, which is
    the factory's boot, not the terminal's."""
    pin_file = f"{GUEST_DATA}/{TERMINAL_DIR}/{TOKEN_PIN_FILE}"
    ptool = "tpm2_ptool"
    steps = " && ".join([
        # A terminal loses power: each unorderly shutdown after the token was used counts as a
        # failed authorisation in the TPM's dictionary-attack protection, and the TPM's defaults
        # (3 tries, then 1000 s locked) lock a terminal out after three power cuts (seen in
        # `make bench`). 32 tries, each forgotten after 10 s, a 60 s lockout: power cuts never
        # add up, a PIN guesser still gets a try per 10 s (docs/qemu.md "The TPM").
        # (Short options, and the tools' output on the console: the whole boot command goes
        # through the kernel's command line, 2048 bytes.)
        "tpm2_dictionarylockout -s -n 32 -t 10 -l 60",
        f"{ptool} init",
        f'{ptool} addtoken --pid=1 --label={label} --sopin="$sopin" --userpin="$pin"',
        *(f'{ptool} addkey --label={label} --key-label={key} --userpin="$pin" '
          f"--algorithm=aes256" for key in (ENC_KEY_LABEL, MAC_KEY_LABEL)),
    ])
    return (tpm_env_command()
            + f"[ -c /dev/tpmrm0 ] || {{ echo '{TPM_INIT_FAILED}: no /dev/tpmrm0'; exit 1; }}\n"
            f"pin=$(cat {pin_file}) || {{ echo '{TPM_INIT_FAILED}: no {TOKEN_PIN_FILE}'; exit 1; }}\n"
            "sopin=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n')\n"
            f"rm -rf {GUEST_TPM_STORE} && mkdir -m 0700 {GUEST_TPM_STORE}\n"
            f"if {steps}; then echo '{TPM_INIT_DONE}'; "
            f"else echo '{TPM_INIT_FAILED}'; exit 1; fi\n"
            "unset pin sopin\n")


CEREMONY_DONE = "qemu-factory: terminal provisioned"
CEREMONY_FAILED = "qemu-factory: provisioning failed"


def ceremony_command(block: str, board: str = "qemu") -> str:
    """Shell lines for the factory's key ceremony on a PIN pad board (after the token's
    initialisation, in its environment): `python -m firmware.app.provision` with the TR-31 block
    of the TMK under the PIN pad's KBPK, which it sends to the pad over the reader's line (the
    pad opens it: no KBPK and no clear TMK in the guest), the card-vault keys the TPM already
    holds, the settings the host wrote, and the journal ACTIVE. The block is no secret: only
    the pad can open it."""
    data = f"{GUEST_DATA}/{TERMINAL_DIR}"
    argv = shlex.join([".venv/bin/python", "-m", "firmware.app.provision", "--data", data,
                       "--board", board, "--tr31", block, "--settings", f"{data}/settings.json"])
    return (f"if {argv}; then echo '{CEREMONY_DONE}'; "
            f"else echo '{CEREMONY_FAILED}'; exit 1; fi\n")


def board_has_tpm(board: str) -> bool:
    """Whether a board keeps keys in a TPM token: its profile names tpm2-pkcs11's module."""
    return "tpm2_pkcs11" in str(getattr(board_profile(board), "token_module", ""))


def firmware_command(log_level: str = "INFO", board: str = "qemu", tpm: bool = False,
                     pycache: Path | None = None) -> str:
    """The shell line the guest runs: the firmware with the board profile (qemu, or qemu-pcsc
    after starting pcscd) on the data disk, and the sim board's test cards (the tests name them
    over ECR); with `tpm`, in the TPM token's environment; with `pycache`, its .pyc files read
    from the image's prefix tree (board/qemu/bytecode.py) instead of compiled at every boot."""
    start = pcscd_command() if board_profile(board).reader_driver == "pcsc" else ""
    if tpm:
        start = tpm_env_command() + start
    python = [".venv/bin/python"] + (["-X", f"pycache_prefix={pycache}"] if pycache else [])
    return start + "exec " + shlex.join([
        *python, "-m", "board.sim.firmware", "--board", board, "--panel", "board",
        "--data", f"{GUEST_DATA}/{TERMINAL_DIR}", "--log-level", log_level])


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a hostfwd: QEMU binds it when the guest starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def provision(directory: Path, *, reply_timeout: float | None = None, tpm: bool = False,
              board: str = "qemu") -> Path:
    """The factory's data partition contents: the dev terminal's settings, its acquirer where
    the guest sees it (a development store's board: its dev key files; a PIN pad board's keys
    come by the factory boot's ceremony); with `tpm`, the TPM token's user PIN (keys/token.pin,
    0600, random)."""
    host, port = ACQUIRER_GUEST_ADDRESS
    dev_provision(directory / TERMINAL_DIR, port, host=host, reply_timeout=reply_timeout,
                  board=board)
    if tpm:
        pin = directory / TERMINAL_DIR / TOKEN_PIN_FILE
        if not pin.exists():
            fd = os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(16))
    return directory


# What the factory's boot leaves depends on these sources (besides the image and the rig's own
# parameters): a change to any of them makes a new factory cache entry.
FACTORY_SOURCES = ("board/qemu/rig.py", "board/sim/devrun.py", "board/sim/pinpad.py",
                   "firmware/app/provision.py", "firmware/app/boards.py", "firmware/journal",
                   "firmware/settings", "drivers/keystore")
FACTORY_KEEP = 2  # cache entries kept (each holds a data disk image)


def factory_key(image: BuiltImage, board: str, reply_timeout: float | None) -> str:
    """The factory cache's key: the image's build recipe, the board, the rig's settings and the
    sources that shape what the factory's boot writes (FACTORY_SOURCES)."""
    digest = hashlib.sha256()
    stamp = Path(image.vmlinux).parent / "stamp.json"
    digest.update(stamp.read_bytes() if stamp.exists() else str(Path(image.vmlinux).stat()).encode())
    digest.update(repr((board, reply_timeout, TID, MID, TMK_HEX, GUEST_TPM_ENV)).encode())
    for name in FACTORY_SOURCES:
        path = REPO / name
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(source.relative_to(REPO).as_posix().encode() + b"\0")
            digest.update(source.read_bytes())
    return digest.hexdigest()[:24]


def factory_cache_dir(image: BuiltImage) -> Path:
    """Where factory boots are kept: QEMU_FACTORY_CACHE, else beside the image (var/qemu)."""
    return Path(os.environ.get("QEMU_FACTORY_CACHE") or Path(image.vmlinux).parent / "factory")


class SerialBridge:
    """Copies bytes between an emulated device's pty and the guest's serial port socket.

    The pty side stays open for the rig's life (the device stays powered); the guest side is
    attached at each boot. What the device sends while no guest is attached is dropped and counted.
    """

    def __init__(self, name: str, pty_path: Path) -> None:
        self.name = name
        self._fd = os.open(os.path.realpath(pty_path), os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        with contextlib.suppress(termios.error):
            tty.setraw(self._fd)
        self._guest: socket.socket | None = None
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stop = False
        self.dropped = 0
        self.to_guest = 0
        self.from_guest = 0
        self._thread = threading.Thread(target=self._run, name=f"bridge-{name}", daemon=True)
        self._thread.start()

    def attach(self, guest: socket.socket | None) -> None:
        """The guest's end of the line from now on (None: the guest is off)."""
        with self._lock:
            old, self._guest = self._guest, guest
        if old is not None:
            old.close()
        os.write(self._wake_w, b"a")

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"q")
        self._thread.join(2)
        self.attach(None)
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)

    def _run(self) -> None:
        while not self._stop:
            with self._lock:
                guest = self._guest
            # A fresh selector per wait: attach() swaps the guest end and wakes this loop.
            with selectors.DefaultSelector() as selector:
                selector.register(self._wake_r, selectors.EVENT_READ, "wake")
                selector.register(self._fd, selectors.EVENT_READ, "device")
                try:
                    if guest is not None:
                        selector.register(guest, selectors.EVENT_READ, "guest")
                except (ValueError, OSError):
                    continue  # closed by attach() since it was read: take the new one
                ready = {key.data for key, _ in selector.select(1.0)}
            if "wake" in ready:
                os.read(self._wake_r, 64)
                continue
            if "device" in ready:
                self._from_device(guest)
            if "guest" in ready and guest is not None and not self._from_guest(guest):
                with self._lock:  # the guest went down (EOF): drop its end unless already swapped
                    if self._guest is guest:
                        self._guest = None
                guest.close()

    def _from_device(self, guest: socket.socket | None) -> None:
        try:
            data = os.read(self._fd, 65536)
        except (BlockingIOError, OSError):
            return
        if guest is None:
            self.dropped += len(data)
            return
        try:
            guest.sendall(data)
            self.to_guest += len(data)
        except OSError:
            self.dropped += len(data)

    def _from_guest(self, guest: socket.socket) -> bool:
        try:
            data = guest.recv(65536)
        except OSError:
            return False
        if not data:
            return False
        self.from_guest += len(data)
        view = memoryview(data)
        deadline = time.monotonic() + 5
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.dropped += len(view)
                    return True
                time.sleep(0.005)
        return True


class EcrLine:
    """The till's end of the ECR link on the guest's /dev/ttyS3: one JSON request, its answer."""

    def __init__(self, link: socket.socket, ids: Iterator[int] | None = None) -> None:
        self._link = link
        self._buffer = b""
        # The firmware remembers request ids for a day (a repeat is answered, not run): a till
        # that comes back after the guest rebooted must go on numbering, not start again at 1.
        self._ids = ids if ids is not None else itertools.count(1)

    def send(self, **request: Any) -> int:
        request.setdefault("id", next(self._ids))
        self._link.sendall(json.dumps(request).encode() + b"\n")
        return int(request["id"])

    def answer(self, request_id: int, timeout: float = 60.0) -> dict[str, Any]:
        """The reply carrying request_id; replies to other ids are skipped. GuestError on EOF/timeout."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                line, _, self._buffer = self._buffer.partition(b"\n")
                if not line.strip():
                    continue
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue  # line noise on the serial line (a boot-time glitch); not an answer
                if isinstance(reply, dict) and reply.get("id") == request_id:
                    return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GuestError(f"no ECR answer to request {request_id} within {timeout} s")
            self._link.settimeout(remaining)
            try:
                chunk = self._link.recv(65536)
            except TimeoutError:
                continue
            except OSError as error:
                raise GuestError(f"the ECR link broke: {error}") from None
            if not chunk:
                raise GuestError("the ECR link closed (the guest went down)")
            self._buffer += chunk

    def request(self, timeout: float = 60.0, **request: Any) -> dict[str, Any]:
        return self.answer(self.send(**request), timeout)

    def wait_listening(self, timeout: float = 60.0) -> float:
        """Asks for the status until the firmware answers (it opens the port after sign-on; what
        reaches a serial port nobody has open is lost). Returns the seconds it took."""
        started = time.monotonic()
        while True:
            try:
                self.request(op="status", timeout=1.0)
                return time.monotonic() - started
            except GuestError as error:
                if "closed" in str(error) or time.monotonic() - started > timeout:
                    raise

    def detach(self) -> socket.socket:
        """The raw line, for another till (e.g. a TCP relay); this object is done with it."""
        link, self._link = self._link, None  # type: ignore[assignment]
        link.settimeout(None)  # answer() may have left one; the next owner sets its own
        return link

    def close(self) -> None:
        if self._link is not None:
            self._link.close()


@dataclass
class LcdWatch:
    """The frames the guest's display backend writes to /dev/ttyS4, with their arrival times."""

    link: socket.socket
    on_frame: Callable[[Frame], None] | None = None
    frames: list[tuple[float, Frame]] = field(default_factory=list)
    reader: FrameLineReader = field(default_factory=FrameLineReader)

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="lcd-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self.link.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._changed:
                    self._changed.notify_all()
                return
            new = self.reader.feed(data)
            now = time.monotonic()
            with self._changed:
                self.frames += [(now, frame) for frame in new]
                self._changed.notify_all()
            if self.on_frame is not None:
                for frame in new:
                    self.on_frame(frame)

    @property
    def screen(self) -> str:
        with self._changed:
            return "\n".join(self.frames[-1][1].rows) if self.frames else ""

    def wait(self, predicate: Callable[[Frame], bool], timeout: float, since: int = 0) -> float:
        """Waits for a frame (the `since`-th or later) satisfying predicate; returns its arrival time."""
        return self.wait_frame(predicate, timeout, since)[0]

    def wait_frame(self, predicate: Callable[[Frame], bool], timeout: float,
                   since: int = 0) -> tuple[float, Frame]:
        """As wait(), returning the frame too."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for at, frame in self.frames[since:]:
                    if predicate(frame):
                        return at, frame
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    last = "\n".join(self.frames[-1][1].rows) if self.frames else "(nothing drawn)"
                    raise GuestError(f"the LCD did not show what was awaited within {timeout} s; "
                                     f"last frame:\n{last}")
                self._changed.wait(min(remaining, 0.5))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.link.shutdown(socket.SHUT_RDWR)
        self.link.close()
        self._thread.join(2)


class QemuTerminal:
    """One terminal on the qemu board and its host-side world; see the module docstring.

        rig = QemuTerminal(workdir).setup()
        boot_s = rig.boot()            # seconds from qemu start to the idle screen
        rig.ecr.request(op="sale", amount=1234, card="cup_credit")
        rig.press("1", "2", "ENTER")
        rig.power_cut(); rig.boot()
        rig.close()
    """

    def __init__(self, workdir: Path, image: BuiltImage | None = None, *,
                 reply_timeout: float | None = 3.0, log_level: str = "INFO",
                 on_frame: Callable[[Frame], None] | None = None, board: str = "qemu",
                 chip_card: str = "cup-debit", tpm: bool | None = None,
                 factory_cache: bool = True) -> None:
        self.workdir = Path(workdir)
        self.board = board
        # The guest's TPM: swtpm's state (the TPM's NVRAM) lives here, beside the data disk.
        # Default: whether the board's profile keeps its keys in a TPM token.
        self.tpm = board_has_tpm(board) if tpm is None else tpm
        self.tpm_state = self.workdir / "tpm"
        # A PIN pad board's TMK goes into the emulated reader's pad by the key ceremony.
        self.pinpad = board_profile(board).key_store == "pinpad"
        # A TPM board's factory boot (the token, the ceremony) is kept per image and sources and
        # copied for the next rig (factory_key): the TPM's state, the data disk, the pad's keys.
        self.factory_cache = factory_cache and self.tpm
        self.factory_s: float | None = None  # the factory boot's seconds (None: from the cache)
        self.pcsc = board_profile(board).reader_driver == "pcsc"
        self.chip_card = chip_card
        self.card_process: subprocess.Popen[str] | None = None
        self.card_port = 0  # qemu-pcsc: the host's end of the hostfwd to the guest's vpcd
        self.card_control: Path | None = None
        self.image = image
        self.reply_timeout = reply_timeout
        self.log_level = log_level
        self.on_frame = on_frame
        self.sim: SimulatorThread | None = None
        self.peripherals: Peripherals | None = None
        self.guest: Guest | None = None
        self.bridges: dict[str, SerialBridge] = {}
        self.ecr: EcrLine | None = None
        self._ecr_ids = itertools.count(time.time_ns() // 1000)  # unique across rigs and boots
        self.lcd: LcdWatch | None = None
        self.boots = 0
        self.data_disk = self.workdir / "data.img"

    # -- life cycle ------------------------------------------------------------------------------

    def setup(self, keep_disk: bool = False) -> QemuTerminal:
        """Starts the simulator and the peripherals and provisions a fresh data partition
        (with keep_disk, an existing one is kept: the terminal's journal and settings live on)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.image is None:
            self.image = build(log=lambda line: None)
        self.sim = SimulatorThread(self.workdir / "ledger.db",
                                   terminals=[(TID, MID, bytes.fromhex(TMK_HEX))])
        self.sim.start()
        fresh = not (keep_disk and self.data_disk.exists())
        cached = self._cached_factory() if fresh else None
        if cached is not None:  # the pad's secure memory before the pad powers up
            (self.workdir / "devices").mkdir(parents=True, exist_ok=True)
            shutil.copy2(cached / PAD_KEYS_FILE, self.workdir / "devices" / PAD_KEYS_FILE)
        self.peripherals = Peripherals(self.workdir / "devices", echo=False).start()
        if cached is not None:
            shutil.copyfile(cached / "data.img", self.data_disk)
            shutil.rmtree(self.tpm_state, ignore_errors=True)
            shutil.copytree(cached / "tpm", self.tpm_state)
        elif fresh:
            factory_dir = provision(self.workdir / "factory", reply_timeout=self.reply_timeout,
                                    tpm=self.tpm, board=self.board)
            make_data_disk(self.data_disk, contents=factory_dir)
        self.bridges = {
            "ttyS1": SerialBridge("reader", self.peripherals.reader.device_path),
            "ttyS2": SerialBridge("printer", self.peripherals.printer.path),
        }
        self.guest = Guest(self.image, console_path=self.workdir / "console-1.log",
                           tpm_state=self.tpm_state if self.tpm else None)
        if self.pcsc:
            self._start_card()
        # A kept disk keeps its TPM too; a disk without one (made before the board had a TPM)
        # gets one now, as nothing on it can be sealed under a TPM yet.
        if cached is None and self.tpm and (
                fresh or not (self.tpm_state.exists() and any(self.tpm_state.iterdir()))):
            self.factory_s = self.init_tpm()
            if fresh and self.factory_cache:
                self._keep_factory()
        return self

    def init_tpm(self, timeout: float = 240.0) -> float:
        """The factory's boot: a fresh TPM (its state started over) and the token made in it
        (tpm_token_init_command); on a PIN pad board then the key ceremony (ceremony_command:
        the TMK into the emulated reader's pad, the terminal provisioned). Returns its seconds;
        GuestError in words if it failed."""
        assert self.guest is not None and self.peripherals is not None
        shutil.rmtree(self.tpm_state, ignore_errors=True)
        command = tpm_token_init_command()
        if self.pinpad:
            block = self.peripherals.reader.pinpad.wrap_tmk(bytes.fromhex(TMK_HEX))
            command += tpm_env_command() + ceremony_command(block, self.board)
        started = time.monotonic()
        status = self.run_to_exit(command, timeout)
        console = self.console()
        if status != 0 or TPM_INIT_DONE not in console or (
                self.pinpad and CEREMONY_DONE not in console):
            raise GuestError(f"the factory's boot failed (status {status}); console:\n"
                             f"{console[-3000:]}")
        return time.monotonic() - started

    def _cached_factory(self) -> Path | None:
        """The factory cache's entry for this rig, if there is one (see factory_key)."""
        if not self.factory_cache:
            return None
        assert self.image is not None
        entry = factory_cache_dir(self.image) / factory_key(self.image, self.board,
                                                            self.reply_timeout)
        return entry if (entry / "data.img").exists() else None

    def _keep_factory(self) -> None:
        """The factory boot's result into the cache: written aside, then renamed in whole (a
        concurrent rig's entry wins); older entries beyond FACTORY_KEEP go."""
        assert self.image is not None
        cache = factory_cache_dir(self.image)
        entry = cache / factory_key(self.image, self.board, self.reply_timeout)
        if entry.exists():
            return
        cache.mkdir(parents=True, exist_ok=True)
        scratch = cache / f".{entry.name}.{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        shutil.copyfile(self.data_disk, scratch / "data.img")
        shutil.copytree(self.tpm_state, scratch / "tpm",
                        ignore=shutil.ignore_patterns("*.lock", "*.sock"))
        if self.pinpad:
            shutil.copy2(self.workdir / "devices" / PAD_KEYS_FILE, scratch / PAD_KEYS_FILE)
        try:
            scratch.rename(entry)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)  # another rig kept the same boot first
        entries = sorted((p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[FACTORY_KEEP:]:
            shutil.rmtree(old, ignore_errors=True)

    def _start_card(self) -> None:
        """qemu-pcsc: the chip card process on the host, out of the slot until card("insert")."""
        assert self.guest is not None
        self.card_port = free_loopback_port()
        self.guest.socket_dir.mkdir(parents=True, exist_ok=True)
        self.card_control = self.guest.socket_dir / "vpcd.ctl"  # a short path (unix socket)
        self.card_process = subprocess.Popen(
            ["nice", "-n", "19", sys.executable, "-m", "board.sim.vpcd", "--card", self.chip_card,
             "--host", "127.0.0.1", "--port", str(self.card_port),
             "--control", str(self.card_control), "--removed"],
            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for_line(self.card_process, "ready", "the virtual card (board.sim.vpcd)")

    def card(self, command: str) -> str:
        """qemu-pcsc: one command to the chip card ("insert [NAME]", "remove", "status"); its
        one-line answer ("ok inserted cup-debit", or "error: ..." in words)."""
        if self.card_control is None:
            raise GuestError(f"board {self.board} has no PC/SC card (use board='qemu-pcsc')")
        return send_control(self.card_control, command)

    def start(self, command: str | None = None) -> None:
        """Powers the guest on (running the firmware unless told otherwise) and attaches the ports."""
        assert self.guest is not None and self.sim is not None, "setup() first"
        self.boots += 1
        self.guest.console_path = self.workdir / f"console-{self.boots}.log"
        self.guest.start(command or firmware_command(self.log_level, self.board, self.tpm,
                                                     self.image.pycache if self.image else None),
                         data_disk=self.data_disk, cwd=str(REPO), data_mount=GUEST_DATA,
                         acquirer=("127.0.0.1", self.sim.port),
                         host_forwards=((self.card_port, VPCD_PORT),) if self.pcsc else ())
        # Connect every port before the guest can write to it (QEMU drops bytes with no client).
        for port, bridge in self.bridges.items():
            bridge.attach(self.guest.connect_serial(port))
        self.ecr = EcrLine(self.guest.connect_serial("ttyS3"), self._ecr_ids)
        self.lcd = LcdWatch(self.guest.connect_serial("ttyS4"), on_frame=self.on_frame)

    def boot(self, timeout: float = 120.0) -> float:
        """start(), wait for the idle screen and the ECR link; returns seconds from power-on to the
        idle screen."""
        self.start()
        idle = self.wait_idle(timeout)
        assert self.ecr is not None
        self.ecr.wait_listening(timeout)
        return idle

    def wait_idle(self, timeout: float = 120.0, since: int = 0) -> float:
        assert self.guest is not None and self.lcd is not None
        try:
            at = self.lcd.wait(is_idle_frame, timeout, since)
        except GuestError as error:
            raise GuestError(f"{error}\nconsole:\n{self.guest.console()[-3000:]}") from None
        return at - self.guest.started_at

    def power_cut(self) -> None:
        """The terminal loses power at this instant (SIGKILL of qemu)."""
        assert self.guest is not None
        self.guest.power_cut()
        self._drop_links()

    def run_to_exit(self, command: str, timeout: float = 90.0) -> int:
        """Boots the guest with another command (e.g. a check) and waits for it to power off."""
        self.start(command)
        assert self.guest is not None
        try:
            return self.guest.wait_exit(timeout)
        finally:
            self._drop_links()

    def read_terminal_dir(self, target: Path) -> Path:
        """A host copy of the firmware's data directory, read from the data disk (guest off)."""
        assert self.guest is not None
        if self.guest.process is not None and self.guest.process.poll() is None:
            raise GuestError("power the guest off before reading its disk")
        return read_data_disk(self.data_disk, f"/{TERMINAL_DIR}", target)

    def take_ecr(self) -> socket.socket:
        """Hands the guest's ECR line (its ttyS3) to another till until the next power cut."""
        assert self.ecr is not None, "start() first"
        link = self.ecr.detach()
        self.ecr = None
        return link

    def _drop_links(self) -> None:
        for bridge in self.bridges.values():
            bridge.attach(None)
        if self.ecr is not None:
            self.ecr.close()
            self.ecr = None
        if self.lcd is not None:
            self.lcd.close()

    def close(self) -> None:
        if self.card_process is not None:
            self.card_process.terminate()
            try:
                self.card_process.wait(5)
            except subprocess.TimeoutExpired:
                self.card_process.kill()
                self.card_process.wait()
            self.card_process = None
        if self.guest is not None:
            self.guest.close()
        self._drop_links()
        for bridge in self.bridges.values():
            bridge.close()
        if self.peripherals is not None:
            self.peripherals.stop()
        if self.sim is not None:
            self.sim.stop()

    def __enter__(self) -> QemuTerminal:
        return self.setup()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the operator's hands --------------------------------------------------------------------

    def press(self, *keys: str | Key, pause_s: float = 0.12) -> None:
        """Presses keys on the guest's keyboard: "1234" types four digits; "ENTER", Key.F1 name keys."""
        assert self.guest is not None
        for item in keys:
            if isinstance(item, Key):
                keys_now = [item]
            elif is_digits(item):
                keys_now = [Key(digit) for digit in item]
            else:
                keys_now = [Key[item]]
            for key in keys_now:
                self.guest.send_key(qcode(key))
                time.sleep(pause_s)

    def console(self) -> str:
        assert self.guest is not None
        return self.guest.console()
