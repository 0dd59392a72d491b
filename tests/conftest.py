"""Shared fixtures: the acquirer simulator on loopback and a provisioned data directory."""

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


@pytest.fixture(autouse=True)
def _record_pin_blocks(monkeypatch):
    from firmware.app.terminal import Terminal

    # Patched where the method that makes PIN blocks looks the name up (its module's globals),
    # not by a module path: wherever _perform lives, the recorder follows it. A module path that
    # is wrong but still holds the name would record nothing, and the final scan would pass
    # without checking a single PIN block.
    where = Terminal._perform.__globals__
    real = where["encrypt_pin_block"]

    def recording(pin: str, pan: str, pik: bytes) -> bytes:
        block = real(pin, pan, pik)
        PIN_BLOCKS_SEEN.append(block)
        return block

    monkeypatch.setitem(where, "encrypt_pin_block", recording)


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
