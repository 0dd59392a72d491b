"""The MAK check value convention is an acquirer setting (issue 13, item 20; docs/dialect.md).

A real terminal signs on to the acquirer simulator over TCP. When both say the same convention
("first8": the check value covers the 8 bytes the MAC uses, the default; "full16": the whole
key) the sign-on installs the keys and a sale's MACs verify both ways. When they differ, the
sign-on fails with words from the catalog, the details go to the log and the audit, and no
financial message is sent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import MID, TID, TMK, provision, run, sale

from board.sim.acquirer import SimulatorThread
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.host.keys import DEFAULT_MAK_CHECK


def _pair(tmp_path: Path, host: str, terminal: str) -> tuple[SimulatorThread, Path]:
    sim = SimulatorThread(tmp_path / "ledger.db", terminals=[(TID, MID, TMK)], mak_check=host)
    sim.start()
    data_dir = provision(tmp_path / "terminal", sim.port)
    settings = json.loads((data_dir / "settings.json").read_text())
    settings["comms"]["mak_check"] = terminal
    (data_dir / "settings.json").write_text(json.dumps(settings))
    return sim, data_dir


async def _sign_on_and_sell(data_dir: Path):
    t = Terminal(AppConfig(data_dir=data_dir))
    await t.start()
    try:
        result = await sale(t, 1500)
        audit = [line for line in t.journal.audit_lines(50) if line[2] == "sign-on"]
        return t.link.has_keys, result, t.notice, audit
    finally:
        await t.close()


def test_the_default_is_first8():
    assert DEFAULT_MAK_CHECK == "first8"


@pytest.mark.parametrize("convention", ["first8", "full16"])
def test_sign_on_succeeds_when_both_sides_say_the_same(tmp_path, convention):
    sim, data_dir = _pair(tmp_path, convention, convention)
    try:
        signed_on, result, _notice, _audit = run(_sign_on_and_sell(data_dir))
        booked = sim.ledger.approved(TID)
    finally:
        sim.stop()
    assert signed_on and result.status == "approved", result  # the reply's MAC verified
    assert len(booked) == 1


@pytest.mark.parametrize(("host", "terminal"), [("first8", "full16"), ("full16", "first8")])
def test_a_check_value_that_does_not_match_fails_the_sign_on_in_words(tmp_path, host, terminal):
    sim, data_dir = _pair(tmp_path, host, terminal)
    try:
        signed_on, result, notice, audit = run(_sign_on_and_sell(data_dir))
        booked = sim.ledger.rows(TID)
    finally:
        sim.stop()
    assert not signed_on
    assert result.status == "failed" and result.message_key == "key_check_failed"
    assert notice == "key_check_failed"  # the idle screen shows it in the screen's language
    assert "MAC key check value mismatch" in audit[-1][3] and f"= {terminal}" in audit[-1][3]
    assert booked == []  # nothing financial reached the host
