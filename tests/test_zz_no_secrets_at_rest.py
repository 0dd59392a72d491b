"""No secrets at rest: after the suite (this file runs last), no clear PAN, track data
or PIN block is in any terminal's journal, its WAL, its settings or its logs.

It first runs its own scenario with every path that handles card data (PIN sale,
wrong PIN, lost reply and reversal, stored refund advice, settlement with upload
data decrypted in memory), so it proves something even when run alone.
"""

from __future__ import annotations

from pathlib import Path

from conftest import PIN_BLOCKS_SEEN
from helpers import PASSWORD, provision, refund, run, sale, terminal

from board.sim.cards import TEST_CARDS


def needles() -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for card in TEST_CARDS.values():
        pan = card.pan
        found[f"{card.name} PAN ascii"] = pan.encode()
        padded = pan + ("0" if len(pan) % 2 else "")
        found[f"{card.name} PAN bcd"] = bytes.fromhex(padded)
        track = card.track2
        found[f"{card.name} track2 ascii"] = track.encode()
        found[f"{card.name} track2 ascii D"] = track.replace("=", "D").encode()
        t2 = track.replace("=", "D")
        t2 += "0" if len(t2) % 2 else ""
        found[f"{card.name} track2 bcd"] = bytes.fromhex(t2)
        found[f"{card.name} track1"] = card.track1.encode()
    for i, block in enumerate(PIN_BLOCKS_SEEN):
        found[f"PIN block {i} raw"] = block
        found[f"PIN block {i} hex"] = block.hex().upper().encode()
        found[f"PIN block {i} hex lower"] = block.hex().encode()
    return found


def terminal_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for journal in root.rglob("journal.db"):
        d = journal.parent
        for name in ("journal.db", "journal.db-wal", "journal.db-shm", "terminal.log",
                     "stderr.log", "settings.json"):
            if (d / name).exists():
                files.append(d / name)
        files += list((d / "settings.json.history").glob("*.json"))
    return files


def test_no_card_data_or_pin_block_in_any_terminal_file(tmp_path, sim, tmp_path_factory):
    data_dir = provision(tmp_path / "terminal", sim.port, reply_timeout=1.0)

    async def scenario():
        t = await terminal(data_dir)
        await sale(t, 1000, card="cup_debit")
        s = await sale(t, 2000, card="visa")
        sim.add_fault("drop", mti="0200")
        lost = await sale(t, 3000, card="cup_debit")
        assert lost.status in ("reversed", "reversal_pending")
        sim.add_fault("drop", mti="0220")
        stored = await refund(t, 500, s.record.rrn, s.record.local_date, card="visa")
        assert stored.status == "stored"
        sim.clear_faults()
        await sale(t, 4000, card="mastercard")
        settled = await t.settle(PASSWORD)
        assert settled.status == "settled"
        # Leave the WAL in place, as a power cut would: the journal stays open
        # (held below) until the scan is done.
        await t.link.channel.close()
        return t

    alive = run(scenario())
    assert PIN_BLOCKS_SEEN, "the scenario must have produced PIN blocks"
    files = terminal_files(tmp_path_factory.getbasetemp())
    assert any(f.name == "journal.db" for f in files)
    problems = []
    patterns = needles()
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a WAL checkpointed away since the listing: nothing to leak
            continue
        for what, needle in patterns.items():
            if needle in data:
                problems.append(f"{what} in {path}")
    assert not problems, "\n".join(problems[:20])
    alive.journal.close()


def test_the_scan_would_find_a_leak(tmp_path):
    """Guard against a scan that cannot fail: plant each kind of leak and find it."""
    d = tmp_path / "leaky"
    d.mkdir()
    card = TEST_CARDS["cup_debit"]
    (d / "journal.db").write_bytes(b"xx" + bytes.fromhex(card.pan + "0") + b"yy")
    (d / "terminal.log").write_text(f"track {card.track2}\n")
    files = terminal_files(tmp_path)
    hits = {what for path in files for what, n in needles().items() if n in path.read_bytes()}
    assert "cup_debit PAN bcd" in hits and "cup_debit track2 ascii" in hits
