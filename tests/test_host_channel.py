"""HostChannel / HostLink against a real asyncio TCP server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import hostkit
import p11kit
import pytest
from hostkit import TMK, StoreMaker, holds, store_in

from firmware.host.channel import HostChannel, HostLink
from firmware.host.codec import decode, encode, verify_mac
from firmware.host.errors import (
    KeyCheckError,
    KeyStoreFailed,
    LocalProtocolError,
    NoReply,
    RemoteProtocolError,
)
from firmware.host.framing import Header, read_frame
from firmware.host.keys import WorkingKeys, build_signon_keys, generate_working_keys
from firmware.host.mac import clear_mac
from firmware.host.messages import (
    CardInput,
    FinancialParams,
    Message,
    Terminal,
    TxnKind,
    echo_request,
    financial_request,
    response_for,
    reversal_request,
)

# The sign-on and MAC tests run on both key stores: the development store, a SoftHSM2 token.
host_store = hostkit.host_store
softhsm_template = p11kit.softhsm_template
KEYS = WorkingKeys(pik=bytes.fromhex("1A2A3D4C5E0B1A2C4C5E6B7A8C9D0E1A"),
                   mak=bytes.fromhex("2C2C2C2C2C2C2C2C4A4A4A4A4A4A4A4A"))
TERM = Terminal("TERM0001", "898440154110001")
PAN = "6225881234567890"
CARD = CardInput("swipe", PAN, track2=PAN + "=2512101", pin_block=bytes(8))

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def sale(stan: str = "000100", amount: int = 5000) -> Message:
    return financial_request(FinancialParams(TxnKind.SALE, stan, "000001", TERM, amount,
                                             card=CARD))


async def receive(reader: asyncio.StreamReader) -> Message:
    return decode(await read_frame(reader)).message


def reply(req: Message, code: str = "00", mak: bytes | None = KEYS.mak, **extra: str) -> bytes:
    return encode(response_for(req, code, {"37": "000000000001", **extra}),
                  clear_mac(mak) if mak is not None else None)


async def serve(script: Script) -> tuple[asyncio.Server, int]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    # pytest-asyncio is not used: each test owns its loop, with a hard deadline.
    async def bounded() -> Any:
        async with asyncio.timeout(10):
            return await test()
    return asyncio.run(bounded())


_KEYS_DIRS: list[Path] = []  # this test's tmp_path (the autouse fixture below)


@pytest.fixture(autouse=True)
def _keys_dir(tmp_path: Path) -> Iterator[None]:
    """Where linked() puts the development key store of the test's link."""
    _KEYS_DIRS.append(tmp_path / "keys")
    yield
    _KEYS_DIRS.pop()


async def linked(script: Script, keys: WorkingKeys | None = KEYS,
                 stores: StoreMaker | None = None
                 ) -> tuple[asyncio.Server, HostChannel, HostLink]:
    """A link to a scripted host; its key store holds `keys` (None: never signed on). The
    store: the development store, or one `stores` makes (the host_store fixture: both kinds)."""
    server, port = await serve(script)
    channel = HostChannel("127.0.0.1", port, connect_timeout=2)
    store = await (stores(keys) if stores is not None else store_in(_KEYS_DIRS[-1], keys))
    link = HostLink(channel, TERM, store)
    return server, channel, link


async def finish(server: asyncio.Server, channel: HostChannel) -> None:
    await channel.close()
    server.close()


def test_matching_reply_and_request_mac(host_store: StoreMaker) -> None:
    seen: list[bool] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        payload = await read_frame(r)
        d = decode(payload)
        seen.append(verify_mac(d, clear_mac(KEYS.mak)))
        w.write(reply(d.message, "00", **{"38": "123456"}))
        await r.read()

    async def test() -> Message:
        server, channel, link = await linked(script, stores=host_store)
        rep = await link.request(sale(), mac=True, timeout=2)
        assert channel.connected
        await finish(server, channel)
        return rep

    rep = run(test)
    assert seen == [True]
    assert rep.mti == "0210" and rep.fields["39"] == "00" and rep.fields["38"] == "123456"


