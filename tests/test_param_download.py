"""The chip parameter download: CA keys (0820/372, 0800/370, 0800/371) then AIDs (382, 380,
381), from the real simulator over loopback, stored in the journal whole or not at all.

In-process terminals (tests/helpers.py `terminal`) for the app step; a SIGKILLed terminal
subprocess (helpers.TerminalProcess, as tests/test_kill.py) for "a kill mid-download keeps the
old tables"; the builders and parsers on their own at the end.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
from faultkit import shut
from helpers import TID, TerminalProcess, provision, run, terminal

from board.sim.chipcards import test_aid_params, test_capks
from board.sim.emvcrypto import load_key
from firmware.diag.journal_check import check_journal
from firmware.emv.params import AidParams, Capk
from firmware.host import channel
from firmware.host import params_download as pd
from firmware.host.messages import Terminal as TermIds
from firmware.host.messages import signon_request
from firmware.journal import emvparams
from firmware.journal.schema import MIGRATIONS
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault

TERM = TermIds(TID, "123456789012345")


def other_capk() -> Capk:
    """A second valid key (index 81) made from another TEST key of board/sim/emvkeys."""
    key = load_key("issuer_1152")
    rid = bytes.fromhex("A000000333")
    return Capk(rid=rid, index=0x81, modulus=key.modulus, exponent=key.exponent,
                check_value=pd.capk_check_value(rid, 0x81, key.modulus, key.exponent))


def durable_params(data_dir: Path) -> tuple[dict[str, str], set[int]]:
    """The tables' versions and the CA key indexes, read from the journal file afresh."""
    con = sqlite3.connect(f"file:{data_dir / 'journal.db'}?mode=ro", uri=True)
    try:
        versions = dict(con.execute("SELECT tbl, version FROM emv_param_version").fetchall())
        indexes = {r[0] for r in con.execute("SELECT idx FROM emv_capk")}
    finally:
        con.close()
    return versions, indexes


# ---- the app step against the simulator -------------------------------------------------

