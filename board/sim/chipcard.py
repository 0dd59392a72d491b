"""The test chip card's application: a PBOC/EMV contact card answering APDUs (EMV 4.x Book 1-3,
the chip contract of issue 16). Used by the PC/SC virtual card (vpcd) and the emulated serial
reader through the `ChipCardApp` protocol; board.sim.chipcards holds the test cards' profiles and
builds them with `make_card(name)`.

Owns: the card's personalisation from a profile (FCI, PSE directory, records, certificates, via
board.sim.emvcrypto), its commands (SELECT incl. PSE and partial AID, READ RECORD, GET
PROCESSING OPTIONS, INTERNAL AUTHENTICATE, GENERATE AC 1 and 2, EXTERNAL AUTHENTICATE, GET DATA,
VERIFY, the APPLICATION BLOCK / UNBLOCK script commands) and its counters (ATC, PIN tries,
blocked applications), kept in the object and optionally in a small JSON state file (counters
and flags only: never the PAN, track 2 equivalent or PIN).

Our CVR (card verification results, 9F10 bytes 3..6, PBOC-like, our layout):
  CVR0 = 03 (length of what follows);
  CVR1: b8-7 AC at GEN AC2 (00 AAC, 01 TC, 10 not requested), b6-5 AC at GEN AC1 (00 AAC,
        10 ARQC), b4 issuer authentication performed and failed, b3 offline PIN performed,
        b2 offline PIN failed, b1 unable to go online (ARC Y3/Z3 at GEN AC2);
  CVR2: b8 last online transaction not completed, b7 PIN try limit exceeded, b5 issuer script
        processing failed, b1 application blocked;
  CVR3: b8-5 the number of script commands processed in this transaction.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, Protocol

from pyemv import tlv

from board.sim import emvcrypto
from board.sim.emvcrypto import CDOL1, CDOL2, CID, RsaKey

__all__ = [
    "AID_CREDIT",
    "AID_DEBIT",
    "CDOL1",
    "CDOL2",
    "PDOL",
    "PSE_NAME",
    "AppSpec",
    "CardProfile",
    "ChipCardApp",
    "EmvCard",
    "IssuerKeys",
]

AID_DEBIT: Final = bytes.fromhex("A000000333010101")
AID_CREDIT: Final = bytes.fromhex("A000000333010102")
PSE_NAME: Final = b"1PAY.SYS.DDF01"

PDOL: Final = bytes.fromhex("9F1A029F02069F3704")
DDOL: Final = bytes.fromhex("9F3704")

# A T=1 ATR: T0 = 89 (TD1 follows, 9 historical bytes), TD1 = 80 (TD2 follows, T=0 listed),
# TD2 = 01 (T=1), the historical bytes, TCK (XOR of T0 .. the last historical byte).
_HISTORICAL: Final = b"POSFW-EMV"
_ATR_BODY: Final = bytes([0x89, 0x80, 0x01]) + _HISTORICAL


def _tck(body: bytes) -> int:
    x = 0
    for b in body:
        x ^= b
    return x


ATR: Final = b"\x3b" + _ATR_BODY + bytes([_tck(_ATR_BODY)])

# Status words (EMV Book 1 / Book 3, ISO 7816-4).
SW_OK: Final = b"\x90\x00"
SW_SELECTED_BLOCKED: Final = b"\x62\x83"
SW_ARPC_WRONG: Final = b"\x63\x00"
SW_WRONG_LENGTH: Final = b"\x67\x00"
SW_BAD_DATA: Final = b"\x6a\x80"
SW_NOT_SATISFIED: Final = b"\x69\x85"
SW_PIN_BLOCKED: Final = b"\x69\x83"
SW_BAD_MAC: Final = b"\x69\x88"
SW_NOT_FOUND: Final = b"\x6a\x82"
SW_NO_RECORD: Final = b"\x6a\x83"
SW_BAD_P1P2: Final = b"\x6a\x86"
SW_NO_DATA: Final = b"\x6a\x88"
SW_BAD_INS: Final = b"\x6d\x00"
SW_BAD_CLA: Final = b"\x6e\x00"

# ARCs that mean the terminal did not reach the issuer (offline approved / declined).
_OFFLINE_ARCS: Final = frozenset({b"Y1", b"Z1", b"Y3", b"Z3"})
_PIN_TRIES: Final = 3


class ChipCardApp(Protocol):
    """What the PC/SC virtual card and the emulated reader need of a card (T=1 style: the whole
    response in one answer, never 61xx)."""

    atr: bytes

    def power_up(self) -> bytes: ...

    def power_down(self) -> None: ...

    def apdu(self, command: bytes) -> bytes: ...


@dataclass(frozen=True, repr=False)
class IssuerKeys:
    """One test issuer: its master keys (double-length 3DES, TEST values) and its RSA key's name
    in board/sim/emvkeys. The host simulator looks them up by PAN."""

    name: str
    imk_ac: bytes
    imk_smi: bytes
    rsa_key: str = "issuer_1152"
    issuer_id: bytes = bytes.fromhex("622848FF")

    def __repr__(self) -> str:
        return f"IssuerKeys({self.name!r})"


@dataclass(frozen=True)
class AppSpec:
    """One application on a card: what the PSE and the FCI say about it, and optional
    overrides of the card's CVM / ODA for this application."""

    aid: bytes
    label: str
    preferred_name: str
    priority: int = 1
    confirm: bool = False
    cvm: Literal["online_pin", "signature"] | None = None
    oda: Literal["dda", "sda"] | None = None


