"""Track data encryption (issue 17; docs/dialect.md, "Track encryption").

With comms.track_encryption on, the terminal signs on for a track data key (60.3 = 004, the
reply's field 62 carries TDK + check value, installed in the key store with the PIK and MAK),
and every request with a track sends fields 35/36 with their block encrypted under the TDK
(TDES-ECB of the 8 packed bytes that end one byte before the field's last byte, the convention
of open CUP terminal code) and field 53's third digit 1. The acquirer simulator decrypts with
its TDK before it reads the track. Off (the default), the tracks go in clear and 53's third
digit is 0.

The wire is read by a tap between terminal and simulator and decoded with pyiso8583 and the
dialect table written independently in tests/test_wire_conformance.py, not the firmware's codec.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import hostkit
import iso8583
import p11kit
import pytest
from helpers import MID, TID, provision, run, sale
from hostkit import StoreMaker, holds, store_in
from psec.des import decrypt_tdes_ecb, encrypt_tdes_ecb
from test_wire_conformance import DIALECT, FRAMING
from wiretap import WireTap

from board.sim.cards import TEST_CARDS
from board.sim.testkit import TEST_MID, TEST_TID, TEST_TMK, SimTerminal
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.host.channel import HostChannel, HostLink
from firmware.host.codec import (
    TRACK_BLOCK_MIN_DIGITS,
    decode,
    decrypt_tracks,
    encode,
    encode_async,
    track_block,
)
from firmware.host.errors import LocalProtocolError, RemoteProtocolError
from firmware.host.framing import read_frame
from firmware.host.keys import build_signon_keys, expand_key, generate_working_keys
from firmware.host.mac import clear_mac
from firmware.host.messages import (
    CardInput,
    FinancialParams,
    Message,
    TxnKind,
    financial_request,
    response_for,
    reversal_request,
    with_tracks_encrypted,
)
from firmware.host.messages import (
    Terminal as TermIds,
)
from firmware.settings.model import SettingsInvalid, factory, migrate, validate

# The link tests run on both key stores: the development store, a SoftHSM2 token.
host_store = hostkit.host_store
softhsm_template = p11kit.softhsm_template
CREDIT = TEST_CARDS["cup_credit"]  # no PIN
DEBIT = TEST_CARDS["cup_debit"]  # a PIN: 52 and 53 go with the track


def wire_fields(payload: bytes) -> dict[str, str]:
    """A request as it crossed the wire, decoded with the independent dialect table: tracks
    as their packed nibbles (hex), '=' still the nibble D."""
    doc, _ = iso8583.decode(payload[FRAMING:], DIALECT)
    return {k: v for k, v in doc.items() if k not in ("h", "p")}


def packed_track(track: str) -> bytes:
    nibbles = track.replace("=", "D")
    return bytes.fromhex(nibbles + "0" * (len(nibbles) % 2))


# ---- where the block is ------------------------------------------------------------------

@pytest.mark.parametrize(("track", "block"), [
    # The worked example of the UnionPay PIN-pad track encryption text (track 2, 39 digits):
    # "from the end mark, the second byte leftwards, 8 bytes" (docs/dialect.md).
    ("1234567890123456789=0508201781999168302", "0820178199916830"),
    # A test card's track 2 (odd length: the last byte holds the last digit and the pad).
    (DEBIT.track2, None),
])
def test_the_block_is_the_8_packed_bytes_before_the_last(track: str, block: str | None) -> None:
    packed = packed_track(track)
    got = packed[track_block(len(track))]
    assert got == packed[-9:-1]
    if block is not None:
        assert got.hex().upper() == block


def test_a_track_too_short_for_a_block_is_refused_in_words() -> None:
    assert track_block(TRACK_BLOCK_MIN_DIGITS) == slice(0, 8)
    with pytest.raises(LocalProtocolError, match="too short to encrypt"):
        track_block(TRACK_BLOCK_MIN_DIGITS - 1)


# ---- the codec: encrypted on the wire, MAC over what is on the wire ------------------------

TDK = bytes.fromhex("10101010101010101F1F1F1F1F1F1F1F")
MAK = bytes.fromhex("2C2C2C2C2C2C2C2C4A4A4A4A4A4A4A4A")
TERM = TermIds(TID, MID)


def swiped_sale(card=DEBIT, pin_block: bytes | None = bytes(8)) -> Message:
    return financial_request(FinancialParams(TxnKind.SALE, "000100", "000001", TERM, 5000,
                                             card=CardInput("swipe", card.pan, track2=card.track2,
                                                            track3="99" + card.pan + "=" + "0" * 30,
                                                            pin_block=pin_block)))


async def _tdk(block: bytes) -> bytes:
    return encrypt_tdes_ecb(expand_key(TDK), block)


async def _mac(data: bytes) -> bytes:
    return clear_mac(MAK)(data)


def test_encoded_tracks_carry_the_encrypted_block_and_53_says_so() -> None:
    msg = with_tracks_encrypted(swiped_sale())
    assert msg.fields["53"] == "2610000000000000"  # PIN format 2, double key, tracks encrypted
    frame = asyncio.run(encode_async(msg, _mac, tracks=_tdk))
    on_wire = wire_fields(frame[2:])
    for field, track in (("35", DEBIT.track2), ("36", msg.fields["36"])):
        clear = packed_track(track)
        sent = bytes.fromhex(on_wire[field] + "0" * (len(on_wire[field]) % 2))
        block = track_block(len(track))
        assert sent[block] == encrypt_tdes_ecb(expand_key(TDK), clear[block])
        assert sent[:block.start] == clear[:block.start] and sent[-1:] == clear[-1:]
    decoded = decode(frame[2:])
    assert decoded.tracks_encrypted and decoded.fields["35"] != DEBIT.track2
    # The MAC covers the encrypted bytes; the acquirer's side decrypts to the clear tracks.
    assert clear_mac(MAK)(decoded.mac_input) == bytes.fromhex(decoded.fields["64"])
    clear_msg = decrypt_tracks(decoded, lambda b: decrypt_tdes_ecb(expand_key(TDK), b))
    assert (clear_msg.fields["35"], clear_msg.fields["36"]) == (DEBIT.track2, msg.fields["36"])


def test_without_a_pin_53_goes_for_the_tracks_alone() -> None:
    msg = with_tracks_encrypted(swiped_sale(CREDIT, pin_block=None))
    assert msg.fields["53"] == "0610000000000000" and "52" not in msg.fields
    keyed = financial_request(FinancialParams(TxnKind.SALE, "000101", "000001", TERM, 100,
                                              card=CardInput("keyed", CREDIT.pan)))
    assert with_tracks_encrypted(keyed) == keyed  # no track: nothing for 53 to say


def test_the_codec_refuses_to_send_tracks_53_does_not_describe() -> None:
    with pytest.raises(LocalProtocolError, match="field 53 does not say so"):
        asyncio.run(encode_async(swiped_sale(), _mac, tracks=_tdk))
    with pytest.raises(LocalProtocolError, match="no track cipher"):
        asyncio.run(encode_async(with_tracks_encrypted(swiped_sale()), _mac))


def test_a_wrong_tdk_does_not_decrypt_to_a_track() -> None:
    frame = asyncio.run(encode_async(with_tracks_encrypted(swiped_sale()), _mac, tracks=_tdk))
    wrong = expand_key(bytes(16))
    with pytest.raises(RemoteProtocolError, match="does not decrypt to a track") as info:
        decrypt_tracks(decode(frame[2:]), lambda b: decrypt_tdes_ecb(wrong, b))
    assert info.value.field in ("35", "36")
    assert DEBIT.pan not in str(info.value)


def test_a_reversal_carries_no_track_and_no_53() -> None:
    params = FinancialParams(TxnKind.SALE, "000100", "000001", TERM, 5000,
                             card=CardInput("swipe", DEBIT.pan, track2=DEBIT.track2,
                                            pin_block=bytes(8)))
    rev = with_tracks_encrypted(reversal_request(params, "98", None))
    assert not {"35", "36", "52", "53"} & rev.fields.keys() and rev.fields["2"] == DEBIT.pan


# ---- the simulator's side ------------------------------------------------------------------

@pytest.fixture
def sim_term(tmp_path: Path):
    from board.sim.acquirer import SimulatorThread

    with SimulatorThread(tmp_path / "acquirer.db",
                         terminals=[(TEST_TID, TEST_MID, TEST_TMK)]) as sim, \
            SimTerminal(sim.port) as term:
        yield sim, term


def _encrypted_sale(term: SimTerminal, tdk: bytes, card=DEBIT) -> bytes:
    assert term.keys is not None
    params = term.params(TxnKind.SALE, 3000, card, pin=card.pin)
    mak = term.keys.mak

    async def cipher(block: bytes) -> bytes:
        return encrypt_tdes_ecb(expand_key(tdk), block)

    async def mac(data: bytes) -> bytes:
        return clear_mac(mak)(data)

    return asyncio.run(encode_async(with_tracks_encrypted(financial_request(params)), mac,
                                    tracks=cipher))


def test_the_simulator_decrypts_with_the_tdk_it_gave(sim_term) -> None:
    sim, term = sim_term
    assert term.sign_on(with_tdk=True).fields["39"] == "00"
    assert term.keys is not None and term.keys.tdk is not None
    term.send_bytes(_encrypted_sale(term, term.keys.tdk))
    reply = term.recv()
    assert reply is not None and reply.fields["39"] == "00"  # PAN, expiry and PIN read from 35
    assert [r.pan_masked[-4:] for r in sim.ledger.approved(TEST_TID)] == [DEBIT.pan[-4:]]


@pytest.mark.parametrize("signed_on_with_tdk", [True, False])
def test_the_simulator_refuses_tracks_it_cannot_decrypt(sim_term, signed_on_with_tdk) -> None:
    """A wrong TDK, or encrypted tracks from a terminal that asked for no TDK: 30 (format
    error), nothing booked."""
    sim, term = sim_term
    assert term.sign_on(with_tdk=signed_on_with_tdk).fields["39"] == "00"
    term.send_bytes(_encrypted_sale(term, bytes.fromhex("0123456789ABCDEF" * 2)))
    reply = term.recv()
    assert reply is not None and reply.fields["39"] == "30"
    assert sim.ledger.approved(TEST_TID) == []


# ---- the terminal end to end: the wire -----------------------------------------------------

def _set_track_encryption(data_dir: Path, on: bool) -> None:
    path = data_dir / "settings.json"
    settings = json.loads(path.read_text())
    settings["comms"]["track_encryption"] = on
    path.write_text(json.dumps(settings))


async def _two_sales(data_dir: Path):
    t = Terminal(AppConfig(data_dir=data_dir))
    await t.start()
    try:
        return [await sale(t, 1200, "cup_credit"), await sale(t, 1300, "cup_debit")], t
    finally:
        await t.close()


@pytest.mark.parametrize("on", [True, False])
def test_the_tracks_on_the_wire(tmp_path: Path, sim, on: bool) -> None:
    tap = WireTap(sim.port)
    try:
        data_dir = provision(tmp_path / "terminal", tap.port)
        _set_track_encryption(data_dir, on)
        results, _ = run(_two_sales(data_dir))
        frames = [wire_fields(f.payload) for f in tap.frames() if f.to_host]
    finally:
        tap.close()
    assert [r.status for r in results] == ["approved", "approved"], results  # the host read them
    signon = next(f for f in frames if f["t"] == "0800")
    assert signon["60"][8:11] == ("004" if on else "003")
    sales = [f for f in frames if f["t"] == "0200"]
    assert len(sales) == 2
    for fields, card in zip(sales, (CREDIT, DEBIT), strict=True):
        clear = card.track2.replace("=", "D")
        if on:
            assert fields["35"] != clear and len(fields["35"]) == len(clear)
            assert fields["53"][2] == "1"
            # The PAN's first digits lie outside the block: only the block differs.
            block = track_block(len(clear))
            sent, plain = bytes.fromhex(fields["35"] + "0" * (len(clear) % 2)), packed_track(
                card.track2)
            assert sent[:block.start] == plain[:block.start] and sent[block] != plain[block]
        else:
            assert fields["35"] == clear
            assert "53" not in fields or fields["53"][2] == "0"
    assert ("53" in sales[0]) is on  # a swipe without PIN carries 53 for the tracks alone
    assert sales[1]["53"] == ("2610000000000000" if on else "2600000000000000")


def test_a_reversal_with_track_encryption_on_carries_no_track(tmp_path: Path, sim) -> None:
    tap = WireTap(sim.port)
    try:
        data_dir = provision(tmp_path / "terminal", tap.port)
        _set_track_encryption(data_dir, True)
        sim.add_fault("drop", mti="0200", count=1)

        async def go():
            t = Terminal(AppConfig(data_dir=data_dir))
            await t.start()
            try:
                first = await sale(t, 1400, "cup_debit")  # no reply: reversed
                second = await sale(t, 1500, "cup_debit")  # the reversal goes first
                return first, second
            finally:
                await t.close()

        first, second = run(go())
        frames = [wire_fields(f.payload) for f in tap.frames() if f.to_host]
    finally:
        tap.close()
    assert first.status != "approved" and second.status == "approved"
    reversal = next(f for f in frames if f["t"] == "0400")
    assert not {"35", "36", "52", "53"} & reversal.keys() and reversal["2"] == DEBIT.pan


# ---- the host link and its key store (both kinds) ------------------------------------------

def test_the_link_signs_on_for_a_tdk_and_the_store_encrypts_the_block(
        host_store: StoreMaker) -> None:
    """Track encryption on: the 0800 asks 004, the reply's TDK goes into the store with the
    PIK and MAK, and the sale's 35 arrives with its block encrypted under that TDK (the store
    computed it: the development store, or the SoftHSM2 token's TDES)."""
    given = generate_working_keys(with_tdk=True)
    seen: list[Message] = []

    async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        signon = decode(await read_frame(reader)).message
        seen.append(signon)
        f62 = build_signon_keys(given, TEST_TMK)
        writer.write(encode(response_for(signon, "00", {"37": "000000000002", "62": f62})))
        request = decode(await read_frame(reader))
        assert given.tdk is not None
        seen.append(decrypt_tracks(request, lambda b: decrypt_tdes_ecb(expand_key(given.tdk), b)))
        seen.append(request.message)
        writer.write(encode(response_for(request.message, "00", {"37": "000000000003"}),
                            clear_mac(given.mak)))
        await writer.drain()
        await reader.read()

    async def go() -> Message:
        server = await asyncio.start_server(host, "127.0.0.1", 0)
        channel = HostChannel("127.0.0.1", server.sockets[0].getsockname()[1], connect_timeout=2)
        link = HostLink(channel, TERM, await host_store(tmk=TEST_TMK), track_encryption=True)
        try:
            async with asyncio.timeout(10):
                await link.sign_on("000001", "000001", "01", timeout=5)
                assert link.keys_store is not None and link.keys_store.has_working_key("TDK")
                return await link.request(swiped_sale(), mac=True, timeout=5)
        finally:
            await channel.close()
            server.close()

    reply = asyncio.run(go())
    assert reply.fields["39"] == "00"
    signon, clear, sent = seen
    assert signon.fields["60"][8:11] == "004"
    assert clear.fields["35"] == DEBIT.track2 and sent.fields["35"] != DEBIT.track2.replace("=", "D")
    assert sent.fields["53"] == "2610000000000000"


