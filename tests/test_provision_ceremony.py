"""The key ceremony (docs/provisioning.md): the TMK arrives as a TR-31 key block under a key-transport
key (KBPK) that the custodians' components make; `python -m firmware.app.provision --tr31 BLOCK
--kbpk-file F` opens it in its own short process, puts the TMK into the board's key store, prints
the check value the acquirer confirms and keeps it in the provisioning record. A wrong KBPK, a
block that is not a master key, a KBPK file others can read, or a clear TMK on a board that is not
a development board are refused in words with nothing written. Real subprocesses (the KLD
stand-in board/sim/kld.py and the provisioning CLI), real files, the acquirer simulator."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from helpers import REPO, TMK, run, terminal
from test_provision import deregistered, filled_template, life, tree

from firmware.app import boards
from firmware.app.core import custody
from firmware.app.provision import ProvisionRefused, provision
from firmware.engine.deregistration import Lifecycle


def py(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False, env=dict(os.environ, PYTHONPATH=str(REPO)))


def ceremony(tmp: Path) -> tuple[Path, str, str]:
    """Two custodians' components, the KBPK they make, and the TMK wrapped under it: (the KBPK
    file, the TR-31 block, the TMK's check value as the KLD shows it)."""
    made = py("-m", "board.sim.kld", "components", "--count", "2", "--out", str(tmp / "custodians"))
    assert made.returncode == 0, made.stderr
    kbpk = tmp / "kbpk.hex"
    combined = py("-m", "board.sim.kld", "combine", str(tmp / "custodians" / "kbpk-1.hex"),
                  str(tmp / "custodians" / "kbpk-2.hex"), "--out", str(kbpk))
    assert combined.returncode == 0, combined.stderr
    wrapped = py("-m", "board.sim.kld", "wrap", "--kbpk-file", str(kbpk), "--tmk", TMK.hex())
    assert wrapped.returncode == 0, wrapped.stderr
    check = wrapped.stderr.split("TMK check value ")[1].split()[0]
    return kbpk, wrapped.stdout.strip(), check


def cli(data: Path, merchant: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return py("-m", "firmware.app.provision", "--data", str(data), "--settings", str(merchant), *extra)


def test_a_tr31_block_under_the_custodians_kbpk_provisions_a_terminal_that_signs_on(
        tmp_path: Path, sim) -> None:
    kbpk, block, check = ceremony(tmp_path)
    assert oct(kbpk.stat().st_mode & 0o777) == "0o600"
    assert block.startswith("B") and block[5:7] == "K0", block  # version B, a key-encryption key
    data = deregistered(tmp_path / "terminal", sim.port)
    done = cli(data, filled_template(tmp_path / "merchant.json", sim.port), "--tr31", block,
               "--kbpk-file", str(kbpk))
    assert done.returncode == 0, done.stderr
    assert f"terminal master key check value: {check}" in done.stdout, done.stdout
    assert "confirm it with the acquirer" in done.stdout
    record = custody.read_record(data)
    assert record is not None and record.tmk_check == check and record.method == "tr31"
    assert life(data) == Lifecycle.ACTIVE.value

    async def signs_on() -> bool:
        t = await terminal(data)
        try:
            return await t.ensure_signed_on()
        finally:
            await t.close()

    assert run(signs_on())  # the acquirer simulator holds the same TMK


@pytest.mark.parametrize("fault", ["another KBPK", "a damaged block", "a PIN key block",
                                   "a KBPK others can read", "both --tr31 and --tmk",
                                   "no KBPK file"])
def test_a_wrong_ceremony_input_is_refused_in_words_with_nothing_written(
        fault: str, tmp_path: Path) -> None:
    kbpk, block, _ = ceremony(tmp_path)
    data = deregistered(tmp_path / "terminal")
    before = tree(data)
    args = ["--tr31", block, "--kbpk-file", str(kbpk)]
    words = {"another KBPK": "does not verify under this key-block protection key",
             "a damaged block": "cannot be used: the TR-31 block",
             "a PIN key block": "it is not a terminal master key",
             "a KBPK others can read": "readable by others (mode 644)",
             "both --tr31 and --tmk": "give the TMK once",
             "no KBPK file": "needs its key-transport key: --kbpk-file"}[fault]
    if fault == "another KBPK":
        other = tmp_path / "other.hex"
        other.write_text("0123456789ABCDEFFEDCBA9876543210")
        other.chmod(0o600)
        args[3] = str(other)
    elif fault == "a damaged block":
        args[1] = block[:-2] + ("00" if block[-2:] != "00" else "11")
    elif fault == "a PIN key block":
        from psec import tr31

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args[1] = tr31.wrap(bytes.fromhex(kbpk.read_text().strip()),
                                tr31.Header("B", "P0", "T", "E", "00", "N"), TMK)
    elif fault == "a KBPK others can read":
        kbpk.chmod(0o644)
    elif fault == "both --tr31 and --tmk":
        args += ["--tmk", TMK.hex()]
    else:
        args = args[:2]
    done = cli(data, filled_template(tmp_path / "merchant.json"), *args)
    assert done.returncode == 1 and "nothing written" in done.stderr, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert TMK.hex().upper() not in done.stderr.upper() and kbpk.read_text().strip() not in done.stderr
    assert tree(data) == before


def test_a_clear_tmk_is_refused_on_a_board_that_is_not_a_development_board(
        tmp_path: Path, monkeypatch) -> None:
    real = dataclasses.replace(boards.PROFILES["sim"], name="sim-real", development=False,
                               key_store="pkcs11")
    monkeypatch.setitem(boards.PROFILES, "sim-real", real)
    data = deregistered(tmp_path / "terminal")
    before = tree(data)
    given = json.loads(filled_template(tmp_path / "merchant.json").read_text())
    with pytest.raises(ProvisionRefused) as refused:
        provision(data, TMK.hex(), given, board="sim-real")
    assert "development boards only" in str(refused.value) and "--tr31 BLOCK" in str(refused.value)
    assert tree(data) == before


def test_the_development_store_is_refused_at_provisioning_on_a_board_that_is_not_a_development_board(
        tmp_path: Path, monkeypatch) -> None:
    real = dataclasses.replace(boards.PROFILES["sim"], name="sim-real", development=False)
    monkeypatch.setitem(boards.PROFILES, "sim-real", real)
    data = deregistered(tmp_path / "terminal")
    before = tree(data)
    given = json.loads(filled_template(tmp_path / "merchant.json").read_text())
    with pytest.raises(ProvisionRefused, match="development boards only"):
        provision(data, TMK.hex(), given, board="sim-real")
    assert tree(data) == before
