"""The emulated encrypting PIN pad inside the sim board's card reader (docs/reader-link.md,
"PIN pad"): its secure memory, the key operations it does for the terminal, and the PIN entry
typed on its own keys.

TEST ONLY. A real PIN pad keeps its keys in tamper-responsive memory and never lets them out;
this one keeps them in clear in a 0600 JSON file (`var/devices/pinpad-keys.json` under
`make run`) so a sim terminal keeps its keys from run to run. What it does hold to, as a real pad
does: the PIN the cardholder types stays inside it (in a bytearray wiped when the entry ends;
never in the file, a log or a reply), and what leaves it is the ISO 9564 format 0 PIN block
encrypted under the PIK, check values, MAC ciphertext and encrypted track blocks.

Keys: its own key-block protection key (KBPK, double-length TDES, made on first start; a TR-31
version B block under it carries the TMK at the key ceremony), the TMK (usage K0), and the
working keys PIK, MAK, TDK installed at each sign-on from field 62 (wrapped under the TMK, each
checked against its check value, all or none).

The reader thread (board/sim/reader.py) owns an instance and calls it; nothing here does I/O but
the keys file. Dev commands:

    python -m board.sim.pinpad kbpk [--dir var/devices]       the KBPK, hex (for the ceremony)
    python -m board.sim.pinpad wrap-tmk HEX [--dir ...]       a TR-31 block of that TMK for this pad
    python -m board.sim.pinpad status [--dir ...]             what the pad holds (check values)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from psec import tr31
from psec.des import adjust_key_parity, decrypt_tdes_ecb, encrypt_tdes_cbc, encrypt_tdes_ecb
from psec.pinblock import encode_pinblock_iso_0

from drivers.reader import link_protocol as lp
from firmware.ports import WORKING_KEY_ROLES, WrappedKey

__all__ = ["KEYS_FILE", "PAD_KEYS", "EmulatedPinPad", "PinPadError", "tmk_block_header"]

KEYS_FILE = "pinpad-keys.json"
# The keys on the pad: what the control port's `pin_keys` and the console may press.
PAD_KEYS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "CLEAR", "ENTER", "CANCEL")
PIN_MIN, PIN_MAX = 4, 12  # ISO 9564 format 0
# What a TMK block must say: usage K0 (key encryption or wrapping), TDES, mode of use B (both)
# or D (decrypt/unwrap), a double-length key.
TMK_USAGE = "K0"
TMK_MODES = ("B", "D")
_WARNING = ("TEST ONLY: the emulated PIN pad's secure memory, keys in clear. A real PIN pad never "
            "lets its keys out. Never copy these keys to a real terminal.")


class PinPadError(Exception):
    """The emulated pad cannot start (its keys file is unreadable or open to others); words."""


def tmk_block_header() -> str:
    """The TR-31 header the ceremony uses for a TMK under this pad's KBPK (version B)."""
    return f"B0000{TMK_USAGE}TD00N0000"


def _tdes(key: bytes) -> bytes:
    return key + key[:8] if len(key) == 16 else key * 3


def check_value(key: bytes) -> bytes:
    return encrypt_tdes_ecb(_tdes(key), bytes(8))[:lp.KCV_LEN]


@dataclass
class _Entry:
    """A PIN entry under way. The digits are the cardholder's PIN: wiped when the entry ends."""

    pan: str = field(repr=False)
    prompt: str
    allow_empty: bool
    deadline: float
    digits: bytearray = field(default_factory=bytearray, repr=False)

    def wipe(self) -> None:
        for i in range(len(self.digits)):
            self.digits[i] = 0
        del self.digits[:]


