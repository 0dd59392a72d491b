"""A reply answers a request only if its MTI is the request's MTI + 10 (issue 14).

HostLink (firmware/host/channel.py) matches a reply to the one outstanding request on MTI + 10,
STAN (11), terminal (41) and merchant (42). These tests run HostLink against a real asyncio host
on 127.0.0.1 that, before the true reply, sends a reply of another type carrying the same STAN,
terminal, merchant and amount, MACed correctly: e.g. the 0410 of a reversal while a 0200 waits.
The link must return the true reply (its code, its MTI) and drop the other as a stray; taking
the wrong one would approve a sale the host declined, or close a reversal the host never saw.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hostkit import store_in

from firmware.host.channel import HostChannel, HostLink
from firmware.host.codec import decode, encode
from firmware.host.framing import read_frame
from firmware.host.keys import WorkingKeys
from firmware.host.mac import clear_mac
from firmware.host.messages import (
    CardInput,
    FinancialParams,
    Message,
    Terminal,
    TxnKind,
    financial_request,
    response_for,
    reversal_request,
)

KEYS = WorkingKeys(pik=bytes.fromhex("1A2A3D4C5E0B1A2C4C5E6B7A8C9D0E1A"),
                   mak=bytes.fromhex("2C2C2C2C2C2C2C2C4A4A4A4A4A4A4A4A"))
TERM = Terminal("TERM0001", "898440154110001")
PAN = "6225881234567890"
SWIPED = CardInput("swipe", PAN, track2=PAN + "=2512101", pin_block=bytes(8))
KEYED = CardInput("keyed", PAN)


def _params(kind: TxnKind) -> FinancialParams:
    card = SWIPED if kind in (TxnKind.SALE, TxnKind.PREAUTH) else KEYED
    return FinancialParams(kind, "000321", "000001", TERM, 5000, card=card,
                           orig_rrn="000000000777", orig_batch="000001", orig_stan="000111",
                           orig_date="0102", orig_auth="123456")


def _request(kind: str) -> Message:
    if kind == "reversal":
        return reversal_request(_params(TxnKind.SALE), "98", None)
    return financial_request(_params(TxnKind(kind)))


def _reply_as(request: Message, mti: str, code: str, auth: str) -> bytes:
    """A reply with the request's echoed fields (11, 41, 42, 4 ...) under `mti`, MACed."""
    base = response_for(request, code, {"37": "000000000001", "38": auth})
    return encode(Message(mti, base.fields, header=base.header, tpdu=base.tpdu),
                  clear_mac(KEYS.mak))


# (request, a reply of another type with the same STAN) -> the true reply's MTI.
CASES = [
    pytest.param("sale", "0410", "0210", id="0410-does-not-answer-a-0200"),
    pytest.param("sale", "0230", "0210", id="0230-does-not-answer-a-0200"),
    pytest.param("sale", "0110", "0210", id="0110-does-not-answer-a-0200"),
    pytest.param("preauth", "0210", "0110", id="0210-does-not-answer-a-0100"),
    pytest.param("refund", "0210", "0230", id="0210-does-not-answer-a-0220"),
    pytest.param("reversal", "0210", "0410", id="0210-does-not-answer-a-0400"),
]


def _run(test: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(10):  # a hard deadline: a wrong match must not hang
            return await test()
    return asyncio.run(bounded())


@pytest.mark.parametrize(("kind", "wrong_mti", "right_mti"), CASES)
def test_a_reply_of_another_type_with_the_same_stan_is_not_the_answer(
        kind: str, wrong_mti: str, right_mti: str, caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    """The pending request gets its own reply type (MTI + 10), here a decline (05) that follows
    an approval-looking "00" of another type carrying the same STAN: the link returns the 05."""
    request = _request(kind)
    assert f"{int(request.mti) + 10:04d}" == right_mti
    seen: list[Message] = []

    async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = decode(await read_frame(reader)).message
        seen.append(got)
        writer.write(_reply_as(got, wrong_mti, "00", "999999"))  # not the answer
        writer.write(_reply_as(got, right_mti, "05", "111111"))  # the answer
        await writer.drain()
        await reader.read()  # hold the connection until the terminal closes it

    async def go() -> Message:
        server = await asyncio.start_server(host, "127.0.0.1", 0)
        channel = HostChannel("127.0.0.1", server.sockets[0].getsockname()[1],
                              connect_timeout=2)
        link = HostLink(channel, TERM, await store_in(tmp_path / "keys", KEYS))
        try:
            return await link.request(request, mac=True, timeout=5)
        finally:
            await channel.close()
            server.close()
            await server.wait_closed()

    with caplog.at_level(logging.WARNING, logger="posfw.host"):
        reply = _run(go)
    assert seen and seen[0].mti == request.mti
    assert reply.mti == right_mti
    assert (reply.fields["39"], reply.fields["38"]) == ("05", "111111")
    assert reply.fields["11"] == request.fields["11"]
    assert f"discarded stray response MTI {wrong_mti} STAN {request.fields['11']}" in caplog.text
