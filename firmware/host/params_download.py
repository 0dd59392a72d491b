"""The chip parameter download on the wire: CA public keys (60.3 = 372 query, 370 download,
371 end) and AID parameters (382, 380, 381), field 62 = one ASCII status byte + TLV.

Owns the builders of the terminal's 0800/0820, the parsers of the host's 0810/0830 field 62
into firmware.emv.params.Capk / AidParams (the CAPK check value is verified: SHA-1 over
RID || index || modulus || exponent), and the host's field 62 encoders the simulator serves.
Sans-I/O: firmware/app/core/chip_params.py drives the exchange and the journal stores it.

The flow (Aviapay DparaTrans.java, a public CUP terminal; docs/dialect.md, "Chip parameters"):
  0820/372 62 = "1" + NN (entries received so far)  -> 62 = "0" none, "1" list (last page),
      "2" list (more pages): 9F06 RID, 9F22 index, DF05 expiry per key
  0800/370 62 = 9F06 RID 9F22 index                 -> 62 = "1" + the key's TLV, "0" none
  0800/371                                          -> 00: the CAPK download is over
  0820/382, 0800/380 (62 = 9F06 AID), 0800/381: the same for AIDs.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

# The parse results (re-exported: the app step names them without importing firmware/emv).
from firmware.emv.params import AidParams, Capk

from .errors import LocalProtocolError, RemoteProtocolError
from .messages import Message, Terminal, pyemv_tlv  # pyemv at the first chip table, not at idle

__all__ = [
    "AID_DOWNLOAD",
    "AID_END",
    "AID_QUERY",
    "CAPK_DOWNLOAD",
    "CAPK_END",
    "CAPK_QUERY",
    "AidParams",
    "Capk",
    "CapkId",
    "DownloadError",
    "QueryPage",
    "aid_62",
    "aid_download_request",
    "aid_end_request",
    "aid_query_62",
    "aid_query_request",
    "capk_62",
    "capk_check_value",
    "capk_download_request",
    "capk_end_request",
    "capk_query_62",
    "capk_query_request",
    "parse_aid",
    "parse_aid_query",
    "parse_capk",
    "parse_capk_query",
]

CAPK_QUERY: Final = "372"
CAPK_DOWNLOAD: Final = "370"
CAPK_END: Final = "371"
AID_QUERY: Final = "382"
AID_DOWNLOAD: Final = "380"
AID_END: Final = "381"
# Field 62's first byte in the host's replies.
_NONE, _LAST, _MORE = b"0", b"1", b"2"


class DownloadError(RemoteProtocolError):
    """The host's field 62 cannot be used (malformed, or a CAPK whose check value is wrong)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="62")


@dataclass(frozen=True)
class CapkId:
    """One entry of the CAPK query's list."""

    rid: bytes
    index: int
    expiry: str = ""  # YYYYMMDD when the host gave it


@dataclass(frozen=True)
class QueryPage:
    """One 0830/372 or 382 reply: the entries and whether more pages follow."""

    entries: tuple[CapkId, ...] | tuple[bytes, ...]
    more: bool


def capk_check_value(rid: bytes, index: int, modulus: bytes, exponent: bytes) -> bytes:
    """EMV Book 2 11.2: SHA-1 over RID || index || modulus || exponent."""
    return hashlib.sha1(rid + bytes([index]) + modulus + exponent).digest()


# ---- terminal side: requests ---------------------------------------------------------

def _field60(batch: str, network: str) -> str:
    if len(batch) != 6 or not batch.isdigit():
        raise LocalProtocolError(f"batch (60.2) must be 6 digits, got {batch!r}")
    return "00" + batch + network


def _stan(stan: str) -> str:
    if len(stan) != 6 or not stan.isdigit():
        raise LocalProtocolError(f"STAN (field 11) must be 6 digits, got {stan!r}")
    return stan


