"""The ECR link's authentication, sans-I/O: till pairing and the per-request envelope.

Owns the bytes both ends must agree on (docs/ecr.md, "Paired tills"): the canonical encoding a
MAC covers, the request envelope (`till`, `seq`, `mac`) and its checks, the sealed reply line,
and the pairing exchange: SPAKE2 (a password-authenticated key exchange, the `spake2` package)
with the one-time code as the password, key confirmation both ways, the till key from HKDF.
The terminal (firmware/app/frontends/ecr_server.py) and the till (firmware/ecr/client.py) both
use this module, so they cannot drift apart. No sockets, no journal, no clock.

Why a PAKE: a 6-digit code is 10^6 guesses. Proofs keyed by the code (the previous design)
let anyone who intercepts a genuine till's pair request search them all offline. In SPAKE2 the
messages and confirmations are fixed by random secrets that never leave each side, so a
recording checks no guess; an impostor gets one guess per pairing window, online.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spake2 import SPAKE2_A

ENVELOPE = ("till", "seq", "mac")
TILL = re.compile(r"T(0[1-9]|[1-9][0-9])")  # T01..T99: typed as 1-2 digits on the keypad
MAX_SEQ = 2**53 - 1  # a number every till's JSON library holds exactly
KEY_BYTES = 32
CODE_DIGITS = 6
PAIR_WINDOW_S = 120.0
CONFIRM_S = 30.0  # after message 2, how long the terminal waits for the till's confirmation
LABEL = b"posfw-ecr-pair-v2"
KEY_INFO = b"posfw-ecr-till-key-v2"
MSG_BYTES = 33  # a SPAKE2 message: its side byte, then an Ed25519 point (32 bytes)
SIDE_TILL, SIDE_TERMINAL = b"A", b"B"  # the library's side bytes: the till is A
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class AuthError(Exception):
    """A request the envelope check refuses; str() is the words for the till and the audit."""


# -- canonical encoding and MACs ------------------------------------------------------------

def canonical(obj: dict[str, Any]) -> bytes:
    """The bytes a MAC covers: the object without `mac`, as JSON with its keys sorted (by code
    point), no spaces, non-ASCII as UTF-8 characters (not \\u escapes), no NaN or Infinity."""
    body = {k: v for k, v in obj.items() if k != "mac"}
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise AuthError(f"the request has no canonical form to check a MAC over ({exc})") from None


def mac_of(key: bytes, obj: dict[str, Any]) -> str:
    """HMAC-SHA256 of canonical(obj) under the till key, as 64 lowercase hex digits."""
    return hmac.new(key, canonical(obj), hashlib.sha256).hexdigest()


def mac_ok(key: bytes, obj: dict[str, Any]) -> bool:
    given = obj.get("mac")
    if not isinstance(given, str) or not _HEX64.fullmatch(given):
        return False
    return hmac.compare_digest(mac_of(key, obj), given.lower())


def sealed_line(payload: dict[str, Any], key: bytes) -> bytes:
    """A reply line with its MAC: the canonical JSON with "mac" added as its last member, so a
    till may check it over the line's own bytes (cut `,"mac":"..."`, close the brace) or by
    encoding the parsed reply canonically: both give the same bytes."""
    body = canonical(payload)
    mac = hmac.new(key, body, hashlib.sha256).hexdigest()
    return body[:-1] + (',"mac":"' if len(body) > 2 else '"mac":"').encode() + mac.encode() + b'"}\n'


def decode_object(line: bytes) -> dict[str, Any]:
    """A request line as a JSON object whose member names are all different (a name given twice
    would mean one thing to the MAC and another to the till's JSON library)."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in items:
            if name in out:
                raise AuthError(f"the request gives {name[:40]!r} twice")
            out[name] = value
        return out

    obj = json.loads(line.decode("utf-8"), object_pairs_hook=pairs)
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    return obj


# -- the request envelope -------------------------------------------------------------------

@dataclass(frozen=True)
class Envelope:
    till: str
    seq: int


def carries_envelope(obj: dict[str, Any]) -> bool:
    return any(name in obj for name in ENVELOPE)


def envelope(obj: dict[str, Any]) -> Envelope:
    """The envelope's fields, checked for form only (the MAC and seq rules need the journal)."""
    missing = [name for name in ENVELOPE if name not in obj]
    if missing:
        raise AuthError(f"an authenticated request needs {', '.join(ENVELOPE)}; this one has no "
                        f"{', '.join(missing)}")
    till, seq, mac = obj["till"], obj["seq"], obj["mac"]
    if not (isinstance(till, str) and TILL.fullmatch(till)):
        raise AuthError(f"till must be the till's name T01 to T99, got {_shown(till)}")
    if not (isinstance(seq, int) and not isinstance(seq, bool) and 0 < seq <= MAX_SEQ):
        raise AuthError(f"seq must be a whole number from 1 to {MAX_SEQ}, got {_shown(seq)}")
    if not (isinstance(mac, str) and _HEX64.fullmatch(mac)):
        raise AuthError("mac must be 64 hex digits (HMAC-SHA256 of the request's canonical form)")
    return Envelope(till, seq)


def body(obj: dict[str, Any]) -> dict[str, Any]:
    """The request without its envelope: what the protocol's field checks read."""
    return {k: v for k, v in obj.items() if k not in ENVELOPE}


def till_name(digits: str) -> str | None:
    """Keypad digits ("1", "01", "12") as a till's name (T01, T12); None if not 1 to 99."""
    if not digits.isascii() or not digits.isdigit() or not 1 <= int(digits) <= 99:
        return None
    return f"T{int(digits):02d}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- pairing ---------------------------------------------------------------------------------
#
# SPAKE2 (the `spake2` package, Ed25519 group): the till is side A, the terminal side B, the
# one-time code is the password, the till's name and the terminal's TID are the identities.
# Three messages (docs/ecr.md, "Pairing, message by message"):
#   1 till     -> `pair`         till, msg (the till's SPAKE2 message)
#   2 terminal -> reply          terminal (its TID), msg (the terminal's), confirm (its MAC)
#   3 till     -> `pair_confirm` confirm (the till's MAC), or abort when the terminal's is wrong
# and the terminal's reply to 3, MACed under the new till key with seq 0. Either side's
# confirmation is an HMAC over the transcript under a key made from SPAKE2's key, so it shows
# the other side reached the same key, which it only does with the same code. The terminal
# sends its confirmation first and the till answers only once it checked: an impostor on either
# side learns whether its one guess was right, and nothing else.

def new_code() -> str:
    """A one-time pairing code: 6 random digits."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def transcript(till: str, terminal: str, till_msg: bytes, terminal_msg: bytes) -> bytes:
    """What both confirmations cover: the label, then each of till, TID and the two SPAKE2
    messages (side byte included) with its length in 2 bytes (big-endian) before it."""
    return LABEL + b"".join(_lp(x) for x in (till.encode("ascii"), terminal.encode("ascii"),
                                             till_msg, terminal_msg))


@dataclass(frozen=True)
class PairingKeys:
    """What SPAKE2's key gives: a confirmation key each way and the till key."""

    terminal_confirm: bytes = field(repr=False)
    till_confirm: bytes = field(repr=False)
    till_key: bytes = field(repr=False)


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    # cryptography and spake2 (below) only when a till pairs: the terminal's idle needs neither.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(ikm)


def pairing_keys(spake_key: bytes, till: str) -> PairingKeys:
    """HKDF-SHA256 over SPAKE2's key (no salt), each key bound to the till's name."""
    name = till.encode("ascii")
    return PairingKeys(_hkdf(spake_key, LABEL + b"|confirm terminal|" + name),
                       _hkdf(spake_key, LABEL + b"|confirm till|" + name),
                       _hkdf(spake_key, KEY_INFO + b"|" + name))


def confirmation(key: bytes, script: bytes) -> bytes:
    return hmac.new(key, script, hashlib.sha256).digest()


def _hex(name: str, value: Any, size: int) -> bytes:
    if not (isinstance(value, str) and len(value) == 2 * size
            and re.fullmatch(r"[0-9a-fA-F]*", value)):
        raise AuthError(f"pair: {name} must be {2 * size} hex digits ({size} bytes)")
    return bytes.fromhex(value)


def _spake_msg(value: Any, side: bytes, whose: str) -> bytes:
    msg = _hex("msg", value, MSG_BYTES)
    if msg[:1] != side:
        raise AuthError(f"pair: msg must be {whose} SPAKE2 message (its first byte "
                        f"{side.hex()}, {side.decode()!r})")
    return msg


def _till_of(obj: dict[str, Any]) -> str:
    till = obj["till"]
    if not (isinstance(till, str) and TILL.fullmatch(till)):
        raise AuthError(f"till must be the till's name T01 to T99, got {_shown(till)}")
    return till


def _fields(obj: dict[str, Any], allowed: set[str], needed: tuple[str, ...]) -> None:
    op = obj.get("op")
    unknown = set(obj) - allowed
    if unknown:
        raise AuthError(f"{op} does not take {', '.join(sorted(_shown(k) for k in unknown))}")
    missing = [n for n in needed if n not in obj]
    if missing:
        raise AuthError(f"{op} needs {', '.join(missing)}")


@dataclass(frozen=True)
class PairRequest:
    """Message 1: the till's name and its SPAKE2 message."""

    till: str
    msg: bytes


@dataclass(frozen=True)
class PairConfirm:
    """Message 3: the till's confirmation, or None when it aborts (the terminal's was wrong)."""

    till: str
    confirm: bytes | None


def pair_request(obj: dict[str, Any]) -> PairRequest | PairConfirm:
    """A `pair` or `pair_confirm` request's fields, checked for form (whether they are right
    needs the open window)."""
    if obj.get("op") == "pair_confirm":
        _fields(obj, {"op", "id", "till", "confirm", "abort"}, ("till",))
        till = _till_of(obj)
        if obj.get("abort") is True and "confirm" not in obj:
            return PairConfirm(till, None)
        if "abort" in obj or "confirm" not in obj:
            raise AuthError("pair_confirm carries confirm (64 hex digits), or abort: true alone")
        return PairConfirm(till, _hex("confirm", obj["confirm"], KEY_BYTES))
    _fields(obj, {"op", "id", "till", "msg"}, ("till", "msg"))
    return PairRequest(_till_of(obj), _spake_msg(obj["msg"], SIDE_TILL, "the till's"))


@dataclass(frozen=True)
class PairOffer:
    """The terminal's answer to message 1 (msg, confirm) and what it keeps until message 3:
    the till's confirmation it waits for and the till key, stored only once that arrives."""

    msg: bytes
    confirm: bytes
    expected: bytes = field(repr=False)
    key: bytes = field(repr=False)


def answer_pair(code: str, terminal: str, request: PairRequest) -> PairOffer | None:
    """The terminal's side of message 1 -> 2. None if the till's message is not a point of the
    group (SPAKE2 refuses it); a wrong code is not seen here: the keys just differ, and the
    till's confirmation (message 3) shows it."""
    from spake2 import SPAKE2_B  # only when a till pairs (see _hkdf)

    side = SPAKE2_B(code.encode("ascii"), idA=request.till.encode("ascii"),
                    idB=terminal.encode("ascii"))
    msg = side.start()
    try:
        spake_key = side.finish(request.msg)
    except Exception:  # the library raises several types for a bad point
        return None
    keys = pairing_keys(spake_key, request.till)
    script = transcript(request.till, terminal, request.msg, msg)
    return PairOffer(msg, confirmation(keys.terminal_confirm, script),
                     confirmation(keys.till_confirm, script), keys.till_key)


def confirm_ok(offer: PairOffer, confirm: PairConfirm) -> bool:
    """The till's confirmation (message 3) is the one the offer expects."""
    return confirm.confirm is not None and hmac.compare_digest(offer.expected, confirm.confirm)


def _stream(seed: bytes) -> Callable[[int], bytes]:
    """Bytes from `seed` (SHAKE-256), the same run each time it is made from the same seed."""
    taken = 0

    def take(n: int) -> bytes:
        nonlocal taken
        out = hashlib.shake_256(seed).digest(taken + n)[taken:]
        taken += n
        return out

    return take


class TillPairing:
    """The till's side of one pairing:

        pairing = TillPairing("T01", "123456")
        reply = send(pairing.request())          # message 1
        reply = send(pairing.answer(reply))      # message 3 (or its abort)
        key = pairing.finish(reply)              # the till key, or AuthError

    Its SPAKE2 secret comes from a seed drawn here (32 random bytes): the library takes both
    identities when the side is made, and the till learns the terminal's TID only from message
    2, so the side is made again from the same seed then (the same secret, the same message)."""

    def __init__(self, till: str, code: str) -> None:
        if not TILL.fullmatch(till):
            raise AuthError(f"till must be T01 to T99, got {_shown(till)}")
        if not (code.isascii() and code.isdigit() and len(code) == CODE_DIGITS):
            raise AuthError("the pairing code is the 6 digits the terminal shows")
        self.till = till
        self._code = code.encode("ascii")
        self._seed = secrets.token_bytes(32)
        self.msg = self._side(b"").start()  # the identities are not in the message
        self._key: bytes | None = None
        self._refused: str | None = None

    def __repr__(self) -> str:
        return f"TillPairing({self.till}, <code and secret hidden>)"

    def _side(self, terminal: bytes) -> SPAKE2_A:
        from spake2 import SPAKE2_A  # only when a till pairs (see _hkdf)

        return SPAKE2_A(self._code, idA=self.till.encode("ascii"), idB=terminal,
                        entropy_f=_stream(self._seed))

    def request(self, request_id: Any = None) -> dict[str, Any]:
        """Message 1."""
        req: dict[str, Any] = {"op": "pair", "till": self.till, "msg": self.msg.hex()}
        if request_id is not None:
            req["id"] = request_id
        return req

    def answer(self, reply: dict[str, Any], request_id: Any = None) -> dict[str, Any]:
        """Message 3 for the terminal's reply to message 1: the till's confirmation once the
        terminal's checked; else an abort (finish() then says why). AuthError when the reply is
        a refusal: there is nothing to answer."""
        if reply.get("result") != "confirm":
            raise AuthError(str(reply.get("message") or "the terminal did not answer the pairing"))
        terminal = reply.get("terminal")
        if not (isinstance(terminal, str) and terminal.isascii() and terminal.isprintable()
                and 0 < len(terminal) <= 64):
            raise AuthError("pair: the terminal's reply names no terminal (its TID)")
        theirs = _spake_msg(reply.get("msg"), SIDE_TERMINAL, "the terminal's")
        theirs_confirm = _hex("confirm", reply.get("confirm"), KEY_BYTES)
        out: dict[str, Any] = {"op": "pair_confirm", "till": self.till}
        if request_id is not None:
            out["id"] = request_id
        side = self._side(terminal.encode("ascii"))
        if side.start() != self.msg:  # never: the same seed makes the same secret
            raise AuthError("pair: the till's SPAKE2 side could not be made again")
        try:
            spake_key = side.finish(theirs)
        except Exception:  # not a point of the group: as a wrong confirmation
            spake_key = b""
        keys = pairing_keys(spake_key, self.till) if spake_key else None
        script = transcript(self.till, terminal, self.msg, theirs)
        if keys is None or not hmac.compare_digest(
                confirmation(keys.terminal_confirm, script), theirs_confirm):
            self._refused = ("the terminal's confirmation is wrong: the code was mistyped, or "
                             "this is not the terminal that shows it; nothing was kept")
            return {**out, "abort": True}
        self._key = keys.till_key
        return {**out, "confirm": confirmation(keys.till_confirm, script).hex()}

    def finish(self, reply: dict[str, Any]) -> bytes:
        """The till key, once the terminal took the till's confirmation: its reply to message 3
        is MACed under the new key with seq 0. AuthError otherwise (nothing to keep)."""
        if self._refused is not None:
            raise AuthError(self._refused)
        if self._key is None:
            raise AuthError("pair: finish() before answer()")
        if reply.get("result") != "paired":
            raise AuthError(str(reply.get("message") or "the terminal did not pair this till"))
        try:
            check_reply(reply, self.till, 0, self._key)
        except AuthError as exc:
            raise AuthError(f"the terminal's 'paired' reply does not check ({exc}); nothing "
                            "was kept") from None
        return self._key


# -- the till's side of every request ------------------------------------------------------

class ReplyRejected(AuthError):
    """A reply whose MAC or seq does not check: not from the terminal this till is paired with."""


def sign(request: dict[str, Any], till: str, seq: int, key: bytes) -> dict[str, Any]:
    """The request with its envelope: till, seq and the MAC over all of it."""
    out = {**body(request), "till": till, "seq": seq}
    out["mac"] = mac_of(key, out)
    return out


def check_reply(reply: dict[str, Any], till: str, seq: int, key: bytes) -> dict[str, Any]:
    """A reply to the request sent with `seq`: its MAC under the till key, its till and seq."""
    if "mac" not in reply:
        raise ReplyRejected("the reply carries no MAC: "
                            + str(reply.get("message") or "not authenticated by the terminal"))
    if not mac_ok(key, reply):
        raise ReplyRejected("the reply's MAC is wrong: not from the paired terminal, or changed")
    if reply.get("till") != till or reply.get("seq") != seq:
        raise ReplyRejected(f"the reply answers till {reply.get('till')} seq {reply.get('seq')}, "
                            f"not till {till} seq {seq}")
    return {k: v for k, v in reply.items() if k != "mac"}