def test_stray_reply_discarded_then_real_one_accepted(caplog: pytest.LogCaptureFixture) -> None:
    """Only the reply to this request decides the sale: a decline for another trace, an
    approval for another terminal with our trace, and a stale 0410 with our trace are all
    discarded and logged as strays; the terminal keeps the right 0210's code, auth code and RRN.

    Each stray carries a different response code, auth code and RRN from the right reply,
    so the assertions tell which reply was accepted (all four carry the request's amount).
    """
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await receive(r)
        # Wrong STAN: a decline the terminal must not keep.
        w.write(reply(replace(req, fields={**req.fields, "11": "999999"}), "51",
                      **{"37": "000000000051"}))
        # Our STAN, another terminal: an approval with someone else's auth code.
        w.write(reply(replace(req, fields={**req.fields, "41": "OTHER001"}), "00",
                      **{"38": "OTHER1", "37": "000000000041"}))
        # Our STAN and terminal, but a reversal reply (0410): not an answer to a 0200.
        w.write(reply(replace(req, mti="0400"), "05", **{"37": "000000000410"}))
        w.write(reply(req, "00", **{"38": "AUTH01", "37": "000000000001"}))
        await r.read()

    async def test() -> Message:
        server, channel, link = await linked(script)
        rep = await link.request(sale(), mac=True, timeout=2)
        await finish(server, channel)
        return rep

    with caplog.at_level(logging.WARNING, logger="posfw.host"):
        rep = run(test)
    assert (rep.mti, rep.fields["11"], rep.fields["41"]) == ("0210", "000100", TERM.tid)
    assert (rep.fields["39"], rep.fields["38"], rep.fields["37"]) == (
        "00", "AUTH01", "000000000001")
    strays = [r.getMessage() for r in caplog.records if "stray" in r.getMessage()]
    assert strays == ["discarded stray response MTI 0210 STAN 999999",
                      "discarded stray response MTI 0210 STAN 000100",
                      "discarded stray response MTI 0410 STAN 000100"]
    assert all(PAN not in r.getMessage() for r in caplog.records)


def test_reversal_reply_with_our_trace_does_not_answer_a_sale(
        caplog: pytest.LogCaptureFixture) -> None:
    """A 0410 carrying the sale's STAN, terminal, merchant and amount is not the sale's
    answer (the reply MTI is the request MTI + 10): with nothing else coming, the sale gets
    no reply (TIMEOUT, so the terminal reverses it) and never takes the 0410's approval."""
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await receive(r)
        w.write(reply(replace(req, mti="0400"), "00", **{"38": "REV001"}))
        await r.read()

    async def test() -> None:
        server, channel, link = await linked(script)
        with pytest.raises(NoReply) as exc:
            await link.request(sale(), mac=True, timeout=1)
        assert exc.value.reason == NoReply.TIMEOUT
        await finish(server, channel)

    with caplog.at_level(logging.WARNING, logger="posfw.host"):
        run(test)
    assert "discarded stray response MTI 0410 STAN 000100" in caplog.text


def test_timeout() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await receive(r)
        await r.read()  # never answers

    async def test() -> None:
        server, channel, link = await linked(script)
        with pytest.raises(NoReply) as info:
            await link.request(sale(), mac=True, timeout=0.2)
        assert info.value.reason == NoReply.TIMEOUT
        assert channel.connected  # a slow host is not a broken link
        await finish(server, channel)

    run(test)


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there

    async def test() -> None:
        channel = HostChannel("127.0.0.1", port, connect_timeout=2)
        with pytest.raises(NoReply) as info:
            await channel.exchange(b"\x00\x01x", lambda d: True, timeout=1)
        assert info.value.reason == NoReply.LINK
        assert "connect" in info.value.detail
        assert not channel.connected

    run(test)


def test_connection_closed_mid_wait() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await receive(r)  # then the handler returns and closes

    async def test() -> None:
        server, channel, link = await linked(script)
        with pytest.raises(NoReply) as info:
            await link.request(sale(), mac=True, timeout=2)
        assert info.value.reason == NoReply.LINK
        assert not channel.connected
        await finish(server, channel)

    run(test)


