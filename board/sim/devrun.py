"""`make run`: the acquirer simulator, the emulated reader and printer, and a provisioned
terminal on loopback, operated from the development console (or headless with --headless).

Starts the simulator and the peripherals as child processes, provisions var/terminal on
first use (dev keys, the dev supervisor password), then runs the terminal in the
foreground: the LCD as a box, a key legend, the printer's paper and hot keys in this
terminal, the ECR link on loopback beside it. Ctrl-C stops everything.

The keys: on a board whose key store is a PKCS#11 token (the sim board) a SoftHSM2 token under
var/terminal/keys/ (made once with softhsm2-util, found again by its label) holds the dev TMK and
the card-vault key; a var/ of before, with the dev key files, moves into it (the files are then
destroyed). On a board with the development store (the qemu-pcsc guest) the dev key files; on a
PIN pad board (the qemu guest) only the settings: its keys come by the ceremony.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEV_TID = "12345678"
DEV_MID = "123456789012345"
DEV_TMK = "0123456789ABCDEFFEDCBA9876543210"  # dev boards only; real TMKs come from a KLD
DEV_PASSWORD = "246810"
DEV_TOKEN_PIN = "posfw-dev-1357"  # the dev token's user PIN (dev boards only, like DEV_TMK)
HOST_PORT = 5800
CONTROL_PORT = 5801
PERIPHERALS_PORT = 5802
ECR_PORT = 8583


def help_text(var: Path, host_port: int, control_port: int, peripherals_port: int,
              ecr_port: int) -> str:
    """What --headless prints once the terminal is up: the ports and directory this run uses."""
    return f"""
  Terminal {DEV_TID} is up; acquirer simulator on 127.0.0.1:{host_port} (control {control_port}),
  emulated reader and printer (control {peripherals_port}).
  Drive it over the ECR link (127.0.0.1:{ecr_port}) from another shell:

    .venv/bin/python -m firmware.ecr.client --port {ecr_port} sale 12.34 --card cup_debit --pin 123456
    .venv/bin/python -m firmware.ecr.client --port {ecr_port} sale 99.00 --card visa
    .venv/bin/python -m firmware.ecr.client --port {ecr_port} void <voucher> --password {DEV_PASSWORD}
    .venv/bin/python -m firmware.ecr.client --port {ecr_port} settle --password {DEV_PASSWORD}
    .venv/bin/python -m firmware.ecr.client --port {ecr_port} status

  Pair the client as a till (docs/ecr.md, "Paired tills"): on the console `m` `0` `8`, the
  password, `1`, the till number, ENTER; then, with the code the LCD shows:
    .venv/bin/python -m firmware.ecr.client --port {ecr_port} pair T01 <code>
  and every request above is signed (var/ecr-till.json keeps the key; delete it to stop).

  Or let the card come through the emulated reader (a real pty and the real driver):
    .venv/bin/python -m firmware.ecr.client --port {ecr_port} sale 12.34      # waits for a card...
    .venv/bin/python -m board.sim.peripherals --port {peripherals_port} swipe cup_credit
  The emulated printer prints every receipt here and keeps each slip as text and PNG
  in {var / "devices" / "slips"}/.  Try `peripherals paper-out --after 5`, then `load-paper`;
  `ecr.client reprint` reprints the last receipt (marked REPRINT).

  Test cards: cup_debit (PIN 123456), cup_credit, visa, mastercard, jcb, blocked,
  expired, bad_luhn, cup_chip.  Amounts ending in .51 are declined (51).
  Terminal data in {var / "terminal"}/ (journal, settings, keys, terminal.log).  Ctrl-C stops everything.
