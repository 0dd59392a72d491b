"""Power loss at every step of moving a batch into the archive (firmware/journal/archive.py):
a real child process moves two settled batches and is killed with SIGKILL at the named step
(the first or the second time it gets there). After each cut the books are whole, hot and
archive together: every record exactly once, the audit chain unbroken, every archive file
matching what the journal recorded. Then the move is run again and completes, and the books
are still the same.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_archive import JAN, KEY, Clock, approved, every_record, settle

from firmware.host.messages import TxnKind
from firmware.journal import archive
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400.0
STEPS = ("intent", "intent_commit", "copy", "copy_commit", "verify", "delete", "delete_commit",
         "done")

CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from firmware.journal import archive
    from firmware.journal.store import Journal
    from firmware.journal.vault import CardVault
    seen = {{}}
    def cut(name):
        seen[name] = seen.get(name, 0) + 1
        if name == {step!r} and seen[name] == {nth}:
            os.kill(os.getpid(), signal.SIGKILL)
    archive.step_hook = cut
    j = Journal.open({path!r}, CardVault({key!r}))
    j.archive_settled(keep_batches=2)
    print("finished without the cut", flush=True)
""")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, list[tuple]]:
    """Four settled batches (two in January, then February and March; three sales each, and a
    refund of the first sale in the second batch) and an open batch: with keep_batches=2 the
    two January batches move into the same file, so a cut during the second move leaves that
    file holding a committed batch and a copy that is not (which no lookup may count)."""
    path = tmp_path_factory.mktemp("pristine") / "journal.db"
    clock = Clock(JAN)
    j = Journal.open(path, CardVault(KEY), clock=clock)
    try:
        first = None
        for month in range(4):
            clock.now = JAN + (month * 5 if month < 2 else (month - 1) * 31) * DAY
            for k in range(3):
                sale = approved(j, TxnKind.SALE, 1000 * (month + 1) + k, f"{month:06d}{k:06d}")
                first = first or sale
            if month == 1:
                approved(j, TxnKind.REFUND, 400, "900000000001", orig_rrn=first.rrn,
                         orig_date="0110", orig_id=first.id)
            settle(j)
        approved(j, TxnKind.SALE, 9999, "000099000099")
        books = every_record(j)
    finally:
        j.close()
    return path, books


def _copy(pristine: Path, into: Path) -> Path:
    into.mkdir()
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{pristine}{suffix}")
        if src.exists():
            shutil.copyfile(src, into / (pristine.name + suffix))
    return into / pristine.name


def _whole(j: Journal, books: list[tuple]) -> None:
    assert every_record(j) == books  # nothing lost, nothing twice
    assert j.audit_chain_break() is None
    found = j.check_archives()
    assert found.ok, found.problems
    sale = j.find_by_rrn("000000000000")  # January's first sale, hot or archived
    assert sale is not None and [f.amount for f in j.follow_ups(sale)] == [400]


@pytest.mark.parametrize("nth", [1, 2])
@pytest.mark.parametrize("step", STEPS)
def test_a_power_cut_at_any_step_of_a_move_loses_nothing_and_counts_nothing_twice(
        pristine, tmp_path, step, nth):
    source, books = pristine
    path = _copy(source, tmp_path / "terminal")
    code = CHILD.format(root=str(ROOT), step=step, nth=nth, path=str(path), key=KEY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    j = Journal.open(path, CardVault(KEY))
    try:
        _whole(j, books)
        moves = j.archive_settled(keep_batches=2)
        assert all(m.moved for m in moves), moves
        _whole(j, books)
        moved = [r for r in j.archive_log() if r.state == "MOVED"]
        assert [r.batch for r in moved] == ["000001", "000002"]
        hot = {b for (b,) in j.read("SELECT DISTINCT batch FROM txn")}
        assert hot == {"000003", "000004", "000005"}
        assert [p.name for p in archive.files_in(j.archive_dir)] == ["journal-2027-01.sqlite"]
    finally:
        j.close()