# ---- sign-on: the TDK asked for and not given ----------------------------------------------

def test_a_sign_on_reply_without_the_tdk_asked_for_fails_in_words(
        host_store: StoreMaker) -> None:
    """The host answers the 004 sign-on with only PIK and MAK: the sign-on fails saying what
    is missing and which setting asks for it; the keys of the last sign-on stay."""
    old = generate_working_keys(with_tdk=True)
    asked: list[str] = []

    async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = decode(await read_frame(reader)).message
        asked.append(req.fields["60"][8:11])
        f62 = build_signon_keys(generate_working_keys(with_tdk=False), TEST_TMK)
        writer.write(encode(response_for(req, "00", {"37": "000000000002", "62": f62})))
        await writer.drain()
        await reader.read()

    async def go() -> HostLink:
        server = await asyncio.start_server(host, "127.0.0.1", 0)
        channel = HostChannel("127.0.0.1", server.sockets[0].getsockname()[1], connect_timeout=2)
        link = HostLink(channel, TERM, await host_store(old, TEST_TMK), track_encryption=True)
        try:
            async with asyncio.timeout(10):
                with pytest.raises(RemoteProtocolError, match="asked for a track data key") as info:
                    await link.sign_on("000001", "000001", "01", timeout=5)
            assert info.value.field == "62" and "comms.track_encryption" in str(info.value)
            return link
        finally:
            await channel.close()
            server.close()

    link = asyncio.run(go())
    assert asked == ["004"]
    assert link.sign_on_required and asyncio.run(holds(link.keys_store, old))


