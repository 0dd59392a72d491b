"""A key-loading device's part in a development key ceremony (docs/provisioning.md, "The key
ceremony"): what the acquirer's HSM or KLD does on a real one, with psec, on this machine.

    python -m board.sim.kld components --count 2 --out DIR    # KBPK components, one per custodian
    python -m board.sim.kld combine DIR/kbpk-1.hex DIR/kbpk-2.hex --out kbpk.hex
    python -m board.sim.kld wrap --kbpk-file kbpk.hex --tmk HEX    # or --new-tmk
        -> the TR-31 key block (version B, usage K0, TDES) and the TMK's check value

Development only: the clear TMK and the components pass through this process and its files.
Every file it writes is 0600; the check values it prints identify a key without revealing it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import warnings
from pathlib import Path

from psec import tr31
from psec.des import adjust_key_parity, encrypt_tdes_ecb

KEY_BYTES = 16  # a double-length TDES KBPK and TMK


def check_value(key: bytes) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography's TripleDES deprecation, inside psec
        return encrypt_tdes_ecb(key + key[:8], b"\0" * 8)[:4].hex().upper()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text + "\n")


def _read_key(path: Path) -> bytes:
    return bytes.fromhex("".join(path.read_text(encoding="ascii").split()))


def tmk_block(kbpk: bytes, tmk: bytes) -> str:
    """The TMK as a TR-31 key block: version B (TDES, derivation binding), usage K0 (key
    encryption), algorithm T, mode of use B (wrap and unwrap), not exportable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tr31.wrap(kbpk, tr31.Header("B", "K0", "T", "B", "00", "N"), tmk)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m board.sim.kld", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("components", help="random KBPK components, one file per custodian")
    comp.add_argument("--count", type=int, default=2)
    comp.add_argument("--out", type=Path, required=True)
    comb = sub.add_parser("combine", help="XOR the custodians' components into the KBPK")
    comb.add_argument("components", type=Path, nargs="+")
    comb.add_argument("--out", type=Path, required=True)
    wrap = sub.add_parser("wrap", help="the TMK as a TR-31 key block under the KBPK")
    wrap.add_argument("--kbpk-file", type=Path, required=True)
    group = wrap.add_mutually_exclusive_group(required=True)
    group.add_argument("--tmk", help="the TMK, 32 hex digits")
    group.add_argument("--new-tmk", action="store_true", help="a random TMK (odd parity)")
    args = parser.parse_args(argv)
    if args.command == "components":
        args.out.mkdir(mode=0o700, parents=True, exist_ok=True)
        for i in range(1, args.count + 1):
            part = adjust_key_parity(secrets.token_bytes(KEY_BYTES))
            _write_private(args.out / f"kbpk-{i}.hex", part.hex().upper())
            print(f"component {i}: {args.out / f'kbpk-{i}.hex'} check value {check_value(part)}")
        return 0
    if args.command == "combine":
        kbpk = bytes(KEY_BYTES)
        for path in args.components:
            part = _read_key(path)
            if len(part) != KEY_BYTES:
                print(f"{path}: a component is {KEY_BYTES} bytes as hex", file=sys.stderr)
                return 1
            kbpk = bytes(a ^ b for a, b in zip(kbpk, part, strict=True))
        kbpk = adjust_key_parity(kbpk)
        _write_private(args.out, kbpk.hex().upper())
        print(f"KBPK: {args.out} check value {check_value(kbpk)}")
        return 0
    kbpk = _read_key(args.kbpk_file)
    tmk = adjust_key_parity(secrets.token_bytes(KEY_BYTES)) if args.new_tmk else bytes.fromhex(args.tmk)
    print(tmk_block(kbpk, tmk))
    print(f"TMK check value {check_value(tmk)} (under KBPK {check_value(kbpk)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
