"""The CUP "ECB" MAC is forgeable; X9.19 is not (issue 17; docs/dialect.md, "MAC strength").

The CUP MAC XORs every 8-byte block of the MAC block before it encrypts anything, so flipping
the same bit at the same offset in two blocks leaves the XOR, and so the MAC, unchanged. The
attack here is the one the security review made: a genuine approval (0210) the acquirer
simulator MACed for trace 000002 becomes an approval for trace 000003 by flipping one bit of
field 11's last BCD byte (02 -> 03) and the same bit of a byte of another field at the same
offset modulo 8 (a digit of the time, the RRN or the auth code: fields nobody checks against
the request). Under comms.mac_algorithm = "cup_ecb" the forged reply verifies, and the
terminal's host link takes it as the answer to its own request for trace 000003, which the
acquirer never saw: a sale approved by nobody. Under "x9_19" (ISO 9797-1 algorithm 3: the
blocks are chained) the same forgery is refused as a bad MAC, which the terminal reverses.

Real parts: the acquirer simulator on loopback TCP makes the genuine reply, the terminal's
HostLink with a development key store talks to a host on 127.0.0.1 that answers with the
forgery.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import hostkit
import iso8583
import p11kit
import pytest
from helpers import MID, TID, TMK, provision, run, sale
from hostkit import StoreMaker

from board.sim.acquirer import SimulatorThread
from board.sim.cards import TEST_CARDS
from board.sim.testkit import TEST_MID, TEST_TID, TEST_TMK, SimTerminal
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.host.channel import HostChannel, HostLink
from firmware.host.codec import decode, verify_mac
from firmware.host.errors import NoReply
from firmware.host.framing import HEADER_LEN, TPDU_LEN, read_frame
from firmware.host.mac import MAC_ALGORITHMS, clear_mac
from firmware.host.messages import FinancialParams, Message, TxnKind, financial_request
from firmware.host.spec import SPEC
from firmware.settings.model import SettingsInvalid, factory, migrate, validate

# The terminal's link runs on both key stores: the development store, a SoftHSM2 token.
host_store = hostkit.host_store
softhsm_template = p11kit.softhsm_template
CARD = TEST_CARDS["cup_credit"]
AMOUNT = 2500
BODY_AT = TPDU_LEN + HEADER_LEN  # where the MAC block (the MTI onward) starts in a payload
# Fields of a 0210 that the terminal does not compare with its request: a bit of theirs can
# pay for the bit that turns the trace number.
SLACK_FIELDS = ("12", "13", "37", "38")


def _field_spans(mac_block: bytes) -> dict[str, range]:
    """Where each field's data bytes sit in a MAC block (offsets from the MTI)."""
    _, enc = iso8583.decode(mac_block + bytes(8), SPEC)  # a placeholder 64 completes it
    at, spans = 10, {}  # MTI 2 + bitmap 8
    for field in sorted((k for k in enc if k not in ("t", "p", "h")), key=int):
        at += len(enc[field]["len"])
        spans[field] = range(at, at + len(enc[field]["data"]))
        at += len(enc[field]["data"])
    return spans


def forge_next_trace(genuine_payload: bytes) -> tuple[bytes, str, int]:
    """The genuine reply's payload turned into one for the next trace number, by two flips of
    bit 0x01 at the same offset modulo 8 of the MAC block. Returns (payload, the field that
    paid for it, its byte's offset)."""
    genuine = decode(genuine_payload)
    trace = genuine.fields["11"]
    assert trace[-1] in "02468", "flipping bit 0 adds one only to an even last digit"
    # Field 11's byte that changes: found by comparing with the reply re-encoded for trace + 1.
    spans = _field_spans(genuine.mac_input)
    target = spans["11"][-1]
    assert genuine.mac_input[target] & 0x0F == int(trace[-1])
    partner = next((i for f in SLACK_FIELDS if f in spans for i in spans[f]
                    if i % 8 == target % 8 and i != target), None)
    assert partner is not None, f"no byte of {SLACK_FIELDS} at offset {target % 8} mod 8"
    field = next(f for f in SLACK_FIELDS if f in spans and partner in spans[f])
    forged = bytearray(genuine_payload)
    forged[BODY_AT + target] ^= 0x01
    forged[BODY_AT + partner] ^= 0x01
    return bytes(forged), field, partner


