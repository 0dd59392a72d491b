"""The contact EMV kernel: one transaction from application selection to the final cryptogram.

Theory of operation: ChipKernel is a state machine with one handler per step (STEPS below is
its table) in the style of firmware/engine/financial.py; it does no I/O. It hands the app one
action at a time (SendApdu, ChooseApplication, AskOnlinePin, GoOnline, Finished) and is fed the
event that answers it. The order is EMV 4.3 Book 3's: selection (selection.py), final SELECT,
GET PROCESSING OPTIONS with the PDOL, READ RECORD per AFL, offline data authentication (oda.py,
INTERNAL AUTHENTICATE for DDA), processing restrictions (restrictions.py), cardholder
verification (cvm.py), terminal risk management and action analysis (risk.py), the first
GENERATE AC; after an ARQC the app goes online and brings back the host's answer; then issuer
authentication (EXTERNAL AUTHENTICATE, or 91 in CDOL2), scripts 71, the second GENERATE AC,
scripts 72.

Our choices (firmware/emv/__init__.py): the terminal is online-only, so an ARQC is asked unless the denial
codes say AAC, and "unable to go online" ends in an AAC; an expired or not yet effective card,
or a service its AUC forbids, is refused in words before any cryptogram. The kernel reads no
clock and no RNG: the date, time, unpredictable number and random-selection number come in
TxnData. The card's sensitive data (57, 5A, 5F20) stays in this object's memory; it goes out
only in GoOnline's ChipCard (for the request) and never in Finished's tags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from firmware.emv import apdu, cvm, oda, restrictions, risk, tlv
from firmware.emv.field55 import NEVER_SENT, request_55
from firmware.emv.params import AidParams, EmvParams
from firmware.emv.selection import Candidate, Selection, SelectionResult, accepted
from firmware.emv.tvr import Aip, Tsi, Tvr

# ---- configuration and transaction data ------------------------------------------------


@dataclass(frozen=True)
class KernelConfig:
    """The terminal's EMV data elements (Book 4 Annex A) and what the kernel performs."""

    country: str = "0156"                # 9F1A
    currency: str = "0156"               # 5F2A
    # 9F33 says what this terminal does (see __init__): manual key entry, magstripe, IC; online
    # enciphered PIN, signature, no CVM; SDA, DDA.
    capabilities: bytes = bytes.fromhex("E068C0")
    terminal_type: int = 0x22            # 9F35
    additional_capabilities: bytes = bytes.fromhex("6000F0A001")  # 9F40
    ifd_serial: str = "00000000"         # 9F1E, 8 characters
    merchant_id: str = ""                # 9F16, 15 characters
    merchant_name: str = ""              # 9F4E
    terminal_id: str = ""                # 9F1C, 8 characters
    # What this kernel does, whatever 9F33 says: online enciphered PIN, signature, no CVM,
    # SDA and DDA; no offline PIN, no CDA.
    online_pin: bool = True
    signature: bool = True
    no_cvm: bool = True
    sda: bool = True
    dda: bool = True
    online_only: bool = True             # our choice: CUP terminals are online-only
    use_pse: bool = True


@dataclass(frozen=True)
class TxnData:
    amount: int                          # 9F02, fen
    date: str                            # 9A, YYMMDD (local)
    time: str                            # 9F21, HHMMSS
    unpredictable_number: bytes          # 9F37, 4 bytes from the app's RNG
    random_number: int = 99              # 1..99 for random transaction selection
    txn_type: int = 0x00                 # 9C: 00 goods and services, 01 cash, 31 balance
    other_amount: int = 0                # 9F03, fen
    sequence_counter: int | None = None  # 9F41


# ---- actions (kernel -> app) -------------------------------------------------------------


@dataclass(frozen=True)
class SendApdu:
    apdu: bytes
    step: str


@dataclass(frozen=True)
class ChooseApplication:
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class AskOnlinePin:
    pan_masked: str


@dataclass(frozen=True)
class ChipCard:
    """The card as the online request needs it. Lives only in memory: never log or persist
    pan / track2 (the repr shows neither)."""

    pan: str = field(repr=False)
    expiry: str                          # YYMM
    service_code: str
    track2: str = field(repr=False)      # from 57, separator '='
    card_seq: str                        # 5F34 as 3 digits
    aid: str                             # hex
    app_label: str
    field55: bytes
    cvm: str                             # 'online_pin' | 'signature' | 'none'
    tvr: bytes
    tsi: bytes

    def __repr__(self) -> str:
        return (f"ChipCard({mask_pan(self.pan)}, aid={self.aid}, cvm={self.cvm}, "
                f"tvr={self.tvr.hex()})")


@dataclass(frozen=True)
class GoOnline:
    card: ChipCard