@dataclass(frozen=True, repr=False)
class CardProfile:
    """A test card: data (PAN, dates, PIN) and behaviour knobs (see board.sim.chipcards)."""

    name: str
    pan: str
    apps: tuple[AppSpec, ...]
    what: str = ""
    psn: str = "01"
    expiry: str = "301231"       # 5F24 YYMMDD
    effective: str = "200101"    # 5F25 YYMMDD
    service_code: str = "220"
    holder: str = "TEST/CUP CARD"
    pin: str = "123456"          # the offline plaintext PIN (VERIFY) and the online PIN
    cvm: Literal["online_pin", "signature"] = "online_pin"
    oda: Literal["dda", "sda"] = "dda"
    icc_key: str | None = None   # emvkeys/<icc_key>.pem for DDA
    pse: bool = True
    pdol: bool = True
    declines_first: bool = False   # AAC at GEN AC1 whatever is asked
    declines_second: bool = False  # AAC at GEN AC2 whatever is asked
    bad_cert: bool = False         # the ICC certificate is signed with the wrong issuer key
    bad_sda: bool = False          # the SSAD's hash is broken
    approve_without_issuer_auth: bool = False  # TC at GEN AC2 though issuer auth failed/not done
    iac_default: bytes = bytes.fromhex("D84000A800")
    iac_denial: bytes = bytes.fromhex("0000000000")
    iac_online: bytes = bytes.fromhex("D84004F800")

    def __repr__(self) -> str:
        # No PAN or PIN in a repr (it ends up in logs and test output).
        return f"CardProfile({self.name!r}, pan={self.pan[:6]}...{self.pan[-4:]})"

    @property
    def track2(self) -> str:
        """Track 2 of the card's magstripe twin: 'PAN=YYMMSSS' + discretionary zeros (37)."""
        head = f"{self.pan}={self.expiry[:4]}{self.service_code}"
        return head + "0" * (37 - len(head))


