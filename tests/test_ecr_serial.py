"""The ECR link over a serial port: a real pseudo-terminal, the terminal as a process."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
import tty

from helpers import REPO, TID


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
            [sys.executable, "-m", "firmware.app", "--data", str(data_dir), "--ecr-port", "0",
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