@dataclass(frozen=True)
class Finished:
    """outcome: 'approved' (TC), 'declined_by_card' (AAC after a host approval, or the card
    gone after it), 'declined' (the host declined, or could not be reached: AAC),
    'offline_declined' (AAC at the first GENERATE AC), 'not_accepted' (no application, blocked,
    expired, restrictions), 'card_error' (counts towards fallback), 'cancelled' (abort, or the
    card gone before any cryptogram)."""

    outcome: str
    reason: str
    tags: dict[str, bytes] = field(default_factory=dict)  # never 57, 5A, 5F20
    cvm: str | None = None
    notes: tuple[str, ...] = ()
    apdu_count: int = 0
    card: ChipCard | None = None


Action = SendApdu | ChooseApplication | AskOnlinePin | GoOnline | Finished

# ---- events (app -> kernel) --------------------------------------------------------------


@dataclass(frozen=True)
class ApduResponse:
    rapdu: bytes


@dataclass(frozen=True)
class CardGone:
    reason: str


@dataclass(frozen=True)
class Chosen:
    index: int


@dataclass(frozen=True)
class PinResult:
    entered: bool


@dataclass(frozen=True)
class OnlineResult:
    response_code: str | None            # field 39; None = unable to go online
    field55: bytes | None = None


def mask_pan(pan: str) -> str:
    return pan[:6] + "*" * max(len(pan) - 10, 0) + pan[-4:] if len(pan) > 10 else "*" * len(pan)


def _bcd(number: int, size: int) -> bytes:
    return bytes.fromhex(f"{number:0{size * 2}d}"[-size * 2:])


class Step(StrEnum):
    SELECT = "select"
    CHOOSE = "choose"
    FINAL_SELECT = "final_select"
    GPO = "gpo"
    READ_RECORD = "read_record"
    INTERNAL_AUTH = "internal_authenticate"
    PIN = "pin"
    GET_ATC = "get_atc"
    GET_LAST_ONLINE_ATC = "get_last_online_atc"
    GEN_AC1 = "generate_ac1"
    ONLINE = "online"
    EXTERNAL_AUTH = "external_authenticate"
    SCRIPT_71 = "script_71"
    GEN_AC2 = "generate_ac2"
    SCRIPT_72 = "script_72"
    ABORT_AC2 = "abort_generate_ac2"
    DONE = "done"


# Steps after the first cryptogram was answered (an ARQC): losing the card now is the card's
# decline of whatever the host said.
AFTER_ARQC: frozenset[Step] = frozenset(
    {Step.ONLINE, Step.EXTERNAL_AUTH, Step.SCRIPT_71, Step.GEN_AC2})

# What Finished carries: everything the receipt, journal, reversal and advice use; never 57,
# 5A or 5F20.
FINISHED_TAGS: tuple[str, ...] = (
    "9F26", "9F27", "95", "9B", "9F36", "9F10", "DF31", "84", "4F", "50", "9F12", "5F34",
    "9F1E", "82", "9F37", "9A", "9F21", "9C", "9F02", "9F03", "5F2A", "9F1A", "9F33", "9F34",
    "9F35", "9F09", "9F41", "9F63", "8A", "9F08", "9F4C",
)


@dataclass
class _Script:
    template: str          # "71" | "72"
    script_id: bytes
    commands: list[bytes]
    malformed: bool = False