_CVM_LISTS: Final[dict[str, bytes]] = {
    # X = Y = 0; enciphered online PIN if the terminal supports it (apply the next rule when it
    # fails), else signature if supported, else no CVM.
    "online_pin": bytes(8) + bytes.fromhex("42031E031F00"),
    "signature": bytes(8) + bytes.fromhex("1E031F00"),
}
_AIP: Final[dict[str, bytes]] = {
    # byte 1: b6 DDA / b7 SDA, b5 cardholder verification, b4 terminal risk management,
    # b3 issuer authentication (EXTERNAL AUTHENTICATE).
    "dda": bytes([0x3C, 0x00]),
    "sda": bytes([0x5C, 0x00]),
}
# SFI 1 records 1-2 (record 1 for ODA), SFI 2 records 1-2 (not signed).
_AFL: Final = bytes.fromhex("08010201" "10010200")
_CERT_EXPIRY: Final = bytes.fromhex("1249")  # MMYY: every test certificate runs to 12/2049


@dataclass
class _App:
    """One personalised application: FCI, records and keys."""

    spec: AppSpec
    fci: bytes
    aip: bytes
    records: dict[tuple[int, int], bytes]
    icc: RsaKey | None
    pdol_len: int


def _tlv(tag: str, value: bytes) -> bytes:
    """One TLV; a constructed tag's value is given encoded (re-read so pyemv frames it)."""
    constructed = bytes.fromhex(tag)[0] & 0x20
    return tlv.encode({tag: tlv.decode(value) if constructed else value})


def _dol_length(dol: bytes) -> int:
    """The total length a DOL asks for."""
    return sum(length for _, length in emvcrypto.parse_dol(dol))


def _personalise(profile: CardProfile, issuer: IssuerKeys, ca: RsaKey,
                 spec: AppSpec) -> _App:
    cvm = spec.cvm or profile.cvm
    oda = spec.oda or profile.oda
    aip = _AIP[oda]
    pdol = PDOL if profile.pdol else b""
    fci_prop: dict[str, bytes] = {
        "50": spec.label.encode(),
        "87": bytes([spec.priority | (0x80 if spec.confirm else 0)]),
    }
    if pdol:
        fci_prop["9F38"] = pdol
    fci_prop.update({"5F2D": b"zhen", "9F11": b"\x01", "9F12": spec.preferred_name.encode()})
    fci = tlv.encode({"6F": {"84": spec.aid, "A5": fci_prop}})

    signed = tlv.encode({
        "5A": bytes.fromhex(profile.pan + "F" * (len(profile.pan) % 2)),
        "5F24": bytes.fromhex(profile.expiry),
        "5F25": bytes.fromhex(profile.effective),
        "5F34": bytes.fromhex(profile.psn),
        "5F28": b"\x01\x56",
        "5F30": bytes.fromhex("0" + profile.service_code),
        "9F07": b"\xff\x00",
        "9F08": b"\x00\x30",
        "8C": CDOL1,
        "8D": CDOL2,
        "8E": _CVM_LISTS[cvm],
        "9F0D": profile.iac_default,
        "9F0E": profile.iac_denial,
        "9F0F": profile.iac_online,
        "9F4A": b"\x82",
    })
    track2 = profile.track2.replace("=", "D")
    plain = tlv.encode({
        "57": bytes.fromhex(track2 + "F" * (len(track2) % 2)),
        "5F20": profile.holder.encode(),
    })
    # Static data to be authenticated: SFI 1 record 1 (SFI 1-10: the record's value, without
    # tag 70 and its length) then the value of each tag in 9F4A (82 AIP). EMV Book 3 10.3.
    static_data = signed + aip

    issuer_key = emvcrypto.load_key(issuer.rsa_key)
    cert90, rem92, exp9f32 = emvcrypto.build_issuer_cert(
        ca, issuer_key, issuer.issuer_id, _CERT_EXPIRY, b"\x00\x00\x01")
    issuer_rec = tlv.encode({"8F": b"\x80", "90": cert90, "92": rem92, "9F32": exp9f32})
    icc: RsaKey | None = None
    if oda == "dda":
        if profile.icc_key is None:
            raise ValueError(f"{profile.name}: a DDA card needs an ICC key")
        icc = emvcrypto.load_key(profile.icc_key)
        signer = emvcrypto.load_key("rogue_issuer_1152") if profile.bad_cert else issuer_key
        cert46, rem48, exp47 = emvcrypto.build_icc_cert(
            signer, icc, profile.pan, _CERT_EXPIRY, b"\x00\x00\x01", static_data)
        oda_rec = tlv.encode({"9F46": cert46, "9F47": exp47, "9F48": rem48, "9F49": DDOL})
    else:
        ssad = emvcrypto.build_ssad(issuer_key, static_data, b"\xda\xc1",
                                    break_hash=profile.bad_sda)
        oda_rec = tlv.encode({"93": ssad})

    records = {
        (1, 1): _tlv("70", signed), (1, 2): _tlv("70", plain),
        (2, 1): _tlv("70", issuer_rec), (2, 2): _tlv("70", oda_rec),
    }
    return _App(spec, fci, aip, records, icc, _dol_length(pdol))