class EmulatedPinPad:
    """The pad's secure memory and its entry state. Not thread-safe: one thread calls it."""

    def __init__(self, keys_path: str | os.PathLike[str]) -> None:
        self.keys_path = Path(keys_path)
        self._kbpk = b""
        self._tmk: bytes | None = None
        self._working: dict[str, bytes] = {}
        self._entry: _Entry | None = None
        self.entries_refused_enter = 0  # ENTER with 1..3 digits: the pad beeps and waits
        self._load()

    def __repr__(self) -> str:
        return f"EmulatedPinPad({self.keys_path}, tmk={self._tmk is not None}, keys={self.roles})"

    # ---- secure memory ----------------------------------------------------------

    def _load(self) -> None:
        path = self.keys_path
        if not path.exists():
            self._kbpk = adjust_key_parity(secrets.token_bytes(16))
            self._save()
            return
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PinPadError(f"the emulated PIN pad's keys file {path} is open to others (mode "
                              f"{mode:o}); run chmod 600 {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            kbpk = bytes.fromhex(data["kbpk"])
            tmk = bytes.fromhex(data["tmk"]) if data.get("tmk") else None
            working = {r: bytes.fromhex(v) for r, v in dict(data.get("working", {})).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise PinPadError(f"the emulated PIN pad's keys file {path} is damaged; delete it to "
                              "start the pad empty (a new KBPK: wrap the TMK again)") from None
        if (len(kbpk) != 16 or (tmk is not None and len(tmk) != 16)
                or any(r not in WORKING_KEY_ROLES or len(k) != 16 for r, k in working.items())):
            raise PinPadError(f"the emulated PIN pad's keys file {path} holds keys of the wrong "
                              "length; delete it to start the pad empty")
        self._kbpk, self._tmk, self._working = kbpk, tmk, working

    def _save(self) -> None:
        data = {"warning": _WARNING, "kbpk": self._kbpk.hex().upper(),
                "tmk": self._tmk.hex().upper() if self._tmk is not None else None,
                "working": {r: self._working[r].hex().upper() for r in WORKING_KEY_ROLES
                            if r in self._working}}
        self.keys_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.keys_path.with_name(self.keys_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an old .tmp may have been made with other bits
            os.write(fd, (json.dumps(data, indent=1) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.keys_path)

    @property
    def kbpk(self) -> bytes:
        """The pad's key-block protection key (the dev ceremony wraps the TMK under it)."""
        return self._kbpk

    def wrap_tmk(self, tmk: bytes) -> str:
        """A TR-31 block of `tmk` for this pad (what the key ceremony hands the terminal)."""
        return tr31.wrap(self._kbpk, tmk_block_header(), bytes(tmk))

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(r for r in WORKING_KEY_ROLES if r in self._working)

    @property
    def tmk_check(self) -> bytes | None:
        return None if self._tmk is None else check_value(self._tmk)

    # ---- `Y`: key operations ----------------------------------------------------------

    def key_command(self, op: str, args: bytes) -> bytes:
        """The `y` body for one `Y` operation; lp.LinkError (NAK 2) for malformed arguments."""
        if op in lp.PAD_KEY_CHANGES and self._entry is not None:
            return lp.pad_reply_body(lp.PadStatus.BUSY)
        if op == lp.PAD_STATUS:
            self._no_args(args, op)
            return lp.pad_reply_body(lp.PadStatus.OK, lp.pad_status_data(
                self._tmk is not None, self.tmk_check, self.roles, self._entry is not None))
        if op == lp.PAD_LOAD_TMK:
            return self._load_tmk(lp.parse_tr31(args))
        if op == lp.PAD_INSTALL:
            return self._install(lp.parse_install(args))
        if op == lp.PAD_FORGET:
            self._no_args(args, op)
            if self._working:
                self._working = {}
                self._save()
            return lp.pad_reply_body(lp.PadStatus.OK)
        if op == lp.PAD_MAC:
            double, chain, iv, data = lp.parse_mac(args)
            mak = self._working.get("MAK")
            if mak is None:
                return lp.pad_reply_body(lp.PadStatus.KEY_MISSING, words="no MAK: sign on first")
            key = _tdes(mak if double else mak[:8])
            out = encrypt_tdes_cbc(key, iv, data) if chain else encrypt_tdes_ecb(key, data)
            return lp.pad_reply_body(lp.PadStatus.OK, out)
        if op == lp.PAD_TRACK:
            if len(args) != 8:
                raise lp.LinkError(f"a track block is 8 bytes, got {len(args)}")
            tdk = self._working.get("TDK")
            if tdk is None:
                return lp.pad_reply_body(lp.PadStatus.KEY_MISSING, words="no TDK: sign on with "
                                         "track encryption first")
            return lp.pad_reply_body(lp.PadStatus.OK, encrypt_tdes_ecb(_tdes(tdk), args))
        # PAD_DESTROY
        self._no_args(args, op)
        erased = lp.key_bits(self._tmk is not None, self.roles)
        self._tmk, self._working = None, {}
        self._save()
        return lp.pad_reply_body(lp.PadStatus.OK, bytes((erased,)))

    @staticmethod
    def _no_args(args: bytes, op: str) -> None:
        if args:
            raise lp.LinkError(f"PIN pad {lp.PAD_OPS[op]} takes no arguments")

    def _load_tmk(self, block: str) -> bytes:
        try:
            header, key = tr31.unwrap(self._kbpk, block)
        except (tr31.KeyBlockError, tr31.HeaderError) as exc:
            # psec's words describe the block (MAC, length, header), never key bytes.
            return lp.pad_reply_body(lp.PadStatus.KEY_BLOCK_REFUSED,
                                     words=f"the TR-31 block does not open under this PIN pad's "
                                           f"key-block protection key: {exc}")
        if (header.key_usage != TMK_USAGE or header.algorithm != "T"
                or header.mode_of_use not in TMK_MODES or len(key) != 16):
            return lp.pad_reply_body(
                lp.PadStatus.KEY_BLOCK_REFUSED,
                words=f"the TR-31 block holds a key of usage {header.key_usage}, algorithm "
                      f"{header.algorithm}, mode {header.mode_of_use}, {len(key)} bytes; a terminal "
                      f"master key is usage {TMK_USAGE}, algorithm T, mode B or D, 16 bytes")
        self._tmk, self._working = bytes(key), {}
        self._save()
        return lp.pad_reply_body(lp.PadStatus.OK, check_value(self._tmk))

    def _install(self, keys: list[WrappedKey]) -> bytes:
        if self._tmk is None:
            return lp.pad_reply_body(lp.PadStatus.NO_TMK)
        fresh: dict[str, bytes] = {}
        for k in keys:
            clear = decrypt_tdes_ecb(_tdes(self._tmk), k.wrapped)
            got = check_value(clear[:8] if k.check_first8 else clear)
            if got != k.check_value:
                # All or none: the keys installed before stay.
                return lp.check_failed_body(k.role, k.check_value, got)
            fresh[k.role] = clear
        self._working = fresh
        self._save()
        return lp.pad_reply_body(lp.PadStatus.OK)

    # ---- `J`: PIN entry ----------------------------------------------------------

    @property
    def entry_running(self) -> bool:
        return self._entry is not None

    @property
    def deadline(self) -> float | None:
        return None if self._entry is None else self._entry.deadline

    @property
    def display(self) -> str:
        """What the pad's display shows: the prompt and one `*` per digit typed, or idle words."""
        if self._entry is None:
            return "(idle)"
        return f"{self._entry.prompt}\n{'*' * len(self._entry.digits)}"

    def start_entry(self, req: lp.PinEntryRequest, now: float) -> bytes | None:
        """Starts an entry: None (the answer comes when it ends), or the `j` body at once."""
        if self._entry is not None:
            return lp.pad_reply_body(lp.PadStatus.BUSY, words="a PIN entry is already under way")
        if "PIK" not in self._working:
            return lp.pad_reply_body(lp.PadStatus.KEY_MISSING, words="no PIK: sign on first")
        self._entry = _Entry(req.pan, req.prompt, req.allow_empty, now + req.timeout_s)
        return None

    def press(self, key: str) -> bytes | None:
        """One key on the pad; the `j` body if that key ended the entry. Keys while idle do
        nothing (the caller says so)."""
        entry = self._entry
        if key not in PAD_KEYS:
            raise ValueError(f"the PIN pad has no key {key!r}; its keys: {' '.join(PAD_KEYS)}")
        if entry is None:
            return None
        if key.isdigit():
            if len(entry.digits) < PIN_MAX:
                entry.digits.append(ord(key))
            return None
        if key == "CLEAR":
            entry.wipe()
            return None
        if key == "CANCEL":
            return self._end(lp.pad_reply_body(lp.PadStatus.CANCELLED,
                                               words="cancelled on the PIN pad"))
        # ENTER
        if not entry.digits:
            if entry.allow_empty:
                return self._end(lp.pad_reply_body(lp.PadStatus.SKIPPED))
            self.entries_refused_enter += 1
            return None
        if len(entry.digits) < PIN_MIN:
            self.entries_refused_enter += 1  # too short: a real pad beeps and waits
            return None
        return self._end(lp.pad_reply_body(lp.PadStatus.OK, self._pin_block(entry)))

    def _pin_block(self, entry: _Entry) -> bytes:
        pik = self._working["PIK"]
        # The one place the PIN is a str: psec takes one. It lives for this call only.
        block = encode_pinblock_iso_0(entry.digits.decode("ascii"), entry.pan)
        return encrypt_tdes_ecb(_tdes(pik), block)

    def expire(self, now: float) -> bytes | None:
        """The `j` body if the entry's time ran out."""
        if self._entry is None or now < self._entry.deadline:
            return None
        return self._end(lp.pad_reply_body(lp.PadStatus.TIMED_OUT))

    def cancel(self) -> bytes | None:
        """The terminal's `Q`: the `j` body of the entry it ends, or None when none runs."""
        if self._entry is None:
            return None
        return self._end(lp.pad_reply_body(lp.PadStatus.CANCELLED, words="cancelled by the terminal"))

    def power_down(self) -> None:
        """The reader lost power: a running entry is gone (nobody is answered)."""
        if self._entry is not None:
            self._entry.wipe()
            self._entry = None

    def _end(self, body: bytes) -> bytes:
        assert self._entry is not None
        self._entry.wipe()
        self._entry = None
        return body


# ---- dev commands ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m board.sim.pinpad",
                                     description="The sim board's emulated PIN pad (TEST ONLY).")
    parser.add_argument("command", choices=("kbpk", "wrap-tmk", "status"))
    parser.add_argument("tmk", nargs="?", help="wrap-tmk: the clear TMK, 32 hex digits")
    parser.add_argument("--dir", type=Path, default=Path("var/devices"),
                        help="the emulated devices' directory (default var/devices)")
    args = parser.parse_args(argv)
    try:
        pad = EmulatedPinPad(args.dir / KEYS_FILE)
    except PinPadError as exc:
        print(f"pinpad: {exc}", file=sys.stderr)
        return 1
    if args.command == "kbpk":
        print(pad.kbpk.hex().upper())
        print(f"(TEST ONLY: the emulated PIN pad's key-block protection key, check value "
              f"{check_value(pad.kbpk).hex().upper()}; a TMK for it: TR-31 header "
              f"{tmk_block_header()})", file=sys.stderr)
        return 0
    if args.command == "wrap-tmk":
        try:
            tmk = bytes.fromhex(args.tmk or "")
        except ValueError:
            tmk = b""
        if len(tmk) != 16:
            parser.error("wrap-tmk needs the TMK as 32 hex digits")
        print(pad.wrap_tmk(tmk))
        print(f"(TMK check value {check_value(tmk).hex().upper()})", file=sys.stderr)
        return 0
    tmk_cv = pad.tmk_check
    print(json.dumps({"keys_file": str(pad.keys_path),
                      "kbpk_check": check_value(pad.kbpk).hex().upper(),
                      "tmk_check": tmk_cv.hex().upper() if tmk_cv else None,
                      "working_keys": list(pad.roles)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