@pytest.mark.parametrize("garbage", [
    b"\x00\x05hello",  # a frame whose body is not ISO 8583
    b"\xff\xff" + bytes(10),  # a length no CUP message has: framing lost
    b"\x00\x0d" + bytes.fromhex("6000000003603100000000") + b"\x03\x00",  # unknown MTI
])
def test_garbage_frame_is_malformed_and_closes(garbage: bytes) -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await receive(r)
        w.write(garbage)
        await r.read()

    async def test() -> None:
        server, channel, link = await linked(script)
        with pytest.raises(NoReply) as info:
            await link.request(sale(), mac=True, timeout=2)
        assert info.value.reason == NoReply.MALFORMED
        await asyncio.sleep(0)
        assert not channel.connected
        await finish(server, channel)

    run(test)


@pytest.mark.parametrize(("mak", "why"), [(bytes(16), "does not verify"), (None, "no MAC")])
def test_bad_or_missing_mac(mak: bytes | None, why: str) -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(reply(await receive(r), "00", mak))
        await r.read()

    async def test() -> None:
        server, channel, link = await linked(script)
        with pytest.raises(NoReply, match=why) as info:
            await link.request(sale(), mac=True, timeout=2)
        assert info.value.reason == NoReply.BAD_MAC
        await finish(server, channel)

    run(test)


def test_decline_without_mac_is_accepted() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(reply(await receive(r), "51", None))
        await r.read()

    async def test() -> Message:
        server, channel, link = await linked(script)
        rep = await link.request(sale(), mac=True, timeout=2)
        await finish(server, channel)
        return rep

    assert run(test).fields["39"] == "51"


def test_reversal_reply_mac_checked_even_when_not_00() -> None:
    p = FinancialParams(TxnKind.SALE, "000100", "000001", TERM, 5000, card=CARD)

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(reply(await receive(r), "25", bytes(16)))
        await r.read()

    async def test() -> None:
        server, channel, link = await linked(script)
        with pytest.raises(NoReply) as info:
            await link.request(reversal_request(p, "98", None), mac=True, timeout=2)
        assert info.value.reason == NoReply.BAD_MAC
        await finish(server, channel)

    run(test)


def test_amount_differs() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(reply(await receive(r), "00", **{"4": "000000000001"}))
        await r.read()

    async def test() -> None:
        server, channel, link = await linked(script)
        with pytest.raises(NoReply, match="amount differs") as info:
            await link.request(sale(), mac=True, timeout=2)
        assert info.value.reason == NoReply.MALFORMED
        await finish(server, channel)

    run(test)


