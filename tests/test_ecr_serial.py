"""The ECR link over a serial port: a real pseudo-terminal, the terminal as a process."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import pty
import select
import socket
import subprocess
import sys
import time
import tty

from ecrkit import serial_terminal
from helpers import REPO, TID, run

from firmware.app.core.terminal import AppConfig
from firmware.app.frontends.ecr_server import EcrServer
from firmware.app.terminal import Terminal
from firmware.ecr.protocol import MAX_LINE


def read_line(fd: int, timeout: float = 20.0) -> dict:
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no reply line, got {buf!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            buf += os.read(fd, 4096)
    return json.loads(buf.split(b"\n")[0])


def test_sale_and_garbage_over_a_serial_ecr_link(data_dir, sim):
    master, slave = pty.openpty()
    tty.setraw(master)
    slave_path = os.ttyname(slave)
    ready = data_dir / "ready"
    with open(data_dir / "stderr.log", "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "board.sim.firmware", "--data", str(data_dir), "--ecr-port", "0",
             "--ecr-serial", slave_path, "--ready-file", str(ready)],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=err)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        os.write(master, b"\x00\xff line noise\n")
        noise = read_line(master)
        assert noise["ok"] is False and "not valid JSON" in noise["message"]
        while True:  # the link is open at once; money waits for the start-up sign-on
            os.write(master, b'{"op": "status"}\n')
            if not read_line(master)["busy"]:
                break
            assert time.monotonic() < deadline + 30, "still busy after start-up"
            time.sleep(0.05)
        os.write(master, b'{"id": 1, "op": "sale", "amount": 2345, "card": "visa"}\n')
        reply = read_line(master)
        assert reply["id"] == 1 and reply["result"] == "approved", reply
        assert reply["pan"].startswith("400000") and "*" in reply["pan"]
        assert len(sim.ledger.approved(TID)) == 1
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(master)
        os.close(slave)


def test_an_ecr_serial_port_that_cannot_be_opened_is_said_in_words_and_tcp_still_serves(data_dir, sim):
    not_a_port = data_dir / "not-a-port"  # exists, but opening it as a port fails
    not_a_port.mkdir()
    ready = data_dir / "ready"
    with open(data_dir / "stderr.log", "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "firmware.app", "--data", str(data_dir), "--ecr-port", "0",
             "--ecr-serial", str(not_a_port), "--ready-file", str(ready)],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=err)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", int(ready.read_text())), timeout=10) as link:
            link.sendall(b'{"id": 7, "op": "status"}\n')
            reply = json.loads(link.makefile("rb").readline())
        assert reply["id"] == 7 and reply["ok"] is True
    finally:
        proc.terminate()
        proc.wait(10)
    log = (data_dir / "stderr.log").read_text()
    assert f"ECR serial port {not_a_port} cannot be opened (Is a directory)" in log


# -- framing and back-pressure (issue 12, item 11) ------------------------------------------------

def test_the_tail_of_an_over_long_line_never_runs_as_a_request(data_dir, sim):
    with serial_terminal(data_dir) as term:
        term.write(b'{"op": "status", "pad": "' + b"x" * (MAX_LINE + 500))  # no end of line yet
        refused = term.reply()
        assert refused["ok"] is False and "longer than" in refused["message"]
        term.write(b'{"id": "smuggled", "op": "signoff"}\n')  # the same line's tail
        # Ask until the terminal is idle: a signoff begun from that tail would have answered by then.
        ids: list[str] = []
        for n in itertools.count():
            term.write(json.dumps({"id": f"poll-{n}", "op": "status"}).encode() + b"\n")
            reply = term.reply()
            ids.append(reply["id"])
            while reply["id"] != f"poll-{n}":
                reply = term.reply()
                ids.append(reply["id"])
            if not reply["busy"]:
                break
    assert all(i.startswith("poll-") for i in ids), ids
    assert reply["signed_on"] is True  # the smuggled signoff never ran


# A request whose reply is small and of fixed size (a status reply grows with what the terminal
# reports), so every reply of what the terminal took in fits under the output cap.
STATUS = b'{"op": "cancel"}\n'


def fill_until_refused(fd: int, cap: int = 256 * 1024) -> tuple[int, bytes]:
    """Writes status requests until the terminal stops taking them: (requests begun, the rest of
    the one cut short, if any: the pty takes what fits)."""
    stream = STATUS * (cap // len(STATUS))
    os.set_blocking(fd, False)
    written = 0
    try:
        while written < len(stream):
            try:
                written += os.write(fd, stream[written:written + 4096])
            except BlockingIOError:
                begun = -(-written // len(STATUS))
                return begun, stream[written:begun * len(STATUS)]
    finally:
        os.set_blocking(fd, True)
    raise AssertionError(f"the terminal kept reading {written} bytes of requests it could not answer")


def read_until_final(fd: int, final: bytes, expected: int, timeout: float = 60.0) -> list[bytes]:
    """Reads reply lines, writing `final` once the terminal takes input again, until the final
    request's reply and `expected` lines in all have come (each request is answered by its own
    task, so the final reply may overtake the last of the others)."""
    buf, to_send = b"", final
    deadline = time.monotonic() + timeout
    final_seen = False
    while not final_seen or buf.count(b"\n") < expected:
        left = deadline - time.monotonic()
        lines = buf.count(b"\n")
        assert left > 0, f"{lines} reply lines of {expected} (the final one seen: {final_seen})"
        readable, writable, _ = select.select([fd], [fd] if to_send else [], [], left)
        if readable:
            buf += os.read(fd, 65536)
            final_seen = b'"id":"final"' in buf
        if writable:
            to_send = to_send[os.write(fd, to_send):]
    return buf.split(b"\n")[:-1]


def test_a_serial_peer_that_stops_reading_is_back_pressured_not_spun_on(data_dir, sim):
    master, slave = pty.openpty()
    tty.setraw(master)

    async def go():
        t = Terminal(AppConfig(data_dir=data_dir, printer_path="", reader_path=""))
        await t.start()
        server = EcrServer(t, "127.0.0.1", 0, os.ttyname(slave))
        await server.start()
        try:
            sent, rest = await asyncio.to_thread(fill_until_refused, master)
            wall, cpu = time.monotonic(), time.process_time()
            await asyncio.sleep(1.0)  # the measuring window: the till reads nothing
            share = (time.process_time() - cpu) / (time.monotonic() - wall)
            final = rest + b'{"id":"final","op":"status"}\n'
            lines = await asyncio.to_thread(read_until_final, master, final, sent + 1)
        finally:
            await server.close()
            await t.close()
        return sent, share, lines

    try:
        sent, share, lines = run(go())
    finally:
        os.close(master)
        os.close(slave)
    assert share < 0.2, f"{share:.0%} of a CPU while the till did not read"
    replies = [json.loads(line) for line in lines]
    assert len(replies) == sent + 1  # every request answered once, none lost, once it read again
    assert all(r["ok"] is True for r in replies)


def test_replies_past_the_cap_are_dropped_whole_and_logged(caplog):
    from firmware.app.frontends.ecr_server import OUTPUT_CAP, SerialPeer

    master, slave = pty.openpty()
    tty.setraw(master)
    os.set_blocking(slave, False)

    async def go():
        peer = SerialPeer(slave, "/dev/test")
        big = {"ok": True, "result": "jobs", "detail": "y" * 1000}
        count = 2 * OUTPUT_CAP // 1000
        for n in range(count):
            peer.send({**big, "n": n})
        received = b""
        while not peer.drained.is_set() or select.select([master], [], [], 0)[0]:
            received += await asyncio.to_thread(os.read, master, 65536)
        peer.close()
        return count, received

    with caplog.at_level(logging.WARNING, logger="posfw.ecr"):
        try:
            count, received = run(go())
        finally:
            os.close(master)
            os.close(slave)
    lines = received.split(b"\n")
    assert lines[-1] == b""
    numbers = [json.loads(line)["n"] for line in lines[:-1]]  # every line whole
    assert numbers == sorted(numbers) and len(numbers) < count
    assert "does not read its replies" in caplog.text and "dropped" in caplog.text
