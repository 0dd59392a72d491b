"""Message <-> frame bytes: pyiso8583 with SPEC, framing, field 64 and track encryption.

encode() raises LocalProtocolError naming the field; decode() raises only
RemoteProtocolError, with the field and the byte offset in the payload.

Field 64 comes from a MAC function over the MAC block (firmware/host/mac.py): a plain one
(`encode`, clear keys: the simulator) or a coroutine through the key store (`encode_async`,
the terminal). Tracks (35, 36) are encrypted here, on their packed wire bytes, when the
request path passes a track cipher: the 8 bytes that end one byte before the field's last
byte go through TDES-ECB under the TDK (docs/dialect.md, "Track encryption"), and field 53
says so (its third digit, set by messages.with_tracks_encrypted). The MAC covers the
encrypted bytes, as they are on the wire.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import iso8583

from .errors import LocalProtocolError, RemoteProtocolError
from .framing import HEADER_LEN, TPDU_LEN, frame, split
from .mac import MAC_LEN, AsyncMacFunction, MacFunction
from .messages import Message, tracks_encrypted
from .spec import SPEC, TRACK_FIELDS, from_wire, to_wire

__all__ = [
    "ALLOWED_MTIS",
    "TRACK_BLOCK_MIN_DIGITS",
    "Decoded",
    "decode",
    "decrypt_tracks",
    "encode",
    "encode_async",
    "track_block",
    "verify_mac",
    "verify_mac_async",
]

ALLOWED_MTIS: Final = frozenset({
    "0100", "0110", "0200", "0210", "0220", "0230", "0320", "0330",
    "0400", "0410", "0500", "0510", "0620", "0630", "0800", "0810", "0820", "0830",
})
_BODY_AT: Final = TPDU_LEN + HEADER_LEN  # payload offset of the MTI
_BITMAP_AT: Final = _BODY_AT + 2
_FIELDS_AT: Final = _BITMAP_AT + 8
# The encrypted block (TDB) is the 8 packed bytes before the last one: a track needs 9 bytes,
# i.e. 17 digits, to have one. Every real track 2 is longer (PAN, '=', expiry, service code).
TRACK_BLOCK_MIN_DIGITS: Final = 17

BlockCipher = Callable[[bytes], bytes]  # one 8-byte block under the TDK (clear key: simulator)
AsyncBlockCipher = Callable[[bytes], Awaitable[bytes]]  # the same through the key store


@dataclass(frozen=True)
class Decoded:
    """A decoded host message plus what MAC verification needs.

    When field 53 says the tracks are encrypted (`tracks_encrypted`), fields 35 and 36 hold
    their wire nibbles (hex, the encrypted block included) instead of the track: the
    acquirer's side turns them back with decrypt_tracks()."""

    message: Message
    mac_input: bytes  # MTI .. last byte before field 64 (empty if no 64)
    raw: bytes  # the payload as received (TPDU onward, without the length prefix)
    tracks_encrypted: bool = False

    @property
    def fields(self) -> dict[str, str]:
        return self.message.fields


# ---- track encryption (on the packed wire form) --------------------------------------------

def track_block(digits: int) -> slice:
    """Where the encrypted block sits in a track's packed bytes (`digits` nibbles, packed
    left-justified with a trailing pad nibble): the 8 bytes that end one byte before the last.
    Adopted from open CUP terminal code (docs/dialect.md, "Track encryption")."""
    if digits < TRACK_BLOCK_MIN_DIGITS:
        raise LocalProtocolError(f"a track of {digits} digits is too short to encrypt "
                                 f"(at least {TRACK_BLOCK_MIN_DIGITS})")
    size = (digits + 1) // 2
    return slice(size - 9, size - 1)


def _packed(nibbles: str) -> bytearray:
    return bytearray.fromhex(nibbles + "0" * (len(nibbles) % 2))


def _nibbles(packed: bytes, digits: int) -> str:
    return packed.hex().upper()[:digits]


async def _encrypt_track(field: str, value: str, cipher: AsyncBlockCipher) -> str:
    """A track's wire nibbles with its block encrypted (the value is checked first)."""
    try:
        nibbles = to_wire(field, value)
    except ValueError as exc:
        raise LocalProtocolError(f"field {field}: {exc}") from None
    block = track_block(len(nibbles))
    packed = _packed(nibbles)
    encrypted = await cipher(bytes(packed[block]))
    if len(encrypted) != 8:
        raise LocalProtocolError("the track cipher must return one 8-byte block")
    packed[block] = encrypted
    return _nibbles(packed, len(nibbles))