def test_cancelled_request_then_next_works(caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> Message:
        go = asyncio.Event()

        async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            first = await receive(r)
            await go.wait()  # answer the first request only after it was cancelled
            w.write(reply(first))
            second = await receive(r)
            w.write(reply(second))
            await r.read()

        server, channel, link = await linked(script)
        task = asyncio.create_task(link.request(sale("000100"), mac=True, timeout=5))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        go.set()
        rep = await link.request(sale("000101"), mac=True, timeout=2)
        await finish(server, channel)
        return rep

    with caplog.at_level(logging.WARNING, logger="posfw.host"):
        rep = run(test)
    assert rep.fields["11"] == "000101"
    assert "discarded stray response MTI 0210 STAN 000100" in caplog.text


def test_close_while_waiting_is_cancelled() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await receive(r)
        await r.read()

    async def test() -> None:
        server, channel, link = await linked(script)
        task = asyncio.create_task(link.request(sale(), mac=True, timeout=5))
        await asyncio.sleep(0.1)
        await channel.close()
        with pytest.raises(NoReply) as info:
            await task
        assert info.value.reason == NoReply.CANCELLED
        server.close()

    run(test)


def test_reconnects_after_host_closes() -> None:
    connections: list[int] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        connections.append(1)
        w.write(reply(await receive(r)))
        await w.drain()  # short connection: one exchange, then close

    async def test() -> None:
        server, channel, link = await linked(script)
        for stan in ("000100", "000101", "000102"):
            assert (await link.request(sale(stan), mac=True, timeout=2)).fields["11"] == stan
            await asyncio.sleep(0.05)
        await finish(server, channel)

    run(test)
    assert len(connections) == 3


def test_echo_matched_without_stan() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await receive(r)
        w.write(encode(response_for(req, "00", {})))
        await r.read()

    async def test() -> Message:
        server, channel, link = await linked(script, keys=None)
        rep = await link.request(echo_request(TERM, "000001"), mac=False, timeout=2)
        await finish(server, channel)
        return rep

    rep = run(test)
    assert rep.mti == "0830" and "11" not in rep.fields


def test_mac_without_keys_is_local_error() -> None:
    async def test() -> None:
        link = HostLink(HostChannel("127.0.0.1", 9), TERM, await store_in(_KEYS_DIRS[-1]))
        with pytest.raises(LocalProtocolError, match="sign on"):
            await link.request(sale(), mac=True, timeout=1)

    run(test)


def _signon_script(keys: WorkingKeys, corrupt: bool = False, code: str = "00") -> Script:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await receive(r)
        f62 = build_signon_keys(keys, TMK)
        if corrupt:  # flip a bit of the MAC key's check value
            raw = bytearray(bytes.fromhex(f62))
            raw[39] ^= 1
            f62 = raw.hex().upper()
        extra = {"12": "101010", "13": "1122", "32": "48020000", "37": "000000000002",
                 "60": "00000042003", "62": f62}
        w.write(encode(response_for(req, code, extra if code == "00" else {})))
        await r.read()
    return script


def test_sign_on_installs_keys(host_store: StoreMaker) -> None:
    fresh = generate_working_keys(with_tdk=True)

    async def test() -> tuple[Message, HostLink]:
        server, channel, link = await linked(_signon_script(fresh), keys=None, stores=host_store)
        assert link.sign_on_required
        rep = await link.sign_on("000001", "000001", "01", with_tdk=True, timeout=2)
        await finish(server, channel)
        return rep, link

    rep, link = run(test)
    assert asyncio.run(holds(link.keys_store, fresh)) and link.has_keys
    assert not link.sign_on_required
    assert rep.fields["60"][2:8] == "000042"  # the batch the caller adopts
    assert fresh.mak.hex() not in repr(link).lower()


def test_sign_on_bad_check_value(host_store: StoreMaker) -> None:
    """A check value mismatch fails the sign-on in words; the keys of the last sign-on stay
    installed and usable (holds() works them through the store)."""
    async def test() -> HostLink:
        server, channel, link = await linked(_signon_script(generate_working_keys(False), True),
                                             stores=host_store)
        with pytest.raises(KeyCheckError, match="MAC key check value mismatch"):
            await link.sign_on("000001", "000001", "01", timeout=2)
        await finish(server, channel)
        return link

    link = run(test)
    assert asyncio.run(holds(link.keys_store, KEYS))  # previous keys untouched
    assert link.sign_on_required


def test_sign_on_declined(host_store: StoreMaker) -> None:
    async def test() -> tuple[Message, HostLink]:
        server, channel, link = await linked(_signon_script(KEYS, code="97"), keys=None,
                                             stores=host_store)
        rep = await link.sign_on("000001", "000001", "01", timeout=2)
        await finish(server, channel)
        return rep, link

    rep, link = run(test)
    assert rep.fields["39"] == "97"
    assert not link.has_keys and link.sign_on_required


@pytest.mark.parametrize(("code", "processing", "required"), [
    ("00", "0", False), ("05", "0", False), ("22", "0", True), ("77", "0", True),
    ("99", "0", True), ("A0", "0", True), ("00", "3", True),
])
def test_sign_on_required_signals(code: str, processing: str, required: bool) -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await receive(r)
        rep = response_for(req, code, {})
        w.write(encode(replace(rep, header=Header(processing=processing)), clear_mac(KEYS.mak)))
        await r.read()

    async def test() -> HostLink:
        server, channel, link = await linked(script)
        link.sign_on_required = False
        await link.request(sale(), mac=True, timeout=2)
        await finish(server, channel)
        return link

    assert run(test).sign_on_required is required


def reset(w: asyncio.StreamWriter) -> None:
    """Drop the connection as a crashed host or a middlebox does: an RST, not a FIN."""
    w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack("ii", 1, 0))
    w.transport.abort()