"""


def provision(data: Path, host_port: int, *, host: str | None = None,
              reply_timeout: float | None = None, board: str = "qemu") -> list[str]:
    """A dev terminal's first start: the dev TMK in the board's key store and the settings (TID,
    MID, supervisor password, the acquirer's address); an existing terminal is left as it is (a
    token board's old dev key files move into its token). Directories 0700, files 0600, whatever
    the caller's umask (board/qemu/rig.py provisions with this too). Returns what it did."""
    from firmware.app.boards import profile

    keys = data / "keys"
    for directory in (data, keys):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    done: list[str] = []
    if wiped(data):
        pass  # deregistered: only `python -m firmware.app.provision` brings it back
    elif profile(board).key_store == "pkcs11":
        done += dev_token(data, board)
    elif profile(board).key_store == "pinpad":
        # The TMK goes into the pad by the ceremony (dev_pad(); board/qemu/rig.py on the QEMU
        # board); the card-vault key: a SoftHSM2 token here, the guest's TPM on the QEMU board.
        if profile(board).token_conf is not None:
            done += dev_token(data, board, tmk=False)
    elif not (keys / "tmk.key").exists():
        _write_private(keys / "tmk.key", DEV_TMK)
        _record(data, "memory")
        done.append("the dev TMK in keys/tmk.key")
    settings = data / "settings.json"
    if not settings.exists():
        from firmware.settings.model import factory, hash_password, password_problem

        rule = password_problem(DEV_PASSWORD)  # the one rule every new password passes
        if rule is not None:
            raise SystemExit(f"the dev supervisor password breaks {rule}")
        s = factory()
        s["merchant"].update({"tid": DEV_TID, "mid": DEV_MID})
        s["comms"]["port"] = host_port
        # The console and the QEMU rig drive the link unauthenticated, which an emulated board
        # allows; a till paired on the keypad (Manage > 0) is still checked in full.
        s["comms"]["ecr_auth"] = "open"
        if host is not None:
            s["comms"]["host"] = host
        if reply_timeout is not None:
            s["comms"]["reply_timeout"] = reply_timeout
        s["security"].update({"supervisor_hash": hash_password(DEV_PASSWORD),
                              "password_changed": True})
        _write_private(settings, json.dumps(s, indent=2))
    return done


def wiped(data: Path) -> bool:
    from firmware.journal.wipe import is_marked

    return is_marked(data)


def _record(data: Path, key_store: str) -> None:
    from firmware.app.core import custody
    from firmware.app.provision import tmk_check_value

    record = custody.new_record(tmk_check_value(bytes.fromhex(DEV_TMK)), key_store,
                                "clear (development)")
    custody.write_private(data / custody.RECORD, custody.record_bytes(record))


def softhsm_conf(keys: Path) -> Path:
    """keys/softhsm2.conf naming keys/tokens/ as the token store (written at every start: the
    path is absolute, and var/ may have moved)."""
    tokens = (keys / "tokens").resolve()
    tokens.mkdir(mode=0o700, exist_ok=True)
    conf = keys / "softhsm2.conf"
    _write_private(conf, f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                         "log.level = ERROR\nslots.removable = false\n")
    return conf


def softhsm_token(keys: Path, label: str, pin: str) -> bool:
    """The SoftHSM2 token `label` under keys/, made with softhsm2-util unless it is there
    (idempotent). Its SO PIN is random and not kept: a dev token is deleted, not reset. True if
    it was made now."""
    env = dict(os.environ, SOFTHSM2_CONF=str(softhsm_conf(keys).resolve()))
    try:
        slots = subprocess.run(["softhsm2-util", "--show-slots"], env=env, capture_output=True,
                               text=True, timeout=30, check=True).stdout
    except FileNotFoundError:
        raise SystemExit("make run: softhsm2-util is missing: sudo apt-get install softhsm2 "
                         "(make run installs it)") from None
    if any(line.split(":", 1)[1].strip() == label for line in slots.splitlines()
           if line.strip().startswith("Label:")):
        return False
    made = subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                           "--so-pin", secrets.token_hex(8), "--pin", pin],
                          env=env, capture_output=True, text=True, timeout=30, check=False)
    if made.returncode != 0:
        raise SystemExit(f"make run: the dev key token could not be made: {made.stderr.strip()}")
    return True


def dev_token(data: Path, board: str, tmk: bool = True) -> list[str]:
    """The dev TMK (unless not `tmk`: a PIN pad board's is in the pad) and a card-vault key in
    the board's SoftHSM2 token under data/keys/; the dev key files of an older var/ move into it
    and are destroyed."""
    from firmware.app import devices
    from firmware.app.boards import profile
    from firmware.app.provision import write_token_pin
    from firmware.journal.wipe import shred

    prof = profile(board)
    keys = data / "keys"
    done = []
    if softhsm_token(keys, prof.token_label, DEV_TOKEN_PIN):
        done.append(f"a SoftHSM2 token '{prof.token_label}' in {keys / 'tokens'}")
    if not (data / prof.token_pin.partition(":")[2]).exists():
        write_token_pin(data, prof, DEV_TOKEN_PIN)
    store = devices.open_token(prof, data)  # a PIN pad board's token too (its vault key)
    try:
        status = store.status()
        if tmk and status.tmk_check is None:
            old = keys / "tmk.key"
            tmk = bytearray.fromhex(old.read_text().strip() if old.exists() else DEV_TMK)
            store.install_tmk(tmk)  # type: ignore[attr-defined]  # wipes the bytearray
            _record(data, "pkcs11")
            done.append("the dev TMK in the token")
        card_key = keys / "card.key"
        if not status.vault_key:
            if card_key.exists():  # an older var/: its journal's card numbers stay readable
                key = bytearray(card_key.read_bytes())
                store.create_vault_key(import_key=key)  # type: ignore[attr-defined]
                key[:] = bytes(len(key))
                done.append("the dev card-data key file moved into the token")
            else:
                store.create_vault_key()  # type: ignore[attr-defined]
                done.append("a card-vault key in the token")
        for old in (keys / "tmk.key", card_key):
            if shred(old):
                done.append(f"keys/{old.name} destroyed (in the token now)")
    finally:
        store.close()
    return done


