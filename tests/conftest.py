"""Shared fixtures: the acquirer simulator on loopback and a provisioned data directory (its
keys in a SoftHSM2 token of its own), and the checks every test gets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import provision, start_sim
from wiretap import WireTap


@pytest.fixture
def sim(tmp_path: Path):
    s = start_sim(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def data_dir(tmp_path: Path, sim) -> Path:
    return provision(tmp_path / "terminal", sim.port)


@pytest.fixture
def tap(sim):
    """A wire tap between the terminal and the simulator (tests/wiretap.py)."""
    t = WireTap(sim.port)
    yield t
    t.close()


@pytest.fixture
def tapped_dir(tmp_path: Path, tap: WireTap) -> Path:
    """A terminal provisioned to talk to the host through the tap."""
    return provision(tmp_path / "tapped", tap.port)


# Every PIN block the in-process terminals produce, so the final scan can prove
# that none of them reached a file (tests/test_zz_no_secrets_at_rest.py).
PIN_BLOCKS_SEEN: list[bytes] = []


@pytest.fixture(scope="session", autouse=True)
def _sweep_every_terminal_this_session_ran(tmp_path_factory: pytest.TempPathFactory):
    """After the last test of the session (of each worker, when `make test` runs them in
    parallel), every terminal the session ran leaves no card number, track or PIN block in any
    file: tests/test_zz_no_secrets_at_rest.py's final sweep, done at the session's end so that
    it covers every worker's terminals whatever the order. A hit fails the run (an error at the
    teardown of the session's last test)."""
    yield
    from test_zz_no_secrets_at_rest import card_needles, scan, secret_needles, terminal_files

    needles = card_needles()
    for i, block in enumerate(PIN_BLOCKS_SEEN):
        needles |= secret_needles(f"PIN block {i}", block)
    hits = scan(terminal_files(tmp_path_factory.getbasetemp()), needles)
    assert not hits, "card data or a PIN block at rest:\n" + "\n".join(
        f"{path}: {', '.join(what)}" for path, what in list(hits.items())[:20])


@pytest.fixture(autouse=True)
def _record_pin_blocks(monkeypatch):
    from firmware.app.terminal import Terminal

    # Wrapped at the one method every keypad PIN block goes through (the swipe's and the chip's
    # PIN step both call _encrypt_pin, which asks the key store), found on the class the tests
    # run: whatever store the board uses, the recorder sees each block, and a rename fails here
    # instead of leaving the final scan with nothing to check.
    real = Terminal._encrypt_pin

    async def recording(self, pin: str, pan: str) -> bytes:
        block = await real(self, pin, pan)
        PIN_BLOCKS_SEEN.append(block)
        return block

    monkeypatch.setattr(Terminal, "_encrypt_pin", recording)


@pytest.fixture(autouse=True)
def _no_key_store_outlives_its_test():
    """Every test's terminals keep their keys in a SoftHSM2 token of their own (tests/helpers.py
    provision), and the PKCS#11 module reads its configuration once per loading: a store a test
    left open (a terminal never closed, as a process that is killed leaves it) would hold the
    module on that test's token. Closed here at teardown, as the process's exit would; the
    session's later tests then load the module on their own token."""
    yield
    close_open_key_stores()


def close_open_key_stores() -> None:
    """Close every PKCS#11 store this process holds open (what a process's exit does); a
    module-scoped fixture that ran a terminal calls it too, so its test starts clean."""
    from drivers.keystore import pkcs11

    for stores in list(pkcs11._STORES.values()):
        for store in list(stores):
            if store.is_open:
                store.close()


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB tmpfs so that SQLite meets a real ENOSPC (needs root to mount)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root / CAP_SYS_ADMIN): {proc.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)
