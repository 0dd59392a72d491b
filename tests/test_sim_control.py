"""The simulator's control port, its CLI, and its robustness against bad input."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from board.sim.acquirer import SimulatorThread
from board.sim.cards import TEST_CARDS
from board.sim.control import ControlClient, ControlError
from board.sim.testkit import TEST_MID, TEST_TID, TEST_TMK, SimTerminal
from firmware.host.codec import encode
from firmware.host.framing import DEFAULT_TPDU, Header, frame
from firmware.host.messages import Message, TxnKind, financial_request

ROOT = Path(__file__).resolve().parents[1]
CARD = TEST_CARDS["cup_credit"]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorThread]:
    with SimulatorThread(tmp_path / "acquirer.db") as s:
        yield s


@pytest.fixture
def ctl(sim: SimulatorThread) -> Iterator[ControlClient]:
    assert sim.control_port is not None
    with ControlClient("127.0.0.1", sim.control_port) as c:
        yield c


def test_control_round_trip(sim: SimulatorThread, ctl: ControlClient) -> None:
    assert ctl.ping()
    ctl.register(TEST_TID, TEST_MID, TEST_TMK)
    assert ctl.status(TEST_TID) == {"tid": TEST_TID, "mid": TEST_MID, "status": "bound",
                                    "signed_on": False, "batch": 1}
    with SimTerminal(sim.port) as t:
        t.sign_on()
        assert ctl.status(TEST_TID)["signed_on"] is True
        assert ctl.rule(code="05", amount=777)["code"] == "05"
        assert t.request(t.params(TxnKind.SALE, 777, CARD)).fields["39"] == "05"
        assert t.request(t.params(TxnKind.SALE, 1500, CARD)).fields["39"] == "00"
        fault = ctl.fault(kind="drop", mti="0200", count=1)
        assert fault["kind"] == "drop" and fault["process"] is True
        t.send(financial_request(t.params(TxnKind.SALE, 1600, CARD)))
        assert t.recv(0.4) is None
        ctl.fault(kind="twice", count=-1)
        ctl.clear_faults()
        ctl.clear_rules()
        assert t.request(t.params(TxnKind.SALE, 777, CARD)).fields["39"] == "00"
    rows = ctl.ledger(TEST_TID)
    assert [(r["amount"], r["response_code"]) for r in rows] == [
        (777, "05"), (1500, "00"), (1600, "00"), (777, "00")]
    assert all("*" in r["pan_masked"] for r in rows)
    assert len(ctl.ledger(TEST_TID, batch=1)) == 4 and ctl.ledger(TEST_TID, batch=2) == []
    totals = ctl.totals(TEST_TID, 1)
    assert totals["domestic"] == {"debit_amount": 3877, "debit_count": 3,
                                  "credit_amount": 0, "credit_count": 0}
    assert totals["foreign"]["debit_count"] == 0
    ctl.unbind(TEST_TID)
    assert ctl.status(TEST_TID)["status"] == "unbound"
    with SimTerminal(sim.port) as t:
        assert t.sign_on().fields["39"] == "97"


def test_control_errors_are_words(sim: SimulatorThread, ctl: ControlClient) -> None:
    with pytest.raises(ControlError, match="unknown command"):
        ctl.request("explode")
    with pytest.raises(ControlError, match="explode"):
        ctl.fault(kind="explode")
    with pytest.raises(ControlError, match="unknown terminal"):
        ctl.status("00000000")
    with pytest.raises(ControlError, match="colour"):
        ctl.rule(code="05", colour="red")
    # A line that is not JSON gets an error line, and the connection stays usable.
    assert ctl._file is not None
    ctl._file.write(b"this is not json\n")
    ctl._file.flush()
    assert b'"ok": false' in ctl._file.readline()
    assert ctl.ping()


def test_control_refuse_and_clear(sim: SimulatorThread, ctl: ControlClient) -> None:
    ctl.fault(kind="refuse")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sim.port), timeout=2)
    assert ctl.ping()  # the control port is not affected
    ctl.clear_faults()
    socket.create_connection(("127.0.0.1", sim.port), timeout=2).close()


# ---- bad input ---------------------------------------------------------------------

def _alive(sim: SimulatorThread) -> None:
    with SimTerminal(sim.port) as t:
        assert t.sign_on().fields["39"] == "00"


@pytest.mark.parametrize("data", [
    b"\x00\x00",                                   # length 0
    b"\xff\xff" + b"x" * 10,                       # length above MAX_FRAME
    b"\x00\x05hello",                              # too short for TPDU and header
    b"\x00\x10" + bytes(range(16)),                # not a TPDU
    frame(DEFAULT_TPDU, Header(), bytes.fromhex("0200FFFFFFFFFFFFFFFF")),  # bitmap lies
    frame(DEFAULT_TPDU, Header(), bytes.fromhex("09990000000000000000")),  # unknown MTI
])
def test_garbage_into_the_simulator_closes_that_connection(sim: SimulatorThread,
                                                           data: bytes) -> None:
    sim.register_terminal(TEST_TID, TEST_MID, TEST_TMK)
    with SimTerminal(sim.port, timeout=2) as t:
        t.send_bytes(data)
        with pytest.raises(EOFError):
            t.recv(2)
    _alive(sim)


def test_responses_sent_to_the_host_are_ignored(sim: SimulatorThread) -> None:
    sim.register_terminal(TEST_TID, TEST_MID, TEST_TMK)
    with SimTerminal(sim.port) as t:
        t.sign_on()
        t.send_bytes(encode(Message("0210", {"11": "000001", "39": "00", "41": TEST_TID})))
        assert t.recv(0.3) is None
        assert t.sign_on().fields["39"] == "00"  # the connection still works
    assert sim.ledger.rows(TEST_TID) == []


def test_a_request_outside_the_table_is_refused(sim: SimulatorThread) -> None:
    sim.register_terminal(TEST_TID, TEST_MID, TEST_TMK)
    with SimTerminal(sim.port) as t:
        t.sign_on()
        msg = financial_request(t.params(TxnKind.SALE, 100, CARD))
        wrong = Message("0200", {**msg.fields, "3": "310000"})  # balance code, sale 60.1
        assert t.exchange(wrong).fields["39"] == "30"
        unknown = Message("0200", {**msg.fields, "60": "99" + msg.fields["60"][2:]})
        assert t.exchange(unknown).fields["39"] == "40"
    assert sim.ledger.rows(TEST_TID) == []


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(min_size=0, max_size=120))
def test_random_frames_never_kill_the_simulator(sim: SimulatorThread, body: bytes) -> None:
    with socket.create_connection(("127.0.0.1", sim.port), timeout=2) as s:
        s.sendall(frame(DEFAULT_TPDU, Header(), body) if body[:1] != b"\x00"
                  else len(body).to_bytes(2, "big") + body)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(2)
        while s.recv(4096):  # a reply (unknown terminal) or nothing; then the close
            pass
    assert sim.call(lambda: sim.sim is not None and sim.sim.port == sim.port)


# ---- CLI ---------------------------------------------------------------------------

def test_cli_runs_logs_masked_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "board.sim.acquirer", "--db", str(tmp_path / "cli.db"),
         "--port", "0", "--control-port", "0",
         "--register", f"{TEST_TID}:{TEST_MID}:{TEST_TMK.hex()}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.fullmatch(r"acquirer simulator listening on 127\.0\.0\.1:(\d+) "
                         r"\(control (\d+)\)\n", line)
        assert m, line
        port, control_port = int(m[1]), int(m[2])
        card = TEST_CARDS["cup_debit"]
        with SimTerminal(port) as t:
            t.sign_on()
            reply = t.request(t.params(TxnKind.SALE, 1000, card, pin="123456"))
            assert reply.fields["39"] == "00"
        with ControlClient("127.0.0.1", control_port) as c:
            assert len(c.ledger(TEST_TID)) == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "0200 sale" in err and "622202*********0017" in err
    assert card.pan not in err and card.track2.split("=")[1] not in err


def _knob(sim: SimulatorThread, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "board.sim.control", "--port", str(sim.control_port),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_the_fault_knobs_cli_turns_a_running_simulators_faults_and_rules(sim: SimulatorThread) -> None:
    sim.register_terminal(TEST_TID, TEST_MID, TEST_TMK)
    with SimTerminal(sim.port) as t:
        t.sign_on()
        sale = financial_request(t.params(TxnKind.SALE, 1000, CARD))
        assert "64" in t.exchange(sale).fields
        done = _knob(sim, "fault", "no_mac", "--mti", "0200")
        assert done.returncode == 0 and '"kind": "no_mac"' in done.stdout, done.stderr
        assert "64" not in t.exchange(financial_request(t.params(TxnKind.SALE, 1100, CARD))).fields
        assert "64" in t.exchange(financial_request(t.params(TxnKind.SALE, 1200, CARD))).fields  # once
        assert _knob(sim, "rule", "05", "--amount", "777").returncode == 0
        assert t.exchange(financial_request(t.params(TxnKind.SALE, 777, CARD))).fields["39"] == "05"
        assert _knob(sim, "clear").returncode == 0
        assert t.exchange(financial_request(t.params(TxnKind.SALE, 777, CARD))).fields["39"] == "00"
    status = _knob(sim, "status", TEST_TID)
    assert status.returncode == 0 and '"signed_on": true' in status.stdout


def test_the_fault_knobs_cli_says_what_is_wrong_in_words(sim: SimulatorThread, tmp_path: Path) -> None:
    wrong_kind = _knob(sim, "fault", "no_such_fault")
    assert wrong_kind.returncode == 2 and "no_mac" in wrong_kind.stderr  # the choices are listed
    refused = _knob(sim, "fault", "drop", "--kind", "sail")
    assert refused.returncode == 1 and "unknown transaction kind 'sail'" in refused.stderr
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    nobody = subprocess.run([sys.executable, "-m", "board.sim.control", "--port", str(port), "clear"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert nobody.returncode == 1 and "is `make run` running?" in nobody.stderr
    assert "Traceback" not in refused.stderr + nobody.stderr