def _request(mti: str, stan: str, term: Terminal, batch: str, network: str,
             field62: bytes | None) -> Message:
    fields = {"11": _stan(stan), "41": term.tid, "42": term.mid,
              "60": _field60(batch, network)}
    if field62 is not None:
        fields["62"] = field62.hex().upper()
    return Message(mti, fields)


def _received(count: int) -> bytes:
    if not 0 <= count <= 99:
        raise LocalProtocolError(f"a query page counts 0-99 entries received, got {count}")
    return b"1" + f"{count:02d}".encode()


def capk_query_request(stan: str, term: Terminal, batch: str, received: int) -> Message:
    """0820/372: which CA keys does the host have (from entry `received` on)."""
    return _request("0820", stan, term, batch, CAPK_QUERY, _received(received))


def aid_query_request(stan: str, term: Terminal, batch: str, received: int) -> Message:
    """0820/382: which AIDs does the host have (from entry `received` on)."""
    return _request("0820", stan, term, batch, AID_QUERY, _received(received))


def capk_download_request(stan: str, term: Terminal, batch: str, key: CapkId) -> Message:
    """0800/370 for one key, named by RID and index."""
    tlv = pyemv_tlv()
    if len(key.rid) != 5 or not 0 <= key.index <= 255:
        raise LocalProtocolError("a CAPK is named by a 5-byte RID and a one-byte index")
    return _request("0800", stan, term, batch, CAPK_DOWNLOAD,
                    tlv.encode({"9F06": key.rid, "9F22": bytes([key.index])}))


def aid_download_request(stan: str, term: Terminal, batch: str, aid: bytes) -> Message:
    """0800/380 for one AID."""
    tlv = pyemv_tlv()
    if not 5 <= len(aid) <= 16:
        raise LocalProtocolError(f"an AID is 5-16 bytes, got {len(aid)}")
    return _request("0800", stan, term, batch, AID_DOWNLOAD, tlv.encode({"9F06": aid}))


def capk_end_request(stan: str, term: Terminal, batch: str) -> Message:
    """0800/371: the terminal has stored the keys."""
    return _request("0800", stan, term, batch, CAPK_END, None)


def aid_end_request(stan: str, term: Terminal, batch: str) -> Message:
    """0800/381: the terminal has stored the AID parameters."""
    return _request("0800", stan, term, batch, AID_END, None)


# ---- terminal side: parsing the host's 62 ---------------------------------------------

def _split(field62: str) -> tuple[bytes, dict[str, bytes]]:
    """(status byte, TLVs) of a reply's field 62; DownloadError when malformed."""
    try:
        raw = bytes.fromhex(field62)
    except ValueError:
        raise DownloadError("field 62 is not hex") from None
    if not raw or raw[:1] not in (_NONE, _LAST, _MORE):
        raise DownloadError("field 62 does not start with the status byte 0, 1 or 2")
    if raw[:1] == _NONE:
        return _NONE, {}
    return raw[:1], _decode(raw[1:])


def _decode(data: bytes) -> dict[str, bytes]:
    tlv = pyemv_tlv()
    try:
        return tlv.decode(data, flatten=True)
    except (tlv.DecodeError, ValueError) as exc:
        raise DownloadError(f"field 62 is not well-formed TLV ({exc})") from None


def _entries(data: bytes, first: str) -> list[dict[str, bytes]]:
    """A query list: TLVs in sequence, a new entry at each `first` tag."""
    out: list[dict[str, bytes]] = []
    i = 0
    while i < len(data):
        # One TLV at a time (the list repeats tags, which a dict cannot hold).
        tag_len = 2 if data[i] & 0x1F == 0x1F else 1
        if i + tag_len >= len(data):
            raise DownloadError("field 62 ends inside a tag")
        length = data[i + tag_len]
        if length & 0x80:
            raise DownloadError("a query entry longer than 127 bytes")
        end = i + tag_len + 1 + length
        if end > len(data):
            raise DownloadError("field 62 ends inside a value")
        tag, value = data[i:i + tag_len].hex().upper(), data[i + tag_len + 1:end]
        if tag == first or not out:
            if tag != first:
                raise DownloadError(f"a query entry starts with {tag}, not {first}")
            out.append({})
        out[-1][tag] = value
        i = end
    return out