class ChipKernel:
    """One chip transaction (see the module docstring)."""

    def __init__(self, config: KernelConfig, params: EmvParams, txn: TxnData) -> None:
        self.config = config
        self.params = params
        self.txn = txn
        self.step = Step.SELECT
        self.tvr = Tvr(0)
        self.tsi = Tsi(0)
        self.card: dict[str, bytes] = {}      # what the card gave (FCI, GPO, records, ACs)
        self.term: dict[str, bytes] = self._terminal_tags()
        self.notes: list[str] = []
        self.apdu_count = 0
        self.selection = Selection(params.aids, use_pse=config.use_pse)
        self.candidates: list[Candidate] = []
        self.chosen: Candidate | None = None
        self.aid_params: AidParams = AidParams(aid=b"")
        self.blocked_seen = False
        self.records: list[tuple[int, int, bool]] = []
        self.record_index = 0
        self.oda_data = bytearray()           # static data to authenticate (Book 2 5.4)
        self.oda_records_ok = True
        self.oda_method: str | None = None
        self.icc_key: oda.RecoveredKey | None = None
        self.ddol_data = b""
        self._atc: bytes | None = None
        self.pin_need: cvm.NeedOnlinePin | None = None
        self.cvm_method: str | None = None
        self.asked_ac1 = risk.ARQC
        self.response_code: str | None = None
        self.host_55: bytes | None = None
        self.issuer_auth_data: bytes | None = None
        self.scripts: list[_Script] = []
        self.script_results = bytearray()
        self.script_index = 0
        self.command_index = 0
        self.final: tuple[str, str] | None = None  # outcome and reason once GEN AC2 answered
        self.chip_card: ChipCard | None = None
        self._handlers: dict[Step, Callable[[object], Action]] = {
            Step.SELECT: self._on_select,
            Step.CHOOSE: self._on_choose,
            Step.FINAL_SELECT: self._on_final_select,
            Step.GPO: self._on_gpo,
            Step.READ_RECORD: self._on_read_record,
            Step.INTERNAL_AUTH: self._on_internal_auth,
            Step.PIN: self._on_pin,
            Step.GET_ATC: self._on_get_atc,
            Step.GET_LAST_ONLINE_ATC: self._on_get_last_online_atc,
            Step.GEN_AC1: self._on_gen_ac1,
            Step.ONLINE: self._on_online,
            Step.EXTERNAL_AUTH: self._on_external_auth,
            Step.SCRIPT_71: self._on_script_command,
            Step.GEN_AC2: self._on_gen_ac2,
            Step.SCRIPT_72: self._on_script_command,
            Step.ABORT_AC2: self._on_abort_ac2,
        }

    # -- entry points ------------------------------------------------------------------

    def start(self) -> Action:
        return self._selection_next(self.selection.start())

    def handle(self, event: object) -> Action:
        if self.step is Step.DONE:
            raise RuntimeError("the kernel has finished")
        if isinstance(event, CardGone):
            return self._on_card_gone(event)
        return self._handlers[self.step](event)

    def abort(self, *, card_present: bool = True) -> Action:
        """CANCEL, or the card removed: an AAC asked when the first cryptogram was answered and
        the card is still there (so the card's books close on a decline), else finished."""
        if self.step is Step.DONE:
            raise RuntimeError("the kernel has finished")
        if self.step is Step.SCRIPT_72 and self.final is not None:
            # the final cryptogram is given: the outcome stands, later scripts are cut short
            self.notes.append("scripts after the final GENERATE AC cut short")
            return self._finish(*self.final)
        if self.step in (Step.ONLINE, Step.EXTERNAL_AUTH, Step.SCRIPT_71) and card_present:
            self.term.setdefault("8A", b"Z3")  # no host answer taken: "unable to go online"
            self.step = Step.ABORT_AC2
            return self._send(apdu.generate_ac(apdu.P1_AAC, self._cdol2_data()))
        return self._finish("cancelled", "cancelled")

    # -- selection ---------------------------------------------------------------------

    def _on_select(self, event: object) -> Action:
        rapdu = self._rapdu(event)
        return self._selection_next(self.selection.on_response(rapdu))

    def _selection_next(self, result: bytes | SelectionResult) -> Action:
        if isinstance(result, bytes):
            self.step = Step.SELECT
            return self._send(result)
        if result.card_blocked:
            return self._finish("not_accepted", "the card is blocked")
        if result.error:
            return self._finish("card_error", result.error)
        self.candidates = list(result.candidates)
        return self._choose()

    def _choose(self) -> Action:
        if not self.candidates:
            if self.blocked_seen:
                return self._finish("not_accepted", "the card's application is blocked")
            return self._finish("not_accepted",
                                "no application on the card is accepted by this terminal")
        if len(self.candidates) > 1 or self.candidates[0].confirm:
            self.step = Step.CHOOSE
            return ChooseApplication(tuple(self.candidates))
        return self._final_select(self.candidates[0])

    def _on_choose(self, event: object) -> Action:
        assert isinstance(event, Chosen), event
        if not 0 <= event.index < len(self.candidates):
            raise ValueError(f"no candidate {event.index}")
        return self._final_select(self.candidates[event.index])

    def _final_select(self, candidate: Candidate) -> Action:
        self.chosen = candidate
        self.step = Step.FINAL_SELECT
        return self._send(apdu.select(candidate.aid))

    def _drop_candidate(self, why: str) -> Action:
        assert self.chosen is not None
        self.notes.append(f"{self.chosen.aid_hex}: {why}")
        self.candidates = [c for c in self.candidates if c.aid_hex != self.chosen.aid_hex]
        self.card.clear()
        return self._choose()

    def _on_final_select(self, event: object) -> Action:
        rapdu = self._rapdu(event)
        assert self.chosen is not None
        status = apdu.sw(rapdu)
        if status == apdu.SW_BLOCKED:
            self.blocked_seen = True
            return self._drop_candidate("application blocked")
        if status != apdu.SW_OK:
            return self._drop_candidate(f"SELECT answered {status:04X}")
        try:
            fci = tlv.decode(apdu.data(rapdu))
        except tlv.TlvError:
            return self._drop_candidate("malformed FCI")
        adf = fci.get("84", b"")
        params = accepted(adf, self.params.aids)
        if adf != self.chosen.aid or params is None:
            return self._drop_candidate("the card selected another application")
        self.aid_params = params
        self.card.update(fci)
        self.card["4F"] = adf
        self.term["9F09"] = params.app_version
        pdol = fci.get("9F38", b"")
        self.step = Step.GPO
        return self._send(apdu.get_processing_options(tlv.build_dol(pdol, self._values())))

    # -- reading the application -------------------------------------------------------

    def _on_gpo(self, event: object) -> Action:
        rapdu = self._rapdu(event)
        status = apdu.sw(rapdu)
        if status == apdu.SW_CONDITIONS:
            return self._drop_candidate("GET PROCESSING OPTIONS: conditions not satisfied")
        if status != apdu.SW_OK:
            return self._finish("card_error", f"GET PROCESSING OPTIONS answered {status:04X}")
        try:
            objects = tlv.items(apdu.data(rapdu))
            if len(objects) != 1:
                raise tlv.TlvError("one template expected")
            tag, value = objects[0]
            if tag == "80":
                aip, afl = value[:2], value[2:]
            elif tag == "77":
                fields = tlv.decode(value)
                aip, afl = fields.get("82", b""), fields.get("94", b"")
            else:
                raise tlv.TlvError(f"template {tag}")
        except tlv.TlvError as exc:
            return self._finish("card_error", f"GET PROCESSING OPTIONS response malformed: {exc}")
        records = _afl_records(afl)
        if len(aip) != 2 or records is None:
            return self._finish("card_error", "AIP or AFL missing or malformed")
        self.card["82"], self.card["94"] = aip, afl
        self.records = records
        self.record_index = 0
        self.step = Step.READ_RECORD
        return self._read_next()

    def _read_next(self) -> Action:
        if self.record_index >= len(self.records):
            return self._after_records()
        sfi, record, _ = self.records[self.record_index]
        return self._send(apdu.read_record(sfi, record))

    def _on_read_record(self, event: object) -> Action:
        rapdu = self._rapdu(event)
        sfi, record, for_oda = self.records[self.record_index]
        status = apdu.sw(rapdu)
        if status != apdu.SW_OK:
            return self._finish("card_error", f"READ RECORD {sfi}/{record} answered {status:04X}")
        body = apdu.data(rapdu)
        try:
            objects = tlv.items(body)
            if len(objects) != 1 or objects[0][0] != "70":
                raise tlv.TlvError("not a 70 template")
            self.card.update(tlv.decode(objects[0][1]))
        except tlv.TlvError as exc:
            return self._finish("card_error", f"record {sfi}/{record} malformed: {exc}")
        if for_oda:
            # SFI 1-10: the template's value; 11-30: the whole record (Book 3 10.3)
            self.oda_data += objects[0][1] if sfi <= 10 else body
        self.record_index += 1
        return self._read_next()

    def _after_records(self) -> Action:
        missing = [tag for tag in ("5F24", "5A", "8C", "8D") if tag not in self.card]
        if missing:
            self.tvr |= Tvr.ICC_DATA_MISSING
            return self._finish("card_error", f"the card lacks mandatory data {', '.join(missing)}")
        return self._oda()

    # -- offline data authentication ---------------------------------------------------

    def _oda(self) -> Action:
        aip = Aip.of(self.card["82"])
        if Aip.DDA in aip and self.config.dda:
            self.oda_method = "DDA"
        elif Aip.SDA in aip and self.config.sda:
            self.oda_method = "SDA"
        else:
            self.tvr |= Tvr.ODA_NOT_PERFORMED
            return self._restrictions()
        self.tsi |= Tsi.ODA_PERFORMED
        static = self._static_data()
        capk = self.params.capk(self.card["4F"][:5], self.card.get("8F", b"\xff")[0]) \
            if self.card.get("8F") else None
        failed = Tvr.DDA_FAILED if self.oda_method == "DDA" else Tvr.SDA_FAILED
        if static is None:
            return self._oda_failed(failed, "static data to authenticate malformed")
        if capk is None:
            return self._oda_failed(failed, "no CA public key for this card")
        today = self.txn.date
        issuer = oda.recover_issuer_key(capk, self.card, today=today)
        if isinstance(issuer, oda.OdaFailure):
            return self._oda_failed(failed | issuer.tvr, issuer.reason)
        if self.oda_method == "SDA":
            check = oda.verify_ssad(issuer, self.card, static)
            if check is not None:
                return self._oda_failed(failed | check.tvr, check.reason)
            return self._restrictions()
        icc = oda.recover_icc_key(issuer, self.card, static, today=today)
        if isinstance(icc, oda.OdaFailure):
            return self._oda_failed(failed | icc.tvr, icc.reason)
        self.icc_key = icc
        ddol = self.card.get("9F49") or self.aid_params.default_ddol
        if not ddol or not tlv.dol_names(ddol, "9F37"):
            return self._oda_failed(failed | Tvr.ICC_DATA_MISSING,
                                    "no DDOL with the unpredictable number")
        self.ddol_data = tlv.build_dol(ddol, self._values())
        self.step = Step.INTERNAL_AUTH
        return self._send(apdu.internal_authenticate(self.ddol_data))

    def _static_data(self) -> bytes | None:
        tag_list = self.card.get("9F4A")
        extra = b""
        if tag_list is not None:
            # 9F4A may only name the AIP (Book 3 10.3)
            if tag_list != b"\x82":
                return None
            extra = self.card["82"]
        if not self.oda_records_ok:
            return None
        return bytes(self.oda_data) + extra

    def _oda_failed(self, bits: Tvr, reason: str) -> Action:
        self.tvr |= bits
        self.notes.append(f"{self.oda_method} failed: {reason}")
        return self._restrictions()

    def _on_internal_auth(self, event: object) -> Action:
        rapdu = self._rapdu(event)
        assert self.icc_key is not None
        if not apdu.ok(rapdu):
            return self._oda_failed(Tvr.DDA_FAILED,
                                    f"INTERNAL AUTHENTICATE answered {apdu.sw(rapdu):04X}")
        try:
            objects = tlv.items(apdu.data(rapdu))
            tag, value = objects[0] if len(objects) == 1 else ("", b"")
            sdad = value if tag == "80" else tlv.decode(value).get("9F4B") if tag == "77" else None
        except tlv.TlvError:
            sdad = None
        if not sdad:
            return self._oda_failed(Tvr.DDA_FAILED, "INTERNAL AUTHENTICATE response malformed")
        result = oda.verify_sdad(self.icc_key, sdad, self.ddol_data)
        if isinstance(result, oda.OdaFailure):
            return self._oda_failed(Tvr.DDA_FAILED | result.tvr, result.reason)
        self.card["9F4C"] = result
        return self._restrictions()

    # -- restrictions, cardholder verification, risk ------------------------------------

    def _restrictions(self) -> Action:
        result = restrictions.check(
            self.card, today=self.txn.date, country=bytes.fromhex(self.config.country),
            txn_type=self.txn.txn_type, terminal_version=self.aid_params.app_version)
        self.tvr |= result.tvr
        if result.refusal is not None:
            return self._finish("not_accepted", result.refusal)
        return self._cvm()

    def _cvm_context(self) -> cvm.CvmContext:
        return cvm.CvmContext(
            amount=self.txn.amount, currency=bytes.fromhex(self.config.currency),
            app_currency=self.card.get("9F42"), txn_type=self.txn.txn_type,
            other_amount=self.txn.other_amount,
            online_pin=self.config.online_pin and self.aid_params.online_pin_capable,
            signature=self.config.signature, no_cvm=self.config.no_cvm)

    def _cvm(self) -> Action:
        if Aip.CARDHOLDER_VERIFICATION not in Aip.of(self.card["82"]):
            self.term["9F34"] = bytes([cvm.NO_CVM_PERFORMED, 0, cvm.RESULT_UNKNOWN])
            self.cvm_method = "none"
            return self._risk()
        return self._cvm_step(cvm.evaluate(self.card.get("8E"), self._cvm_context()))

    def _cvm_step(self, result: cvm.NeedOnlinePin | cvm.CvmDone) -> Action:
        if isinstance(result, cvm.NeedOnlinePin):
            self.pin_need = result
            self.step = Step.PIN
            return AskOnlinePin(mask_pan(self._pan()))
        self.tvr |= result.tvr
        self.notes.extend(result.notes)
        self.tsi |= Tsi.CV_PERFORMED
        self.term["9F34"] = result.results
        # a failed verification still goes to the host with its TVR bit (the host decides);
        # the slip then asks for a signature only where the method was signature
        self.cvm_method = "none" if result.method == "failed" else result.method
        return self._risk()

    def _on_pin(self, event: object) -> Action:
        assert isinstance(event, PinResult), event
        assert self.pin_need is not None
        return self._cvm_step(cvm.after_pin(self.card["8E"], self._cvm_context(),
                                            self.pin_need, event.entered))

    def _risk(self) -> Action:
        self.tvr |= risk.floor_limit(self.txn.amount, self.aid_params)
        self.tvr |= risk.random_selection(self.txn.amount, self.aid_params,
                                          self.txn.random_number)
        self.tsi |= Tsi.TERMINAL_RISK_PERFORMED
        if self._velocity().applies:
            self.step = Step.GET_ATC
            return self._send(apdu.get_data("9F36"))
        return self._action_analysis()

    def _velocity(self) -> risk.Velocity:
        lower, upper = self.card.get("9F14"), self.card.get("9F23")
        return risk.Velocity(lower[0] if lower else None, upper[0] if upper else None)

    def _get_data_value(self, rapdu: bytes, tag: str) -> bytes | None:
        if not apdu.ok(rapdu):
            return None
        try:
            return tlv.decode(apdu.data(rapdu)).get(tag)
        except tlv.TlvError:
            return None

    def _on_get_atc(self, event: object) -> Action:
        self._atc = self._get_data_value(self._rapdu(event), "9F36")
        self.step = Step.GET_LAST_ONLINE_ATC
        return self._send(apdu.get_data("9F13"))

    def _on_get_last_online_atc(self, event: object) -> Action:
        last = self._get_data_value(self._rapdu(event), "9F13")
        self.tvr |= risk.velocity(self._velocity(), self._atc, last)
        return self._action_analysis()

    def _action_analysis(self) -> Action:
        self.asked_ac1 = risk.action_analysis(self.tvr, self.aid_params, self.card,
                                              online_only=self.config.online_only)
        p1 = {risk.AAC: apdu.P1_AAC, risk.TC: apdu.P1_TC, risk.ARQC: apdu.P1_ARQC}[self.asked_ac1]
        self.step = Step.GEN_AC1
        return self._send(apdu.generate_ac(p1, tlv.build_dol(self.card["8C"], self._values())))

    # -- the first cryptogram and going online -----------------------------------------

    def _on_gen_ac1(self, event: object) -> Action:
        rapdu = self._rapdu(event)
        status = apdu.sw(rapdu)
        if status != apdu.SW_OK:
            return self._finish("card_error", f"first GENERATE AC answered {status:04X}")
        fields = _ac_response(apdu.data(rapdu))
        if fields is None:
            return self._finish("card_error", "first GENERATE AC response malformed")
        self.card.update(fields)
        self.tsi |= Tsi.CARD_RISK_PERFORMED
        cid = fields["9F27"][0] & 0xC0
        if cid == 0x00:
            return self._finish("offline_declined", "the card declined offline (AAC)")
        if cid == 0x40 and self.asked_ac1 == risk.TC:
            return self._finish("approved", "approved offline by the card (TC)")
        if cid != 0x80 or self.asked_ac1 == risk.AAC:
            return self._finish("card_error",
                                f"the card answered {fields['9F27'].hex()} to {self.asked_ac1}")
        self.chip_card = self._chip_card()
        self.step = Step.ONLINE
        return GoOnline(self.chip_card)

    def _chip_card(self) -> ChipCard:
        track2 = self.card.get("57", b"").hex().upper().rstrip("F").replace("D", "=")
        after = track2.split("=", 1)[1] if "=" in track2 else ""
        seq = self.card.get("5F34")
        aid = self.card["4F"].hex().upper()
        assert self.chosen is not None
        return ChipCard(
            pan=self._pan(), expiry=self.card["5F24"].hex()[:4], service_code=after[4:7],
            track2=track2, card_seq=f"{int(seq.hex()):03d}" if seq and seq.hex().isdigit() else "",
            aid=aid, app_label=self.chosen.label, field55=request_55(self._values()),
            cvm=self.cvm_method or "none", tvr=self.tvr.to_bytes5(), tsi=self.tsi.to_bytes2())

    def _on_online(self, event: object) -> Action:
        assert isinstance(event, OnlineResult), event
        self.response_code = event.response_code
        # 8A: the host's code; "Z3" (unable to go online, declined) when there was no answer
        self.term["8A"] = (event.response_code or "Z3").encode("ascii")[:2]
        self.host_55 = event.field55
        self._parse_host_55(event.field55 or b"")
        if self.issuer_auth_data is not None and not tlv.dol_names(self.card["8D"], "91"):
            if Aip.ISSUER_AUTH in Aip.of(self.card["82"]):
                self.step = Step.EXTERNAL_AUTH
                return self._send(apdu.external_authenticate(self.issuer_auth_data))
            self.notes.append("the card does not support issuer authentication")
        return self._scripts_then(Step.SCRIPT_71)

    def _parse_host_55(self, data: bytes) -> None:
        try:
            objects = tlv.items(data)
        except tlv.TlvError as exc:
            self.notes.append(f"the host's field 55 is malformed: {exc}")
            return
        for tag, value in objects:
            if tag == "91" and self.issuer_auth_data is None and 8 <= len(value) <= 16:
                self.issuer_auth_data = value
                self.card["91"] = value
            elif tag in ("71", "72"):
                self.scripts.append(_parse_script(tag, value))

    def _on_external_auth(self, event: object) -> Action:
        rapdu = self._rapdu(event)
        self.tsi |= Tsi.ISSUER_AUTH_PERFORMED
        if not apdu.ok(rapdu):
            self.tvr |= Tvr.ISSUER_AUTH_FAILED
            self.notes.append(f"issuer authentication failed ({apdu.sw(rapdu):04X})")
        return self._scripts_then(Step.SCRIPT_71)

    # -- issuer scripts ----------------------------------------------------------------

    def _scripts_then(self, step: Step) -> Action:
        """Run the scripts of the template for `step` (71 before the final GENERATE AC, 72
        after), then go on."""
        self.step = step
        self.script_index, self.command_index = 0, 0
        return self._next_script_command()

    def _template(self) -> str:
        return "71" if self.step is Step.SCRIPT_71 else "72"

    def _current_scripts(self) -> list[_Script]:
        return [s for s in self.scripts if s.template == self._template()]

    def _next_script_command(self) -> Action:
        scripts = self._current_scripts()
        while self.script_index < len(scripts):
            script = scripts[self.script_index]
            if script.malformed:
                self._script_result(script, 0x00)
                continue
            if self.command_index < len(script.commands):
                self.tsi |= Tsi.SCRIPT_PERFORMED
                return self._send(script.commands[self.command_index])
            self._script_result(script, 0x20)
        if self.step is Step.SCRIPT_71:
            return self._gen_ac2()
        assert self.final is not None
        return self._finish(*self.final)

    def _script_result(self, script: _Script, result: int) -> None:
        if result != 0x20:
            self.tvr |= (Tvr.SCRIPT_FAILED_BEFORE_FINAL_AC if script.template == "71"
                         else Tvr.SCRIPT_FAILED_AFTER_FINAL_AC)
        self.script_results += bytes([result]) + script.script_id
        self.script_index += 1
        self.command_index = 0

    def _on_script_command(self, event: object) -> Action:
        rapdu = self._rapdu(event)
        script = self._current_scripts()[self.script_index]
        if apdu.script_command_ok(rapdu):
            self.command_index += 1
        else:
            # command n failed: 1n, and the rest of this script is not sent (Book 3 10.10)
            self._script_result(script, 0x10 | min(self.command_index + 1, 0x0F))
        return self._next_script_command()

    # -- the second cryptogram ---------------------------------------------------------

    def _host_approved(self) -> bool:
        return self.response_code == "00"

    def _cdol2_data(self) -> bytes:
        return tlv.build_dol(self.card["8D"], self._values())

    def _gen_ac2(self) -> Action:
        p1 = apdu.P1_TC if self._host_approved() else apdu.P1_AAC
        self.step = Step.GEN_AC2
        return self._send(apdu.generate_ac(p1, self._cdol2_data()))

    def _on_gen_ac2(self, event: object) -> Action:
        rapdu = self._rapdu(event)
        fields = _ac_response(apdu.data(rapdu)) if apdu.ok(rapdu) else None
        if fields is None:
            why = (f"second GENERATE AC answered {apdu.sw(rapdu):04X}" if not apdu.ok(rapdu)
                   else "second GENERATE AC response malformed")
            self.final = self._declined(why)
        else:
            self.card.update(fields)
            if fields["9F27"][0] & 0xC0 == 0x40 and self._host_approved():
                self.final = ("approved", "approved (TC)")
            else:
                self.final = self._declined("the card declined after the host approved (AAC)")
        return self._scripts_then(Step.SCRIPT_72)

    def _declined(self, card_reason: str) -> tuple[str, str]:
        if self._host_approved():
            return ("declined_by_card", card_reason)
        if self.response_code is None:
            return ("declined", "unable to go online")
        return ("declined", f"declined by the host ({self.response_code})")

    def _on_abort_ac2(self, event: object) -> Action:
        rapdu = self._rapdu(event)
        if apdu.ok(rapdu):
            fields = _ac_response(apdu.data(rapdu))
            if fields is not None:
                self.card.update(fields)
        return self._finish("cancelled", "cancelled")

    def _on_card_gone(self, event: CardGone) -> Action:
        if self.step is Step.ABORT_AC2:
            return self._finish("cancelled", f"cancelled; card gone ({event.reason})")
        if self.step is Step.SCRIPT_72 and self.final is not None:
            self.notes.append(f"card gone during the scripts after the final AC ({event.reason})")
            return self._finish(*self.final)
        if self.step in AFTER_ARQC:
            return self._finish(*self._declined(f"card gone ({event.reason})"))
        return self._finish("cancelled", f"card gone ({event.reason})")

    # -- helpers -----------------------------------------------------------------------

    def _terminal_tags(self) -> dict[str, bytes]:
        c, t = self.config, self.txn
        tags = {
            "9F1A": bytes.fromhex(c.country), "5F2A": bytes.fromhex(c.currency),
            "9F33": c.capabilities, "9F35": bytes([c.terminal_type]),
            "9F40": c.additional_capabilities, "9F1E": c.ifd_serial.encode("ascii")[:8],
            "9F02": _bcd(t.amount, 6), "9F03": _bcd(t.other_amount, 6),
            "9A": bytes.fromhex(t.date), "9F21": bytes.fromhex(t.time),
            "9C": bytes([t.txn_type]), "9F37": bytes(t.unpredictable_number),
        }
        if c.merchant_id:
            tags["9F16"] = c.merchant_id.encode("ascii")
        if c.merchant_name:
            tags["9F4E"] = c.merchant_name.encode("utf-8")
        if c.terminal_id:
            tags["9F1C"] = c.terminal_id.encode("ascii")
        if t.sequence_counter is not None:
            tags["9F41"] = _bcd(t.sequence_counter, 4)
        return tags

    def _values(self) -> dict[str, bytes]:
        """Every value a DOL or field 55 may name: the card's, then the terminal's, then the
        running TVR, TSI and script results."""
        values = {**self.card, **self.term}
        values["95"] = self.tvr.to_bytes5()
        values["9B"] = self.tsi.to_bytes2()
        if self.script_results:
            values["DF31"] = bytes(self.script_results)
        return values

    def _pan(self) -> str:
        return self.card.get("5A", b"").hex().upper().rstrip("F")

    @property
    def pan(self) -> str:
        """The card number read from the chip (5A), for the PIN block; never log it."""
        return self._pan()

    def tags(self) -> dict[str, bytes]:
        """The transaction's tags so far, as Finished carries them (never 57, 5A, 5F20)."""
        values = self._values()
        return {tag: values[tag] for tag in FINISHED_TAGS if tag in values}

    def _rapdu(self, event: object) -> bytes:
        assert isinstance(event, ApduResponse), event
        if len(event.rapdu) < 2:
            # treated as the card's failure of this command; every handler checks the SW
            return b"\x6f\x00"
        return event.rapdu

    def _send(self, command: bytes) -> SendApdu:
        self.apdu_count += 1
        return SendApdu(command, str(self.step))

    def _finish(self, outcome: str, reason: str) -> Finished:
        self.step = Step.DONE
        values = self._values()
        tags = {tag: values[tag] for tag in FINISHED_TAGS if tag in values}
        assert not NEVER_SENT & tags.keys()
        return Finished(outcome, reason, tags, cvm=self.cvm_method, notes=tuple(self.notes),
                        apdu_count=self.apdu_count, card=self.chip_card)


