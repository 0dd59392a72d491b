"""BER-TLV for the kernel: a thin layer on pyemv.tlv, plus the two things it does not do.

pyemv.tlv decodes into a dict, so a template that repeats a tag (the PSE directory's 61 entries,
a host's several 71 scripts, a script's 86 commands) would keep only the last one: `items` walks
one level by hand and keeps every object in order. pyemv has no Data Object List (DOL) support:
`parse_dol` and `build_dol` are written here (EMV 4.3 Book 3, 5.4). Everything else (flattened
decoding, encoding, length forms, validation) is pyemv's.

Tags are upper-case hex strings ("9F26"), values bytes, as pyemv gives them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import ModuleType


def pyemv_tlv() -> ModuleType:
    """pyemv.tlv, imported at the first use: importing pyemv loads its cryptogram and MAC modules
    and with them cryptography (megabytes resident), which the idle terminal does not need."""
    from pyemv import tlv

    return tlv


class TlvError(ValueError):
    """Malformed BER-TLV or DOL; the message says where."""


def decode(data: bytes) -> dict[str, bytes]:
    """Every primitive object at any depth, tag -> value, in the order met (a repeated tag keeps
    its last value: use `items` where repeats matter)."""
    pyemv = pyemv_tlv()
    try:
        return dict(pyemv.decode(bytes(data), flatten=True))
    except pyemv.DecodeError as exc:
        raise TlvError(f"malformed TLV: {exc}") from None


def _read_tag(data: bytes, pos: int) -> tuple[str, int]:
    start = pos
    if pos >= len(data):
        raise TlvError(f"tag missing at offset {pos}")
    if data[pos] & 0x1F == 0x1F:
        pos += 1
        while pos < len(data) and data[pos] & 0x80:
            pos += 1
    pos += 1
    if pos > len(data):
        raise TlvError(f"tag cut short at offset {start}")
    return data[start:pos].hex().upper(), pos


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise TlvError(f"length missing at offset {pos}")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if size == 0 or size > 3 or pos + 1 + size > len(data):
        raise TlvError(f"bad length form at offset {pos}")
    return int.from_bytes(data[pos + 1:pos + 1 + size], "big"), pos + 1 + size


def items(data: bytes) -> list[tuple[str, bytes]]:
    """The objects of one level, in order, repeats kept; a constructed object's value is its raw
    content (pass it to `items` or `decode` again). Padding 00/FF between objects is skipped
    (Book 3 B: allowed before, between and after objects)."""
    data = bytes(data)
    out: list[tuple[str, bytes]] = []
    pos = 0
    while pos < len(data):
        if data[pos] in (0x00, 0xFF):
            pos += 1
            continue
        tag, pos = _read_tag(data, pos)
        length, pos = _read_length(data, pos)
        if pos + length > len(data):
            raise TlvError(f"value of {tag} runs past the end ({length} bytes at offset {pos})")
        out.append((tag, data[pos:pos + length]))
        pos += length
    return out


def is_constructed(tag: str) -> bool:
    return bool(bytes.fromhex(tag)[0] & 0x20)


def find(data: bytes, tag: str) -> bytes | None:
    """The first value of tag at any depth (templates searched in order)."""
    for t, value in items(data):
        if t == tag:
            return value
        if is_constructed(t):
            found = find(value, tag)
            if found is not None:
                return found
    return None


def encode_one(tag: str, value: bytes) -> bytes:
    """One object; a constructed tag's value is its already-encoded content (pyemv wants a
    dict there, which cannot hold repeated children: the header is written here)."""
    if is_constructed(tag):
        size = len(value)
        width = (size.bit_length() + 7) // 8
        length = bytes([size]) if size < 0x80 else bytes([0x80 | width]) + size.to_bytes(width, "big")
        return bytes.fromhex(tag) + length + bytes(value)
    return pyemv_tlv().encode({tag: bytes(value)})


def encode(pairs: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> bytes:
    """Primitive objects in the order given (a mapping's order, or a sequence that may repeat)."""
    seq = pairs.items() if isinstance(pairs, Mapping) else pairs
    return b"".join(encode_one(tag, value) for tag, value in seq)


def parse_dol(dol: bytes) -> list[tuple[str, int]]:
    """A Data Object List: (tag, length) pairs, in order."""
    dol = bytes(dol)
    out: list[tuple[str, int]] = []
    pos = 0
    while pos < len(dol):
        tag, pos = _read_tag(dol, pos)
        length, pos = _read_length(dol, pos)
        out.append((tag, length))
    return out


# Tags of format n (BCD, right-justified: padded / cut on the left, Book 3 5.4). Every other
# tag is padded with 00 / cut on the right (an and/b value; cn is not met in our DOLs).
NUMERIC_TAGS: frozenset[str] = frozenset({
    "9F02", "9F03", "9F1A", "5F2A", "9A", "9C", "9F21", "9F41", "5F36", "9F15", "9F1B",
    "9F42", "9F44",
})


def dol_value(tag: str, length: int, value: bytes | None) -> bytes:
    """One DOL entry's data: the value fitted to length; absent -> zeros (Book 3 5.4)."""
    if value is None or is_constructed(tag):
        return bytes(length)
    if tag in NUMERIC_TAGS:
        return value[-length:].rjust(length, b"\x00") if length else b""
    return value[:length].ljust(length, b"\x00")


def build_dol(dol: bytes, values: Mapping[str, bytes]) -> bytes:
    """The data a DOL asks for, from values (tag -> bytes)."""
    return b"".join(dol_value(tag, length, values.get(tag)) for tag, length in parse_dol(dol))


def dol_names(dol: bytes, tag: str) -> bool:
    return any(t == tag for t, _ in parse_dol(dol))