@pytest.fixture(params=MAC_ALGORITHMS)
def algorithm(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def genuine(tmp_path: Path, algorithm: str) -> tuple[bytes, SimTerminal]:
    """A genuine MACed approval for trace 000002 from the acquirer simulator (its MAC by
    `algorithm`), and the test terminal that got it (its keys)."""
    with SimulatorThread(tmp_path / "acquirer.db", terminals=[(TEST_TID, TEST_MID, TEST_TMK)],
                         mac_algorithm=algorithm) as sim, \
            SimTerminal(sim.port, mac_algorithm=algorithm) as term:
        assert term.sign_on().fields["39"] == "00"  # trace 000001
        params = term.params(TxnKind.SALE, AMOUNT, CARD)
        assert params.stan == "000002"
        term.send(financial_request(params))
        payload = term.recv_payload()
    assert payload is not None
    reply = decode(payload)
    assert (reply.message.mti, reply.fields["39"], reply.fields["11"]) == ("0210", "00", "000002")
    assert term.mac_ok(reply)
    return payload, term


def test_the_forgery_changes_the_trace_and_one_slack_byte_only(genuine) -> None:
    payload, _ = genuine
    forged, field, _ = forge_next_trace(payload)
    before, after = decode(payload).fields, decode(forged).fields
    assert after["11"] == "000003"
    assert {k for k in before if before[k] != after[k]} == {"11", field}
    assert after["39"] == "00" and after["4"] == before["4"] and after["64"] == before["64"]


def test_the_cup_mac_does_not_see_it_and_x9_19_does(genuine, algorithm: str) -> None:
    payload, term = genuine
    forged, _, _ = forge_next_trace(payload)
    assert term.keys is not None
    verifies = verify_mac(decode(forged), clear_mac(term.keys.mak, algorithm))
    assert verifies is (algorithm == "cup_ecb")


def test_the_terminal_link_takes_the_forged_approval_only_under_the_cup_mac(
        genuine, algorithm: str, host_store: StoreMaker) -> None:
    """The terminal sends its sale for trace 000003 (same amount); a host on the line answers
    with the forgery. cup_ecb: an approval the acquirer never gave. x9_19: refused as a bad
    MAC (the terminal reverses; no money moves on a forged word)."""
    payload, term = genuine
    forged, _, _ = forge_next_trace(payload)
    assert term.keys is not None
    asked: list[Message] = []

    async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(decode(await read_frame(reader)).message)
        writer.write(len(forged).to_bytes(2, "big") + forged)
        await writer.drain()
        await reader.read()

    async def go() -> Message:
        server = await asyncio.start_server(host, "127.0.0.1", 0)
        channel = HostChannel("127.0.0.1", server.sockets[0].getsockname()[1], connect_timeout=2)
        link = HostLink(channel, term.term, await host_store(term.keys, TEST_TMK),
                        mac_algorithm=algorithm)
        params = FinancialParams(TxnKind.SALE, "000003", term.batch, term.term, AMOUNT,
                                 card=term.params(TxnKind.SALE, AMOUNT, CARD).card)
        try:
            async with asyncio.timeout(10):
                return await link.request(financial_request(params), mac=True, timeout=5)
        finally:
            await channel.close()
            server.close()

    if algorithm == "cup_ecb":
        reply = asyncio.run(go())
        assert (reply.fields["11"], reply.fields["39"]) == ("000003", "00")  # forged, and taken
    else:
        with pytest.raises(NoReply, match="does not verify") as info:
            asyncio.run(go())
        assert info.value.reason == NoReply.BAD_MAC
    assert [m.fields["11"] for m in asked] == ["000003"]


# ---- the setting ---------------------------------------------------------------------------

def test_mac_algorithm_is_a_validated_setting_that_old_files_gain() -> None:
    settings = factory()
    assert settings["comms"]["mac_algorithm"] == "cup_ecb"  # the dialect's, by default
    settings["comms"]["mac_algorithm"] = "x9_19"
    validate(settings)
    settings["comms"]["mac_algorithm"] = "des_cbc"
    with pytest.raises(SettingsInvalid, match="mac_algorithm"):
        validate(settings)
    old = factory()
    del old["comms"]["mac_algorithm"]
    migrated, filled = migrate(old)
    assert migrated["comms"]["mac_algorithm"] == "cup_ecb" and "comms.mac_algorithm" in filled
    validate(migrated)


def test_a_terminal_and_an_acquirer_on_x9_19_sell(tmp_path: Path) -> None:
    """End to end: the terminal (settings comms.mac_algorithm = x9_19, its key store) signs on
    to the simulator started with mac_algorithm="x9_19"; a sale's MACs verify both ways."""
    with SimulatorThread(tmp_path / "ledger.db", terminals=[(TID, MID, TMK)],
                         mac_algorithm="x9_19") as sim:
        data_dir = provision(tmp_path / "terminal", sim.port)
        path = data_dir / "settings.json"
        settings = json.loads(path.read_text())
        settings["comms"]["mac_algorithm"] = "x9_19"
        path.write_text(json.dumps(settings))

        async def go():
            t = Terminal(AppConfig(data_dir=data_dir))
            await t.start()
            try:
                return await sale(t, 1500), t.link.mac_algorithm
            finally:
                await t.close()

        result, used = run(go())
        booked = sim.ledger.approved(TID)
    assert used == "x9_19"
    assert result.status == "approved", result
    assert len(booked) == 1
