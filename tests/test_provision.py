"""Provisioning a deregistered terminal again (firmware/app/provision.py): the shipped template
filled in is enough; a partial or wrong input is refused in words with nothing written; a failure
at any step puts back every file as it was; a SIGKILL at any step leaves the terminal deregistered
and a second run finishes the job. Real files, a real journal, real subprocesses."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    MID,
    REPO,
    TID,
    TMK,
    open_journal,
    provision,
    run,
    terminal,
    token_of,
    write_token_pin_file,
)
from p11kit import pointing_at

from firmware.app.core import custody
from firmware.app.core.lifecycle import put_state
from firmware.app.provision import TEMPLATE, tmk_check_value
from firmware.app.provision import provision as provision_again
from firmware.engine.deregistration import Lifecycle, Step
from firmware.journal import wipe


def deregistered_token(data: Path, port: int = 5800) -> Path:
    """A terminal as the deregistration's wipe leaves it: the token's objects destroyed (the
    token stays), the key files (its PIN file too) shredded, the settings gone, the journal
    DEREGISTERED after the last step, the marker written."""
    provision(data, port)
    journal = open_journal(data)
    try:
        with journal.transaction() as cur:
            put_state(cur, {"lifecycle": Lifecycle.DEREGISTERED.value, "dereg_step": list(Step)[-1].value})
    finally:
        journal.close()
    with pointing_at(token_of(data)):
        store = token_of(data).open()
        try:
            store.destroy_all()
        finally:
            store.close()
    wipe.write_marker(data, TID)
    wipe.wipe_keys(data)
    (data / "settings.json").unlink()
    return data


def deregistered(data: Path, port: int = 5800) -> Path:
    """deregistered_token, and the token's PIN given again (as --token-pin-file leaves it)."""
    deregistered_token(data, port)
    write_token_pin_file(data)
    return data


def tree(root: Path) -> dict[str, bytes]:
    """Every file but the token's object store (keys/tokens/: SoftHSM2 rewrites it as objects
    come and go; what it holds is checked through the token)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not str(p.relative_to(root)).startswith("keys/tokens/")}


def holds_tmk(data: Path) -> bool:
    """The token holds TMK (its check value) and a card-vault key, and the record says so."""
    with pointing_at(token_of(data)):
        store = token_of(data).open()
        try:
            status = store.status()
        finally:
            store.close()
    record = custody.read_record(data)
    check = tmk_check_value(TMK)
    return (status.tmk_check == check and status.vault_key and record is not None
            and record.tmk_check == check)


def life(data: Path) -> str:
    """The journal's life cycle, read straight from the file (no key needed)."""
    with sqlite3.connect(f"file:{data / 'journal.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT value FROM terminal_state WHERE name = 'lifecycle'").fetchone()[0]


def filled_template(path: Path, port: int = 5800) -> Path:
    given = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    given["merchant"].update(name="NEW SHOP", mid=MID, tid=TID)
    given["comms"].update(host="127.0.0.1", port=port)
    path.write_text(json.dumps(given), encoding="utf-8")
    return path


