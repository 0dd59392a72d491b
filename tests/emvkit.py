"""Drives firmware.emv.kernel.ChipKernel against a board.sim chip card with a small host in the
test (the host simulator's checks: the ARQC verified with board.sim.emvcrypto, ARPC method 1),
for the kernel's tests. Not a test module itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from board.sim import chipcards, emvcrypto
from board.sim.chipcard import CDOL1
from firmware.emv import kernel as K
from firmware.emv import tlv
from firmware.emv.params import EmvParams

CONFIG = K.KernelConfig(ifd_serial="POS00001", merchant_id="123456789012345",
                        merchant_name="TEST SHOP", terminal_id="12345678")


def params() -> EmvParams:
    return EmvParams(aids=tuple(chipcards.test_aid_params()), capks=tuple(chipcards.test_capks()))


def txn(amount: int = 1234, *, un: bytes = b"\x11\x22\x33\x44") -> K.TxnData:
    return K.TxnData(amount=amount, date="260315", time="101500", unpredictable_number=un)


@dataclass
class Host:
    """What the acquirer simulator does with 55: verify the ARQC, answer 91 (+ scripts)."""

    code: str = "00"
    wrong_arpc: bool = False
    scripts: Callable[[bytes, bytes, bytes], bytes] | None = None  # (sk_smi-ish args) -> 71/72
    unreachable: bool = False
    seen: list[dict[str, bytes]] = field(default_factory=list)
    arqc_ok: bool | None = None

    def answer(self, card: K.ChipCard) -> K.OnlineResult:
        if self.unreachable:
            return K.OnlineResult(None, None)
        tags = dict(tlv.items(card.field55))
        self.seen.append(tags)
        issuer = chipcards.issuer_for_pan(card.pan)
        assert issuer is not None
        psn = card.card_seq
        sk = emvcrypto.session_key(issuer.imk_ac, card.pan, psn, tags["9F36"])
        arqc_data = self.cdol1_values(tags) + tags["82"] + tags["9F36"] + tags["9F10"][3:7]
        self.arqc_ok = emvcrypto.cryptogram(sk, arqc_data) == tags["9F26"]
        if not self.arqc_ok:
            return K.OnlineResult("05", b"")
        arc = self.code.encode()
        arpc = emvcrypto.arpc(sk, tags["9F26"], arc)
        if self.wrong_arpc:
            arpc = bytes(b ^ 0xFF for b in arpc)
        field55 = tlv.encode_one("91", arpc + arc)
        if self.scripts is not None:
            sk_smi = emvcrypto.smi_session_key(issuer.imk_smi, card.pan, psn, tags["9F36"])
            field55 += self.scripts(sk_smi, tags["9F36"], tags["9F26"])
        return K.OnlineResult(self.code, field55)

    def cdol1_values(self, tags: dict[str, bytes]) -> bytes:
        """The card's CDOL1 values from what 55 carries (every one of them travels in 55)."""
        return tlv.build_dol(CDOL1, dict(tags))


@dataclass
class Run:
    finished: K.Finished
    apdus: list[bytes]
    actions: list[object]
    went_online: K.ChipCard | None


def run(card: object, *, host: Host | None = None, choose: int = 0, pin: bool = True,
        config: K.KernelConfig = CONFIG, amount: int = 1234,
        abort_at: str | None = None, pull_at: str | None = None) -> Run:
    host = host or Host()
    k = K.ChipKernel(config, params(), txn(amount))
    card.power_up()  # type: ignore[attr-defined]
    action: object = k.start()
    apdus: list[bytes] = []
    actions: list[object] = []
    online: K.ChipCard | None = None
    for _ in range(200):
        actions.append(action)
        if isinstance(action, K.Finished):
            return Run(action, apdus, actions, online)
        step = getattr(action, "step", type(action).__name__)
        if abort_at is not None and step == abort_at:
            abort_at = None
            action = k.abort()
            continue
        if isinstance(action, K.SendApdu):
            if pull_at is not None and action.step == pull_at:
                action = k.handle(K.CardGone("card removed"))
                continue
            apdus.append(action.apdu)
            action = k.handle(K.ApduResponse(card.apdu(action.apdu)))  # type: ignore[attr-defined]
        elif isinstance(action, K.ChooseApplication):
            action = k.handle(K.Chosen(choose))
        elif isinstance(action, K.AskOnlinePin):
            action = k.handle(K.PinResult(pin))
        elif isinstance(action, K.GoOnline):
            online = action.card
            action = k.handle(host.answer(action.card))
        else:
            raise AssertionError(action)
    raise AssertionError("the kernel did not finish in 200 actions")
