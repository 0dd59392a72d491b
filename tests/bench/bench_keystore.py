"""Benchmark of the key stores: the key work of one sale through a PKCS#11 token against the
development store's in-process crypto.

A sale's key work, as the terminal does it: two MACs of a ~120-byte message (the request's and
the reply's field 64, built from HostKeys.mac_cipher the way firmware/host/mac.py builds them
over a store), one PIN block, two card-vault seals and one unseal (the journal's PAN columns).
Stores: MemoryKeyStore (keys in Python memory), Pkcs11KeyStore on SoftHSM2 loaded in this
process, and Pkcs11KeyStore through p11-kit's client with the token in `p11-kit server` (another
process, each call a round trip on a Unix socket). p11-kit 0.24 forwards no mechanism with
parameters, so through it the vault (AES-GCM) is not available and CBC runs as ECB calls: its
rows leave the vault out and are compared with the memory store doing the same.
Prints medians per sale and the ratios; no assertions.
Run: `.venv/bin/python tests/bench/bench_keystore.py`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # firmware, drivers
sys.path.insert(0, str(ROOT / "tests"))  # p11kit
warnings.filterwarnings("ignore", message="TripleDES has been moved")  # psec, as pyproject does

from p11kit import p11kit_server, pointing_at, provision_token, softhsm_env  # noqa: E402

from drivers.keystore.memory import MemoryKeyStore  # noqa: E402
from drivers.keystore.pkcs11 import Pkcs11KeyStore  # noqa: E402
from firmware.host.keys import build_signon_keys, generate_working_keys  # noqa: E402
from firmware.ports import KeyStore, WrappedKey  # noqa: E402

SALES = 400
WARMUP = 40
SIGN_ONS = 30
MESSAGE_BYTES = 120
PAN = "6222021234567890123"


# ---- the MACs over a store, as firmware/host/mac.py computes them ----

async def cup_mac(store: KeyStore, data: bytes) -> bytes:
    padded = data + b"\x00" * (-len(data) % 8)
    acc = 0
    for i in range(0, len(padded), 8):
        acc ^= int.from_bytes(padded[i:i + 8], "big")
    expanded = acc.to_bytes(8, "big").hex().upper().encode()
    chained = await store.mac_cipher(expanded, double=False, chain=True)
    return chained[8:].hex().upper().encode()[:8]


async def x919_mac(store: KeyStore, data: bytes) -> bytes:
    padded = data + b"\x00" * (-len(data) % 8)
    head, last = padded[:-8], padded[-8:]
    chain = (await store.mac_cipher(head, double=False, chain=True))[-8:] if head else bytes(8)
    return await store.mac_cipher(bytes(a ^ b for a, b in zip(last, chain, strict=True)),
                                  double=True, chain=False)


def sale(store: KeyStore, mac: Callable[[KeyStore, bytes], Awaitable[bytes]],
         vault: bool) -> Callable[[], Awaitable[None]]:
    request, reply = os.urandom(MESSAGE_BYTES), os.urandom(MESSAGE_BYTES - 6)

    async def one() -> None:
        await mac(store, request)
        await store.encrypt_pin("123456", PAN)
        await mac(store, reply)
        if vault:
            blob = store.seal(PAN.encode(), b"txn 1")
            store.seal(PAN.encode(), b"txn 1 receipt")
            store.unseal(blob, b"txn 1")

    return one


def timed(loop: asyncio.AbstractEventLoop, fn: Callable[[], Awaitable[None]],
          n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        loop.run_until_complete(fn())
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        loop.run_until_complete(fn())
        out.append(time.perf_counter() - t0)
    return out


def wrapped(keys, tmk: bytes) -> list[WrappedKey]:
    raw = bytes.fromhex(build_signon_keys(keys, tmk))
    return [WrappedKey(r, raw[i * 20:i * 20 + 16], raw[i * 20 + 16:i * 20 + 20], r == "MAK")
            for i, r in enumerate(("PIK", "MAK", "TDK"))]


ROWS: dict[str, float] = {}  # every row printed, by name: main() records the headline ones


def row(name: str, value: float, fmt: str = "{:.1f}") -> None:
    ROWS[name] = value
    print(f"  {name:<40} {fmt.format(value)}", flush=True)


def median_us(xs: list[float]) -> float:
    return statistics.median(xs) * 1e6


def p90_us(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10)[-1] * 1e6


def op_medians(loop: asyncio.AbstractEventLoop, store: KeyStore, vault: bool) -> dict[str, float]:
    data = os.urandom(MESSAGE_BYTES)
    ops: dict[str, Callable[[], Awaitable[None]]] = {}

    async def m_cup() -> None:
        await cup_mac(store, data)

    async def m_x919() -> None:
        await x919_mac(store, data)

    async def pin() -> None:
        await store.encrypt_pin("123456", PAN)

    ops.update(mac_cup_ecb=m_cup, mac_x9_19=m_x919, pin_block=pin)
    if vault:
        blob = store.seal(PAN.encode(), b"a")

        async def seal() -> None:
            store.seal(PAN.encode(), b"a")

        async def unseal() -> None:
            store.unseal(blob, b"a")

        ops.update(vault_seal=seal, vault_unseal=unseal)
    return {name: median_us(timed(loop, fn, SALES, WARMUP)) for name, fn in ops.items()}


def sign_on_ms(loop: asyncio.AbstractEventLoop, store: KeyStore, tmk: bytes) -> float:
    times = []
    for _ in range(SIGN_ONS):
        keys = wrapped(generate_working_keys(with_tdk=True), tmk)
        t0 = time.perf_counter()
        loop.run_until_complete(store.install_working_keys(keys))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip() or "?"
    except OSError:
        return "?"


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="posfw-bench-keystore-"))
    loop = asyncio.new_event_loop()
    try:
        softhsm = version(["softhsm2-util", "--version"])
        p11kit = version(["dpkg-query", "-W", "-f=${Version}", "p11-kit"])
        print(f"bench_keystore: SoftHSM2 {softhsm}, p11-kit {p11kit}, Python "
              f"{sys.version.split()[0]}; scratch {scratch}")
        tmk, vault_key = os.urandom(16), os.urandom(32)
        keys = generate_working_keys(with_tdk=True)
        env = softhsm_env(scratch / "token", set_env=False)
        provision_token(env, tmk, vault_key=vault_key)
        keys_dir = scratch / "keys"
        keys_dir.mkdir()
        (keys_dir / "tmk.key").write_text(tmk.hex())
        (keys_dir / "card.key").write_bytes(vault_key)
        for f in keys_dir.iterdir():
            f.chmod(0o600)
        memory = MemoryKeyStore(keys_dir)
        loop.run_until_complete(memory.install_working_keys(wrapped(keys, tmk)))

        print(f"\na. the key work of one sale: 2 MACs of a {MESSAGE_BYTES}-byte message, 1 PIN "
              f"block, 2 vault seals + 1 unseal; {SALES} sales after {WARMUP} warm-up, "
              "SoftHSM2 in this process")
        with pointing_at(env):
            token = Pkcs11KeyStore(env.module, env.label, env.pin)
            try:
                loop.run_until_complete(token.install_working_keys(wrapped(keys, tmk)))
                for algo, mac in (("cup_ecb", cup_mac), ("x9_19", x919_mac)):
                    mem_t = timed(loop, sale(memory, mac, True), SALES, WARMUP)
                    tok_t = timed(loop, sale(token, mac, True), SALES, WARMUP)
                    row(f"memory_sale_{algo}_median_us", median_us(mem_t))
                    row(f"memory_sale_{algo}_p90_us", p90_us(mem_t))
                    row(f"pkcs11_sale_{algo}_median_us", median_us(tok_t))
                    row(f"pkcs11_sale_{algo}_p90_us", p90_us(tok_t))
                    row(f"ratio_pkcs11_memory_{algo}", median_us(tok_t) / median_us(mem_t),
                        "{:.2f}")
                print("\nb. one operation, median us (memory / SoftHSM2 in process)")
                mem_ops = op_medians(loop, memory, True)
                tok_ops = op_medians(loop, token, True)
                for name in mem_ops:
                    print(f"  {name:<20} memory {mem_ops[name]:8.1f}   pkcs11 "
                          f"{tok_ops[name]:8.1f}   ratio {tok_ops[name] / mem_ops[name]:6.2f}x",
                          flush=True)
                print(f"\nc. sign-on: install PIK, MAK and TDK from field 62 with check values, "
                      f"median of {SIGN_ONS}")
                row("memory_sign_on_ms", sign_on_ms(loop, memory, tmk), "{:.3f}")
                row("pkcs11_sign_on_ms", sign_on_ms(loop, token, tmk), "{:.3f}")
            finally:
                token.close()

        print("\nd. the token in another process (p11-kit server, SoftHSM2 provider; this process "
              "loads p11-kit-client.so): the sale without the vault (p11-kit 0.24 forwards no "
              "AES-GCM), CBC as one ECB call per block")
        with p11kit_server(env, scratch / "p11kit") as server:
            saved = os.environ.get("P11_KIT_SERVER_ADDRESS")
            os.environ["P11_KIT_SERVER_ADDRESS"] = server.address
            try:
                remote = Pkcs11KeyStore(server.client_module, env.label, env.pin)
            finally:
                if saved is None:
                    os.environ.pop("P11_KIT_SERVER_ADDRESS", None)
                else:
                    os.environ["P11_KIT_SERVER_ADDRESS"] = saved
            try:
                loop.run_until_complete(remote.install_working_keys(wrapped(keys, tmk)))
                for algo, mac in (("cup_ecb", cup_mac), ("x9_19", x919_mac)):
                    mem_t = timed(loop, sale(memory, mac, False), SALES, WARMUP)
                    rem_t = timed(loop, sale(remote, mac, False), SALES, WARMUP)
                    row(f"memory_sale_no_vault_{algo}_median_us", median_us(mem_t))
                    row(f"p11kit_sale_no_vault_{algo}_median_us", median_us(rem_t))
                    row(f"p11kit_sale_no_vault_{algo}_p90_us", p90_us(rem_t))
                    row(f"ratio_p11kit_memory_{algo}", median_us(rem_t) / median_us(mem_t),
                        "{:.2f}")
                row("p11kit_sign_on_ms", sign_on_ms(loop, remote, tmk), "{:.3f}")
            finally:
                remote.close()
    finally:
        loop.close()
        shutil.rmtree(scratch, ignore_errors=True)

    from results import emit  # the recorder beside this script: run_all collects what it emits
    compared = [("pkcs11_sign_on_ms", "memory_sign_on_ms", "ms", "sign-on, SoftHSM2 in process"),
                ("p11kit_sign_on_ms", "memory_sign_on_ms", "ms", "sign-on, p11-kit server")]
    for algo in ("cup_ecb", "x9_19"):
        compared += [(f"pkcs11_sale_{algo}_median_us", f"memory_sale_{algo}_median_us", "us",
                      f"a sale's key work, SoftHSM2 in process, {SALES} sales"),
                     (f"p11kit_sale_no_vault_{algo}_median_us", f"memory_sale_no_vault_{algo}_median_us",
                      "us", f"a sale's key work without the vault, p11-kit server, {SALES} sales")]
    for name, peer, unit, note in compared:
        if name in ROWS and peer in ROWS:
            emit(name, ROWS[name], unit, group="bench_keystore",
                 floor={"name": peer, "value": ROWS[peer], "unit": unit},
                 ratio=ROWS[name] / ROWS[peer], note=note + "; ratio: token / memory store")


if __name__ == "__main__":
    main()
