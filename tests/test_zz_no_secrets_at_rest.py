"""No secrets at rest: no clear PAN, track data, PIN block or clear key in any file a terminal
leaves behind: its journal (with the print queue), the journal's WAL, its settings and their
history, every log, the printed slips the merchant keeps, the journal's backups, and its key store
(keys/: the SoftHSM2 token's own object files, its configuration, the PIN file, the provisioning
record): the token holds the keys, and its files must not hold their clear values either.

The scan produces what it scans. A real terminal process (`python -m board.sim.firmware`, driven over
its ECR port as a till does, printing on the emulated printer whose slips are archived as files,
talking to the acquirer simulator through a wire tap) does PIN sales, a sale whose reply is lost
(reversed), a refund whose advice is lost (stored), a void, a reprint, a password change (a
settings version in the history) and a settlement; the deregistration's journal backup is taken
while it runs; then the process is killed with SIGKILL, as a power cut, so the WAL stays. The
secrets it looks for are the test cards' numbers and tracks, the PIN blocks and the working keys
the wire carried (decrypted with the master key), the master key and the card-vault key (both
known: the test token imported them, tests/helpers.py).

A scan over nothing proves nothing: every kind of file must exist before it is scanned. And a
scan that cannot see a kind of file proves nothing about it: a known card number or track is
planted into a copy of each kind in turn and the scan must name exactly that file. The last test
(this module runs last in `make test`) sweeps every terminal the session's other tests left.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PIN_BLOCKS_SEEN
from helpers import (
    PASSWORD,
    TID,
    TMK,
    VAULT_KEY,
    TerminalProcess,
    WireSpy,
    provision,
    run,
    sale,
    start_sim,
    terminal,
)
from wiretap import WireTap

from board.sim.cards import TEST_CARDS
from board.sim.peripherals import Peripherals
from firmware.host.codec import decode
from firmware.host.keys import parse_signon_keys
from firmware.journal import backup
from firmware.printing.queue import JobKind

# The kinds of file a terminal leaves, each with the names it has. The key store (keys/) is one:
# on a board with a token (the sim board) the keys are objects in the token, never in a file.
KINDS = ("journal", "wal", "settings", "settings history", "terminal log", "stderr log",
         "printed slip", "backup", "key store")


def terminal_files(root: Path) -> dict[Path, str]:
    """Every file under `root` of a kind the terminal writes, with its kind.

    A terminal's data directory is one with a settings.json; its rotated logs (terminal.log.1 ...)
    are logs too. Backups are the deregistration exports (posfw-backup-*), finished or partial;
    printed slips are the text of the slip archive (slips/*.txt)."""
    found: dict[Path, str] = {}
    for settings in root.rglob("settings.json"):
        d = settings.parent
        for name, kind in (("journal.db", "journal"), ("journal.db-wal", "wal"),
                           ("journal.db-shm", "wal"), ("settings.json", "settings"),
                           ("settings.json.meta", "settings"), ("stderr.log", "stderr log")):
            if (d / name).is_file():
                found[d / name] = kind
        for log in d.glob("terminal.log*"):
            found[log] = "terminal log"
        for version in (d / "settings.json.history").glob("*"):
            found[version] = "settings history"
        if not (d / "keys" / "tmk.key").exists():  # not the development store's key files
            for part in (d / "keys").rglob("*"):
                if part.is_file():
                    found[part] = "key store"
    for export in root.rglob("posfw-backup-*"):
        if export.is_dir():
            for part in export.rglob("*"):
                if part.is_file():
                    found[part] = "backup"
    for slip in root.rglob("slips/*.txt"):
        found[slip] = "printed slip"
    return found


def card_needles() -> dict[str, bytes]:
    """Each test card's number and track data as text and as the packed BCD of the wire.

    A BCD number that is two bytes and then zeros (the JCB test card's 3566000000000000) is left
    out: any two random bytes before one of SoftHSM's big-endian 8-byte lengths match it (a token
    object file did, once in a few thousand runs). Its text and its track's BCD are scanned."""
    found: dict[str, bytes] = {}
    for card in TEST_CARDS.values():
        pan = card.pan
        found[f"{card.name} PAN ascii"] = pan.encode()
        bcd = bytes.fromhex(pan + ("0" if len(pan) % 2 else ""))
        if len(bcd.rstrip(b"\0")) >= 4:
            found[f"{card.name} PAN bcd"] = bcd
        track = card.track2
        found[f"{card.name} track2 ascii"] = track.encode()
        found[f"{card.name} track2 ascii D"] = track.replace("=", "D").encode()
        t2 = track.replace("=", "D")
        found[f"{card.name} track2 bcd"] = bytes.fromhex(t2 + ("0" if len(t2) % 2 else ""))
        found[f"{card.name} track1"] = card.track1.encode()
    return found


def secret_needles(name: str, secret: bytes) -> dict[str, bytes]:
    """A PIN block or key as raw bytes and as hex either case."""
    return {f"{name} raw": secret, f"{name} hex": secret.hex().upper().encode(),
            f"{name} hex lower": secret.hex().encode()}


def scan(files: dict[Path, str], needles: dict[str, bytes]) -> dict[Path, list[str]]:
    """The files holding any needle, with what each holds."""
    hits: dict[Path, list[str]] = {}
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a WAL checkpointed away since the listing: nothing to leak
            continue
        found = [what for what, needle in needles.items() if needle in data]
        if found:
            hits[path] = found
    return hits


def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Run:
    root: Path
    data_dir: Path
    needles: dict[str, bytes]
    pin_blocks: int
    working_keys: int


def wire_secrets(tap: WireTap) -> tuple[dict[str, bytes], int, int]:
    """The PIN blocks the terminal sent and the working keys the host gave it, in clear."""
    needles: dict[str, bytes] = {}
    pins = keys = 0
    for frame in tap.frames():
        message = decode(frame.payload).message
        if frame.to_host and "52" in message.fields:
            needles |= secret_needles(f"wire PIN block {pins}", bytes.fromhex(message.fields["52"]))
            pins += 1
        # A sign-on reply (60.3 003/004); an 0810 of the chip parameter download carries
        # public keys and AIDs in its 62, no secret.
        if (not frame.to_host and message.mti == "0810" and "62" in message.fields
                and message.fields.get("60", "")[8:11] in ("003", "004")):
            working = parse_signon_keys(message.fields["62"], TMK)
            for what, key in (("PIK", working.pik), ("MAK", working.mak), ("TDK", working.tdk)):
                if key is not None:
                    needles |= secret_needles(f"sign-on {keys} {what}", key)
            keys += 1
    return needles, pins, keys


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A terminal process's whole working life in about 3 s, its files left as a power cut leaves them."""
    root = tmp_path_factory.mktemp("at_rest")
    sim = start_sim(root)
    tap = WireTap(sim.port)
    peripherals = Peripherals(root / "devices", echo=False).start()
    data_dir = provision(root / "terminal", tap.port, reply_timeout=1.0)
    proc = TerminalProcess(data_dir, extra_args=["--printer", str(peripherals.printer.path),
                                                 "--reader", ""])
    try:
        proc.start()
        pin_sale = proc.request(op="sale", amount=1000, card="cup_debit", pin="123456")
        assert pin_sale["result"] == "approved", pin_sale
        visa = proc.request(op="sale", amount=2000, card="visa")
        assert visa["result"] == "approved", visa
        sim.add_fault("drop", mti="0200")
        lost = proc.request(op="sale", amount=3000, card="cup_debit", pin="123456")
        assert lost["result"] in ("reversed", "reversal_pending"), lost
        sim.add_fault("drop", mti="0220")
        stored = proc.request(op="refund", amount=500, orig_rrn=visa["rrn"], orig_date=visa["date"],
                              password=PASSWORD, card="visa")
        assert stored["result"] == "stored", stored
        sim.clear_faults()
        void = proc.request(op="void", voucher=pin_sale["voucher"], password=PASSWORD)
        assert void["result"] == "approved", void
        assert proc.request(op="reprint")["ok"]
        new_password = "135791"
        assert proc.request(op="set_password", old=PASSWORD, new=new_password)["ok"]
        settled = proc.request(op="settle", password=new_password)
        assert settled["result"] == "settled", settled
        # the deregistration's export, taken from the live journal as the terminal takes it
        (root / "backups").mkdir()
        backup.export(data_dir / "journal.db", root / "backups", TID)
        # every print job done, and every slip on paper archived as its file
        until(lambda: proc.request(op="print_jobs")["jobs"] == [], "the print queue to empty")
        slips = root / "devices" / "slips"
        until(lambda: len(list(slips.glob("*.txt"))) == len(peripherals.printer.slips) > 0,
              "the printed slips to be archived")
    finally:
        proc.kill()  # a power cut: the WAL stays as it was
        peripherals.stop()
        tap.close()
        sim.stop()
    needles, pins, keys = wire_secrets(tap)
    needles |= card_needles() | secret_needles("TMK", TMK) | secret_needles("card-data key", VAULT_KEY)
    yield Run(root, data_dir, needles, pins, keys)


def test_a_terminals_whole_working_life_leaves_no_card_data_pin_block_or_clear_key_in_any_file(
        produced: Run) -> None:
    """After PIN sales, a reversal, a stored refund advice, a void, a reprint, a password change,
    a settlement and a backup, cut by a power loss: no file of any kind holds a card number, a
    track, a PIN block or a clear key (the token's object files included: the TMK, the working
    keys and the card-vault key are token objects, encrypted in its store). Every kind of file,
    and the print queue in the journal, exists and has content (a scan over nothing would
    pass)."""
    files = terminal_files(produced.root)
    kinds = {kind for path, kind in files.items() if path.stat().st_size > 0}
    assert kinds == set(KINDS), f"kinds of file missing: {set(KINDS) - kinds}"
    with sqlite3.connect(f"file:{produced.data_dir / 'journal.db'}?mode=ro", uri=True) as conn:
        queued = conn.execute("SELECT kind, reprint FROM print_job").fetchall()
    # the print queue held the receipts (two sales, the void), the reprint and the settlement report
    assert queued.count((JobKind.RECEIPT.value, 0)) >= 3, queued
    assert (JobKind.RECEIPT.value, 1) in queued and (JobKind.SETTLEMENT.value, 0) in queued, queued
    assert produced.pin_blocks >= 2 and produced.working_keys >= 1  # the wire carried both
    token = [p for p, kind in files.items() if kind == "key store" and p.suffix == ".object"]
    assert len(token) >= 3, token  # the token itself, its master key and its card-vault key
    hits = scan(files, produced.needles)
    assert not hits, "\n".join(f"{path}: {', '.join(what)}" for path, what in hits.items())


def plant_row(journal: Path, sql: str, value: str, keep_open: bool = False) -> sqlite3.Connection:
    """Writes `value` through SQLite, as the firmware writes rows. Closed, the last connection
    checkpoints: the row is in journal.db. Kept open, the row is in the WAL only."""
    conn = sqlite3.connect(journal)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute(sql, (value,))
    conn.commit()
    if not keep_open:
        conn.close()
    return conn


PAN = TEST_CARDS["cup_debit"].pan
TRACK2 = TEST_CARDS["visa"].track2


def only(files: dict[Path, str], kind: str, name: str = "") -> Path:
    """The one file of `kind` (whose name starts with `name`) to plant in."""
    chosen = sorted(p for p, k in files.items() if k == kind and p.name.startswith(name))
    assert chosen, f"no {kind} file named {name}*"
    return chosen[0]


# Each kind of file, how a leak would get into it, and the needle it plants.
PLANTS = ["journal row", "print queue", "wal", "settings", "settings history", "terminal log",
          "rotated terminal log", "stderr log", "printed slip", "backup journal", "backup csv"]


@pytest.mark.parametrize("where", PLANTS)
def test_a_leak_planted_in_any_kind_of_file_is_found_in_exactly_that_file(
        where: str, produced: Run, tmp_path: Path) -> None:
    """A card number or track written into a copy of one kind of file (through SQLite for the
    journal, its print queue and its WAL; as text for the rest) makes the scan name that file and
    no other: the scan reads every kind of file it claims to cover."""
    copy = tmp_path / "copy"
    shutil.copytree(produced.root, copy)
    try:
        files = terminal_files(copy)
        data = copy / produced.data_dir.relative_to(produced.root)
        conn = None
        if where == "journal row":
            target = data / "journal.db"
            plant_row(target, "UPDATE txn SET reference = ? WHERE id = 1", PAN)
            assert not (data / "journal.db-wal").exists()  # checkpointed into the journal
        elif where == "print queue":
            target = data / "journal.db"
            plant_row(target, "UPDATE print_job SET title = ? WHERE id = 1", f"sale {TRACK2}")
        elif where == "wal":
            target = data / "journal.db-wal"
            journal_before = (data / "journal.db").read_bytes()
            conn = plant_row(data / "journal.db", "UPDATE txn SET reference = ? WHERE id = 2", PAN,
                             keep_open=True)
            assert (data / "journal.db").read_bytes() == journal_before  # in the WAL only
        elif where == "backup journal":
            target = only(files, "backup", "journal.db")
            plant_row(target, "UPDATE txn SET reference = ? WHERE id = 1", PAN)
        else:
            kind, name = {
                "settings": ("settings", "settings.json"),
                "settings history": ("settings history", ""),
                "terminal log": ("terminal log", "terminal.log"),
                "stderr log": ("stderr log", "stderr.log"),
                "printed slip": ("printed slip", ""),
                "backup csv": ("backup", "transactions.csv"),
            }.get(where, ("terminal log", "terminal.log"))
            # a rotated log is made once the log passes 1 MiB (firmware/app/process.py): planted as that file
            target = (data / "terminal.log.1" if where == "rotated terminal log"
                      else only(files, kind, name))
            with open(target, "ab") as fh:
                fh.write(f"\ncard {PAN} track {TRACK2}\n".encode())
        try:
            hits = scan(terminal_files(copy), produced.needles)
        finally:
            if conn is not None:
                conn.close()
        assert list(hits) == [target], hits
        assert any(what.startswith(("cup_debit PAN", "visa track2")) for what in hits[target])
    finally:
        shutil.rmtree(copy)  # the session sweep below must not find the planted leaks


@pytest.mark.parametrize("secret", ["PIN block", "working key", "master key", "card-data key",
                                    "PAN bcd", "track2 bcd"])
def test_each_kind_of_secret_is_recognised_in_a_log(secret: str, produced: Run, tmp_path: Path) -> None:
    """A PIN block, a clear working key, the master key, the card-data key, and card data packed as
    on the wire, each written into a log, are found there (hex as a log would print it, or raw)."""
    prefix = {"PIN block": "wire PIN block 0 hex", "working key": "sign-on 0 MAK hex",
              "master key": "TMK hex lower", "card-data key": "card-data key raw",
              "PAN bcd": "cup_debit PAN bcd", "track2 bcd": "visa track2 bcd"}[secret]
    log = tmp_path / "terminal" / "terminal.log"
    log.parent.mkdir()
    (log.parent / "settings.json").write_text("{}")
    log.write_bytes(b"clean line\n" + produced.needles[prefix] + b"\n")
    hits = scan(terminal_files(tmp_path), produced.needles)
    assert list(hits) == [log] and prefix in hits[log], hits
    shutil.rmtree(log.parent)


@pytest.mark.parametrize(("secret", "where"), [("TMK raw", "object"), ("card-data key raw", "object"),
                                             ("sign-on 0 MAK raw", "object"), ("TMK hex", "pin")])
def test_a_clear_key_in_the_key_stores_own_files_is_found_in_exactly_that_file(
        secret: str, where: str, produced: Run, tmp_path: Path) -> None:
    """The scan reads the token's object files (and the key store's other files) whole: a clear
    master key, card-vault key or working key put into a copy of one is found there and nowhere
    else, so the clean result above says something about the token's store."""
    copy = tmp_path / "copy"
    shutil.copytree(produced.root, copy)
    try:
        keys = copy / produced.data_dir.relative_to(produced.root) / "keys"
        target = (sorted(keys.rglob("*.object"))[-1] if where == "object" else keys / "token.pin")
        with open(target, "ab") as fh:
            fh.write(produced.needles[secret])
        hits = scan(terminal_files(copy), produced.needles)
        assert list(hits) == [target] and secret in hits[target], hits
    finally:
        shutil.rmtree(copy)


def test_the_pin_block_recorder_sees_the_blocks_an_in_process_terminal_sends(data_dir: Path, sim) -> None:
    """The sweep below looks for the PIN blocks tests/conftest.py records where the terminal makes
    them. A recorder patched where the terminal does not look records nothing, and the sweep would
    pass without checking a single PIN block: so one PIN sale in process, and the blocks the wire
    carried must be exactly the ones recorded."""
    before = len(PIN_BLOCKS_SEEN)

    async def go() -> WireSpy:
        t = await terminal(data_dir)
        spy = WireSpy(t)
        try:
            result = await sale(t, 1500, card="cup_debit")
            assert result.status == "approved", result
        finally:
            await t.close()
        return spy

    spy = run(go())
    sent = [bytes.fromhex(m.fields["52"]) for m in spy.sent if "52" in m.fields]
    assert sent, "the PIN sale sent no PIN block"
    assert PIN_BLOCKS_SEEN[before:] == sent


def test_no_card_data_or_pin_block_in_any_file_the_sessions_terminals_left(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every terminal the session's other tests ran (in-process and as processes) leaves no card
    number, track or PIN block (those the in-process terminals made) in any file. Run alone, it
    has only this module's own terminal to sweep, which the tests above have checked and proved."""
    needles = card_needles()
    for i, block in enumerate(PIN_BLOCKS_SEEN):
        needles |= secret_needles(f"PIN block {i}", block)
    files = terminal_files(tmp_path_factory.getbasetemp())
    assert files
    hits = scan(files, needles)
    assert not hits, "\n".join(f"{path}: {', '.join(what)}" for path, what in list(hits.items())[:20])
