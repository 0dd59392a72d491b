"""Terminal risk management and terminal action analysis (EMV 4.3 Book 3 10.6, 10.7).

Pure functions: floor limit, random transaction selection (the random number comes in with the
transaction: the kernel reads no RNG), velocity checking from the ATC and the last online ATC
(the kernel fetches both with GET DATA only when the card holds its limits 9F14 / 9F23), and the
action analysis that turns TVR, TAC and IAC into the cryptogram asked at the first GENERATE AC.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.emv.params import AidParams
from firmware.emv.tvr import Tvr

AAC = "AAC"
TC = "TC"
ARQC = "ARQC"


def floor_limit(amount: int, params: AidParams) -> Tvr:
    """Floor limit check; with a floor limit of 0 (our online-only default) every amount
    reaches it."""
    return Tvr.FLOOR_LIMIT_EXCEEDED if amount >= params.floor_limit else Tvr(0)


def random_selection(amount: int, params: AidParams, random_number: int) -> Tvr:
    """Random transaction selection (Book 3 10.6.2) for amounts under the floor limit.
    random_number: 1..99, drawn by the app for this transaction."""
    if amount >= params.floor_limit or params.random_target_percent <= 0:
        return Tvr(0)
    target = params.random_target_percent
    if amount >= params.random_threshold:
        span = params.floor_limit - params.random_threshold
        if span > 0:
            # the target percentage rises linearly from target at the threshold to max at
            # the floor limit (Book 3 Figure 11)
            target += (params.random_max_percent - params.random_target_percent) * \
                (amount - params.random_threshold) // span
    return Tvr.RANDOMLY_SELECTED_ONLINE if random_number <= target else Tvr(0)


@dataclass(frozen=True)
class Velocity:
    lower_limit: int | None   # 9F14
    upper_limit: int | None   # 9F23

    @property
    def applies(self) -> bool:
        return self.lower_limit is not None and self.upper_limit is not None


def velocity(limits: Velocity, atc: bytes | None, last_online_atc: bytes | None) -> Tvr:
    """Book 3 10.6.3: an ATC or last online ATC the card would not give sets both bits."""
    if not limits.applies:
        return Tvr(0)
    assert limits.lower_limit is not None and limits.upper_limit is not None
    if not atc or last_online_atc is None or len(atc) != 2 or len(last_online_atc) != 2:
        return Tvr.LOWER_OFFLINE_LIMIT_EXCEEDED | Tvr.UPPER_OFFLINE_LIMIT_EXCEEDED
    count = int.from_bytes(atc, "big")
    last = int.from_bytes(last_online_atc, "big")
    tvr = Tvr(0)
    if count <= last:
        # the ATC must have moved on since the last online transaction
        tvr |= Tvr.LOWER_OFFLINE_LIMIT_EXCEEDED | Tvr.UPPER_OFFLINE_LIMIT_EXCEEDED
    elif count - last > limits.lower_limit:
        tvr |= Tvr.LOWER_OFFLINE_LIMIT_EXCEEDED
        if count - last > limits.upper_limit:
            tvr |= Tvr.UPPER_OFFLINE_LIMIT_EXCEEDED
    if last == 0:
        tvr |= Tvr.NEW_CARD
    return tvr


def _hits(tvr: Tvr, *codes: bytes) -> bool:
    mask = 0
    for code in codes:
        mask |= int.from_bytes(code.rjust(5, b"\x00")[-5:], "big")
    return bool(int(tvr) & mask)


ALL_ONES = b"\xff" * 5


def action_analysis(tvr: Tvr, params: AidParams, card: dict[str, bytes], *,
                    online_capable: bool = True, online_only: bool = True) -> str:
    """The cryptogram asked at the first GENERATE AC (Book 3 10.7).

    Denial (TAC | IAC denial) -> AAC. An online-only terminal asks ARQC otherwise. An
    offline-capable one asks ARQC when TAC | IAC online matches, else TC. IAC absent: denial
    00s, online and default FFs (Book 3 10.7)."""
    iac_denial = card.get("9F0E", bytes(5))
    iac_online = card.get("9F0F", ALL_ONES)
    iac_default = card.get("9F0D", ALL_ONES)
    if _hits(tvr, params.tac_denial, iac_denial):
        return AAC
    if online_only:
        return ARQC
    if online_capable:
        return ARQC if _hits(tvr, params.tac_online, iac_online) else TC
    return AAC if _hits(tvr, params.tac_default, iac_default) else TC


def default_action(tvr: Tvr, params: AidParams, card: dict[str, bytes]) -> str:
    """Unable to go online: TAC | IAC default decide (Book 3 10.7, used only where the
    terminal is not online-only)."""
    return AAC if _hits(tvr, params.tac_default, card.get("9F0D", ALL_ONES)) else TC
