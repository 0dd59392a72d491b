"""Test kit for PC/SC: a private pcscd with vsmartcard's vpcd reader, and a virtual card in it
(board/sim/vpcd.py), started per test and killed at teardown. pcscd runs in mount and network
namespaces of its own (board.sim.vpcd.start_pcscd says why and how), so parallel test runs and a
system pcscd never meet. Also the test card apps (T=0 style, 61xx / 6Cxx, a command that hangs
until the card is pulled), made in the card process by `--factory pcsckit:make_test_app`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from board.sim.vpcd import PCSCD, VPCD_DRIVER, send_control, start_card, start_pcscd

ROOT = Path(__file__).resolve().parents[1]
# One socket path per test process: libpcsclite reads PCSCLITE_CSOCK_NAME once.
RUN_DIR = Path(tempfile.gettempdir()) / f"posfw-pcsc-{os.getpid()}"


def _installable(package: str) -> bool:
    out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True,
                         check=False).stdout
    return "Candidate:" in out and "Candidate: (none)" not in out


def require_pcsc() -> None:
    """Fails (the Makefile installs them) unless a package is missing and not installable: skip."""
    for path, package in ((PCSCD, "pcscd"), (VPCD_DRIVER, "vsmartcard-vpcd")):
        if not Path(path).exists():
            if shutil.which("apt-cache") and _installable(package):
                pytest.fail(f"{path} missing: `make` installs the Debian package {package}")
            pytest.skip(f"needs the Debian package {package}, not installable here")
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        pytest.fail("pyscard missing from the venv: run `make` (requirements.txt locks it)")
    os.environ["PCSCLITE_CSOCK_NAME"] = str(RUN_DIR / "pcscd.comm")


@dataclass
class PcscRig:
    pcscd: subprocess.Popen[str]
    control: Path
    cards: list[subprocess.Popen[str]]

    def start_card(self, card: str = "cup-debit", *, factory: str | None = None,
                   inserted: bool = True) -> None:
        """The virtual card process, in pcscd's network namespace."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "tests")))}
        self.cards.append(start_card(self.pcscd.pid, card, self.control, cwd=ROOT, env=env,
                                     factory=factory, inserted=inserted))

    def ctl(self, command: str) -> str:
        answer = send_control(self.control, command)
        assert answer.startswith("ok"), answer
        return answer

    def stop_pcscd(self) -> None:
        _stop(self.pcscd)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _until_listed(name: str, timeout_s: float = 15.0) -> None:
    """pcscd said "daemon ready"; a client may still meet no service for a moment (seen under
    load): wait, bounded, until a client of this process lists the vpcd reader."""
    from smartcard.Exceptions import ListReadersException
    from smartcard.pcsc.PCSCExceptions import EstablishContextException
    from smartcard.System import readers

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if any(name in str(r) for r in readers()):
                return
        except (EstablishContextException, ListReadersException):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"pcscd never listed the reader {name!r} within {timeout_s:.0f} s")
        time.sleep(0.1)


def pcsc_rig(tmp_path: Path) -> Iterator[PcscRig]:
    """For a fixture: a running private pcscd with the vpcd reader, no card process yet
    (start_card); both killed at teardown."""
    require_pcsc()
    pcscd = start_pcscd(tmp_path, RUN_DIR)
    _until_listed("POS Virtual PCD")
    rig = PcscRig(pcscd=pcscd, control=tmp_path / "card.ctl", cards=[])
    try:
        yield rig
    finally:
        for proc in rig.cards:
            _stop(proc)
        _stop(pcscd)
        with contextlib.suppress(OSError):  # pcscd removed its socket and pid file on exit
            RUN_DIR.rmdir()


# ---- test card apps (ChipCardApp), made in the card process by --factory -----------------

T0_ATR = bytes.fromhex("3B021450")  # T=0 only (no TD1): pcscd picks T=0
HANG = bytes.fromhex("00EE0000")  # the card never answers this one (until pulled)


class T0App:
    """A card that answers T=0 style: SELECT -> 61xx (GET RESPONSE fetches the FCI), GET DATA
    with Le 00 -> 6C02 (resend with Le 02), ECHO (80 EE) returns its data; HANG never answers."""

    atr = T0_ATR
    FCI = bytes.fromhex("6F0A840841505054455354")

    def __init__(self) -> None:
        self.pending = b""
        self.pulled = threading.Event()

    def power_up(self) -> bytes:
        self.pending = b""
        return self.atr

    def power_down(self) -> None:
        self.pending = b""

    def apdu(self, command: bytes) -> bytes:
        ins = command[1]
        if ins == 0xA4:
            self.pending = self.FCI
            return bytes([0x61, len(self.FCI)])
        if ins == 0xC0:
            out, self.pending = self.pending[: command[4]], self.pending[command[4]:]
            return out + (bytes([0x61, len(self.pending)]) if self.pending else b"\x90\x00")
        if command[:4] == bytes.fromhex("80CA9F36"):
            return b"\x6c\x02" if command[4] != 2 else b"\x00\x07\x90\x00"
        if command[:2] == bytes.fromhex("80EE"):
            return command[5:5 + command[4]] + b"\x90\x00"
        if command[:4] == HANG:
            self.pulled.wait(30)  # the test pulls the card meanwhile; bounded anyway
            return b"\x6f\x00"
        return b"\x6d\x00"


class T1App(T0App):
    """The same card offering T=1 only: its 61xx then reach the caller as they are."""

    atr = bytes.fromhex("3B800181")  # TD1 = T=1 only, TCK


def make_test_app(name: str) -> T0App:
    """--factory tests.pcsckit:make_test_app --card t0|t1."""
    return {"t0": T0App, "t1": T1App}[name]()