def test_a_send_that_fails_is_a_lost_link_and_the_connection_is_dropped() -> None:
    """The host resets the connection while the request is still being written (it reads
    nothing of a frame too big for the socket buffers): the request is NoReply(LINK) "send
    failed", so the caller reverses as for any lost link, and the channel keeps nothing of the
    dead connection (no writer, no reader task): the next exchange dials afresh."""
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readexactly(1)  # the frame is arriving; the rest stays unread in the buffers
        reset(w)

    async def test() -> None:
        server, channel, _ = await linked(script)
        with pytest.raises(NoReply) as info:
            await channel.exchange(b"\x00\x01" + bytes(32 << 20), lambda d: True, timeout=5)
        assert info.value.reason == NoReply.LINK
        assert info.value.detail.startswith("send failed")
        assert not channel.connected
        # The dead connection was let go of at once, not left to the next exchange to find.
        assert channel._writer is None and channel._reader_task is None
        await finish(server, channel)

    run(test)


def test_a_connection_reset_while_waiting_for_the_reply_is_a_lost_link() -> None:
    """The host takes the request, then the connection is reset: the waiting request ends at
    once as NoReply(LINK) "connection lost" (the reversal path), not after its timeout and
    never as a malformed reply."""
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await receive(r)
        reset(w)

    async def test() -> None:
        server, channel, link = await linked(script)
        with pytest.raises(NoReply) as info:
            await link.request(sale(), mac=True, timeout=5)
        assert info.value.reason == NoReply.LINK
        assert info.value.detail.startswith("connection lost")
        assert not channel.connected
        await finish(server, channel)

    run(test)


def test_a_reply_matcher_that_raises_ends_the_request_with_its_error() -> None:
    """If deciding whether a reply answers the request fails, the request ends at once with that
    error (the caller treats it as no usable reply) instead of waiting out its timeout; the
    reader carries on."""
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(reply(await receive(r)))
        await r.read()

    def faulty(d: object) -> bool:
        raise ValueError("matcher broke")

    async def test() -> None:
        server, channel, _ = await linked(script)
        with pytest.raises(ValueError, match="matcher broke"):
            await channel.exchange(encode(sale(), clear_mac(KEYS.mak)), faulty, timeout=5)
        assert channel.connected
        await finish(server, channel)

    run(test)


def test_an_approved_sign_on_without_working_keys_is_an_error_naming_field_62() -> None:
    """A sign-on reply that approves (00) but carries no field 62 installs nothing: the error
    names field 62, the previous keys stay and a sign-on is still required."""
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await receive(r)
        w.write(encode(response_for(req, "00", {"37": "000000000002", "60": "00000042003"})))
        await r.read()

    async def test() -> HostLink:
        server, channel, link = await linked(script)
        with pytest.raises(RemoteProtocolError, match="no working keys") as info:
            await link.sign_on("000001", "000001", "01", timeout=2)
        assert info.value.field == "62"
        await finish(server, channel)
        return link

    link = run(test)
    assert asyncio.run(holds(link.keys_store, KEYS)) and link.sign_on_required


@pytest.mark.parametrize(("attempts", "dials", "said"), [(None, 1, ""), (0, 1, ""), (1, 1, ""),
                                                         (2, 2, " (2 attempts)")])
