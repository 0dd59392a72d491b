"""The app step that loads the chip parameter tables from the host: CA public keys, then AID
parameters (firmware/host/params_download.py on the wire, firmware/journal/emvparams.py on disk).

When: right after a good sign-on, for the table the host asks for in the sign-on reply's
header processing requirement (CUP: 4 "update the CA public keys", 5 "download the IC card
parameters", 9 both; docs/dialect.md, "Chip parameters"), and, on an IC terminal (its header
says application type 61), for each table it never received. Each table is stored by one SQL
transaction only once all of it has arrived and checked out, so a lost link, a refused key or
a power cut mid-download keeps the old table. A failed download never fails the sign-on: the
terminal goes on with what it has, says why in the log and the audit, and tries again at the
next sign-on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from firmware.host import params_download as pd
from firmware.host.channel import HostLink
from firmware.host.errors import HostError
from firmware.host.messages import Message
from firmware.journal import emvparams
from firmware.journal.errors import JournalError
from firmware.journal.store import Journal

__all__ = ["IC_APP_TYPE", "ChipParamsResult", "after_sign_on", "download", "tables_wanted"]

log = logging.getLogger("posfw.app")

# Header processing requirement -> the tables it asks for.
_ASKS: Final[dict[str, tuple[str, ...]]] = {"4": ("capk",), "5": ("aid",), "9": ("capk", "aid")}
# Header application type of an IC terminal (60 is magstripe only).
IC_APP_TYPE: Final = "61"
# A query's pages are bounded: a host that says "more" forever is not followed.
_MAX_PAGES: Final = 25


@dataclass
class ChipParamsResult:
    """What one download did: the tables stored (name -> version) and the problems in words."""

    stored: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def tables_wanted(journal: Journal, processing: str, ic_terminal: bool) -> list[str]:
    """The tables to download now, CA keys first: those the host asks for and, on an IC
    terminal, those never received (the built-in AIDs are a stand-in, not a download)."""
    wanted = set(_ASKS.get(processing, ()))
    if ic_terminal:
        status = emvparams.table_status(journal)
        wanted |= {name for name, s in status.items() if not s.version}
    return [name for name in ("capk", "aid") if name in wanted]


async def _checked(link: HostLink, msg: Message, timeout: float) -> str:
    """The reply's field 62 (hex) when the host answered 00; HostError otherwise."""
    reply = await link.request(msg, mac=False, timeout=timeout)
    code = reply.fields.get("39")
    if code != "00":
        raise pd.DownloadError(f"the host answered {code} to {msg.mti}/{msg.fields['60'][8:11]}")
    return reply.fields.get("62", "")


async def _capks(link: HostLink, stan: Callable[[], str], batch: str,
                 timeout: float) -> list[pd.Capk]:
    ids: list[pd.CapkId] = []
    for _ in range(_MAX_PAGES):
        page = pd.parse_capk_query(await _checked(
            link, pd.capk_query_request(stan(), link.term, batch, len(ids)), timeout))
        ids += page.entries  # type: ignore[arg-type]
        if not page.more:
            break
    keys = []
    for key_id in ids:
        key = pd.parse_capk(await _checked(
            link, pd.capk_download_request(stan(), link.term, batch, key_id), timeout))
        if key is None:
            log.warning("the host listed CA key %s/%02X but has none to send",
                        key_id.rid.hex().upper(), key_id.index)
            continue
        keys.append(key)
    return keys


async def _aids(link: HostLink, stan: Callable[[], str], batch: str,
                timeout: float) -> list[pd.AidParams]:
    aids: list[bytes] = []
    for _ in range(_MAX_PAGES):
        page = pd.parse_aid_query(await _checked(
            link, pd.aid_query_request(stan(), link.term, batch, len(aids)), timeout))
        aids += page.entries  # type: ignore[arg-type]
        if not page.more:
            break
    out = []
    for aid in aids:
        params = pd.parse_aid(await _checked(
            link, pd.aid_download_request(stan(), link.term, batch, aid), timeout))
        if params is not None:
            out.append(params)
    return out


async def download(link: HostLink, journal: Journal, tables: list[str], *,
                   timeout: float) -> ChipParamsResult:
    """Download `tables` ("capk", "aid"), each stored whole or not at all, then its end
    message (371 / 381) so the host knows this terminal has it."""
    result = ChipParamsResult()
    batch = journal.current_batch()
    for name in tables:
        try:
            if name == "capk":
                capks = await _capks(link, journal.allocate_stan, batch, timeout)
                version = emvparams.store_capks(journal, capks)
                end = pd.capk_end_request(journal.allocate_stan(), link.term, batch)
            else:
                aids = await _aids(link, journal.allocate_stan, batch, timeout)
                if not aids:
                    raise pd.DownloadError("the host lists no AID: the built-in ones stay")
                version = emvparams.store_aids(journal, aids)
                end = pd.aid_end_request(journal.allocate_stan(), link.term, batch)
            result.stored[name] = version
            journal.audit("system", f"{name} download", f"version {version}", "done")
            await _checked(link, end, timeout)
        except (HostError, JournalError) as exc:
            # HostError covers DownloadError (a refused key, words included) and a lost link.
            problem = f"{name} download: {exc}"
            log.warning("%s; the terminal keeps the tables it had", problem)
            result.problems.append(problem)
            try:
                journal.audit("system", f"{name} download", str(exc), "failed")
            except JournalError:
                log.exception("cannot audit the failed download")
            if name not in result.stored:
                break  # CA keys first: the AIDs wait for the next sign-on too
    return result


async def after_sign_on(link: HostLink, journal: Journal, reply: Message, *,
                        timeout: float) -> ChipParamsResult:
    """The call session.py makes after a good sign-on (`reply` is the 0810, whose header echoes
    the terminal's application type): download what is wanted, if anything."""
    tables = tables_wanted(journal, reply.header.processing, reply.header.app_type == IC_APP_TYPE)
    if not tables:
        return ChipParamsResult()
    log.info("downloading chip parameters: %s", ", ".join(tables))
    return await download(link, journal, tables, timeout=timeout)
