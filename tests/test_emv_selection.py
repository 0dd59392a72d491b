"""firmware.emv.selection: the candidate list from the PSE directory or the AID list, against
hand-built card answers."""

from __future__ import annotations

from collections.abc import Callable

from firmware.emv import apdu, tlv
from firmware.emv.params import AidParams
from firmware.emv.selection import Selection, SelectionResult

DEBIT = bytes.fromhex("A000000333010101")
CREDIT = bytes.fromhex("A000000333010102")
RID_APP = bytes.fromhex("A000000333")
OK = b"\x90\x00"
NOT_FOUND = b"\x6a\x82"
NO_RECORD = b"\x6a\x83"
AIDS = (AidParams(aid=DEBIT), AidParams(aid=CREDIT))


def entry(aid: bytes, label: bytes, priority: int | None) -> bytes:
    fields = [("4F", aid), ("50", label)] + ([("87", bytes([priority]))] if priority else [])
    return tlv.encode_one("61", tlv.encode(fields))


def fci(aid: bytes, label: bytes = b"APP", priority: int | None = None) -> bytes:
    a5 = tlv.encode([("50", label)] + ([("87", bytes([priority]))] if priority else []))
    return tlv.encode_one("6F", tlv.encode_one("84", aid) + tlv.encode_one("A5", a5)) + OK


def pse_fci(sfi: int = 1) -> bytes:
    return tlv.encode_one("6F", tlv.encode_one("84", apdu.PSE_NAME)
                          + tlv.encode_one("A5", tlv.encode_one("88", bytes([sfi])))) + OK


def drive(answer: Callable[[bytes], bytes], aids: tuple[AidParams, ...] = AIDS,
          use_pse: bool = True) -> tuple[SelectionResult, list[bytes]]:
    sel = Selection(aids, use_pse=use_pse)
    sent: list[bytes] = []
    out = sel.start()
    while isinstance(out, bytes):
        sent.append(out)
        assert len(sent) < 50
        out = sel.on_response(answer(out))
    assert sel.apdu_count == len(sent)
    return out, sent


def test_pse_directory_entries_ordered_by_priority() -> None:
    record = tlv.encode_one("70", entry(CREDIT, b"CREDIT", 2) + entry(DEBIT, b"DEBIT", 0x81)
                            + entry(bytes.fromhex("A0000000031010"), b"VISA", 1))

    def card(c: bytes) -> bytes:
        if c == apdu.select(apdu.PSE_NAME):
            return pse_fci(1)
        if c == apdu.read_record(1, 1):
            return record + OK
        return NO_RECORD

    result, sent = drive(card)
    assert [c.label for c in result.candidates] == ["DEBIT", "CREDIT"]  # VISA not accepted
    assert result.candidates[0].confirm and not result.candidates[1].confirm
    assert result.candidates[0].priority == 1
    assert sent == [apdu.select(apdu.PSE_NAME), apdu.read_record(1, 1), apdu.read_record(1, 2)]


def test_no_priority_goes_last() -> None:
    record = tlv.encode_one("70", entry(DEBIT, b"DEBIT", None) + entry(CREDIT, b"CREDIT", 3))

    def card(c: bytes) -> bytes:
        return pse_fci() if c[:4] == b"\x00\xa4\x04\x00" else \
            record + OK if c == apdu.read_record(1, 1) else NO_RECORD

    result, _ = drive(card)
    assert [c.label for c in result.candidates] == ["CREDIT", "DEBIT"]


def test_no_pse_falls_back_to_the_aid_list() -> None:
    def card(c: bytes) -> bytes:
        if c == apdu.select(DEBIT):
            return fci(DEBIT, b"DEBIT", 1)
        return NOT_FOUND

    result, sent = drive(card)
    assert [c.aid for c in result.candidates] == [DEBIT]
    assert sent == [apdu.select(apdu.PSE_NAME), apdu.select(DEBIT), apdu.select(CREDIT)]


def test_partial_match_selects_next_occurrences() -> None:
    apps = [DEBIT, CREDIT]

    def card(c: bytes) -> bytes:
        if c == apdu.select(RID_APP):
            return fci(apps[0])
        if c == apdu.select(RID_APP, next_occurrence=True):
            card.n += 1  # type: ignore[attr-defined]
            return fci(apps[card.n]) if card.n < len(apps) else NOT_FOUND  # type: ignore[attr-defined]
        return NOT_FOUND

    card.n = 0  # type: ignore[attr-defined]
    result, sent = drive(card, aids=(AidParams(aid=RID_APP),), use_pse=False)
    assert [c.aid for c in result.candidates] == [DEBIT, CREDIT]
    assert sent.count(apdu.select(RID_APP, next_occurrence=True)) == 2


def test_exact_match_only_when_partial_is_off() -> None:
    def card(c: bytes) -> bytes:
        return fci(DEBIT) if c == apdu.select(RID_APP) else NOT_FOUND

    result, sent = drive(card, aids=(AidParams(aid=RID_APP, partial_match=False),),
                         use_pse=False)
    assert result.candidates == () and len(sent) == 1


def test_a_blocked_application_is_skipped() -> None:
    def card(c: bytes) -> bytes:
        if c == apdu.select(DEBIT):
            return fci(DEBIT)[:-2] + b"\x62\x83"
        if c == apdu.select(CREDIT):
            return fci(CREDIT, b"CREDIT")
        return NOT_FOUND

    result, _ = drive(card, use_pse=False)
    assert [c.aid for c in result.candidates] == [CREDIT]


def test_6a81_means_the_card_is_blocked() -> None:
    result, sent = drive(lambda c: b"\x6a\x81")
    assert result.card_blocked and len(sent) == 1


def test_nothing_accepted_gives_an_empty_list() -> None:
    result, _ = drive(lambda c: NOT_FOUND)
    assert result.candidates == () and not result.card_blocked
