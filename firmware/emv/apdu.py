"""Command APDUs the kernel sends (EMV 4.3 Book 1 11, Book 3 6.5) and the status word checks.
Case 4 commands carry Le = 00 (T=1 style: the transport returns the whole answer)."""

from __future__ import annotations

PSE_NAME = b"1PAY.SYS.DDF01"

# GENERATE AC reference control parameter (P1, Book 3 6.5.5.2)
P1_AAC = 0x00
P1_TC = 0x40
P1_ARQC = 0x80

SW_OK = 0x9000
SW_BLOCKED = 0x6283        # selected file (application / PSE) invalidated
SW_NOT_SUPPORTED = 0x6A81  # function not supported: the card is blocked (Book 1 12.3.2)
SW_NOT_FOUND = 0x6A82
SW_RECORD_NOT_FOUND = 0x6A83
SW_CONDITIONS = 0x6985     # conditions of use not satisfied (GPO: take the next application)


class ApduError(ValueError):
    """A response too short to carry a status word."""


def _case4(header: bytes, data: bytes) -> bytes:
    if len(data) > 255:
        raise ValueError("command data over 255 bytes")
    return header + bytes([len(data)]) + data + b"\x00"


def select(name: bytes, *, next_occurrence: bool = False) -> bytes:
    """SELECT by DF name; P2 = 02 asks for the next application whose name starts with it."""
    return _case4(bytes([0x00, 0xA4, 0x04, 0x02 if next_occurrence else 0x00]), name)


def read_record(sfi: int, record: int) -> bytes:
    return bytes([0x00, 0xB2, record, (sfi << 3) | 0x04, 0x00])


def get_processing_options(pdol_data: bytes) -> bytes:
    # the command template 83 around the PDOL data (empty PDOL: 83 00)
    return _case4(b"\x80\xa8\x00\x00", b"\x83" + bytes([len(pdol_data)]) + pdol_data)


def get_data(tag: str) -> bytes:
    t = bytes.fromhex(tag).rjust(2, b"\x00")
    return bytes([0x80, 0xCA, t[0], t[1], 0x00])


def internal_authenticate(ddol_data: bytes) -> bytes:
    return _case4(b"\x00\x88\x00\x00", ddol_data)


def generate_ac(p1: int, cdol_data: bytes) -> bytes:
    return _case4(bytes([0x80, 0xAE, p1, 0x00]), cdol_data)


def external_authenticate(issuer_auth_data: bytes) -> bytes:
    # case 3: no Le
    return b"\x00\x82\x00\x00" + bytes([len(issuer_auth_data)]) + issuer_auth_data


def sw(rapdu: bytes) -> int:
    if len(rapdu) < 2:
        raise ApduError(f"response of {len(rapdu)} bytes has no status word")
    return int.from_bytes(rapdu[-2:], "big")


def data(rapdu: bytes) -> bytes:
    return bytes(rapdu[:-2])


def ok(rapdu: bytes) -> bool:
    return len(rapdu) >= 2 and sw(rapdu) == SW_OK


def script_command_ok(rapdu: bytes) -> bool:
    """An issuer script command succeeded: SW1 90, 62 or 63 (Book 3 10.10)."""
    return len(rapdu) >= 2 and rapdu[-2] in (0x90, 0x62, 0x63)