def test_a_request_with_tracks_and_no_tdk_is_not_sent_in_clear(tmp_path: Path) -> None:
    """Track encryption on, but the store holds no TDK (keys of a sign-on that asked none):
    the request is refused before anything is sent, never sent in clear, and the link wants a
    sign-on (which asks for the TDK)."""
    async def go() -> None:
        store = await store_in(tmp_path / "keys", generate_working_keys(with_tdk=False))
        link = HostLink(HostChannel("127.0.0.1", 9), TERM, store, track_encryption=True)
        link.sign_on_required = False
        with pytest.raises(LocalProtocolError, match="no track data key: sign on again"):
            await link.request(swiped_sale(), mac=True, timeout=1)
        assert link.sign_on_required  # the next operation signs on, asking for a TDK

    asyncio.run(go())


# ---- the setting ---------------------------------------------------------------------------

def test_track_encryption_is_a_validated_setting_that_old_files_gain() -> None:
    settings = factory()
    assert settings["comms"]["track_encryption"] is False
    settings["comms"]["track_encryption"] = "yes"
    with pytest.raises(SettingsInvalid, match="track_encryption"):
        validate(settings)
    old = factory()
    del old["comms"]["track_encryption"]
    migrated, filled = migrate(old)
    assert migrated["comms"]["track_encryption"] is False
    assert "comms.track_encryption" in filled