@dataclass
class _State:
    """What the card keeps between power-ups (and in the optional state file)."""

    atc: int = 0
    pin_tries: int = _PIN_TRIES
    last_online_atc: int = 0
    blocked: list[str] = field(default_factory=list)   # AIDs (hex) blocked by script
    online_not_completed: bool = False


@dataclass
class _Txn:
    """What one power-on session / one selection of an application holds (volatile)."""

    app: int | None = None          # index into the card's apps; None with the PSE selected
    pse: bool = False
    partial: bytes = b""            # the name of the last SELECT, for P2 = 02 (next)
    last_pos: int = -1              # the app selected by it
    gpo: bool = False
    acs: int = 0                    # GENERATE ACs answered
    first_ac: str = ""
    arqc: bytes = b""
    issuer_auth: str = ""           # "" not done, "passed", "failed"
    offline_pin: str = ""           # "" not done, "ok", "failed"
    scripts: int = 0
    script_failed: bool = False
    second_ac: str = ""             # "" not requested yet
    unable_online: bool = False


class EmvCard:
    """One test chip card (implements ChipCardApp)."""

    atr: bytes = ATR

    def __init__(self, profile: CardProfile, issuer: IssuerKeys, ca: RsaKey, *,
                 atc: int = 0, state_path: Path | None = None) -> None:
        self.profile = profile
        self.issuer = issuer
        self._apps = [_personalise(profile, issuer, ca, spec) for spec in profile.apps]
        self._pse_dir = {
            (1, n + 1): _tlv("70", tlv.encode({"61": {
                "4F": a.spec.aid, "50": a.spec.label.encode(),
                "9F12": a.spec.preferred_name.encode(),
                "87": bytes([a.spec.priority | (0x80 if a.spec.confirm else 0)])}}))
            for n, a in enumerate(self._apps)
        }
        self._state_path = state_path
        self.state = self._load(atc)
        self._txn = _Txn()
        self.powered = False

    def __repr__(self) -> str:
        return f"EmvCard({self.profile!r}, atc={self.state.atc})"

    # --- state --------------------------------------------------------------------------

    def _load(self, atc: int) -> _State:
        if self._state_path is not None and self._state_path.exists():
            return _State(**json.loads(self._state_path.read_text()))
        return _State(atc=atc)

    def _save(self) -> None:
        if self._state_path is None:
            return
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state.__dict__))
        os.replace(tmp, self._state_path)

    @property
    def atc(self) -> int:
        return self.state.atc

    def is_blocked(self, aid: bytes) -> bool:
        return aid.hex().upper() in self.state.blocked

    # --- ChipCardApp --------------------------------------------------------------------

    def power_up(self) -> bytes:
        self._txn = _Txn()
        self.powered = True
        return self.atr

    def power_down(self) -> None:
        t = self._txn
        if t.first_ac == "ARQC" and not t.second_ac:
            # Pulled (or powered off) while online: the next transaction's CVR says so.
            self.state.online_not_completed = True
            self._save()
        self._txn = _Txn()
        self.powered = False

    def apdu(self, command: bytes) -> bytes:
        if len(command) < 4:
            return SW_WRONG_LENGTH
        cla, ins, p1, p2 = command[:4]
        body = command[4:]
        if not body:
            data = b""
        elif len(body) == 1:
            data = b""      # Le only
        else:
            lc = body[0]
            if lc == 0 or len(body) not in (1 + lc, 2 + lc):
                return SW_WRONG_LENGTH
            data = body[1:1 + lc]
        handler = _HANDLERS.get((cla, ins))
        if handler is None:
            known_ins = {i for _, i in _HANDLERS}
            return SW_BAD_CLA if ins in known_ins else SW_BAD_INS
        return handler(self, p1, p2, data)

    # --- commands -----------------------------------------------------------------------

    def _select(self, p1: int, p2: int, data: bytes) -> bytes:
        if p1 != 0x04 or p2 not in (0x00, 0x02):
            return SW_BAD_P1P2
        if not data:
            return SW_WRONG_LENGTH
        t = self._txn
        if data == PSE_NAME:
            if not self.profile.pse:
                return SW_NOT_FOUND
            self._txn = _Txn(pse=True)
            fci = tlv.encode({"6F": {"84": PSE_NAME, "A5": {"88": b"\x01", "5F2D": b"zhen"}}})
            return fci + SW_OK
        start = t.last_pos + 1 if (p2 == 0x02 and t.partial == data) else 0
        for pos in range(start, len(self._apps)):
            app = self._apps[pos]
            if app.spec.aid.startswith(data):
                self._txn = _Txn(app=pos, partial=data, last_pos=pos)
                sw = SW_SELECTED_BLOCKED if self.is_blocked(app.spec.aid) else SW_OK
                return app.fci + sw
        return SW_NOT_FOUND    # ISO 7816-4: a failed SELECT leaves the current selection

    def _read_record(self, p1: int, p2: int, data: bytes) -> bytes:
        if p2 & 0x07 != 0x04 or p1 == 0:
            return SW_BAD_P1P2
        t = self._txn
        if t.pse:
            records = self._pse_dir
        elif t.app is not None:
            records = self._apps[t.app].records
        else:
            return SW_NOT_SATISFIED
        sfi = p2 >> 3
        if not any(s == sfi for s, _ in records):
            return SW_NOT_FOUND
        record = records.get((sfi, p1))
        return record + SW_OK if record is not None else SW_NO_RECORD

    def _current(self) -> _App | None:
        t = self._txn
        return self._apps[t.app] if t.app is not None else None

    def _gpo(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0, 0):
            return SW_BAD_P1P2
        app, t = self._current(), self._txn
        if app is None or t.gpo or self.is_blocked(app.spec.aid):
            return SW_NOT_SATISFIED
        if len(data) < 2 or data[0] != 0x83 or data[1] != len(data) - 2 \
                or data[1] != app.pdol_len:
            return SW_WRONG_LENGTH
        t.gpo = True
        return tlv.encode({"77": {"82": app.aip, "94": _AFL}}) + SW_OK

    def _internal_authenticate(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0, 0):
            return SW_BAD_P1P2
        app = self._current()
        if app is None or not self._txn.gpo:
            return SW_NOT_SATISFIED
        if app.icc is None:
            return SW_BAD_INS     # an SDA application has no INTERNAL AUTHENTICATE
        if len(data) != _dol_length(DDOL):
            return SW_WRONG_LENGTH
        sdad = emvcrypto.build_sdad(app.icc, secrets.token_bytes(8), data)
        return tlv.encode({"77": {"9F4B": sdad}}) + SW_OK

    def _cvr(self) -> bytes:
        t, s = self._txn, self.state
        ac1 = {"AAC": 0b00, "TC": 0b01, "ARQC": 0b10}[t.first_ac]
        ac2 = {"AAC": 0b00, "TC": 0b01, "": 0b10}[t.second_ac]
        b1 = (ac2 << 6) | (ac1 << 4)
        b1 |= 0x08 if t.issuer_auth == "failed" else 0
        b1 |= 0x04 if t.offline_pin else 0
        b1 |= 0x02 if t.offline_pin == "failed" else 0
        b1 |= 0x01 if t.unable_online else 0
        b2 = 0x80 if s.online_not_completed else 0
        b2 |= 0x40 if s.pin_tries == 0 else 0
        b2 |= 0x10 if t.script_failed else 0
        app = self._current()
        b2 |= 0x01 if app is not None and self.is_blocked(app.spec.aid) else 0
        b3 = min(t.scripts, 15) << 4
        return bytes([0x03, b1, b2, b3])

    def _session_key(self) -> bytes:
        p = self.profile
        return emvcrypto.session_key(self.issuer.imk_ac, p.pan, p.psn, self.state.atc)

    def _answer_ac(self, kind: str, cdol_data: bytes) -> tuple[bytes, bytes]:
        """(the cryptogram, the format 2 response with SW)."""
        app = self._current()
        assert app is not None
        cvr = self._cvr()
        atc = self.state.atc.to_bytes(2, "big")
        ac = emvcrypto.cryptogram(self._session_key(), cdol_data + app.aip + atc + cvr)
        iad = b"\x07\x01\x01" + cvr + b"\x00"
        return ac, tlv.encode({"77": {"9F27": bytes([CID[kind]]), "9F36": atc, "9F26": ac,
                                      "9F10": iad}}) + SW_OK

    def _generate_ac(self, p1: int, p2: int, data: bytes) -> bytes:
        asked_bits = p1 & 0xC0
        if p2 != 0 or asked_bits == 0xC0:
            return SW_BAD_P1P2
        asked = {0x00: "AAC", 0x40: "TC", 0x80: "ARQC"}[asked_bits]
        app, t = self._current(), self._txn
        if app is None or not t.gpo:
            return SW_NOT_SATISFIED
        if t.acs == 0:
            if len(data) != _dol_length(CDOL1):
                return SW_WRONG_LENGTH
            if self.state.atc >= 0xFFFF:
                return SW_NOT_SATISFIED
            self.state.atc += 1
            # A CUP card never approves offline here: TC asked -> ARQC.
            kind = "AAC" if asked == "AAC" or self.profile.declines_first else "ARQC"
            t.first_ac, t.acs = kind, 1
            cryptogram, response = self._answer_ac(kind, data)
            t.arqc = cryptogram if kind == "ARQC" else b""
            self.state.online_not_completed = False
            self._save()
            return response
        if t.acs != 1 or t.first_ac != "ARQC":
            return SW_NOT_SATISFIED
        if asked == "ARQC":
            return SW_BAD_P1P2
        if len(data) != _dol_length(CDOL2):
            return SW_WRONG_LENGTH
        arc = data[:2]
        if arc in _OFFLINE_ARCS:
            t.unable_online = True
        else:
            self.state.last_online_atc = self.state.atc
        auth_ok = t.issuer_auth == "passed" or self.profile.approve_without_issuer_auth
        approve = (asked == "TC" and arc == b"00" and auth_ok
                   and not self.is_blocked(app.spec.aid) and not self.profile.declines_second)
        t.second_ac, t.acs = ("TC" if approve else "AAC"), 2
        _, response = self._answer_ac(t.second_ac, data)
        self._save()
        return response

    def _external_authenticate(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0, 0):
            return SW_BAD_P1P2
        t = self._txn
        if t.first_ac != "ARQC" or t.acs != 1 or t.issuer_auth:
            return SW_NOT_SATISFIED
        if len(data) != 10:
            return SW_WRONG_LENGTH
        arpc, arc = data[:8], data[8:]
        if emvcrypto.arpc(self._session_key(), t.arqc, arc) != arpc:
            t.issuer_auth = "failed"
            return SW_ARPC_WRONG
        t.issuer_auth = "passed"
        return SW_OK

    def _get_data(self, p1: int, p2: int, data: bytes) -> bytes:
        if self._current() is None:
            return SW_NOT_SATISFIED
        s = self.state
        values = {
            0x9F36: s.atc.to_bytes(2, "big"),
            0x9F17: bytes([s.pin_tries]),
            0x9F13: s.last_online_atc.to_bytes(2, "big"),
        }
        tag = (p1 << 8) | p2
        if tag not in values:
            return SW_NO_DATA
        return _tlv(f"{tag:04X}", values[tag]) + SW_OK

    def _verify(self, p1: int, p2: int, data: bytes) -> bytes:
        if p1 != 0 or p2 != 0x80:     # plaintext offline PIN only
            return SW_BAD_P1P2
        t, s = self._txn, self.state
        if self._current() is None:
            return SW_NOT_SATISFIED
        if len(data) != 8:
            return SW_WRONG_LENGTH
        if s.pin_tries == 0:
            return SW_PIN_BLOCKED
        n = data[0] & 0x0F
        digits = data.hex().upper()[2:]
        if data[0] >> 4 != 2 or not 4 <= n <= 12 or digits[n:] != "F" * (14 - n) \
                or not digits[:n].isdigit():
            return SW_BAD_DATA
        if digits[:n] == self.profile.pin:
            s.pin_tries = _PIN_TRIES
            t.offline_pin = "ok"
            self._save()
            return SW_OK
        s.pin_tries -= 1
        t.offline_pin = "failed"
        self._save()
        return bytes([0x63, 0xC0 | s.pin_tries])

    def _script(self, p1: int, p2: int, data: bytes, kind: str) -> bytes:
        app, t = self._current(), self._txn
        if (p1, p2) != (0, 0):
            t.script_failed = True
            return SW_BAD_P1P2
        if app is None or t.first_ac != "ARQC":
            t.script_failed = True
            return SW_NOT_SATISFIED
        if len(data) != 4:
            t.script_failed = True
            return SW_WRONG_LENGTH
        ins = emvcrypto.SCRIPT_INS[kind]
        sk = emvcrypto.smi_session_key(self.issuer.imk_smi, self.profile.pan, self.profile.psn,
                                       self.state.atc)
        header = bytes([0x84, ins, p1, p2, 0x04])
        if emvcrypto.script_mac(sk, header, self.state.atc, t.arqc) != data:
            t.script_failed = True
            return SW_BAD_MAC
        aid = app.spec.aid.hex().upper()
        blocked = [a for a in self.state.blocked if a != aid]
        self.state.blocked = [*blocked, aid] if kind == "block" else blocked
        t.scripts += 1
        self._save()
        return SW_OK

    def _block(self, p1: int, p2: int, data: bytes) -> bytes:
        return self._script(p1, p2, data, "block")

    def _unblock(self, p1: int, p2: int, data: bytes) -> bytes:
        return self._script(p1, p2, data, "unblock")


_HANDLERS: Final = {
    (0x00, 0xA4): EmvCard._select,
    (0x00, 0xB2): EmvCard._read_record,
    (0x80, 0xA8): EmvCard._gpo,
    (0x00, 0x88): EmvCard._internal_authenticate,
    (0x80, 0xAE): EmvCard._generate_ac,
    (0x00, 0x82): EmvCard._external_authenticate,
    (0x80, 0xCA): EmvCard._get_data,
    (0x00, 0x20): EmvCard._verify,
    (0x84, 0x1E): EmvCard._block,
    (0x84, 0x18): EmvCard._unblock,
}