def cli(data: Path, settings: Path, tmk: str = TMK.hex()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware.app.provision", "--data", str(data),
                           "--tmk", tmk, "--settings", str(settings)],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def test_the_template_is_the_shipped_file_and_the_help_names_it() -> None:
    """TEMPLATE is found from provision.py's own file: a wrong parents[n] after a move would name
    a file that is not there (or another one), and the help would point the operator at it."""
    assert TEMPLATE == REPO / "firmware" / "settings" / "merchant-template.json"
    assert TEMPLATE.is_file()
    done = subprocess.run([sys.executable, "-m", "firmware.app.provision", "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m firmware.app.provision ")
    assert "firmware/settings/merchant-template.json" in done.stdout


def test_a_partial_file_is_refused_in_words_and_nothing_is_written(tmp_path: Path) -> None:
    data = deregistered(tmp_path / "terminal")
    before = tree(data)
    partial = tmp_path / "merchant.json"
    partial.write_text(json.dumps({"merchant": {"tid": "1234"}}), encoding="utf-8")
    done = cli(data, partial, tmk="0123")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    for words in ("nothing written", "the TMK must be 32 hex digits", "merchant.mid: missing",
                  "comms.host: missing", "merchant.tid: TID: 8 digits"):
        assert words in done.stderr, done.stderr
    assert tree(data) == before


def test_bad_json_and_the_bare_template_are_refused_in_words(tmp_path: Path) -> None:
    data = deregistered(tmp_path / "terminal")
    before = tree(data)
    broken = tmp_path / "broken.json"
    broken.write_text('{"merchant": ', encoding="utf-8")
    for settings, words in ((broken, "is not valid JSON"), (TEMPLATE, "merchant.mid: MID: 15 digits")):
        done = cli(data, settings)
        assert done.returncode == 1 and words in done.stderr and "Traceback" not in done.stderr
    assert tree(data) == before


def test_the_shipped_template_filled_in_provisions_a_terminal_that_signs_on(tmp_path: Path, sim) -> None:
    data = deregistered(tmp_path / "terminal", sim.port)
    done = cli(data, filled_template(tmp_path / "merchant.json", sim.port))
    assert done.returncode == 0, done.stderr
    assert "provisioned: ACTIVE" in done.stdout
    settings = json.loads((data / "settings.json").read_text(encoding="utf-8"))
    assert settings["merchant"]["name"] == "NEW SHOP" and settings["comms"]["port"] == sim.port
    assert settings["printer"]["copies"] == 2  # the rest from the factory defaults
    assert holds_tmk(data) and not (data / "keys" / "tmk.key").exists()
    assert life(data) == Lifecycle.ACTIVE.value
    assert not wipe.is_marked(data)
    assert not [p for p in data.rglob("*.provision-*")]

    async def signs_on() -> bool:
        t = await terminal(data)
        try:
            return await t.ensure_signed_on()
        finally:
            await t.close()

    assert run(signs_on())


def steps(tmp_path: Path) -> list[str]:
    """The step names provisioning passes, in order (from a run that records them)."""
    seen: list[str] = []
    data = deregistered(tmp_path / "recorded")
    provision_again(data, TMK.hex(), json.loads(filled_template(tmp_path / "m.json").read_text()),
                    step_hook=seen.append)
    assert seen[0] == "stage" and seen[-2:] == ["journal", "commit"] and len(seen) >= 6
    return seen


def test_a_failure_at_any_step_puts_every_file_back(tmp_path: Path) -> None:
    given = json.loads(filled_template(tmp_path / "merchant.json").read_text())
    for step in steps(tmp_path)[:-1]:  # "commit" is after the journal said ACTIVE
        data = deregistered(tmp_path / step.replace(" ", "-"))
        before = tree(data)

        def fail(at: str, step: str = step) -> None:
            if at == step:
                raise OSError(28, "No space left on device")

        with pytest.raises(OSError):
            provision_again(data, TMK.hex(), given, step_hook=fail)
        assert tree(data) == before, step


KILLER = """
import json, os, signal, sys
from pathlib import Path
from firmware.app.provision import provision
at = sys.argv[3]
provision(Path(sys.argv[1]), sys.argv[2], json.loads(Path(sys.argv[4]).read_text()),
          step_hook=lambda step: step == at and os.kill(os.getpid(), signal.SIGKILL))
"""


def test_a_kill_at_any_step_leaves_it_deregistered_and_a_second_run_finishes(tmp_path: Path) -> None:
    merchant = filled_template(tmp_path / "merchant.json")
    for step in steps(tmp_path):
        data = deregistered(tmp_path / step.replace(" ", "-"))
        killed = subprocess.run([sys.executable, "-c", KILLER, str(data), TMK.hex(), step, str(merchant)],
                                cwd=REPO, capture_output=True, timeout=60, check=False)
        assert killed.returncode == -9, killed.stderr
        if step == "commit":  # the journal said ACTIVE: provisioned, only the old copies remain
            assert life(data) == Lifecycle.ACTIVE.value
        else:
            assert life(data) == Lifecycle.DEREGISTERED.value, step
        done = cli(data, merchant)
        assert done.returncode == 0, (step, done.stderr)
        assert life(data) == Lifecycle.ACTIVE.value and not wipe.is_marked(data)
        assert not [p for p in data.rglob("*.provision-*")], step
        assert holds_tmk(data), step
        assert os.stat(data / custody.RECORD).st_mode & 0o077 == 0