def _date(value: bytes) -> str:
    """DF05 expiry: 4 BCD bytes YYYYMMDD, 3 BCD bytes YYMMDD, or 8 ASCII digits."""
    text = value.decode("ascii") if len(value) == 8 else value.hex()
    if not text.isdigit() or len(text) not in (6, 8):
        raise DownloadError(f"DF05 expiry {value.hex()} is not a date")
    return text if len(text) == 8 else "20" + text


def _query(field62: str, first: str) -> tuple[list[dict[str, bytes]], bool]:
    try:
        raw = bytes.fromhex(field62)
    except ValueError:
        raise DownloadError("field 62 is not hex") from None
    if not raw or raw[:1] not in (_NONE, _LAST, _MORE):
        raise DownloadError("field 62 does not start with the status byte 0, 1 or 2")
    if raw[:1] == _NONE:
        return [], False
    return _entries(raw[1:], first), raw[:1] == _MORE


def parse_capk_query(field62: str) -> QueryPage:
    """The keys one 0830/372 lists."""
    entries, more = _query(field62, "9F06")
    keys = []
    for e in entries:
        if len(e.get("9F06", b"")) != 5 or len(e.get("9F22", b"")) != 1:
            raise DownloadError("a CAPK query entry needs a 5-byte 9F06 and a 1-byte 9F22")
        keys.append(CapkId(e["9F06"], e["9F22"][0], _date(e["DF05"]) if "DF05" in e else ""))
    return QueryPage(tuple(keys), more)


def parse_aid_query(field62: str) -> QueryPage:
    """The AIDs one 0830/382 lists."""
    entries, more = _query(field62, "9F06")
    aids = []
    for e in entries:
        if not 5 <= len(e["9F06"]) <= 16:
            raise DownloadError(f"an AID of {len(e['9F06'])} bytes")
        aids.append(e["9F06"])
    return QueryPage(tuple(aids), more)


def parse_capk(field62: str) -> Capk | None:
    """One key from a 0810/370 (None: the host has no such key). A key whose DF03 is not the
    SHA-1 of its parts is refused: a key corrupted on the way would fail every card of its
    scheme, or worse, a wrong key would be trusted."""
    status, t = _split(field62)
    if status == _NONE:
        return None
    missing = [tag for tag in ("9F06", "9F22", "DF02", "DF04", "DF03") if tag not in t]
    if missing:
        raise DownloadError(f"the CA key lacks {', '.join(missing)}")
    rid, index_b, modulus, exponent = t["9F06"], t["9F22"], t["DF02"], t["DF04"]
    if len(rid) != 5 or len(index_b) != 1:
        raise DownloadError("the CA key's RID must be 5 bytes and its index 1")
    if exponent not in (b"\x03", b"\x01\x00\x01") or not 64 <= len(modulus) <= 248:
        raise DownloadError("the CA key's exponent must be 3 or 65537 and its modulus "
                            "64-248 bytes")
    index = index_b[0]
    expected = capk_check_value(rid, index, modulus, exponent)
    if not hmac.compare_digest(expected, t["DF03"]):
        raise DownloadError(f"the CA key {rid.hex().upper()}/{index:02X} is refused: its check "
                            f"value DF03 is not the SHA-1 of RID, index, modulus and exponent")
    expiry = _date(t["DF05"]) if "DF05" in t else "20491231"
    return Capk(rid=rid, index=index, modulus=modulus, exponent=exponent,
                check_value=t["DF03"], expiry=expiry)


def _bcd_int(tag: str, value: bytes) -> int:
    digits = value.hex()
    if not digits.isdigit():
        raise DownloadError(f"{tag} is not BCD")
    return int(digits or "0")


