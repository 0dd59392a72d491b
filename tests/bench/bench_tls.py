"""Benchmark: what TLS to the acquirer costs on loopback (settings comms.tls, firmware/host/tls.py).

The terminal's own HostChannel against the acquirer simulator (board/sim/acquirer.py) serving
TLS with a test CA made fresh by tests/tlskit.py (ECDSA P-256, as tlskit makes them), and the
same simulator on plain TCP:
a. connection set-up: TCP connect, plus the TLS handshake with the pinned CA and the host name
   checked, then close; median and 95th percentile;
b. per message: 0820 echo tests one after the other on one open connection, frame out to
   reply matched; TLS minus plain TCP is what TLS adds to each message.
The simulator runs in a thread of this process (its event loop), so both ends share the CPU
(and the GIL) as they do under `make run`. Prints figures; `main()` returns them. No assertions.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
warnings.filterwarnings("ignore", message="TripleDES has been moved")

from tlskit import make_ca, server_context  # noqa: E402

from board.sim.acquirer import SimulatorThread  # noqa: E402
from firmware.host.channel import HostChannel  # noqa: E402
from firmware.host.codec import Decoded, encode  # noqa: E402
from firmware.host.messages import Terminal, echo_request  # noqa: E402
from firmware.host.tls import client_context  # noqa: E402

TID, MID = "12345678", "123456789012345"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
CONNECTS = 100
MESSAGES = 1000
WARMUP = 20


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:6.2f} ms, p95 {pct(values, 95) * 1000:6.2f} ms"
            f" (n={len(values)})")


NEGOTIATED: list[str] = []  # the TLS version and cipher suite of the last handshake


async def _connects(port: int, tls: ssl.SSLContext | None, n: int) -> list[float]:
    times = []
    for _ in range(n):
        channel = HostChannel("127.0.0.1", port, tls=tls, server_name="127.0.0.1")
        started = time.perf_counter()
        await channel.connect()
        times.append(time.perf_counter() - started)
        if tls is not None and channel._writer is not None:
            session = channel._writer.get_extra_info("ssl_object")
            NEGOTIATED[:] = [session.version(), session.cipher()[0]]
        await channel.close()
    return times


async def _messages(port: int, tls: ssl.SSLContext | None, n: int) -> list[float]:
    channel = HostChannel("127.0.0.1", port, tls=tls, server_name="127.0.0.1")
    frame = encode(echo_request(Terminal(TID, MID), "000001"))

    def accept(decoded: Decoded) -> bool:
        return decoded.message.mti == "0830"

    times = []
    try:
        await channel.connect()
        for i in range(n + WARMUP):
            started = time.perf_counter()
            reply = await channel.exchange(frame, accept, timeout=10)
            if i >= WARMUP:
                times.append(time.perf_counter() - started)
            if reply.message.fields.get("39") != "00":
                raise RuntimeError(f"the simulator refused the echo: {reply.message.fields}")
    finally:
        await channel.close()
    return times


def measure(tmp: Path, tls: bool) -> dict[str, list[float]]:
    context = client = None
    if tls:
        ca = make_ca(tmp / "ca.pem")
        context = server_context(tmp, ca)
        client = client_context(tmp / "ca.pem")
    with SimulatorThread(tmp / f"ledger-{'tls' if tls else 'tcp'}.db",
                         terminals=[(TID, MID, TMK)], tls=context) as sim:
        connects = asyncio.run(_connects(sim.port, client, CONNECTS))
        messages = asyncio.run(_messages(sim.port, client, MESSAGES))
    return {"connect": connects, "message": messages}


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        plain = measure(Path(tmp), tls=False)
        tls = measure(Path(tmp), tls=True)
    version = ssl.OPENSSL_VERSION
    print(f"TLS to the host on loopback ({version}; ECDSA P-256 test CA, TLS 1.2 minimum, "
          f"the CA pinned, the host name checked; negotiated {' '.join(NEGOTIATED)})")
    print(f"  a. connect, plain TCP:            {ms(plain['connect'])}")
    print(f"     connect + TLS handshake:       {ms(tls['connect'])}")
    handshake = statistics.median(tls["connect"]) - statistics.median(plain["connect"])
    print(f"     the handshake adds:            {handshake * 1000:6.2f} ms (medians)")
    print(f"  b. one echo (0820/0830), TCP:     {ms(plain['message'])}")
    print(f"     one echo over TLS:             {ms(tls['message'])}")
    per_message = statistics.median(tls["message"]) - statistics.median(plain["message"])
    print(f"     TLS adds per message:          {per_message * 1000:6.3f} ms (medians)")
    figures = {"connect_tcp_ms": statistics.median(plain["connect"]) * 1000,
               "connect_tls_ms": statistics.median(tls["connect"]) * 1000,
               "handshake_ms": handshake * 1000,
               "message_tcp_ms": statistics.median(plain["message"]) * 1000,
               "message_tls_ms": statistics.median(tls["message"]) * 1000,
               "tls_per_message_ms": per_message * 1000}

    from results import emit  # the recorder beside this script: run_all collects what it emits
    for name, peer in (("connect_tls_ms", "connect_tcp_ms"), ("message_tls_ms", "message_tcp_ms")):
        emit(name, figures[name], "ms", group="bench_tls",
             floor={"name": peer, "value": figures[peer], "unit": "ms"},
             ratio=figures[name] / figures[peer],
             note=f"loopback, medians of {CONNECTS} connects / {MESSAGES} echoes; {' '.join(NEGOTIATED)}")
    emit("handshake_ms", figures["handshake_ms"], "ms", group="bench_tls", note="TLS connect - TCP connect")
    emit("tls_per_message_ms", figures["tls_per_message_ms"], "ms", group="bench_tls",
         note="TLS echo - TCP echo (medians)")
    return figures


if __name__ == "__main__":
    main()
