"""The ECR link's authentication, sans-I/O: till pairing and the per-request envelope.

Owns the bytes both ends must agree on (docs/ecr.md, "Paired tills"): the canonical encoding a
MAC covers, the request envelope (`till`, `seq`, `mac`) and its checks, the sealed reply line,
and the pairing exchange (X25519 + HKDF, the one-time code proven with HMAC under a scrypt key).
The terminal (firmware/app/frontends/ecr_server.py) and the till (firmware/ecr/client.py) both
use this module, so they cannot drift apart. No sockets, no journal, no clock.

Why scrypt for the code: the till's proof is an HMAC keyed by the 6-digit code, over values
anyone on the link sees; a cheap key would let someone who intercepts a genuine till's pair
request find the code offline in about a second and pair in its place while the window is
open. Stretching the code (about 0.1 s per guess here) makes that search take a day. It is a
mitigation, not a PAKE; docs/ecr.md says so.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

ENVELOPE = ("till", "seq", "mac")
TILL = re.compile(r"T(0[1-9]|[1-9][0-9])")  # T01..T99: typed as 1-2 digits on the keypad
MAX_SEQ = 2**53 - 1  # a number every till's JSON library holds exactly
KEY_BYTES = 32
CODE_DIGITS = 6
PAIR_WINDOW_S = 120.0
LABEL = b"posfw-ecr-pair-v1"
KEY_INFO = b"posfw-ecr-till-key-v1"
# scrypt cost of one code guess (RFC 7914 parameters; 32 MiB, ~0.1 s on the development PC)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
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

def new_code() -> str:
    """A one-time pairing code: 6 random digits."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_key(code: str, till: str, till_pub: bytes) -> bytes:
    """The code stretched with scrypt, salted with the till's name and public key (nothing can
    be computed ahead of a pairing)."""
    salt = LABEL + b"|" + till.encode("ascii") + till_pub
    return Scrypt(salt=salt, length=KEY_BYTES, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(
        code.encode("ascii"))


def till_proof(ckey: bytes, till: str, till_pub: bytes) -> bytes:
    return hmac.new(ckey, LABEL + b"|till|" + till.encode("ascii") + till_pub, hashlib.sha256).digest()


def terminal_proof(ckey: bytes, till: str, till_pub: bytes, terminal_pub: bytes) -> bytes:
    msg = LABEL + b"|terminal|" + till.encode("ascii") + till_pub + terminal_pub
    return hmac.new(ckey, msg, hashlib.sha256).digest()


def till_key(shared: bytes, ckey: bytes, till: str, till_pub: bytes, terminal_pub: bytes) -> bytes:
    """HKDF-SHA256 over the X25519 shared secret, bound to the till's name and both public keys."""
    info = KEY_INFO + b"|" + till.encode("ascii") + till_pub + terminal_pub
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=ckey, info=info).derive(shared)


def _raw(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _hex32(name: str, value: Any) -> bytes:
    if not (isinstance(value, str) and _HEX64.fullmatch(value)):
        raise AuthError(f"pair: {name} must be 64 hex digits (32 bytes)")
    return bytes.fromhex(value)


@dataclass(frozen=True)
class PairRequest:
    till: str
    pub: bytes
    proof: bytes


def pair_request(obj: dict[str, Any]) -> PairRequest:
    """A `pair` request's fields, checked for form (the proof needs the open window's code)."""
    unknown = set(obj) - {"op", "id", "till", "pub", "proof"}
    if unknown:
        raise AuthError(f"pair does not take {', '.join(sorted(_shown(k) for k in unknown))}")
    missing = [n for n in ("till", "pub", "proof") if n not in obj]
    if missing:
        raise AuthError(f"pair needs {', '.join(missing)}")
    till = obj["till"]
    if not (isinstance(till, str) and TILL.fullmatch(till)):
        raise AuthError(f"till must be the till's name T01 to T99, got {_shown(till)}")
    return PairRequest(till, _hex32("pub", obj["pub"]), _hex32("proof", obj["proof"]))


@dataclass(frozen=True)
class PairAnswer:
    """What the terminal sends back (pub, proof) and the till key it keeps (key)."""

    pub: bytes
    proof: bytes
    key: bytes


def answer_pair(code: str, request: PairRequest) -> PairAnswer | None:
    """The terminal's side: None if the till's proof does not follow from the code (a wrong
    code, or not the till that was told it); else its public key, its proof and the till key."""
    ckey = code_key(code, request.till, request.pub)
    if not hmac.compare_digest(till_proof(ckey, request.till, request.pub), request.proof):
        return None
    mine = X25519PrivateKey.generate()
    pub = _raw(mine)
    try:
        shared = mine.exchange(X25519PublicKey.from_public_bytes(request.pub))
    except ValueError:  # a low-order point: the shared secret would be all zeros
        return None
    return PairAnswer(pub, terminal_proof(ckey, request.till, request.pub, pub),
                      till_key(shared, ckey, request.till, request.pub, pub))


class TillPairing:
    """The till's side of one pairing: `request()` to send, `finish(reply)` -> the till key."""

    def __init__(self, till: str, code: str) -> None:
        if not TILL.fullmatch(till):
            raise AuthError(f"till must be T01 to T99, got {_shown(till)}")
        if not (code.isascii() and code.isdigit() and len(code) == CODE_DIGITS):
            raise AuthError("the pairing code is the 6 digits the terminal shows")
        self.till = till
        self._secret = X25519PrivateKey.generate()
        self.pub = _raw(self._secret)
        self._ckey = code_key(code, till, self.pub)

    def request(self, request_id: Any = None) -> dict[str, Any]:
        req: dict[str, Any] = {"op": "pair", "till": self.till, "pub": self.pub.hex(),
                               "proof": till_proof(self._ckey, self.till, self.pub).hex()}
        if request_id is not None:
            req["id"] = request_id
        return req

    def finish(self, reply: dict[str, Any]) -> bytes:
        """The till key, once the terminal proved it knows the code too; AuthError otherwise."""
        if reply.get("result") != "paired":
            raise AuthError(str(reply.get("message") or "the terminal did not pair this till"))
        theirs = _hex32("pub", reply.get("pub"))
        proof = _hex32("proof", reply.get("proof"))
        expected = terminal_proof(self._ckey, self.till, self.pub, theirs)
        if not hmac.compare_digest(expected, proof):
            raise AuthError("the terminal's proof is wrong: this is not the terminal that showed "
                            "the code (or the code was mistyped); nothing was kept")
        shared = self._secret.exchange(X25519PublicKey.from_public_bytes(theirs))
        return till_key(shared, self._ckey, self.till, self.pub, theirs)


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
