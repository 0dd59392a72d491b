"""The terminal's chip parameter tables: CA public keys (CAPK) and AID parameters, as the host
downloads them (0800 with 60.3 = 370 / 380, field 62 TLV) and the kernel reads them.

Plain frozen data, no I/O: the journal stores them (atomically, versioned) and hands an
EmvParams to the kernel for each transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Capk:
    """One certification authority public key (EMV Book 2, 11.2): RID 9F06 (5 bytes), index 9F22,
    modulus DF02, exponent DF04, SHA-1 check value DF03 over RID || index || modulus || exponent,
    expiry DF05 (YYYYMMDD)."""

    rid: bytes
    index: int
    modulus: bytes
    exponent: bytes
    check_value: bytes = b""
    expiry: str = "20491231"


@dataclass(frozen=True)
class AidParams:
    """One application the terminal accepts (the AID parameter download's DF01, DF11-DF21)."""

    aid: bytes                     # 9F06: the (possibly partial) AID
    partial_match: bool = True     # DF01 = 00: an ADF whose AID starts with this one is accepted
    app_version: bytes = b"\x00\x30"  # 9F09: the terminal's application version number
    tac_default: bytes = bytes(5)  # DF11
    tac_online: bytes = bytes(5)   # DF12
    tac_denial: bytes = bytes(5)   # DF13
    floor_limit: int = 0           # 9F1B, fen: 0 = every transaction goes online
    random_threshold: int = 0      # DF15, fen
    random_max_percent: int = 0    # DF16
    random_target_percent: int = 0  # DF17
    online_pin_capable: bool = True  # DF18
    default_ddol: bytes = b"\x9f\x37\x04"  # DF14
    default_tdol: bytes = b""      # 97 default


@dataclass(frozen=True)
class EmvParams:
    """What the terminal holds: its AIDs and CAPKs, and the version of each table (the host's
    download version; "" when the built-in defaults are in use)."""

    aids: tuple[AidParams, ...] = ()
    capks: tuple[Capk, ...] = ()
    aid_version: str = ""
    capk_version: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def capk(self, rid: bytes, index: int) -> Capk | None:
        for key in self.capks:
            if key.rid == rid and key.index == index:
                return key
        return None


# The CUP applications every CUP terminal accepts before its first parameter download: debit and
# credit (partial selection also takes their longer AIDs), floor limit 0 (online-only), the
# terminal action codes open CUP terminals ship with (docs/chip.md). No CA keys: until the host
# sends them, offline data authentication cannot be done and the TVR says so (the host decides).
_CUP_TACS = {"tac_default": bytes.fromhex("D84000A800"),
             "tac_denial": bytes.fromhex("0010000000"),
             "tac_online": bytes.fromhex("D84004F800")}
BUILT_IN_EMV_PARAMS = EmvParams(aids=tuple(
    AidParams(aid=bytes.fromhex(aid), **_CUP_TACS)
    for aid in ("A000000333010101", "A000000333010102")))
