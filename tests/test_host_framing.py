"""Frame layout (firmware.host.framing): length prefix, TPDU, CUP header, stream reads."""

from __future__ import annotations

import asyncio

import pytest

from firmware.host.errors import LocalProtocolError, RemoteProtocolError
from firmware.host.framing import (
    DEFAULT_TPDU,
    MAX_FRAME,
    Header,
    frame,
    read_frame,
    split,
    swap_tpdu,
)


def test_default_header_bytes() -> None:
    assert Header().to_bytes().hex() == "603100000000"


def test_header_round_trip() -> None:
    h = Header(app_type="61", version="31", status="1", processing="3", reserved="123456")
    assert h.to_bytes().hex() == "613113123456"
    assert Header.from_bytes(h.to_bytes()) == h


@pytest.mark.parametrize(("raw", "offset"), [("6A3100000000", 0), ("60310000000F", 5),
                                             ("6031B0000000", 2)])
def test_header_non_bcd(raw: str, offset: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        Header.from_bytes(bytes.fromhex(raw))
    assert info.value.field == "header"
    assert info.value.offset == offset


@pytest.mark.parametrize("kwargs", [{"app_type": "6"}, {"status": "12"}, {"reserved": "00000A"},
                                    {"processing": ""}])
def test_header_rejects_bad_digits(kwargs: dict[str, str]) -> None:
    with pytest.raises(LocalProtocolError):
        Header(**kwargs)


def test_swap_tpdu() -> None:
    assert swap_tpdu(DEFAULT_TPDU).hex() == "6000000003"
    assert swap_tpdu(swap_tpdu(DEFAULT_TPDU)) == DEFAULT_TPDU


def test_frame_and_split() -> None:
    out = frame(DEFAULT_TPDU, Header(), b"\x08\x00body")
    assert out.hex() == "0011" + "6000030000" + "603100000000" + "0800" + b"body".hex()
    tpdu, header, body = split(out[2:])
    assert (tpdu, header, body) == (DEFAULT_TPDU, Header(), b"\x08\x00body")


def test_frame_too_large() -> None:
    frame(DEFAULT_TPDU, Header(), bytes(MAX_FRAME - 11))
    with pytest.raises(LocalProtocolError):
        frame(DEFAULT_TPDU, Header(), bytes(MAX_FRAME - 10))


@pytest.mark.parametrize("tpdu", [b"\x60\x00\x03\x00", bytes.fromhex("7000030000")])
def test_frame_rejects_bad_tpdu(tpdu: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        frame(tpdu, Header(), b"")


@pytest.mark.parametrize(("payload", "field", "offset"), [
    (bytes.fromhex("6000030000603100"), "tpdu", 8),  # too short
    (bytes.fromhex("7000030000603100000000") + b"xx", "tpdu", 0),  # TPDU id not 60
    (bytes.fromhex("6000030000603100E00000") + b"xx", "header", 8),  # header not BCD
])
def test_split_rejects(payload: bytes, field: str, offset: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        split(payload)
    assert (info.value.field, info.value.offset) == (field, offset)
    assert str(info.value).startswith(f"host message malformed: field {field} at byte {offset}")


def _read(data: bytes, *, eof: bool = True, max_len: int = MAX_FRAME, count: int = 1) -> list[bytes]:
    async def run() -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        return [await read_frame(reader, max_len) for _ in range(count)]
    return asyncio.run(run())


def test_read_frame_returns_payload() -> None:
    assert _read(b"\x00\x03abc\x00\x01z", count=2) == [b"abc", b"z"]


@pytest.mark.parametrize("prefix", [b"\x00\x00", (MAX_FRAME + 1).to_bytes(2, "big"), b"\xff\xff"])
def test_read_frame_bad_length(prefix: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        _read(prefix + bytes(10))
    assert info.value.field == "length"


def test_read_frame_custom_max() -> None:
    assert _read(b"\x00\x05hello", max_len=5) == [b"hello"]
    with pytest.raises(RemoteProtocolError):
        _read(b"\x00\x06hello!", max_len=5)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x05abc"])
def test_read_frame_eof_passes_through(data: bytes) -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        _read(data)