def _write_private(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)


def dev_pad(data: Path, board: str, devices: Path) -> list[str]:
    """A PIN pad board's first start: the dev TMK into the emulated reader's PIN pad, as the key
    ceremony does it (a TR-31 block under the pad's own KBPK, over the reader link), and its
    check value recorded. Nothing when the record is there."""
    import asyncio
    import warnings

    from board.sim.pinpad import KEYS_FILE, EmulatedPinPad
    from firmware.app.boards import profile
    from firmware.app.core import custody
    from firmware.app.provision import _pad_ceremony

    if wiped(data) or (data / custody.RECORD).exists():
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography's TripleDES deprecation, inside psec
        block = EmulatedPinPad(devices / KEYS_FILE).wrap_tmk(bytes.fromhex(DEV_TMK))
    check = asyncio.run(_pad_ceremony(profile(board), str(devices / "reader-tty"), block))
    record = custody.new_record(check, "pinpad", "pinpad tr31")
    custody.write_private(data / custody.RECORD, custody.record_bytes(record))
    return [f"the dev TMK in the emulated PIN pad (check value {check})"]


def busy_ports(ports: dict[str, int]) -> str:
    """Which of the ports (what uses it -> port) something on 127.0.0.1 already holds, in words
    ("" if none): the simulator would otherwise die in its log while the terminal talks to
    whatever holds its port."""
    busy = []
    for what, port in ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"port {port} ({what})")
    return ", ".join(busy)