def decrypt_tracks(decoded: Decoded, decrypt_block: BlockCipher) -> Message:
    """The message with fields 35/36 turned back into clear tracks (acquirer side: the
    simulator holds the clear TDK). RemoteProtocolError when a track is too short to carry a
    block or does not decrypt to a track (a wrong TDK gives nibbles other than 0-9 and D)."""
    msg = decoded.message
    if not decoded.tracks_encrypted:
        return msg
    fields = dict(msg.fields)
    for field in sorted(TRACK_FIELDS & fields.keys()):
        nibbles = fields[field]
        try:
            block = track_block(len(nibbles))
        except LocalProtocolError as exc:
            raise RemoteProtocolError(str(exc), field=field) from None
        packed = _packed(nibbles)
        packed[block] = decrypt_block(bytes(packed[block]))
        try:
            fields[field] = from_wire(field, _nibbles(packed, len(nibbles)))
        except ValueError:
            # Never the decrypted bytes: they are card data, or garbage from a wrong key.
            raise RemoteProtocolError("the encrypted track does not decrypt to a track "
                                      "(wrong track data key?)", field=field) from None
    return Message(msg.mti, fields, header=msg.header, tpdu=msg.tpdu)


# ---- encoding -------------------------------------------------------------------------------

def _body(msg: Message, fields: dict[str, str], wire: dict[str, str] | None = None) -> bytes:
    """The ISO body (MTI onward). `wire`: values already in wire form (encrypted tracks)."""
    if not isinstance(msg.mti, str) or msg.mti not in ALLOWED_MTIS:
        raise LocalProtocolError(f"MTI {msg.mti!r} is not one this dialect uses")
    doc: dict[str, str] = {"t": msg.mti}
    for key, value in fields.items():
        if key not in SPEC or key in ("h", "t", "p"):
            raise LocalProtocolError(f"field {key} is not in the CUP spec")
        if wire is not None and key in wire:
            doc[key] = wire[key]
            continue
        try:
            doc[key] = to_wire(key, value)
        except ValueError as exc:
            raise LocalProtocolError(f"field {key}: {exc}") from None
    try:
        # pyiso8583 writes "p" into the dict it is given: hand it our own copy.
        body, _ = iso8583.encode(doc, SPEC)
    except iso8583.EncodeError as exc:
        raise LocalProtocolError(f"field {exc.field}: {exc.msg}") from None
    return bytes(body)


def _unsigned(msg: Message, with_mac: bool, wire: dict[str, str] | None = None) -> bytes:
    """The body; with_mac: with a placeholder field 64. 64 is the last field and fixed-size,
    so the MAC block is the body minus its last 8 bytes, and the real MAC patches them."""
    fields = dict(msg.fields)
    if not with_mac:
        if "64" in fields:
            raise LocalProtocolError("field 64 present but no MAC function given")
        return _body(msg, fields, wire)
    fields["64"] = "00" * MAC_LEN
    return _body(msg, fields, wire)


def _signed(msg: Message, body: bytes, mac: bytes) -> bytes:
    if not isinstance(mac, bytes | bytearray) or len(mac) != MAC_LEN:
        raise LocalProtocolError(f"a MAC is {MAC_LEN} bytes")
    return frame(msg.tpdu, msg.header, body[:-MAC_LEN] + bytes(mac))


def _check_mac_function(mac: object) -> None:
    # Key bytes where a MAC function belongs would otherwise be a key on the wire.
    if mac is not None and not callable(mac):
        raise LocalProtocolError("give a MAC function (firmware.host.mac), not key bytes")


def encode(msg: Message, mac: MacFunction | None = None) -> bytes:
    """Encode to a full frame, 2-byte length included; with `mac` (a MAC function over the
    clear MAK: firmware.host.mac.clear_mac), field 64 is computed. Tracks go as they are."""
    _check_mac_function(mac)
    body = _unsigned(msg, mac is not None)
    if mac is None:
        return frame(msg.tpdu, msg.header, body)
    return _signed(msg, body, mac(body[:-MAC_LEN]))