def test_the_host_is_dialled_as_often_as_configured_and_at_least_once(
        attempts: int | None, dials: int, said: str, caplog: pytest.LogCaptureFixture) -> None:
    """comms.retries + 1 connect attempts (one unless told), never fewer than one, each logged
    "attempt n of m"; then the link is down (NoReply LINK), and the words count the attempts
    only when there were several."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there

    async def test() -> NoReply:
        told = {} if attempts is None else {"connect_attempts": attempts}
        channel = HostChannel("127.0.0.1", port, connect_timeout=2, **told)
        with pytest.raises(NoReply) as info:
            await channel.connect()
        return info.value

    with caplog.at_level(logging.WARNING, logger="posfw.host"):
        error = run(test)
    tried = [r.getMessage() for r in caplog.records if "(attempt " in r.getMessage()]
    assert [t.rsplit("(", 1)[1] for t in tried] == [f"attempt {n} of {dials})"
                                                    for n in range(1, dials + 1)]
    assert error.reason == NoReply.LINK
    assert error.detail.startswith(f"connect to 127.0.0.1:{port} failed")
    assert error.detail.endswith(said) and ("attempts)" in error.detail) == bool(said)


@pytest.mark.parametrize(("mak", "auth", "kept"), [
    (bytes(16), "123456", "123456"), (None, "654321", "654321"), (bytes(16), "      ", None)])
def test_a_reply_refused_for_its_mac_still_hands_over_its_auth_code(
        mak: bytes | None, auth: str, kept: str | None) -> None:
    """An approval whose MAC is missing or wrong is no reply, but its field 38 (spaces
    stripped; blank is none) goes with the NoReply: the reversal sends it back to the host
    (dialect section 5)."""
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(reply(await receive(r), "00", mak, **{"38": auth}))
        await r.read()

    async def test() -> NoReply:
        server, channel, link = await linked(script)
        with pytest.raises(NoReply) as info:
            await link.request(sale(), mac=True, timeout=2)
        await finish(server, channel)
        return info.value

    error = run(test)
    assert (error.reason, error.auth_code) == (NoReply.BAD_MAC, kept)


def test_a_sign_on_asks_for_pik_and_mak_only_unless_a_tdk_is_wanted() -> None:
    """The 0800 asks for PIK + MAK (60.3 = 003) unless the caller wants a TDK too (004)."""
    asked: list[str] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await receive(r)
        asked.append(req.fields["60"][8:11])
        w.write(encode(response_for(req, "96", {})))
        await r.read()

    async def test() -> None:
        for tdk in ({}, {"with_tdk": True}):
            server, channel, link = await linked(script, keys=None)
            await link.sign_on("000001", "000001", "01", timeout=2, **tdk)
            await finish(server, channel)

    run(test)
    assert asked == ["003", "004"]


def test_a_failed_send_leaves_no_unretrieved_error_behind() -> None:
    """When the send fails, the reader has usually seen the reset first and put its own error on
    the request's future; the request raises "send failed" instead, and must still mark that
    error retrieved: otherwise asyncio reports "Future exception was never retrieved" into the
    log of a terminal that did nothing wrong. Nothing is left for the loop's error handler."""
    import gc

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readexactly(1)
        reset(w)

    async def test() -> list[dict[str, Any]]:
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        server, channel, _ = await linked(script)
        with pytest.raises(NoReply, match="send failed"):
            await channel.exchange(b"\x00\x01" + bytes(32 << 20), lambda d: True, timeout=5)
        await finish(server, channel)
        gc.collect()
        await asyncio.sleep(0)
        return reported

    assert run(test) == []


def test_a_host_that_stops_sending_is_let_go_of_at_once() -> None:
    """The host half-closes its side (FIN) and waits: the terminal's reader sees the end and
    closes the terminal's side too, at once, so the host's read ends instead of holding a
    connection the terminal can no longer use (the next request dials afresh)."""
    async def test() -> bytes:
        host_saw_end = asyncio.get_running_loop().create_future()

        async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(reply(await receive(r)))
            w.write_eof()
            host_saw_end.set_result(await r.read())

        server, channel, link = await linked(script)
        assert (await link.request(sale(), mac=True, timeout=2)).fields["39"] == "00"
        async with asyncio.timeout(3):
            rest = await host_saw_end
        assert not channel.connected
        await finish(server, channel)
        return rest

    assert run(test) == b""