@pytest.fixture
def ic(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process terminals sign on as IC terminals (header application type 61)."""
    monkeypatch.setattr(channel, "signon_request", functools.partial(signon_request, ic=True))


def test_a_magstripe_terminal_is_not_asked_and_loads_nothing(tmp_path, sim) -> None:
    async def go() -> None:
        t = await terminal(provision(tmp_path / "t", sim.port), chip_slot=False)
        try:
            assert t.journal is not None
            params = emvparams.load_emv_params(t.journal)
            assert (params.capks, params.aids) == ((), emvparams.BUILTIN_AIDS)
            assert sim.ledger.params_version(TID, "capk") is None
        finally:
            await shut(t)

    run(go())


def test_a_new_terminal_loads_the_ca_keys_then_the_aids_at_sign_on(tmp_path, sim, ic) -> None:
    async def go() -> None:
        t = await terminal(provision(tmp_path / "t", sim.port))
        try:
            assert t.journal is not None
            params = emvparams.load_emv_params(t.journal)
            assert params.capks == tuple(test_capks())
            assert params.aids == tuple(sorted(test_aid_params(), key=lambda a: a.aid))
            status = emvparams.table_status(t.journal)
            served = sim.call(sim._sim.params_versions)
            assert (status["capk"].count, status["aid"].count) == (1, 2)
            # The host heard both end messages for exactly what it serves.
            assert sim.ledger.params_version(TID, "capk") == served["capk"]
            assert sim.ledger.params_version(TID, "aid") == served["aid"]
            audit = [r[0] for r in t.journal.read("SELECT action FROM audit")]
            assert audit.index("capk download") < audit.index("aid download")
            # Diagnostics (the journal check) shows both tables, counts and versions.
            lines = check_journal(t.journal, "en", time.time()).lines
            assert f"CA keys: 1, version {status['capk'].version}" in lines
            assert f"Chip AIDs: 2, version {status['aid'].version}" in lines
        finally:
            await shut(t)

    run(go())


def test_the_host_asks_again_when_its_keys_change_and_the_version_follows(tmp_path, sim, ic) -> None:
    async def go() -> None:
        data_dir = provision(tmp_path / "t", sim.port)
        t = await terminal(data_dir)
        assert t.journal is not None
        first = emvparams.table_status(t.journal)["capk"].version
        sim.call(setattr, sim._sim, "capks", [*test_capks(), other_capk()])
        assert await t.sign_on()  # the 0810 header says 4: update the CA keys
        status = emvparams.table_status(t.journal)
        assert status["capk"].count == 2 and status["capk"].version != first
        assert {k.index for k in emvparams.load_emv_params(t.journal).capks} == {0x80, 0x81}
        await shut(t)

    run(go())


def test_a_key_with_a_wrong_check_value_is_refused_in_words_and_nothing_changes(
        tmp_path, sim, ic) -> None:
    good = test_capks()[0]
    sim.call(setattr, sim._sim, "capks", [replace(good, check_value=bytes(20))])

    async def go() -> None:
        t = await terminal(provision(tmp_path / "t", sim.port))
        try:
            assert t.journal is not None
            params = emvparams.load_emv_params(t.journal)
            assert params.capks == () and params.capk_version == ""  # still never loaded
            assert params.aids == emvparams.BUILTIN_AIDS  # CA keys first: AIDs wait too
            (detail,) = [r[0] for r in t.journal.read(
                "SELECT detail FROM audit WHERE action = 'capk download'")]
            assert "check value" in detail and "refused" in detail
            assert sim.ledger.params_version(TID, "capk") is None  # no 371 was sent
        finally:
            await shut(t)

    run(go())


def test_diagnostics_say_a_journal_never_loaded_has_no_ca_key_and_the_builtin_aids(
        tmp_path) -> None:
    j = Journal.open(tmp_path / "journal.db", CardVault(bytes(32)))
    try:
        lines = check_journal(j, "zh_CN", time.time()).lines
        assert "认证中心公钥: 0个, 版本 无 (未下载)" in lines and "IC卡应用: 2个, 版本 内置" in lines
    finally:
        j.close()


def test_a_terminal_never_loaded_has_the_builtin_aids_and_no_ca_key(tmp_path) -> None:
    con = sqlite3.connect(":memory:", isolation_level=None)
    for steps in MIGRATIONS:
        for step in steps:
            step(con.cursor()) if callable(step) else con.execute(step)
    params = emvparams.load_emv_params(con)
    assert params.capks == () and (params.capk_version, params.aid_version) == ("", "")
    assert [a.aid.hex().upper() for a in params.aids] == ["A000000333010101",
                                                          "A000000333010102"]
    assert all(a.tac_denial == bytes.fromhex("0010000000") for a in params.aids)


def test_a_failure_inside_the_swap_rolls_back_to_the_old_table(tmp_path) -> None:
    """The swap is one transaction: an error after the DELETE (a full disk, a power cut)
    leaves the old rows and the old version."""
    path = tmp_path / "j.db"
    con = sqlite3.connect(path, isolation_level=None)
    for steps in MIGRATIONS:
        for step in steps:
            step(con.cursor()) if callable(step) else con.execute(step)
    old = emvparams.store_capks(con, test_capks())
    broken = replace(other_capk(), index=0x80)  # same (rid, index) twice: the INSERT fails
    with pytest.raises(sqlite3.IntegrityError):
        emvparams.store_capks(con, [other_capk(), broken, broken])
    con.close()
    again = sqlite3.connect(path)
    assert again.execute("SELECT version FROM emv_param_version").fetchall() == [(old,)]
    assert again.execute("SELECT idx FROM emv_capk").fetchall() == [(0x80,)]


def test_sigkill_mid_download_keeps_the_old_tables_then_the_next_start_loads(tmp_path,
                                                                           sim) -> None:
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=5.0)
    term = TerminalProcess(data_dir, module="tests.ic_entry")  # an IC terminal
    term.start()  # loads version 1 at its start-up sign-on
    term.stop()
    v1, idx1 = durable_params(data_dir)
    assert idx1 == {0x80} and set(v1) == {"capk", "aid"}

    sim.call(setattr, sim._sim, "capks", [*test_capks(), other_capk()])
    # The CA key query's reply is held back: the terminal is mid-download when it is killed.
    sim.add_fault("delay", mti="0820", seconds=30.0, process=True, count=1)
    term.start(wait_idle=False)
    deadline = time.monotonic() + 20
    while sim.call(sim._sim.faults.active):  # taken: the 0820/372 is at the host
        assert time.monotonic() < deadline, "the terminal never reached the key download"
        time.sleep(0.02)
    term.kill()
    assert durable_params(data_dir) == (v1, idx1)

    sim.clear_faults()
    term.start()
    term.stop()
    v2, idx2 = durable_params(data_dir)
    assert idx2 == {0x80, 0x81} and v2["capk"] != v1["capk"] and v2["aid"] == v1["aid"]


# ---- builders and parsers ---------------------------------------------------------------

def test_the_requests_say_60_3_and_name_what_they_ask_for() -> None:
    q = pd.capk_query_request("000001", TERM, "000002", 4)
    assert (q.mti, q.fields["60"], bytes.fromhex(q.fields["62"])) == ("0820", "00000002372",
                                                                     b"104")
    key = pd.CapkId(bytes.fromhex("A000000333"), 0x80)
    d = pd.capk_download_request("000002", TERM, "000002", key)
    assert (d.mti, d.fields["60"][8:], d.fields["62"]) == ("0800", "370",
                                                          "9F0605A0000003339F220180")
    a = pd.aid_download_request("000003", TERM, "000002", bytes.fromhex("A000000333010101"))
    assert (a.fields["60"][8:], a.fields["62"]) == ("380", "9F0608A000000333010101")
    assert pd.aid_query_request("000004", TERM, "000002", 0).fields["60"][8:] == "382"
    assert pd.capk_end_request("000005", TERM, "000002").fields["60"][8:] == "371"
    assert "62" not in pd.aid_end_request("000006", TERM, "000002").fields


def test_keys_and_aids_survive_the_host_encoding_and_a_bad_key_is_refused() -> None:
    key = test_capks()[0]
    assert pd.parse_capk(pd.capk_62(key)) == key
    aid = replace(test_aid_params()[0], floor_limit=12345, random_threshold=500,
                  random_max_percent=50, random_target_percent=20, online_pin_capable=False,
                  partial_match=False, default_tdol=bytes.fromhex("9F0206"))
    assert pd.parse_aid(pd.aid_62(aid)) == aid
    assert pd.parse_capk("30") is None and pd.parse_aid("30") is None
    tampered = replace(key, modulus=key.modulus[:-1] + b"\x00")  # check value now stale
    with pytest.raises(pd.DownloadError, match="refused: its check value"):
        pd.parse_capk(pd.capk_62(tampered))


def test_query_pages_say_whether_more_follow() -> None:
    page = pd.parse_capk_query(pd.capk_query_62([test_capks()[0], other_capk()], True))
    assert page.more and [k.index for k in page.entries] == [0x80, 0x81]  # type: ignore[union-attr]
    assert page.entries[0].expiry == test_capks()[0].expiry  # type: ignore[union-attr]
    assert pd.parse_capk_query("30") == pd.QueryPage((), False)
    aids = [AidParams(aid=bytes.fromhex("A000000333010101"))]
    assert pd.parse_aid_query(pd.aid_query_62(aids, False)) == pd.QueryPage(
        (bytes.fromhex("A000000333010101"),), False)


@pytest.mark.parametrize(("field62", "words"), [
    ("", "status byte"), ("39", "status byte"), ("319F06", "not well-formed TLV"),
    ("31" + "9F220180", "lacks 9F06"),
])
def test_a_malformed_62_is_a_download_error_naming_field_62(field62, words) -> None:
    with pytest.raises(pd.DownloadError, match=words) as info:
        pd.parse_capk(field62)
    assert info.value.field == "62"
