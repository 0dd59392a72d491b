"""The terminal's books as its data disk holds them after a power cut, checked against the host's.

Owns reading the journal off a copy of the ext4 image (e2fsck replays the filesystem journal on
the copy as the guest's kernel would at mount, so the guest's own replay still happens on the
original) and the invariants: SQLite integrity, no repeated STAN, no lost approval, no double
charge, and at rest nothing left unresolved and both books equal record for record.
Problems come back as sentences; an empty list means the books agree.

The journal is read on the host without its card numbers: they are sealed under the guest's
card-vault keys, which live in the guest's TPM (the qemu board, docs/qemu.md "The TPM"), and no
check here needs one (records, states, amounts and STANs are in clear). A vault that keeps them
sealed (SealedVault) stands in for the key store: the host never holds a card-data key.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from board.qemu.image import read_data_disk
from board.sim.ledger import Ledger
from firmware.engine.states import UNRESOLVED
from firmware.journal.errors import JournalCorrupt
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.ports import KeyMissing

MONEY_STATES = ("APPROVED", "VOIDED")
# The terminal does not know yet, or still owes the host a message (a refund's advice is sent
# again): the next start resolves it.
IN_DOUBT = tuple(sorted(state.value for state in UNRESOLVED))


@dataclass(frozen=True)
class TillApproval:
    """An approval the till was told about (the ECR answer arrived): it must never be lost."""

    batch: int
    voucher: str  # the voucher number (invoice) the till was told
    kind: str
    amount: int


class SealedVault:
    """firmware.ports.VaultKeys for reading a journal on the host: seals nothing, opens nothing
    (the card-vault keys are in the guest's TPM). A read that needs a card number fails in
    words; nothing in the books' checks does."""

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        raise KeyMissing("the host reads the journal without card numbers: the card-vault keys "
                         "are in the guest's TPM")

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        raise KeyMissing("the host reads the journal without card numbers: the card-vault keys "
                         "are in the guest's TPM")


def open_books(terminal: Path) -> Journal:
    """The journal in a host copy of the terminal's data directory, its card numbers sealed."""
    return Journal.open(terminal / "journal.db", CardVault(SealedVault()))


def replayed_copy(image: Path, workdir: Path) -> Path:
    """A copy of the data disk with its ext4 journal replayed (e2fsck -p, as a boot would)."""
    copy = workdir / "check.img"
    shutil.copyfile(image, copy)
    fsck = shutil.which("e2fsck") or shutil.which("e2fsck", path="/usr/sbin:/sbin") or "e2fsck"
    result = subprocess.run([fsck, "-p", str(copy)], capture_output=True, text=True)
    if result.returncode >= 4:  # 1 and 2 mean "errors corrected"; 4 and up, left uncorrected
        raise RuntimeError(f"e2fsck could not repair the data disk ({result.returncode}): "
                           f"{(result.stdout + result.stderr).strip()[-500:]}")
    return copy


def check_disk(image: Path, ledger: Ledger, tid: str, till: Iterable[TillApproval], *,
               at_rest: bool) -> list[str]:
    """Reads the journal off `image` (the guest powered off) and checks it against the ledger."""
    with tempfile.TemporaryDirectory(prefix="books-") as scratch:
        work = Path(scratch)
        copy = replayed_copy(image, work)
        terminal = read_data_disk(copy, "/terminal", work / "disk")
        if not (terminal / "journal.db").exists():
            return []  # the terminal never got as far as opening its journal: nothing to lose yet
        try:
            journal = open_books(terminal)
        except JournalCorrupt as error:
            return [f"SQLite integrity check: {error}"]
        try:
            return compare(journal, ledger, tid, till, at_rest=at_rest)
        finally:
            journal.close()


def compare(journal: Journal, ledger: Ledger, tid: str, till: Iterable[TillApproval], *,
            at_rest: bool) -> list[str]:
    problems: list[str] = []
    integrity = journal.integrity()
    if integrity != "ok":
        problems.append(f"SQLite integrity check: {integrity}")
    records = journal.every_record()
    keys = [(int(r.batch), int(r.stan)) for r in records]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        problems.append(f"STAN used twice (batch, STAN): {repeated}")
    by_key = {(int(r.batch), int(r.stan)): r for r in records}
    by_voucher = {(int(r.batch), r.invoice): r for r in records}  # records() is oldest first

    for approval in till:
        record = by_voucher.get((approval.batch, approval.voucher))
        if record is None or record.state.value not in MONEY_STATES:
            state = "missing" if record is None else record.state.value
            problems.append(f"lost approval: the till was told {approval.kind} {approval.amount} "
                            f"(batch {approval.batch} voucher {approval.voucher}) was approved; "
                            f"journal: {state}")

    host_rows = [r for r in ledger.approved(tid) if r.kind != "balance"]
    host = {(r.batch, r.stan): r for r in host_rows}
    if len(host) != len(host_rows):
        problems.append("double charge: the host booked one (batch, STAN) twice")
    mine = {k: r for k, r in by_key.items()
            if r.state.value in MONEY_STATES and r.kind.value != "balance"}
    doubt = {k for k, r in by_key.items() if r.state.value in IN_DOUBT}
    for key in sorted(set(host) - set(mine) - doubt):
        problems.append(f"double charge: the host holds {host[key].kind} {host[key].amount} at "
                        f"batch {key[0]} STAN {key[1]} and the terminal has it neither approved nor in doubt")
    for key in sorted(set(mine) - set(host)):
        problems.append(f"approved on the terminal only: {mine[key].kind.value} {mine[key].amount} "
                        f"at batch {key[0]} STAN {key[1]}")
    for key in sorted(set(mine) & set(host)):
        record, booked = mine[key], host[key]
        if (booked.amount, booked.kind) != (record.amount, record.kind.value):
            problems.append(f"books differ at batch {key[0]} STAN {key[1]}: terminal "
                            f"{record.kind.value} {record.amount}, host {booked.kind} {booked.amount}")
        elif at_rest and (record.state.value == "VOIDED") != booked.voided:
            problems.append(f"void state differs at batch {key[0]} STAN {key[1]}: terminal "
                            f"{record.state.value}, host voided={booked.voided}")
    if at_rest:
        unresolved = {k: v for k, v in journal.unresolved_counts().items() if v}
        if unresolved:
            problems.append(f"left unresolved at rest: {unresolved}")
    return problems
