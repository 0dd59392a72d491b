"""The issue's memory proof: with the token in use, no key bytes are in the terminal process's
memory or in any file it wrote.

The token lives in another process: `p11-kit server` with SoftHSM2 as its provider, and a child
Python process (the "terminal") loads p11-kit's client module and uses Pkcs11KeyStore through
it. The child gets what a terminal gets: field 62 from the host (working keys wrapped under the
TMK, check values), PINs typed on its keypad, message bytes. It signs on, computes MACs (both
algorithms), PIN blocks and track blocks, prints them (the test checks them against the clear
keys, so the child really used the right keys), and waits. The test then reads every readable
mapping of the child's /proc/PID/mem and asserts that none of the known key values occurs: the
TMK, PIK, MAK, TDK and card-vault key, each in its 16/32-byte form, the 24-byte TDES form, the
MAK's single-DES form K1||K1 and each 8-byte half. Then it greps every file the child could
write (its working, home and temporary directories) and the token's own files.

What this proves and what it does not:
- SoftHSM2 loaded in process (the sim board, the other tests) proves nothing about memory: the
  token's library, with its keys, is in the process. Only the out-of-process token counts.
- SoftHSM 2.6.1 cannot unwrap under a DES key, so sign-on uses the C_Decrypt fallback: each
  working key's clear value crosses the child for one C_Decrypt and one C_CreateObject, in one
  ctypes buffer zeroed at once. The scan runs after sign-on; it shows the value did not stay,
  not that it never passed.
- p11-kit 0.24's client frees its RPC buffers without zeroing them, so the child runs with
  glibc's heap settings HEAP_TUNABLES (freed memory overwritten, no per-thread cache); without
  them this scan finds the working keys in freed heap (checked when this test was written).
- The card vault is not exercised in the child: p11-kit 0.24 forwards no CKM_AES_GCM (no
  mechanism with parameters), so the vault key is checked absent, never used there.
The control: the same child with the development store (MemoryKeyStore) instead, and the scan
finds the keys; so a scan that finds nothing is a scan that would have found them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import p11kit
import pytest
from p11kit import TokenEnv, p11kit_server, provision_token
from psec import mac as psec_mac

from drivers.keystore.pkcs11 import HEAP_TUNABLES
from firmware.host.keys import (
    build_signon_keys,
    encrypt_pin_block,
    expand_key,
    generate_working_keys,
)
from firmware.host.mac import cup_ecb_mac

ROOT = Path(__file__).resolve().parents[1]
softhsm_template = p11kit.softhsm_template
token_env = p11kit.token_env

PAN = "6222021234567890123"
PINS = ("1234", "987654", "24681357")
ROLES = ("PIK", "MAK", "TDK")


# ---- the child ("the terminal") ----

async def _child_work(store, job: dict) -> dict:
    from firmware.ports import WrappedKey

    raw = bytes.fromhex(job["field62"])
    keys = [WrappedKey(r, raw[i * 20:i * 20 + 16], raw[i * 20 + 16:i * 20 + 20], r == "MAK")
            for i, r in enumerate(ROLES)]
    await store.install_working_keys(keys)
    out: dict = {"cup": [], "x919": [], "pin": [], "track": [], "status": None}
    for hex_data in job["messages"]:
        data = bytes.fromhex(hex_data)
        padded = data + b"\x00" * (-len(data) % 8)
        acc = 0
        for i in range(0, len(padded), 8):
            acc ^= int.from_bytes(padded[i:i + 8], "big")
        expanded = acc.to_bytes(8, "big").hex().upper().encode()
        first = await store.mac_cipher(expanded[:8], double=False, chain=False)
        second = await store.mac_cipher(bytes(a ^ b for a, b in zip(first, expanded[8:],
                                                                     strict=True)),
                                        double=False, chain=False)
        out["cup"].append(second.hex().upper()[:8])
        chain = (await store.mac_cipher(padded[:-8], double=False, chain=True))[-8:] \
            if len(padded) > 8 else bytes(8)
        last = bytes(a ^ b for a, b in zip(padded[-8:], chain, strict=True))
        out["x919"].append((await store.mac_cipher(last, double=True, chain=False)).hex())
    for pin in job["pins"]:
        out["pin"].append((await store.encrypt_pin(pin, job["pan"])).hex())
    for hex_block in job["tracks"]:
        out["track"].append((await store.encrypt_track_block(bytes.fromhex(hex_block))).hex())
    out["status"] = list(store.status().notes)
    return out


def child_main() -> None:
    """Run as `python -c`: argv[1] = "pkcs11" or "memory"; the job as JSON on stdin."""
    kind = sys.argv[1]
    job = json.loads(sys.stdin.readline())
    if kind == "pkcs11":
        from drivers.keystore.pkcs11 import Pkcs11KeyStore
        store = Pkcs11KeyStore(job["module"], job["label"], job["pin"])
    else:
        from drivers.keystore.memory import MemoryKeyStore
        store = MemoryKeyStore(job["keys_dir"])
        store.seal(b"6222021234567890123", b"control")  # loads the vault key file too
    result = asyncio.run(_child_work(store, job))
    job.clear()
    print(json.dumps(result), flush=True)
    sys.stdin.readline()  # the scan happens while the child waits here
    store.close()


# ---- the scanner ----

def needles(tmk: bytes, vault: bytes, keys) -> dict[str, bytes]:
    """Every form of every key a scan must not find (8-byte halves included: a random 8-byte
    string turns up by chance in some hundred MB with odds near 1e-11)."""
    out: dict[str, bytes] = {"vault key": vault, "vault key half 1": vault[:16],
                             "vault key half 2": vault[16:]}
    for name, key in (("TMK", tmk), ("PIK", keys.pik), ("MAK", keys.mak), ("TDK", keys.tdk)):
        out[name] = key
        out[f"{name} 24-byte form"] = expand_key(key)
        out[f"{name} K1"] = key[:8]
        out[f"{name} K2"] = key[8:]
    out["MAK K1||K1"] = keys.mak[:8] * 2
    out["MAK K1 24-byte form"] = keys.mak[:8] * 3
    return out


def scan_memory(pid: int, wanted: dict[str, bytes]) -> dict[str, list[str]]:
    """Where each needle occurs in the readable mappings of /proc/PID/mem."""
    found: dict[str, list[str]] = {}
    overlap = max(len(n) for n in wanted.values()) - 1
    chunk = 1 << 22
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("r"):
                continue
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            where = fields[5] if len(fields) > 5 else "anonymous"
            pos, tail = lo, b""
            while pos < hi:
                try:
                    mem.seek(pos)
                    data = mem.read(min(chunk, hi - pos))
                except OSError:
                    break  # [vvar] and the like
                if not data:
                    break
                window = tail + data
                for name, needle in wanted.items():
                    if needle in window:
                        found.setdefault(name, []).append(where)
                tail = window[-overlap:]
                pos += len(data)
    return found


def scan_files(roots: list[Path], wanted: dict[str, bytes]) -> dict[str, list[str]]:
    """Each needle raw, and in hex either case, in every file under `roots`."""
    found: dict[str, list[str]] = {}
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
            for name, needle in wanted.items():
                for form in (needle, needle.hex().encode(), needle.hex().upper().encode()):
                    if form in data:
                        found.setdefault(name, []).append(str(path))
    return found


# ---- the test rig ----

def run_child(kind: str, job: dict, env: dict[str, str], home: Path, wanted: dict[str, bytes],
              timeout_s: float = 60.0) -> tuple[dict, dict[str, list[str]]]:
    """Start the child, hand it the job, wait for its results, scan its memory, let it go."""
    for sub in ("cwd", "home", "tmp", "run"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = {**env, "HOME": str(home / "home"), "TMPDIR": str(home / "tmp"),
           "XDG_RUNTIME_DIR": str(home / "run"), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "tests")))}
    code = "import sys, test_keystore_memory_scan as t; t.child_main()"
    proc = subprocess.Popen([sys.executable, "-W", "ignore", "-c", code, kind], cwd=home / "cwd",
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.flush()
        line = _readline(proc, timeout_s)
        result = json.loads(line)
        found = scan_memory(proc.pid, wanted)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=timeout_s) == 0, proc.stderr.read() if proc.stderr else ""
        return result, found
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _readline(proc: subprocess.Popen[str], timeout_s: float) -> str:
    import selectors
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise AssertionError(f"the child gave no result within {timeout_s} s")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"the child died: {err[-2000:]}")
    return line


def make_job(tmk: bytes, keys) -> dict:
    messages = [os.urandom(n).hex() for n in (118, 120, 64, 8)]
    return {"field62": build_signon_keys(keys, tmk, "first8"), "messages": messages,
            "pins": list(PINS), "pan": PAN, "tracks": [os.urandom(8).hex() for _ in range(3)]}


def check_results(result: dict, job: dict, keys) -> None:
    """The child's outputs are what the clear keys give: it really used them."""
    for data_hex, cup, x919 in zip(job["messages"], result["cup"], result["x919"], strict=True):
        data = bytes.fromhex(data_hex)
        assert cup.encode() == cup_ecb_mac(keys.mak, data)
        assert bytes.fromhex(x919) == psec_mac.generate_retail_mac(keys.mak[:8], keys.mak[8:],
                                                                    data, padding=1)
    for pin, block in zip(PINS, result["pin"], strict=True):
        assert bytes.fromhex(block) == encrypt_pin_block(pin, PAN, keys.pik)
    from psec.des import encrypt_tdes_ecb
    for clear, enc in zip(job["tracks"], result["track"], strict=True):
        assert bytes.fromhex(enc) == encrypt_tdes_ecb(expand_key(keys.tdk), bytes.fromhex(clear))