def _afl_records(afl: bytes) -> list[tuple[int, int, bool]] | None:
    """(SFI, record, for ODA) per record the AFL names; None when the AFL is malformed."""
    if not afl or len(afl) % 4:
        return None
    out: list[tuple[int, int, bool]] = []
    for i in range(0, len(afl), 4):
        sfi, first, last, oda_count = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
        if not 1 <= sfi <= 30 or first == 0 or last < first or oda_count > last - first + 1:
            return None
        out.extend((sfi, rec, rec - first < oda_count) for rec in range(first, last + 1))
    return out


def _ac_response(data: bytes) -> dict[str, bytes] | None:
    """GENERATE AC response format 1 (80: CID, ATC, AC, IAD) or 2 (77 with 9F27, 9F36, 9F26,
    9F10)."""
    try:
        objects = tlv.items(data)
        if len(objects) != 1:
            return None
        tag, value = objects[0]
        if tag == "80":
            if len(value) < 11:
                return None
            fields = {"9F27": value[0:1], "9F36": value[1:3], "9F26": value[3:11]}
            if len(value) > 11:
                fields["9F10"] = value[11:]
            return fields
        if tag == "77":
            fields = tlv.decode(value)
            if not all(t in fields for t in ("9F27", "9F36", "9F26")) or not fields["9F27"]:
                return None
            return fields
    except tlv.TlvError:
        return None
    return None


def _parse_script(template: str, content: bytes) -> _Script:
    """A 71/72 template: 9F18 script id (4 bytes, optional), then 86 commands."""
    try:
        objects = tlv.items(content)
    except tlv.TlvError:
        return _Script(template, bytes(4), [], malformed=True)
    script_id = bytes(4)
    commands: list[bytes] = []
    for tag, value in objects:
        if tag == "9F18":
            script_id = value[:4].rjust(4, b"\x00")
        elif tag == "86":
            commands.append(value)
    return _Script(template, script_id, commands, malformed=not commands)