async def encode_async(msg: Message, mac: AsyncMacFunction | None = None, *,
                       tracks: AsyncBlockCipher | None = None) -> bytes:
    """encode() for the terminal's request path: the MAC comes from the key store
    (firmware.host.mac.store_mac), and with `tracks` (the store's TDK block cipher) fields
    35 and 36 go encrypted; the message's field 53 must say so (with_tracks_encrypted)."""
    _check_mac_function(mac)
    wire: dict[str, str] = {}
    if tracks is not None:
        if not tracks_encrypted(msg):
            raise LocalProtocolError("tracks are encrypted but field 53 does not say so")
        for field in sorted(TRACK_FIELDS & msg.fields.keys()):
            wire[field] = await _encrypt_track(field, msg.fields[field], tracks)
    elif tracks_encrypted(msg) and TRACK_FIELDS & msg.fields.keys():
        raise LocalProtocolError("field 53 says the tracks are encrypted, but no track "
                                 "cipher was given")
    body = _unsigned(msg, mac is not None, wire)
    if mac is None:
        return frame(msg.tpdu, msg.header, body)
    return _signed(msg, body, await mac(body[:-MAC_LEN]))


# ---- decoding -------------------------------------------------------------------------------

def _bitmap_fields(bitmap: bytes) -> list[int]:
    return [i * 8 + bit + 1 for i, byte in enumerate(bitmap) for bit in range(8)
            if byte & (0x80 >> bit)]


def decode(payload: bytes) -> Decoded:
    """Decode a payload (the bytes after the length prefix) from the host."""
    payload = bytes(payload)
    tpdu, header, body = split(payload)
    if len(body) < 2:
        raise RemoteProtocolError("message ends before the MTI", field="t", offset=_BODY_AT)
    mti = body[:2].hex().upper()
    if mti not in ALLOWED_MTIS:
        raise RemoteProtocolError(f"MTI {mti} is not one this dialect uses",
                                  field="t", offset=_BODY_AT)
    if len(body) < 10:
        raise RemoteProtocolError("message ends inside the bitmap", field="p", offset=_BITMAP_AT)
    present = _bitmap_fields(body[2:10])
    if present and present[0] == 1:
        raise RemoteProtocolError("secondary bitmap (field 1) is not allowed in this dialect",
                                  field="1", offset=_BITMAP_AT)
    unknown = [n for n in present if str(n) not in SPEC]
    if unknown:
        # Without a spec entry we cannot know the field's length, so nothing after it parses.
        raise RemoteProtocolError(f"bitmap announces field {unknown[0]}, which the spec "
                                  "does not define", field=str(unknown[0]), offset=_BITMAP_AT)
    try:
        doc_dec, doc_enc = iso8583.decode(body, SPEC)
    except iso8583.DecodeError as exc:
        raise RemoteProtocolError(exc.msg, field=exc.field, offset=_BODY_AT + exc.pos) from None
    # Field 53 comes after the tracks, but pyiso8583 has decoded it already: its third digit
    # says whether 35/36 are tracks or encrypted nibbles.
    encrypted = tracks_encrypted(Message(mti, {"53": doc_dec.get("53", "")}))
    fields: dict[str, str] = {}
    offset = _FIELDS_AT
    for n in present:
        key = str(n)
        try:
            if encrypted and key in TRACK_FIELDS:
                fields[key] = doc_dec[key].upper()  # nibbles; decrypt_tracks() checks them
            else:
                fields[key] = from_wire(key, doc_dec[key])
        except ValueError as exc:
            raise RemoteProtocolError(str(exc), field=key, offset=offset) from None
        offset += len(doc_enc[key]["len"]) + len(doc_enc[key]["data"])
    mac_input = body[:-MAC_LEN] if "64" in fields else b""
    message = Message(mti, fields, header=header, tpdu=tpdu)
    return Decoded(message=message, mac_input=mac_input, raw=payload,
                   tracks_encrypted=encrypted and bool(TRACK_FIELDS & fields.keys()))


def verify_mac(decoded: Decoded, mac: MacFunction) -> bool:
    """True if the message carries field 64 and `mac` (clear MAK) computes the same."""
    _check_mac_function(mac)
    got = decoded.message.fields.get("64")
    if got is None:
        return False
    return hmac.compare_digest(bytes.fromhex(got), mac(decoded.mac_input))


async def verify_mac_async(decoded: Decoded, mac: AsyncMacFunction) -> bool:
    """verify_mac() with the MAC from the key store (the terminal's reply check)."""
    _check_mac_function(mac)
    got = decoded.message.fields.get("64")
    if got is None:
        return False
    return hmac.compare_digest(bytes.fromhex(got), await mac(decoded.mac_input))
