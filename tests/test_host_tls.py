"""TLS to the acquirer's host (settings comms.tls, firmware/host/tls.py): a sale over TLS with
the acquirer's CA pinned; and every way the host's certificate can be wrong (another CA, expired,
another host's name) or the host not speaking TLS is refused in words before anything is sent:
the simulator's ledger stays empty and the terminal writes no record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import MID, TID, TMK, provision, run, sale
from tlskit import client_certificate, make_ca, server_context

from board.sim.acquirer import SimulatorThread
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal


def tls_terminal_dir(tmp: Path, port: int, ca_pem: Path, server_name: str = "") -> Path:
    data_dir = provision(tmp / "terminal", port)
    settings = json.loads((data_dir / "settings.json").read_text())
    settings["comms"].update({"tls": True, "tls_ca": "keys/acquirer-ca.pem",
                              "tls_server_name": server_name, "host": "127.0.0.1"})
    (data_dir / "settings.json").write_text(json.dumps(settings))
    (data_dir / "keys" / "acquirer-ca.pem").write_bytes(ca_pem.read_bytes())
    return data_dir


def sim_with(tmp: Path, context) -> SimulatorThread:
    sim = SimulatorThread(tmp / "ledger.db", terminals=[(TID, MID, TMK)], tls=context)
    sim.start()
    return sim


def one_sale(data_dir: Path):
    async def go():
        t = Terminal(AppConfig(data_dir=data_dir))
        await t.start()
        try:
            return await sale(t, 1234), t.journal.records(), t.notice
        finally:
            await t.close()
    return run(go())


def test_a_sale_over_tls_with_the_acquirers_ca_pinned(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca.pem")
    sim = sim_with(tmp_path, server_context(tmp_path, ca))
    try:
        result, _, _ = one_sale(tls_terminal_dir(tmp_path, sim.port, tmp_path / "ca.pem"))
        assert result.status == "approved", result
        assert [r.amount for r in sim.ledger.approved(TID)] == [1234]
    finally:
        sim.stop()


@pytest.mark.parametrize("case", ["another_ca", "expired", "other_name", "plain_tcp"])
def test_a_wrong_host_certificate_is_refused_in_words_and_nothing_is_sent(tmp_path: Path,
                                                                          case: str) -> None:
    pinned = make_ca(tmp_path / "pinned.pem", "Pinned Acquirer CA")
    other = make_ca(tmp_path / "other.pem", "Some Other CA")
    context = {
        "another_ca": lambda: server_context(tmp_path, other),
        "expired": lambda: server_context(tmp_path, pinned, expired=True),
        "other_name": lambda: server_context(tmp_path, pinned, names=("acquirer.example",), ips=()),
        "plain_tcp": lambda: None,
    }[case]()
    sim = sim_with(tmp_path, context)
    try:
        data_dir = tls_terminal_dir(tmp_path, sim.port, tmp_path / "pinned.pem")
        result, records, notice = one_sale(data_dir)
        assert result.status == "failed" and result.message_key == "host_tls_refused", result
        words = {"another_ca": "not from the acquirer's pinned CA", "expired": "it has expired",
                 "other_name": "it names another host", "plain_tcp": "TLS handshake failed"}[case]
        assert words in result.detail, result.detail
        assert notice == "host_tls_refused"
        assert records == []  # nothing written
        assert sim.ledger.rows(TID) == [] and sim.ledger.working_keys(TID) is None  # nothing sent
    finally:
        sim.stop()


def test_an_unreadable_ca_file_is_service_mode_in_words_never_plain_tcp(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca.pem")
    sim = sim_with(tmp_path, None)  # a plain-TCP host: the terminal must not talk to it
    try:
        data_dir = tls_terminal_dir(tmp_path, sim.port, tmp_path / "ca.pem")
        (data_dir / "keys" / "acquirer-ca.pem").unlink()
        result, _, _ = one_sale(data_dir)
        assert result.status == "refused" and result.message_key == "service_mode", result
        assert "CA file" in result.detail
        assert sim.ledger.rows(TID) == [] and sim.ledger.working_keys(TID) is None
        del ca
    finally:
        sim.stop()


@pytest.mark.parametrize("has_certificate", [True, False])
def test_a_host_that_asks_for_a_client_certificate(tmp_path: Path, has_certificate: bool) -> None:
    """With comms.tls_client_cert/key the terminal proves itself and sells; without them the
    host's refusal is said in words, and the host never saw the request."""
    ca = make_ca(tmp_path / "ca.pem")
    terminals_ca = make_ca(tmp_path / "terminals-ca.pem", "Acquirer Terminals CA")
    sim = sim_with(tmp_path, server_context(tmp_path, ca, client_ca=tmp_path / "terminals-ca.pem"))
    try:
        data_dir = tls_terminal_dir(tmp_path, sim.port, tmp_path / "ca.pem")
        if has_certificate:
            client_certificate(data_dir / "keys" / "terminal.pem", data_dir / "keys" / "terminal.key",
                               terminals_ca)
            settings = json.loads((data_dir / "settings.json").read_text())
            settings["comms"].update({"tls_client_cert": "keys/terminal.pem",
                                      "tls_client_key": "keys/terminal.key"})
            (data_dir / "settings.json").write_text(json.dumps(settings))
        result, _, _ = one_sale(data_dir)
        if has_certificate:
            assert result.status == "approved", result
            assert [r.amount for r in sim.ledger.approved(TID)] == [1234]
        else:
            assert result.status == "failed", result
            assert "client certificate" in result.detail, result.detail
            assert sim.ledger.rows(TID) == []  # the host never read a request
    finally:
        sim.stop()
