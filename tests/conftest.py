"""Shared fixtures: the acquirer simulator on loopback and a provisioned data directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import provision, start_sim


@pytest.fixture
def sim(tmp_path: Path):
    s = start_sim(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def data_dir(tmp_path: Path, sim) -> Path:
    return provision(tmp_path / "terminal", sim.port)