def start_pcsc(var: Path) -> tuple[list[subprocess.Popen[str]], str]:
    """READER=pcsc: a private pcscd with vpcd and the test chip card cup-debit in it (removed at
    start; `python -m board.sim.vpcd ctl var/devices/vpcd.ctl insert [NAME]` / `remove`). The
    terminal finds pcscd through PCSCLITE_CSOCK_NAME (set here, inherited). Returns the two
    processes and the reader name for --reader."""
    from board.sim.vpcd import READER_NAME, start_card, start_pcscd

    work = (var / "pcsc").resolve()
    os.environ["PCSCLITE_CSOCK_NAME"] = str(work / "run" / "pcscd.comm")
    pcscd = start_pcscd(work, work / "run")
    control = (var / "devices" / "vpcd.ctl").resolve()
    card = start_card(pcscd.pid, "cup-debit", control, cwd=Path.cwd(), inserted=False)
    print(f"PC/SC: pcscd with {READER_NAME!r}; insert the chip with\n"
          f"  .venv/bin/python -m board.sim.vpcd ctl {control} insert cup-debit   (or remove)",
          flush=True)
    return [card, pcscd], READER_NAME


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--board", default="sim")
    p.add_argument("--var", type=Path, default=Path("var"))
    p.add_argument("--headless", action="store_true", help="no console: drive it over ECR only")
    p.add_argument("--base-port", type=int,
                   help="use 4 ports from here (host, host control, peripherals, ECR) instead of "
                        f"{HOST_PORT}, {CONTROL_PORT}, {PERIPHERALS_PORT}, {ECR_PORT}")
    p.add_argument("--reader-driver", choices=("serial", "pcsc"), default="serial",
                   help="pcsc: the chip in a PC/SC reader (a private pcscd with vpcd and the "
                        "test chip card of board/sim/vpcd.py; needs root) on board sim-pcsc")
    args = p.parse_args(argv)
    os.umask(0o077)  # var/ holds the journal, the settings, keys and logs: owner only
    host_port, control_port, peri_port, ecr_port = (
        (HOST_PORT, CONTROL_PORT, PERIPHERALS_PORT, ECR_PORT) if args.base_port is None
        else tuple(args.base_port + i for i in range(4)))
    busy = busy_ports({"the acquirer simulator": host_port, "its control port": control_port,
                       "the emulated reader and printer": peri_port, "the ECR link": ecr_port})
    if busy:
        print(f"make run: {busy} already in use (another `make run`, or another program); stop it "
              "or use other ports: make run RUN_ARGS=\"--base-port 6800\"", file=sys.stderr)
        return 2
    console = not args.headless
    if console and not sys.stdin.isatty():
        print("make run needs a terminal for its console (or pass --headless)", file=sys.stderr)
        return 2
    args.var.mkdir(exist_ok=True)
    for line in provision(args.var / "terminal", host_port, board=args.board):
        print(f"make run: {line}", flush=True)
    py = sys.executable
    sim_log = open(args.var / "acquirer.log", "ab")  # noqa: SIM115 - lives as long as the child
    sim = subprocess.Popen([py, "-m", "board.sim.acquirer", "--db", str(args.var / "ledger.db"),
                            "--port", str(host_port), "--control-port", str(control_port),
                            "--register", f"{DEV_TID}:{DEV_MID}:{DEV_TMK}"],
                           stderr=sim_log)
    devices = args.var / "devices"
    dev_log = open(args.var / "peripherals.log", "ab")  # noqa: SIM115 - as above
    # The printed slips come out of its stdout: into the console's paper panel, or here.
    paper_read, paper_write = os.pipe() if console else (None, None)
    peri = subprocess.Popen([py, "-u", "-m", "board.sim.peripherals", "serve", "--dir", str(devices),
                             "--port", str(peri_port)], stderr=dev_log,
                            stdout=paper_write)
    if paper_write is not None:
        os.close(paper_write)
    peri_children: list[subprocess.Popen[str]] = []  # pcscd and the virtual card (READER=pcsc)
    deadline = time.monotonic() + 10
    while not ((devices / "reader-tty").exists() and (devices / "printer-tty").exists()):
        if peri.poll() is not None or time.monotonic() > deadline:
            print("the emulated peripherals did not start; see var/peripherals.log", file=sys.stderr)
            sim.terminate()
            return 1
        time.sleep(0.05)
    reader = str(devices / "reader-tty")
    board = args.board
    from firmware.app.boards import profile as board_profile

    if board_profile(board).key_store == "pinpad":
        for line in dev_pad(args.var / "terminal", board, devices):
            print(f"make run: {line}", flush=True)
    if args.reader_driver == "pcsc":
        try:
            pcsc_children, reader = start_pcsc(args.var)
        except RuntimeError as exc:
            print(f"make run READER=pcsc: {exc}", file=sys.stderr)
            for proc in (peri, sim):
                proc.terminate()
            return 1
        peri_children.extend(pcsc_children)
        board = "sim-pcsc" if board == "sim" else board
    ready = args.var / "terminal" / "ready"
    ready.unlink(missing_ok=True)
    term_log = open(args.var / "terminal.stderr.log", "ab")  # noqa: SIM115 - as above
    from drivers.keystore.pkcs11 import HEAP_TUNABLES

    # glibc reads these at the terminal's start: freed heap memory is overwritten at once, so a
    # working key the token's library copied at sign-on does not linger (docs/security.md).
    term_env = dict(os.environ, GLIBC_TUNABLES=HEAP_TUNABLES)
    command = [py, "-m", "board.sim.firmware", "--data", str(args.var / "terminal"),
               "--board", board, "--ecr-port", str(ecr_port), "--port", str(host_port),
               "--ready-file", str(ready),
               "--reader", reader,
               "--printer", str(devices / "printer-tty")]
    if console:
        # The console takes this terminal (keys in, the LCD box out). Ctrl-C reaches every
        # process here; each stops cleanly on it (and all of them on a hang-up).
        command += ["--panel", "console", "--console-control-port", str(peri_port),
                    "--console-printer-fd", str(paper_read)]
        term = subprocess.Popen(command, stderr=term_log, pass_fds=(paper_read,), env=term_env)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal handles Ctrl-C itself
        code = term.wait()
        for proc in (*peri_children, peri, sim):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        return code
    term = subprocess.Popen(command, stderr=term_log, env=term_env)
    deadline = time.monotonic() + 20
    while not ready.exists() and term.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not ready.exists():
        print("the terminal did not start; see var/terminal.stderr.log", file=sys.stderr)
        for proc in (sim, term, peri, *peri_children):
            proc.terminate()
        return 1
    stop = {"now": False}

    def on_signal(*_: object) -> None:
        stop["now"] = True

    # Before the help: a Ctrl-C as soon as it shows must still stop the children below.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(help_text(args.var, host_port, control_port, peri_port, ecr_port), flush=True)
    try:
        while not stop["now"] and term.poll() is None and sim.poll() is None and peri.poll() is None:
            time.sleep(0.2)
    finally:
        for proc in (term, *peri_children, peri, sim):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