def test_closing_the_channel_ends_its_reader_before_it_returns() -> None:
    """After close() returns, the connection's reader task has finished (none is left to hand a
    late reply of the old connection to a request made after the close) and the host sees the
    connection end."""
    async def test() -> None:
        host_saw_end = asyncio.get_running_loop().create_future()

        async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(reply(await receive(r)))
            host_saw_end.set_result(await r.read())

        server, channel, link = await linked(script)
        await link.request(sale(), mac=True, timeout=2)
        readers = [t for t in asyncio.all_tasks() if t.get_name().startswith("host-reader")]
        assert len(readers) == 1 and not readers[0].done()
        await channel.close()
        assert readers[0].done()
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("host-reader")]
        assert not channel.connected
        async with asyncio.timeout(3):
            assert await host_saw_end == b""
        server.close()

    run(test)


def test_a_message_sent_without_a_mac_carries_none_even_when_keys_are_installed() -> None:
    """After sign-on the link holds a MAK; an echo (sent with mac=False) still goes without
    field 64 and without its bitmap bit: only the messages the dialect MACs carry one."""
    seen: list[bytes] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        payload = await read_frame(r)
        seen.append(payload)
        w.write(encode(response_for(decode(payload).message, "00", {})))
        await r.read()

    async def test() -> None:
        server, channel, link = await linked(script, keys=KEYS)
        await link.request(echo_request(TERM, "000001"), mac=False, timeout=2)
        await finish(server, channel)

    run(test)
    sent = decode(seen[0]).message
    assert sent.mti == "0820" and "64" not in sent.fields


def test_sign_on_without_a_terminal_master_key_says_so_in_words(host_store: StoreMaker) -> None:
    """The store cannot take the keys (it holds no TMK): KeyStoreFailed with the store's words
    (which file, which token object), nothing installed, a sign-on still required."""
    async def test() -> HostLink:
        server, port = await serve(_signon_script(generate_working_keys(False)))
        channel = HostChannel("127.0.0.1", port, connect_timeout=2)
        link = HostLink(channel, TERM, await host_store(tmk=None))
        with pytest.raises(KeyStoreFailed, match=r"cannot install the working keys: .*"
                           r"(terminal master key file .*tmk\.key is missing|"
                           r"holds no terminal master key \(posfw-tmk\))"):
            await link.sign_on("000001", "000001", "01", timeout=2)
        await finish(server, channel)
        return link

    link = run(test)
    assert not link.has_keys and link.sign_on_required


@pytest.mark.parametrize(("host_algorithm", "verifies"), [("x9_19", True), ("cup_ecb", False)])
def test_the_x9_19_setting_macs_both_ways(host_algorithm: str, verifies: bool,
                                          host_store: StoreMaker) -> None:
    """mac_algorithm="x9_19": the request's field 64 is the X9.19 MAC of its MAC block under
    the double-length MAK, and only a reply MACed the same way is taken."""
    seen: list[bool] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        d = decode(await read_frame(r))
        seen.append(verify_mac(d, clear_mac(KEYS.mak, "x9_19")))
        w.write(encode(response_for(d.message, "00", {"37": "000000000001"}),
                       clear_mac(KEYS.mak, host_algorithm)))
        await r.read()

    async def test() -> None:
        server, port = await serve(script)
        channel = HostChannel("127.0.0.1", port, connect_timeout=2)
        link = HostLink(channel, TERM, await host_store(KEYS), mac_algorithm="x9_19")
        try:
            if verifies:
                assert (await link.request(sale(), mac=True, timeout=2)).fields["39"] == "00"
            else:
                with pytest.raises(NoReply, match="does not verify"):
                    await link.request(sale(), mac=True, timeout=2)
        finally:
            await finish(server, channel)

    run(test)
    assert seen == [True]


def test_an_unknown_mac_algorithm_is_refused_in_words() -> None:
    with pytest.raises(LocalProtocolError, match="MAC algorithm must be one of cup_ecb, x9_19"):
        HostLink(HostChannel("127.0.0.1", 9), TERM, None, mac_algorithm="cbc")