def parse_aid(field62: str) -> AidParams | None:
    """One AID's parameters from a 0810/380 (None: the host has no such AID)."""
    status, t = _split(field62)
    if status == _NONE:
        return None
    if "9F06" not in t or not 5 <= len(t["9F06"]) <= 16:
        raise DownloadError("the AID parameters lack a 5-16 byte 9F06")
    kw: dict[str, object] = {"aid": t["9F06"]}
    if "DF01" in t:
        kw["partial_match"] = t["DF01"][:1] == b"\x00"  # 00: partial selection allowed
    for tag, name in (("9F09", "app_version"), ("DF11", "tac_default"), ("DF12", "tac_online"),
                      ("DF13", "tac_denial"), ("DF14", "default_ddol"), ("97", "default_tdol")):
        if tag in t:
            kw[name] = t[tag]
    for tag in ("DF11", "DF12", "DF13"):
        if tag in t and len(t[tag]) != 5:
            raise DownloadError(f"{tag} (a terminal action code) must be 5 bytes")
    for tag, name in (("9F1B", "floor_limit"), ("DF15", "random_threshold"),
                      ("DF16", "random_max_percent"), ("DF17", "random_target_percent")):
        if tag in t:
            kw[name] = _bcd_int(tag, t[tag])
    if "DF18" in t:
        kw["online_pin_capable"] = t["DF18"][:1] != b"\x00"
    return AidParams(**kw)  # type: ignore[arg-type]


# ---- host side: the simulator's field 62 ----------------------------------------------

def _bcd(value: int, length: int) -> bytes:
    return bytes.fromhex(f"{value:0{length * 2}d}")


def capk_query_62(keys: list[Capk], more: bool) -> str:
    """A 0830/372's 62: the keys' RID, index and expiry ("0" when the list is empty)."""
    tlv = pyemv_tlv()
    if not keys:
        return _NONE.hex().upper()
    body = b"".join(tlv.encode({"9F06": k.rid, "9F22": bytes([k.index]),
                                "DF05": bytes.fromhex(k.expiry)}) for k in keys)
    return ((_MORE if more else _LAST) + body).hex().upper()


def aid_query_62(aids: list[AidParams], more: bool) -> str:
    """A 0830/382's 62: the AIDs ("0" when the list is empty)."""
    tlv = pyemv_tlv()
    if not aids:
        return _NONE.hex().upper()
    body = b"".join(tlv.encode({"9F06": a.aid}) for a in aids)
    return ((_MORE if more else _LAST) + body).hex().upper()


def capk_62(key: Capk | None) -> str:
    """A 0810/370's 62: the key, or "0"."""
    tlv = pyemv_tlv()
    if key is None:
        return _NONE.hex().upper()
    check = key.check_value or capk_check_value(key.rid, key.index, key.modulus, key.exponent)
    return (_LAST + tlv.encode({
        "9F06": key.rid, "9F22": bytes([key.index]), "DF05": bytes.fromhex(key.expiry),
        "DF06": b"\x01", "DF07": b"\x01",  # hash and key algorithm: SHA-1, RSA
        "DF02": key.modulus, "DF04": key.exponent, "DF03": check,
    })).hex().upper()


def aid_62(params: AidParams | None) -> str:
    """A 0810/380's 62: the AID's parameters, or "0"."""
    tlv = pyemv_tlv()
    if params is None:
        return _NONE.hex().upper()
    fields: dict[str, bytes] = {
        "9F06": params.aid, "DF01": b"\x00" if params.partial_match else b"\x01",
        "9F09": params.app_version, "DF11": params.tac_default, "DF12": params.tac_online,
        "DF13": params.tac_denial, "9F1B": _bcd(params.floor_limit, 6),
        "DF15": _bcd(params.random_threshold, 6), "DF16": _bcd(params.random_max_percent, 1),
        "DF17": _bcd(params.random_target_percent, 1), "DF14": params.default_ddol,
        "DF18": b"\x01" if params.online_pin_capable else b"\x00",
    }
    if params.default_tdol:
        fields["97"] = params.default_tdol
    return (_LAST + tlv.encode(fields)).hex().upper()
