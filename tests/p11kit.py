"""Test kit for PKCS#11: SoftHSM2 tokens, the way the firmware gets its own, and p11-kit server
for a token in another process.

A SoftHSM2 token is a directory of files named by its configuration file (SOFTHSM2_CONF).
`softhsm2-util --init-token` makes one in ~0.1-0.3 s, so a test session initialises one blank
template token (labelled "posfw", user PIN and SO PIN below) and each test copies that directory
into its own tmp_path with a configuration of its own: `softhsm_env(dir)`. SoftHSM reads the
configuration when its library is initialised; drivers/keystore/pkcs11.py loads the module
afresh whenever no store has it open, so a test's store sees the test's token provided
SOFTHSM2_CONF points at it when the store opens (the `token_env` fixture does that).

`provision_token(env, tmk)` leaves a token as the firmware's provisioning does: a terminal master
key and a card-vault key. `p11kit_server(env)` runs `p11-kit server` with SoftHSM as its
provider (the token lives in that process) and yields the address and the client module a
store in another process loads (the memory proof, tests/test_keystore_memory_scan.py).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import shutil
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.keystore.pkcs11 import Pkcs11KeyStore

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SOFTHSM_UTIL = "softhsm2-util"
# Debian's multiarch directory (x86_64-linux-gnu here, aarch64-linux-gnu on an ARM board).
P11KIT_CLIENT = f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'}" \
    "/pkcs11/p11-kit-client.so"
LABEL = "posfw"
PIN = "246813"
SO_PIN = "13572468"
CONF_NAME = "softhsm2.conf"
TOKENS_NAME = "tokens"

_template: Path | None = None


@dataclass(frozen=True)
class TokenEnv:
    """One test's token: its configuration file, the module, label and PINs."""

    conf: Path
    module: str
    label: str
    pin: str
    so_pin: str

    @property
    def tokendir(self) -> Path:
        return self.conf.parent / TOKENS_NAME

    def environ(self) -> dict[str, str]:
        """os.environ with SOFTHSM2_CONF pointing at this token (for subprocesses)."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def open(self) -> Pkcs11KeyStore:
        """A store on this token (SOFTHSM2_CONF must point at `conf`: see token_env)."""
        return Pkcs11KeyStore(self.module, self.label, self.pin)


def require_softhsm() -> None:
    """Fails when SoftHSM2 is missing (the Makefile's token-deps installs it)."""
    if not Path(SOFTHSM_MODULE).exists() or shutil.which(SOFTHSM_UTIL) is None:
        pytest.fail(f"{SOFTHSM_MODULE} or {SOFTHSM_UTIL} missing: `make` installs the Debian "
                    "package softhsm2")


def write_conf(dir_: Path) -> Path:
    """A SoftHSM2 configuration whose tokens live in dir_/tokens."""
    tokens = dir_ / TOKENS_NAME
    tokens.mkdir(parents=True, exist_ok=True)
    conf = dir_ / CONF_NAME
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    return conf


def init_token(dir_: Path, label: str = LABEL, pin: str = PIN, so_pin: str = SO_PIN) -> Path:
    """A freshly initialised token in dir_ (softhsm2-util, as docs/provisioning.md does it)."""
    conf = write_conf(dir_)
    proc = subprocess.run([SOFTHSM_UTIL, "--init-token", "--free", "--label", label,
                           "--so-pin", so_pin, "--pin", pin],
                          env={**os.environ, "SOFTHSM2_CONF": str(conf)},
                          capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"softhsm2-util --init-token failed: {proc.stderr.strip()}")
    return conf


def make_template(dir_: Path) -> Path:
    """Initialise the session's template token in dir_ and use it from now on."""
    global _template
    require_softhsm()
    init_token(dir_)
    _template = dir_
    return dir_


def _lazy_template() -> Path:
    """The template outside pytest's session fixture (a script, a benchmark)."""
    if _template is None:
        dir_ = Path(tempfile.mkdtemp(prefix="posfw-p11tpl-"))
        atexit.register(shutil.rmtree, dir_, True)
        make_template(dir_)
    assert _template is not None
    return _template


def softhsm_env(dir_: Path | str, *, set_env: bool = True) -> TokenEnv:
    """A blank token labelled "posfw" in dir_ (a copy of the session's template) and its
    configuration; points SOFTHSM2_CONF at it unless set_env is False (the token_env fixture
    restores the variable after the test)."""
    dir_ = Path(dir_)
    template = _lazy_template()
    shutil.copytree(template / TOKENS_NAME, dir_ / TOKENS_NAME)
    conf = write_conf(dir_)
    if set_env:
        os.environ["SOFTHSM2_CONF"] = str(conf)
    return TokenEnv(conf=conf, module=SOFTHSM_MODULE, label=LABEL, pin=PIN, so_pin=SO_PIN)


@contextlib.contextmanager
def pointing_at(env: TokenEnv) -> Iterator[None]:
    """SOFTHSM2_CONF set to env's configuration for the block, restored after."""
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(env.conf)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = old


def provision_token(env: TokenEnv, tmk: bytes, vault_key: bytes | None = None) -> None:
    """What the provisioning step leaves in the token: the terminal master key `tmk` and a
    card-vault key (`vault_key` imported when given, else generated in the token)."""
    with pointing_at(env):
        store = env.open()
        try:
            store.install_tmk(bytearray(tmk))
            store.create_vault_key(bytearray(vault_key) if vault_key is not None else None)
        finally:
            store.close()


@dataclass(frozen=True)
class P11KitServer:
    """A running `p11-kit server` exporting one token: a store in another process loads
    `client_module` with P11_KIT_SERVER_ADDRESS = `address` in its environment."""

    address: str
    pid: int
    client_module: str = P11KIT_CLIENT

    def client_environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.pop("SOFTHSM2_CONF", None)  # the client never reads the token's files itself
        env["P11_KIT_SERVER_ADDRESS"] = self.address
        return env


def require_p11kit() -> None:
    if shutil.which("p11-kit") is None or not Path(P11KIT_CLIENT).exists():
        pytest.fail(f"p11-kit or {P11KIT_CLIENT} missing: `make` installs the Debian packages "
                    "p11-kit and p11-kit-modules")


@contextlib.contextmanager
def p11kit_server(env: TokenEnv, run_dir: Path, timeout_s: float = 20.0) -> Iterator[P11KitServer]:
    """`p11-kit server` in the foreground with SoftHSM as provider for env's token; killed
    (by its pid) when the block ends. The address is read from its first line of output."""
    require_p11kit()
    run_dir.mkdir(parents=True, exist_ok=True)
    sock = run_dir / "p11kit.sock"
    proc = subprocess.Popen(["p11-kit", "server", "-f", "-n", str(sock),
                             "--provider", env.module, f"pkcs11:token={env.label}"],
                            env=env.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        address = ""
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while not address:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise RuntimeError(f"p11-kit server printed no address within {timeout_s} s")
                line = proc.stdout.readline()
                if not line:
                    err = proc.stderr.read() if proc.stderr else ""
                    raise RuntimeError(f"p11-kit server exited: {err.strip()}")
                if line.startswith("P11_KIT_SERVER_ADDRESS="):
                    address = line.split("=", 1)[1].split(";", 1)[0].strip()
        yield P11KitServer(address=address, pid=proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# ---- fixtures (import them into a test module or conftest.py to use them) -----------------

@pytest.fixture(scope="session")
def softhsm_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's blank template token, initialised once."""
    return make_template(tmp_path_factory.mktemp("softhsm-template"))


@pytest.fixture
def token_env(tmp_path: Path, softhsm_template: Path,
              monkeypatch: pytest.MonkeyPatch) -> TokenEnv:
    """A blank token for this test, SOFTHSM2_CONF pointing at it for the test's duration."""
    monkeypatch.setenv("SOFTHSM2_CONF", str(tmp_path / "softhsm" / CONF_NAME))
    return softhsm_env(tmp_path / "softhsm")
