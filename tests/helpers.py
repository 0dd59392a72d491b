"""Test helpers: a provisioned terminal data directory paired with the acquirer simulator.

The terminal runs in-process (asyncio) or as a real subprocess driven over the
ECR link; the simulator runs in a thread on 127.0.0.1. Both use real files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from p11kit import (
    CONF_NAME,
    LABEL,
    SO_PIN,
    SOFTHSM_MODULE,
    TokenEnv,
    pointing_at,
    provision_token,
    softhsm_env,
    write_conf,
)
from p11kit import PIN as TOKEN_PIN

from board.sim.acquirer import SimulatorThread
from firmware.app import devices
from firmware.app.boards import profile
from firmware.app.core import custody
from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import AppConfig
from firmware.app.provision import tmk_check_value
from firmware.app.terminal import Terminal
from firmware.engine.model import CardRead, OriginalRef, TxnRequest
from firmware.host.messages import TxnKind
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.ports import KeyStore
from firmware.settings.model import factory, hash_password

REPO = Path(__file__).resolve().parent.parent
TID = "12345678"
MID = "123456789012345"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
# The card-vault key every test token imports (tests only): a scan for key bytes knows its value.
VAULT_KEY = bytes.fromhex("5EC12E7A" * 8)
PASSWORD = "246810"


def provision(data_dir: Path, sim_port: int, reply_timeout: float = 1.5,
              key_store: str | None = None, **tx: Any) -> Path:
    """What a terminal vendor's provisioning step leaves on the device: the keys in the board's
    key store (the sim board's unless `key_store` says: "pkcs11", a SoftHSM2 token under keys/,
    or "memory", the development key files) with the provisioning record, and the settings."""
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = data_dir / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    kind = key_store or profile("sim").key_store
    if kind == "pkcs11":
        provision_token_dir(data_dir)
    elif kind == "pinpad":  # the card-vault key in the token; the TMK goes into the PIN pad
        provision_token_dir(data_dir, tmk=None)
    else:
        (keys / "tmk.key").write_text(TMK.hex())
        os.chmod(keys / "tmk.key", 0o600)
    record = custody.new_record(tmk_check_value(TMK), kind, "clear (development)")
    custody.write_private(data_dir / custody.RECORD, custody.record_bytes(record))
    settings = factory()
    settings["merchant"].update({"tid": TID, "mid": MID})
    # "open": the ECR tests drive the sim board with unauthenticated requests (an emulated
    # board allows it); tests/test_ecr_auth*.py pair their tills.
    settings["comms"].update({"port": sim_port, "reply_timeout": reply_timeout,
                              "connect_timeout": 2.0, "ecr_auth": "open"})
    settings["security"].update({"supervisor_hash": hash_password(PASSWORD),
                                 "password_changed": True})
    settings["transactions"].update(tx)
    (data_dir / "settings.json").write_text(json.dumps(settings))
    return data_dir


def provision_token_dir(data_dir: Path, tmk: bytes | None = TMK) -> TokenEnv:
    """A SoftHSM2 token under data_dir/keys/ (a copy of the session's template, its configuration
    keys/softhsm2.conf, as the sim board's profile names it) holding `tmk` (none: a PIN pad
    board's token) and VAULT_KEY, and its user PIN in keys/token.pin (0600)."""
    keys = data_dir / "keys"
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (keys / "tokens").is_dir():  # provisioned before (a test's second start): its token stays
        write_conf(keys)
        write_token_pin_file(data_dir)
        return token_of(data_dir)
    env = softhsm_env(keys, set_env=False)
    if tmk is not None:
        provision_token(env, tmk, VAULT_KEY)
    else:
        with pointing_at(env):
            store = env.open()
            try:
                store.create_vault_key(bytearray(VAULT_KEY))
            finally:
                store.close()
    write_token_pin_file(data_dir)
    return env


def copy_terminal(source: Path, target: Path) -> Path:
    """A copy of a terminal's data directory whose token is its own copy too (the token's
    configuration names its object store by an absolute path: rewritten for the copy)."""
    shutil.copytree(source, target)
    if (target / "keys" / CONF_NAME).exists():
        write_conf(target / "keys")
    return target


def write_token_pin_file(data_dir: Path) -> None:
    """keys/token.pin as provisioning's --token-pin-file leaves it (the test token's PIN)."""
    custody.write_private(data_dir / "keys" / "token.pin", TOKEN_PIN.encode() + b"\n")


def token_of(data_dir: Path) -> TokenEnv:
    """The test token under data_dir/keys/ (its PIN as the test kit made it, whether or not
    keys/token.pin is still there)."""
    conf = data_dir / "keys" / CONF_NAME
    return TokenEnv(conf=conf, module=SOFTHSM_MODULE, label=LABEL, pin=TOKEN_PIN, so_pin=SO_PIN)


def open_store(data_dir: Path, board: str = "sim", key_store: str | None = None) -> KeyStore:
    """The data directory's key store, as its terminal opens it (close it when done: a token
    takes one store per process)."""
    return devices.open_key_store(profile(board), data_dir, key_store)


def open_journal(data_dir: Path, board: str = "sim", key_store: str | None = None,
                 **kw: Any) -> Journal:
    """A terminal's journal opened as the terminal opens it: under its own key store's vault key,
    which closes with the journal (a terminal process may run meanwhile: another process gets a
    session of its own; an in-process terminal must be closed first)."""
    store = open_store(data_dir, board, key_store)
    try:
        journal = Journal.open(data_dir / "journal.db", CardVault(store), **kw)
    except BaseException:
        store.close()
        raise
    close = journal.close

    def close_both() -> None:
        try:
            close()
        finally:
            store.close()

    journal.close = close_both  # type: ignore[method-assign]
    return journal


def set_language(data_dir: Path, lang: str) -> None:
    """The receipt and screen language ("en" or "zh_CN") in a provisioned data directory."""
    path = data_dir / "settings.json"
    settings = json.loads(path.read_text())
    settings["display"]["language"] = lang
    path.write_text(json.dumps(settings))


def free_port_block(count: int = 4) -> int:
    """A base port with `count` free ports after it (the console's host, control, peripherals, ECR).

    Chosen below the kernel's ephemeral range: a port from that range can be taken, between this
    check and the bind, by any outgoing connection on the machine (the terminal's own link to the
    simulator included), which made the console tests fail now and then."""
    low = _ephemeral_low()
    chooser = random.Random()
    for _ in range(200):
        base = chooser.randrange(10000, low - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no block of free ports on 127.0.0.1")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def start_sim(tmp: Path) -> SimulatorThread:
    sim = SimulatorThread(tmp / "ledger.db", terminals=[(TID, MID, TMK)])
    sim.start()
    return sim


def swipe(name: str) -> CardRead:
    from board.sim.cards import TEST_CARDS

    c = TEST_CARDS[name]
    return CardRead("swipe", c.pan, c.expiry, c.service_code, c.track2)


def pin_for(name: str) -> str | None:
    from board.sim.cards import TEST_CARDS

    return TEST_CARDS[name].pin


async def terminal(data_dir: Path, chip_slot: bool = True) -> Terminal:
    """A started terminal on the sim board; chip_slot=False: a magstripe-only board."""
    t = Terminal(AppConfig(data_dir=data_dir))
    if not chip_slot:
        t.board = dataclasses.replace(t.board, chip_slot=False)
    await t.start()
    return t


async def sale(t: Terminal, amount: int, card: str = "cup_credit", **kw: Any):
    io = OperatorInput(card=swipe(card), pin=pin_for(card))
    return await t.financial(TxnRequest(TxnKind.SALE, amount, **kw), io)


async def void(t: Terminal, voucher: str, password: str = PASSWORD):
    return await t.financial(TxnRequest(TxnKind.VOID, original=OriginalRef(invoice=voucher)),
                             OperatorInput(password=password))


async def refund(t: Terminal, amount: int, rrn: str, date: str, card: str = "cup_credit",
                 password: str = PASSWORD):
    io = OperatorInput(card=swipe(card), pin=pin_for(card), password=password)
    return await t.financial(
        TxnRequest(TxnKind.REFUND, amount, original=OriginalRef(rrn=rrn, date=date)), io)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class HeldUpReader:
    """The emulated reader's own thread kept busy (a reader slow to read its line): it reads
    nothing the terminal writes until release(), or until limit_s; the bytes wait in the pty, in
    order. `holding` says whether it is still held."""

    def __init__(self, reader: Any, limit_s: float = 4.0) -> None:
        self._started, self._resume = threading.Event(), threading.Event()
        self.holding = False

        def hold() -> None:  # on the reader's thread
            self.holding = True
            self._started.set()
            self._resume.wait(limit_s)  # below the 5 s a control call waits for that thread
            self.holding = False

        # _call: the emulator's way to run something on its thread (its controls use it too)
        threading.Thread(target=reader._call, args=(hold,), daemon=True).start()
        if not self._started.wait(5.0):
            raise TimeoutError("the emulated reader's thread never took the hold")

    def release(self) -> None:
        self._resume.set()


# -- the terminal as a real process ------------------------------------------------

class TerminalProcess:
    """The firmware in a subprocess, driven over its ECR TCP port: `python -m board.sim.firmware`
    (the firmware with the sim board's test cards, which the tests name over ECR)."""

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None,
                 module: str = "board.sim.firmware", env: dict[str, str] | None = None,
                 tty: int | None = None) -> None:
        self.data_dir = data_dir
        self.tty = tty  # a pty's slave fd: the process's stdin and stdout (sim keypad and LCD)
        self.extra_args = list(extra_args or [])
        self.module = module  # a test-only entry may wrap it (tests/dereg_entry.py)
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._sock: socket.socket | None = None
        self._buf = b""

    def start(self, timeout: float = 20.0, wait_idle: bool = True) -> None:
        """Start and connect to the ECR port (open as soon as the journal is); wait_idle: then
        wait until the start-up sign-on and backlog are done (`status` says not busy)."""
        ready = self.data_dir / "ready"
        ready.unlink(missing_ok=True)
        env = dict(os.environ, PYTHONPATH=str(REPO), **self.env)
        with open(self.data_dir / "stderr.log", "ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "--data", str(self.data_dir),
                 "--ecr-port", "0", "--ready-file", str(ready), "--log-level", "INFO",
                 *self.extra_args],
                cwd=REPO, env=env, stdin=self.tty, stderr=stderr,
                stdout=subprocess.DEVNULL if self.tty is None else self.tty,
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"terminal exited with {self.proc.returncode}: "
                                   + (self.data_dir / "stderr.log").read_text()[-2000:])
            if time.monotonic() > deadline:
                raise TimeoutError("terminal did not become ready")
            time.sleep(0.02)
        self.port = int(ready.read_text())
        self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self._buf = b""
        while wait_idle and self.request(op="status")["busy"]:
            if time.monotonic() > deadline + 60:  # a backlog may need reply timeouts to drain
                raise TimeoutError("terminal stayed busy after start-up")
            time.sleep(0.05)

    def request(self, timeout: float = 30.0, **req: Any) -> dict[str, Any]:
        self.send_only(**req)
        return self.reply(timeout)

    def reply(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next reply line (of a request sent with send_only)."""
        assert self._sock is not None
        self._sock.settimeout(timeout)
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("terminal closed the ECR link")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def send_only(self, **req: Any) -> None:
        assert self._sock is not None
        self._sock.sendall((json.dumps(req) + "\n").encode())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# -- agreement between the terminal's journal and the host's ledger -----------------

MONEY_STATES = ("APPROVED", "VOIDED")


def assert_agree(journal: Any, ledger: Any, tid: str = TID) -> None:
    """No lost approval, no double charge, nothing owed: the two books say the same."""
    unresolved = journal.unresolved_counts()
    assert not any(unresolved.values()), unresolved
    mine = {
        (int(r.batch), int(r.stan)): r
        for r in journal.every_record()
        if r.state.value in MONEY_STATES and r.kind is not TxnKind.BALANCE
    }
    host_rows = [r for r in ledger.approved(tid) if r.kind != "balance"]
    theirs = {(r.batch, r.stan): r for r in host_rows}
    assert len(theirs) == len(host_rows), "the host booked one (batch, STAN) twice"
    only_mine = sorted(set(mine) - set(theirs))
    only_theirs = sorted(set(theirs) - set(mine))
    assert not only_mine, f"approved on the terminal only: {only_mine}"
    assert not only_theirs, f"approved at the host only: {only_theirs}"
    for key, record in mine.items():
        host = theirs[key]
        assert host.amount == record.amount, (key, host.amount, record.amount)
        assert host.kind == record.kind.value, (key, host.kind, record.kind)
        assert (record.state.value == "VOIDED") == host.voided, (key, record.state, host.voided_by)


class WireSpy:
    """Records every request the terminal's host link sends and the reply it got."""

    def __init__(self, t: Terminal) -> None:
        self.sent: list[Any] = []
        self.replies: list[Any] = []
        link = t.link
        assert link is not None
        original = link.request

        async def spy(msg: Any, *, mac: bool, timeout: float) -> Any:
            self.sent.append(msg)
            reply = await original(msg, mac=mac, timeout=timeout)
            self.replies.append(reply)
            return reply

        link.request = spy  # type: ignore[method-assign]

    def mtis(self) -> list[str]:
        return [m.mti for m in self.sent]


# -- a journal record in any state, by the journal's own legal transitions -----------------

# The events that bring a record from PENDING (or ADVICE_DUE, for the one written as an
# advice) to each state, row by row of engine/states.py TRANSITIONS.
PATH_TO: dict[str, tuple[str, ...]] = {
    "PENDING": (),
    "APPROVED": ("approve",),
    "DECLINED": ("decline",),
    "REVERSAL_DUE": ("lose_reply",),
    "REVERSED": ("lose_reply", "reversal_acked"),
    "RESOLVED_MANUALLY": ("lose_reply", "resolve_manually"),
    "VOIDED": ("approve", "void"),
    "ADVICE_DUE": (),
    "FAILED": ("not_sent",),
    "QUARANTINED": ("lose_reply", "quarantine"),
}


def record_in_state(journal: Any, draft: Any, state: Any) -> Any:
    """Write `draft` and walk it to `state` (a TxnState) through Journal.begin/apply/
    resolve_manually, so every record is one the journal itself could hold."""
    from dataclasses import replace

    from firmware.engine.model import HostResult
    from firmware.engine.states import TxnEvent

    record = journal.begin(replace(draft, advice=state.value == "ADVICE_DUE"))
    for step in PATH_TO[state.value]:
        event = TxnEvent(step)
        if event is TxnEvent.RESOLVE_MANUALLY:
            record = journal.resolve_manually(record.id, "supervisor", "closed by hand in a test")
            continue
        result = (HostResult("00", rrn=f"{record.id:012d}", auth_code="123456")
                  if event is TxnEvent.APPROVE else None)
        record = journal.apply(record.id, event, result,
                               reversal_reason="98" if event is TxnEvent.LOSE_REPLY else None,
                               problem="cannot be built" if event is TxnEvent.QUARANTINE else None)
    assert record.state is state, (record.state, state)
    return record
