"""firmware.emv.cvm: CVM list rules, conditions, X/Y amounts, refusals and bypass."""

from __future__ import annotations

from firmware.emv import cvm
from firmware.emv.tvr import Tvr

CNY = b"\x01\x56"
XY = bytes(8)


def ctx(**kw: object) -> cvm.CvmContext:
    base: dict[str, object] = dict(amount=1234, currency=CNY, app_currency=CNY, txn_type=0x00)
    base.update(kw)
    return cvm.CvmContext(**base)  # type: ignore[arg-type]


CONTRACT_LIST = XY + bytes.fromhex("42031E031F00")  # online PIN, else signature, else no CVM


def test_online_pin_asked_then_entered() -> None:
    need = cvm.evaluate(CONTRACT_LIST, ctx())
    assert isinstance(need, cvm.NeedOnlinePin) and need.index == 0
    done = cvm.after_pin(CONTRACT_LIST, ctx(), need, entered=True)
    assert isinstance(done, cvm.CvmDone)
    assert (done.method, done.results) == ("online_pin", bytes.fromhex("420300"))
    assert Tvr.ONLINE_PIN_ENTERED in done.tvr


def test_pin_bypass_goes_to_the_next_rule() -> None:
    need = cvm.evaluate(CONTRACT_LIST, ctx())
    assert isinstance(need, cvm.NeedOnlinePin)
    done = cvm.after_pin(CONTRACT_LIST, ctx(), need, entered=False)
    assert isinstance(done, cvm.CvmDone)
    assert (done.method, done.results) == ("signature", bytes.fromhex("1E0300"))
    assert Tvr.PIN_NOT_ENTERED in done.tvr and Tvr.CV_NOT_SUCCESSFUL not in done.tvr


def test_pin_bypass_without_apply_succeeding_fails() -> None:
    lst = XY + bytes.fromhex("02001F00")
    need = cvm.evaluate(lst, ctx())
    assert isinstance(need, cvm.NeedOnlinePin)
    done = cvm.after_pin(lst, ctx(), need, entered=False)
    assert isinstance(done, cvm.CvmDone) and done.method == "failed"
    assert done.results == bytes.fromhex("020001") and Tvr.CV_NOT_SUCCESSFUL in done.tvr


def test_no_online_pin_on_the_terminal_gives_signature() -> None:
    done = cvm.evaluate(CONTRACT_LIST, ctx(online_pin=False))
    assert isinstance(done, cvm.CvmDone) and done.method == "signature"


def test_offline_pin_is_refused_with_a_reason_and_the_next_rule_applies() -> None:
    done = cvm.evaluate(XY + bytes.fromhex("41001E00"), ctx())
    assert isinstance(done, cvm.CvmDone) and done.method == "signature"
    assert cvm.OFFLINE_PIN_REFUSED in done.notes and Tvr.PIN_PAD_MISSING in done.tvr
    failed = cvm.evaluate(XY + bytes.fromhex("01001E00"), ctx())
    assert isinstance(failed, cvm.CvmDone) and failed.method == "failed"
    assert failed.results == bytes.fromhex("010001") and cvm.OFFLINE_PIN_REFUSED in failed.notes


def test_offline_pin_if_supported_is_skipped_silently() -> None:
    done = cvm.evaluate(XY + bytes.fromhex("44031F00"), ctx())
    assert isinstance(done, cvm.CvmDone) and done.method == "none"
    assert done.results == bytes.fromhex("1F0002") and not done.notes


def test_amount_conditions_use_x_and_y_in_the_application_currency() -> None:
    lst = (1000).to_bytes(4, "big") + (5000).to_bytes(4, "big") + bytes.fromhex(
        "1F061E081F00")  # under X: no CVM; under Y: signature; else no CVM
    assert cvm.evaluate(lst, ctx(amount=999)).results[:2] == b"\x1f\x06"  # type: ignore[union-attr]
    assert cvm.evaluate(lst, ctx(amount=1000)).results[:2] == b"\x1e\x08"  # type: ignore[union-attr]
    assert cvm.evaluate(lst, ctx(amount=5000)).results[:2] == b"\x1f\x00"  # type: ignore[union-attr]
    # another application currency: the amount conditions do not hold
    assert cvm.evaluate(lst, ctx(amount=1, app_currency=b"\x08\x40")).results[:2] == \
        b"\x1f\x00"  # type: ignore[union-attr]


def test_cash_condition() -> None:
    lst = XY + bytes.fromhex("42041F00")
    assert isinstance(cvm.evaluate(lst, ctx(txn_type=0x01)), cvm.NeedOnlinePin)
    assert cvm.evaluate(lst, ctx()).method == "none"  # type: ignore[union-attr]


def test_unrecognised_cvm_and_fail_cvm() -> None:
    done = cvm.evaluate(XY + bytes.fromhex("55001F00"), ctx())
    assert isinstance(done, cvm.CvmDone) and done.method == "none"
    assert Tvr.UNRECOGNISED_CVM in done.tvr
    fail = cvm.evaluate(XY + bytes.fromhex("00001F00"), ctx())
    assert isinstance(fail, cvm.CvmDone) and fail.method == "failed"
    assert fail.results == bytes.fromhex("000001")


def test_no_rule_applies_and_no_list() -> None:
    done = cvm.evaluate(XY + bytes.fromhex("1F05"), ctx())
    assert isinstance(done, cvm.CvmDone) and done.results == bytes.fromhex("3F0001")
    assert Tvr.CV_NOT_SUCCESSFUL in done.tvr
    none = cvm.evaluate(None, ctx())
    assert isinstance(none, cvm.CvmDone) and Tvr.ICC_DATA_MISSING in none.tvr
