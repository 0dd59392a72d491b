"""Settings that reach the devices: comms retries (connect attempts), printer density (GS |, by
python-escpos) and display contrast (luma), each shown doing what the operator set."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import replace

import pytest

from drivers.display.luma_backend import LumaDisplay
from drivers.printer.render import render
from firmware.host.channel import HostChannel
from firmware.host.errors import NoReply
from firmware.ports import Align, Document, TextLine

DOC = Document((TextLine("density test", Align.LEFT),), title="test")


@pytest.mark.parametrize(("level", "command"), [
    (1, b"\x1d|\x01"), (3, b"\x1d|\x03"), (4, b"\x1d|\x04"), (5, b"\x1d|\x05"), (8, b"\x1d|\x08")])
@pytest.mark.parametrize("mode", ["text", "raster"])
def test_print_density_follows_the_setting(level: int, command: bytes, mode: str) -> None:
    chunks = render(replace(DOC, density=level), "58mm", mode=mode)
    assert chunks[1] == command  # right after ESC @, before anything prints
    plain = render(DOC, "58mm", mode=mode)
    assert b"\x1d|" not in b"".join(plain)  # no setting: the printer keeps its own


def test_a_density_out_of_range_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match=r"density 9 is outside 1\.\.8"):
        render(replace(DOC, density=9), "58mm")


def test_connect_retries_try_again_and_say_how_often(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed

    async def go() -> NoReply:
        channel = HostChannel("127.0.0.1", port, connect_timeout=1, connect_attempts=3)
        with pytest.raises(NoReply) as info:
            await channel.connect()
        return info.value

    with caplog.at_level(logging.WARNING, logger="posfw.host"):
        error = asyncio.run(go())
    assert error.reason == NoReply.LINK and "(3 attempts)" in error.detail
    assert [r.getMessage().endswith(f"(attempt {n} of 3)") for n, r in
            enumerate((r for r in caplog.records if "attempt" in r.getMessage()), 1)] == [True] * 3


def test_connect_retries_stop_at_the_first_success() -> None:
    async def go() -> bool:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        channel = HostChannel("127.0.0.1", port, connect_timeout=1, connect_attempts=3)
        await channel.connect()
        up = channel.connected
        await channel.close()
        server.close()
        await server.wait_closed()
        return up

    assert asyncio.run(go())


def test_contrast_reaches_a_luma_panel() -> None:
    from luma.core.device import dummy

    sent: list[int] = []
    panel = dummy(width=128, height=64, mode="1")
    panel.contrast = sent.append  # what the chip would be told, 0..255
    display = LumaDisplay(panel, 4, 16)
    display.set_contrast(10)
    display.set_contrast(1)
    assert sent == [255, 26]
    with pytest.raises(ValueError, match=r"outside 1\.\.10"):
        display.set_contrast(0)
