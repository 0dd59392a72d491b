"""Message <-> frame bytes: pyiso8583 with SPEC, framing, and field 64.

encode() raises LocalProtocolError naming the field; decode() raises only
RemoteProtocolError, with the field and the byte offset in the payload.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

import iso8583

from .errors import LocalProtocolError, RemoteProtocolError
from .framing import HEADER_LEN, TPDU_LEN, frame, split
from .mac import MAC_LEN, cup_ecb_mac
from .messages import Message
from .spec import SPEC, from_wire, to_wire

__all__ = ["ALLOWED_MTIS", "Decoded", "decode", "encode", "verify_mac"]

ALLOWED_MTIS: Final = frozenset({
    "0100", "0110", "0200", "0210", "0220", "0230", "0320", "0330",
    "0400", "0410", "0500", "0510", "0620", "0630", "0800", "0810", "0820", "0830",
})
_BODY_AT: Final = TPDU_LEN + HEADER_LEN  # payload offset of the MTI
_BITMAP_AT: Final = _BODY_AT + 2
_FIELDS_AT: Final = _BITMAP_AT + 8


@dataclass(frozen=True)
class Decoded:
    """A decoded host message plus what MAC verification needs."""

    message: Message
    mac_input: bytes  # MTI .. last byte before field 64 (empty if no 64)
    raw: bytes  # the payload as received (TPDU onward, without the length prefix)

    @property
    def fields(self) -> dict[str, str]:
        return self.message.fields


def _body(msg: Message, fields: dict[str, str]) -> bytes:
    if not isinstance(msg.mti, str) or msg.mti not in ALLOWED_MTIS:
        raise LocalProtocolError(f"MTI {msg.mti!r} is not one this dialect uses")
    doc: dict[str, str] = {"t": msg.mti}
    for key, value in fields.items():
        if key not in SPEC or key in ("h", "t", "p"):
            raise LocalProtocolError(f"field {key} is not in the CUP spec")
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


def encode(msg: Message, mak: bytes | None = None) -> bytes:
    """Encode to a full frame, 2-byte length included; with `mak`, field 64 is computed."""
    fields = dict(msg.fields)
    if mak is None:
        if "64" in fields:
            raise LocalProtocolError("field 64 present but no MAC key given")
        body = _body(msg, fields)
    else:
        # Encode with a placeholder MAC; 64 is the last field and fixed-size, so the
        # MAC block is the body minus its last 8 bytes, and the real MAC patches them.
        fields["64"] = "00" * MAC_LEN
        body = _body(msg, fields)
        body = body[:-MAC_LEN] + cup_ecb_mac(mak, body[:-MAC_LEN])
    return frame(msg.tpdu, msg.header, body)


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
    fields: dict[str, str] = {}
    offset = _FIELDS_AT
    for n in present:
        key = str(n)
        try:
            fields[key] = from_wire(key, doc_dec[key])
        except ValueError as exc:
            raise RemoteProtocolError(str(exc), field=key, offset=offset) from None
        offset += len(doc_enc[key]["len"]) + len(doc_enc[key]["data"])
    mac_input = body[:-MAC_LEN] if "64" in fields else b""
    message = Message(mti, fields, header=header, tpdu=tpdu)
    return Decoded(message=message, mac_input=mac_input, raw=payload)


def verify_mac(decoded: Decoded, mak: bytes) -> bool:
    """True if the message carries field 64 and it is right for `mak`."""
    mac = decoded.message.fields.get("64")
    if mac is None:
        return False
    expected = cup_ecb_mac(mak, decoded.mac_input)
    return hmac.compare_digest(bytes.fromhex(mac), expected)
