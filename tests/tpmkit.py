"""Test kit for a TPM 2.0 on the host, without QEMU: swtpm on 127.0.0.1, tpm2-abrmd in front of it
(on a private D-Bus session bus), and a tpm2-pkcs11 store holding the token `posfw` with the two
card-vault keys, initialised the way the QEMU guest initialises its own (board/qemu/rig.py).

Why the broker: a TPM holds three loaded objects; tpm2_ptool runs tpm2-tools one after the other
and leaves what each loaded, and tpm2-pkcs11 keeps its objects loaded, so both need a resource
manager that swaps contexts: the kernel's /dev/tpmrm0 in the guest, tpm2-abrmd here. Every
process is killed by its pid at teardown and dies with the test process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TPM2_PKCS11_MODULE = "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1"
TOKEN_LABEL = "posfw"
USER_PIN = "tpm-user-1234"
SO_PIN = "tpm-so-5678"
VAULT_KEYS = ("posfw-vault-enc", "posfw-vault-mac")
START_S = 15.0  # each daemon is up within a second on an idle machine; bounded anyway
_names = itertools.count(1)
_PR_SET_PDEATHSIG = 1

REQUIRED = (  # (what, Debian package)
    ("swtpm", "swtpm"),
    ("tpm2_ptool", "python3-tpm2-pkcs11-tools"),
    ("tpm2_getrandom", "tpm2-tools"),
    ("/usr/sbin/tpm2-abrmd", "tpm2-abrmd"),
    ("dbus-daemon", "dbus-daemon"),
    (TPM2_PKCS11_MODULE, "libtpm2-pkcs11-1"),
    ("/usr/lib/x86_64-linux-gnu/libtss2-tcti-tabrmd.so.0", "libtss2-tcti-tabrmd0"),
    ("/usr/lib/x86_64-linux-gnu/libtss2-tcti-swtpm.so.0", "libtss2-tcti-swtpm0"),
)


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def require_tpm() -> None:
    """Fails when a TPM package is missing (`make qemu-deps` installs them all)."""
    for what, package in REQUIRED:
        found = Path(what).exists() if what.startswith("/") else shutil.which(what) is not None
        if not found:
            pytest.fail(f"{what} missing: `make qemu-deps` installs the Debian package {package}")


class TpmKitError(RuntimeError):
    """A daemon of the kit did not start, or a token step failed; the message says which."""


def _free_port_pair() -> int:
    """P with P and P+1 free on 127.0.0.1 now (swtpm's TCTI finds the control port at P+1)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return int(port)
    raise TpmKitError("no two consecutive free TCP ports on 127.0.0.1")


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class SwtpmToken:
    """One software TPM with its broker and token store under `root`; see the module docstring.

    `env` is what a process needs to use the token (TPM2_PKCS11_STORE, TPM2_PKCS11_TCTI, the bus).
    """

    root: Path
    state: Path = field(init=False)
    store: Path = field(init=False)
    port: int = 0
    bus_name: str = ""
    bus_address: str = ""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = self.root / "tpm-state"
        self.store = self.root / "tpm2-store"

    @property
    def tcti(self) -> str:
        return f"tabrmd:bus_type=session,bus_name={self.bus_name}"

    @property
    def env(self) -> dict[str, str]:
        return {"DBUS_SESSION_BUS_ADDRESS": self.bus_address, "TPM2_PKCS11_STORE": str(self.store),
                "TPM2_PKCS11_TCTI": self.tcti, "TPM2TOOLS_TCTI": self.tcti,
                # tpm2-pkcs11 and the TSS log to stderr by default (a wrong PIN, reading CKA_VALUE)
                "TPM2_PKCS11_LOG_LEVEL": "0", "TSS2_LOG": "all+none"}

    # -- the daemons -----------------------------------------------------------------------------

    def start(self) -> SwtpmToken:
        self.state.mkdir(parents=True, exist_ok=True)
        self.store.mkdir(parents=True, exist_ok=True)
        self._start_bus()
        self._start_tpm()
        return self

    def _start_bus(self) -> None:
        bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile",
                                "--print-address=1"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, preexec_fn=_die_with_parent)
        self.processes["dbus-daemon"] = bus
        assert bus.stdout is not None
        address = bus.stdout.readline().strip()  # printed once the bus listens
        if not address:
            raise TpmKitError(f"dbus-daemon printed no address (status {bus.poll()})")
        self.bus_address = address

    def _start_tpm(self) -> None:
        """swtpm and tpm2-abrmd (again, after stop_tpm(): the TPM's state stays in `state`)."""
        tries = 5
        for _ in range(tries):
            self.port = _free_port_pair()
            swtpm = subprocess.Popen(
                ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state}",
                 "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                 "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                 "--flags", "not-need-init,startup-clear"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                preexec_fn=_die_with_parent)
            if self._wait_listening(swtpm):
                self.processes["swtpm"] = swtpm
                break
            _stop(swtpm)  # the port was taken in between: another pair
        else:
            raise TpmKitError(f"swtpm did not listen on 127.0.0.1 after {tries} tries")
        # A bus name of our own: parallel test processes each have their broker.
        self.bus_name = f"com.intel.tss2.Tabrmd.posfw{os.getpid()}x{next(_names)}"
        self.processes["tpm2-abrmd"] = subprocess.Popen(
            ["/usr/sbin/tpm2-abrmd", "--session", "--allow-root", f"--dbus-name={self.bus_name}",
             f"--tcti=swtpm:host=127.0.0.1,port={self.port}", "--flush-all"],
            env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": self.bus_address},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + START_S
        while True:  # the broker owns its name once it has opened the TPM
            probe = self.run(["tpm2_getrandom", "--hex", "4"], check=False)
            if probe.returncode == 0:
                return
            broker = self.processes["tpm2-abrmd"]
            if broker.poll() is not None:
                raise TpmKitError(f"tpm2-abrmd ended (status {broker.returncode}): "
                                  f"{broker.stderr.read() if broker.stderr else ''}")
            if time.monotonic() > deadline:
                raise TpmKitError(f"tpm2-abrmd not answering within {START_S} s: "
                                  f"{probe.stderr.strip()[-500:]}")
            time.sleep(0.05)

    def _wait_listening(self, swtpm: subprocess.Popen) -> bool:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if swtpm.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port + 1), timeout=1):
                    return True  # the control port: probing the TPM port would take its one client
            except OSError:
                time.sleep(0.02)
        return False

    def stop_tpm(self) -> None:
        """The TPM loses power (swtpm and its broker end); its NVRAM stays in `state`."""
        for name in ("tpm2-abrmd", "swtpm"):
            _stop(self.processes.pop(name, None))

    def restart_tpm(self) -> None:
        self.stop_tpm()
        self._start_tpm()

    def close(self) -> None:
        self.stop_tpm()
        _stop(self.processes.pop("dbus-daemon", None))

    # -- the token -------------------------------------------------------------------------------

    def run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True,
                                text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            # tpm2_ptool's own words; it never echoes the PINs it was given
            raise TpmKitError(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed "
                              f"({result.returncode}): {result.stderr.strip()[-800:]}")
        return result

    def init_token(self, *, label: str = TOKEN_LABEL, user_pin: str = USER_PIN,
                   so_pin: str = SO_PIN, keys: tuple[str, ...] = VAULT_KEYS) -> None:
        """tpm2_ptool init (a primary key in the TPM), addtoken, and one AES-256 key per label:
        what the guest's first boot does (docs/qemu.md "The TPM")."""
        self.run(["tpm2_ptool", "init", f"--path={self.store}"])
        self.run(["tpm2_ptool", "addtoken", "--pid=1", f"--label={label}", f"--sopin={so_pin}",
                  f"--userpin={user_pin}", f"--path={self.store}"])
        for key in keys:
            self.run(["tpm2_ptool", "addkey", f"--label={label}", f"--key-label={key}",
                      f"--userpin={user_pin}", "--algorithm=aes256", f"--path={self.store}"])