@pytest.fixture
def keys_and_token(token_env: TokenEnv):
    tmk, vault = os.urandom(16), os.urandom(32)
    provision_token(token_env, tmk, vault_key=vault)
    return tmk, vault, generate_working_keys(with_tdk=True), token_env


def test_no_key_bytes_in_the_terminal_process_or_its_files(keys_and_token,
                                                           tmp_path: Path) -> None:
    tmk, vault, keys, env = keys_and_token
    wanted = needles(tmk, vault, keys)
    with p11kit_server(env, tmp_path / "server") as server:
        job = {**make_job(tmk, keys), "module": server.client_module, "label": env.label,
               "pin": env.pin}
        child_env = server.client_environ()
        child_env["GLIBC_TUNABLES"] = HEAP_TUNABLES
        result, found = run_child("pkcs11", job, child_env, tmp_path / "child", wanted)
    check_results(result, job, keys)
    assert any("zeroed at once" in note for note in result["status"])
    assert found == {}, f"key bytes in the terminal process's memory: {found}"
    in_files = scan_files([tmp_path / "child", env.tokendir], wanted)
    assert in_files == {}, f"key bytes in files: {in_files}"


def test_control_the_development_store_is_found(keys_and_token, tmp_path: Path) -> None:
    """The same child with MemoryKeyStore: the keys are in its memory and the scan says so."""
    tmk, vault, keys, _env = keys_and_token
    wanted = needles(tmk, vault, keys)
    keys_dir = tmp_path / "devkeys"
    keys_dir.mkdir()
    (keys_dir / "tmk.key").write_text(tmk.hex())
    (keys_dir / "card.key").write_bytes(vault)
    for f in keys_dir.iterdir():
        f.chmod(0o600)
    job = {**make_job(tmk, keys), "keys_dir": str(keys_dir)}
    env = {**os.environ, "GLIBC_TUNABLES": HEAP_TUNABLES}
    result, found = run_child("memory", job, env, tmp_path / "child", wanted)
    check_results(result, job, keys)
    for name in ("TMK", "PIK", "MAK", "TDK", "vault key"):
        assert name in found, f"the scan missed the development store's {name}: {found}"
    # And the file scan finds the development key files.
    assert "TMK" in scan_files([keys_dir], wanted)