def vault_over(session, one_call_mac: bool = False):
    """The CBC card vault over an open session's two vault keys (the AES calls python-pkcs11
    makes on them), as drivers/keystore/pkcs11.py builds it for a token without AES-GCM."""
    from pkcs11 import KeyType, Mechanism

    from drivers.keystore.vault_cbc import ENC_KEY_LABEL, MAC_KEY_LABEL, CbcCmacVault

    enc = session.get_key(label=ENC_KEY_LABEL, key_type=KeyType.AES)
    mac = session.get_key(label=MAC_KEY_LABEL, key_type=KeyType.AES)

    def mac_cbc(iv: bytes, data: bytes) -> bytes:
        return mac.encrypt(data, mechanism=Mechanism.AES_CBC, mechanism_param=iv)

    return CbcCmacVault(
        cbc_encrypt=lambda iv, data: enc.encrypt(data, mechanism=Mechanism.AES_CBC,
                                                 mechanism_param=iv),
        cbc_decrypt=lambda iv, data: enc.decrypt(data, mechanism=Mechanism.AES_CBC,
                                                 mechanism_param=iv),
        ecb_encrypt=lambda block: mac.encrypt(block, mechanism=Mechanism.AES_ECB),
        mac_cbc_encrypt=mac_cbc if one_call_mac else None)


@contextmanager
def swtpm_token(root: Path, init: bool = True) -> Iterator[SwtpmToken]:
    require_tpm()
    token = SwtpmToken(root)
    try:
        token.start()
        if init:
            token.init_token()
        yield token
    finally:
        token.close()


@contextmanager
def token_environment(token: SwtpmToken) -> Iterator[None]:
    """os.environ set for tpm2-pkcs11 in this process (it reads it at C_Initialize), and the
    module unloaded afterwards so the next token's environment is read again."""
    import pkcs11

    saved = {name: os.environ.get(name) for name in token.env}
    os.environ.update(token.env)
    try:
        yield
    finally:
        pkcs11.unload(TPM2_PKCS11_MODULE)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
