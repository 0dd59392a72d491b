"""Firmware updates at the app layer: the rules that refuse an update, the bundle checked and
shown before it is installed, the install with its progress, the restart asked for; the
slots' state in words; and the first start of a new slot (its health check, then mark good).

Rules (docs/updates.md): an update is refused, in words, while the host is owed a reversal or
an advice (or a record awaits its reply or a supervisor), while a settlement is unfinished,
while the batch has been open longer than transactions.update_max_batch_hours, or while a
receipt is printing; it runs under the one operation lock, so never during a transaction.
Held orders and queued receipts do not stop it: they live in the journal and the restart takes
them up again. Every attempt and its outcome go to the journal's audit trail; nothing prints.

The bundle comes from a path (ECR) or from the directories a USB stick offers, under the same
mount rules as the deregistration backup (deregister.EXPORT_ROOTS): a *.raucb file in a mounted
directory under /media or /mnt, or in the data directory's export/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import firmware
from firmware.app.core.contract import OperatorInput
from firmware.app.core.lifecycle import lifecycle, put_state, state
from firmware.app.core.terminal import TerminalCore
from firmware.app.services.deregister import EXPORT_ROOTS
from firmware.diag.buildinfo import firmware_version
from firmware.diag.journal_check import check_journal
from firmware.engine.deregistration import Lifecycle
from firmware.engine.model import TxnResult
from firmware.i18n import register, text
from firmware.ports import (
    BundleInfo,
    InstallProgress,
    UpdateAgent,
    UpdateError,
    UpdateStatus,
    UpdatesUnavailable,
)
from firmware.ui.core import OpOutcome, StartOp

log = logging.getLogger("posfw.updates")

PANEL_OPS = frozenset({"update_sources", "update_check", "update_install", "firmware_status"})
ECR_OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "update": (("path", "password"), ("version", "check")),
    "firmware_status": ((), ()),
}
SUFFIX = ".raucb"
SYSTEM = "system"  # the audit's who for the start-up health check
RESTART_DELAY_S = 2.0  # from "Restarting into version X" to the restart asked
HEALTH_RESTART_S = 30.0  # how long a failed first start says why before it asks for the restart

MESSAGES: dict[str, tuple[str, str]] = {
    "upd_unavailable": ("Updates are not available on this board", "本机不支持固件升级"),
    "upd_blocked": ("Update refused: {why}; nothing changed", "不能升级:{why};未作任何更改"),
    "upd_item_reversal": ("{n} reversal(s) pending", "{n}笔冲正未完成"),
    "upd_item_advice": ("{n} advice(s) not sent", "{n}笔通知未上送"),
    "upd_item_pending": ("{n} transaction(s) awaiting reply", "{n}笔交易等待应答"),
    "upd_item_quarantined": ("{n} set aside for a supervisor", "{n}笔已隔离待主管处理"),
    "upd_item_settlement": ("settlement interrupted: settle first", "结算中断:请先结算"),
    "upd_item_batch": ("batch open {hours} h (limit {limit} h): settle first",
                       "批次已开{hours}小时(上限{limit}小时):请先结算"),
    "upd_item_printing": ("a receipt is printing", "正在打印"),
    "upd_no_bundles": ("No update file (.raucb) found: insert the USB stick",
                       "未找到升级文件:请插入优盘"),
    "upd_pick": ("Choose the update file", "请选择升级文件"),
    "upd_bad_path": ("Update refused: take the file from a USB stick or the export folder; "
                     "nothing changed", "不能升级:升级文件须在优盘或导出目录中;未作任何更改"),
    "upd_bad_bundle": ("Update refused: the file is not a valid signed update; nothing changed",
                       "不能升级:文件不是有效的签名升级包;未作任何更改"),
    "upd_wrong_board": ("Update refused: the file is for another terminal model ({found}); "
                        "nothing changed", "不能升级:升级包适用于其他型号({found});未作任何更改"),
    "upd_wrong_version": ("Update refused: the file holds version {found}, not {wanted}; "
                          "nothing changed", "不能升级:升级包版本为{found},不是{wanted};未作任何更改"),
    "upd_confirm": ("Install version {version}? Now running {current}",
                    "安装版本{version}?当前版本{current}"),
    "upd_checked": ("Update file checked: version {version}", "升级包已校验:版本{version}"),
    "upd_checking": ("Checking the update file", "正在校验升级包"),
    "upd_writing": ("Writing the update: do not switch off; cannot be cancelled",
                    "正在写入升级:请勿关机;不能取消"),
    "upd_cancelled": ("Update cancelled: nothing changed", "升级已取消:未作任何更改"),
    "upd_failed": ("Update failed: nothing changed; the terminal runs version {current}",
                   "升级失败:未作任何更改;当前版本{current}"),
    "upd_restarting": ("Restarting into version {version}", "正在重启进入版本{version}"),
    "upd_slot": ("Slot {name}: {version}, {state}{marks}", "分区{name}:{version},{state}{marks}"),
    "upd_state_good": ("good", "正常"),
    "upd_state_bad": ("bad", "故障"),
    "upd_mark_booted": (", running", ",运行中"),
    "upd_mark_next": (", boots next", ",下次启动"),
    "upd_no_version": ("factory", "出厂"),
    "upd_firmware": ("Firmware {version}", "固件版本{version}"),
    "upd_why_normal": ("Started from {slot}: the slot to boot", "从分区{slot}启动:正常启动"),
    "upd_why_new": ("First start of {slot}: health check", "分区{slot}首次启动:自检中"),
    "upd_why_confirmed": ("{slot} passed its health check", "分区{slot}自检通过"),
    "upd_why_fallback": ("Fallback: {other} failed its boot attempts; running {slot}",
                         "回退:分区{other}启动失败;运行分区{slot}"),
    "upd_why_unconfirmed": ("{slot} failed its health check ({why}): restarting; the previous "
                            "firmware returns after failed starts",
                            "分区{slot}自检未通过({why}):正在重启;多次失败后将回到原固件"),
    "upd_health_journal": ("journal check failed", "交易记录检查失败"),
    "upd_health_host": ("no answer from the host", "主机无应答"),
    "upd_health_printer": ("printer does not answer", "打印机无应答"),
    # the idle screen's notices (a notice is a key without blanks to fill)
    "upd_notice_restarting": ("Update installed: restarting", "升级已安装:正在重启"),
    "upd_notice_restart_manual": ("Update installed: switch the terminal off and on",
                                  "升级已安装:请关机后重新开机"),
    "upd_notice_fallback": ("Previous firmware restored: the update did not start",
                            "已恢复原固件:升级后未能启动"),
    "upd_notice_unconfirmed": ("The update failed its health check: restarting",
                               "升级自检未通过:正在重启"),
    "upd_status_unknown": ("Update system status unknown: {why}", "升级系统状态未知:{why}"),
}

register(MESSAGES)


# -- where bundles come from ------------------------------------------------------------

def bundle_dirs(terminal: TerminalCore) -> list[Path]:
    """Where update files may come from: mounted directories under /media and /mnt (a USB stick,
    read-only is enough) and the data directory's export/ (deregister.export_dirs' rule)."""
    found: list[Path] = []
    for root in EXPORT_ROOTS:
        base = Path(root)
        with contextlib.suppress(OSError):
            for candidate in sorted([base, *base.glob("*"), *base.glob("*/*")]):
                if candidate.is_dir() and os.path.ismount(candidate) and os.access(candidate, os.R_OK):
                    found.append(candidate)
    found.append(terminal.data_dir / "export")
    return found


def find_bundles(terminal: TerminalCore) -> list[Path]:
    """The *.raucb files in bundle_dirs() (the directory itself and one level below)."""
    files: list[Path] = []
    for where in bundle_dirs(terminal):
        with contextlib.suppress(OSError):
            for path in sorted([*where.glob("*" + SUFFIX), *where.glob("*/*" + SUFFIX)]):
                if path.is_file() and path not in files:
                    files.append(path)
    return files


def _offered(terminal: TerminalCore, path: str | None) -> bool:
    if not path or not path.endswith(SUFFIX):
        return False
    wanted = Path(path).resolve()
    return wanted.is_file() and any(wanted.is_relative_to(d.resolve()) for d in bundle_dirs(terminal))


# -- the rules --------------------------------------------------------------------------

def blockers(terminal: TerminalCore, lang: str) -> list[str]:
    """What stops an update now, in words (empty: nothing)."""
    j = terminal.journal
    assert j is not None, "service mode refuses updates before the rules"
    found: list[str] = []
    counts = j.unresolved_counts()
    for state_name, key in (("REVERSAL_DUE", "upd_item_reversal"), ("ADVICE_DUE", "upd_item_advice"),
                            ("PENDING", "upd_item_pending"), ("QUARANTINED", "upd_item_quarantined")):
        if counts.get(state_name):
            found.append(text(key, lang, n=counts[state_name]))
    if j.open_settlement() is not None:
        found.append(text("upd_item_settlement", lang))
    oldest = j.read("SELECT MIN(created_at) FROM txn WHERE batch = ? AND settlement_id IS NULL "
                    "AND state IN ('APPROVED', 'VOIDED')", (j.current_batch(),))[0][0]
    limit = int(terminal.settings["transactions"].get("update_max_batch_hours", 24))
    if oldest is not None and time.time() - float(oldest) > limit * 3600:
        hours = int((time.time() - float(oldest)) // 3600)
        found.append(text("upd_item_batch", lang, hours=hours, limit=limit))
    if j.read("SELECT COUNT(*) FROM print_job WHERE state = 'PRINTING'")[0][0]:
        found.append(text("upd_item_printing", lang))
    return found


def _audit(terminal: TerminalCore, who: str, action: str, detail: str, outcome: str) -> None:
    assert terminal.journal is not None
    terminal.journal.audit(who, f"firmware update: {action}", detail[:500], outcome)


def current_version() -> str:
    """This firmware's version: the source tree's (a development run), else the installed
    package's (the image, where no pyproject.toml is beside it)."""
    return firmware_version() or getattr(firmware, "__version__", None) or "unknown"


async def _checked_bundle(terminal: TerminalCore, path: str | None, lang: str, who: str,
                          wanted: str | None = None) -> tuple[BundleInfo, str] | OpOutcome:
    """The rules, the path, then the bundle (signature, compatible, version): the bundle's info,
    and the version running now (the booted slot's, else this firmware's), or the refusal in
    words (audited). Nothing is changed either way."""
    agent = terminal.update_agent
    if agent is None or not agent.available:
        return OpOutcome("update_check", "refused", "upd_unavailable", detail=text("upd_unavailable", lang))
    if terminal.journal is None:  # service mode: what the host is owed cannot be known
        return OpOutcome("update_check", "refused", "service_mode", detail=text("service_mode", lang))
    items = blockers(terminal, lang)
    if items:
        why = "; ".join(items)
        _audit(terminal, who, "refused", "; ".join(blockers(terminal, "en")), "nothing changed")
        return OpOutcome("update_check", "refused", "upd_blocked", detail=text("upd_blocked", lang, why=why))
    if not _offered(terminal, path):
        _audit(terminal, who, "refused", f"file not offered: {path}", "nothing changed")
        return OpOutcome("update_check", "refused", "upd_bad_path", detail=text("upd_bad_path", lang),
                         lines=("offered: " + ", ".join(str(d) for d in bundle_dirs(terminal)),))
    assert path is not None
    try:
        info = await agent.bundle_info(path)
        status = await agent.status()
    except UpdateError as exc:
        _audit(terminal, who, "refused", f"{Path(path).name}: {exc}", "nothing changed")
        return OpOutcome("update_check", "refused", "upd_bad_bundle", detail=text("upd_bad_bundle", lang),
                         lines=(str(exc),))
    if info.compatible != status.compatible:
        _audit(terminal, who, "refused", f"{Path(path).name} is for {info.compatible!r}, this board "
               f"is {status.compatible!r}", "nothing changed")
        return OpOutcome("update_check", "refused", "upd_wrong_board",
                         detail=text("upd_wrong_board", lang, found=info.compatible))
    if wanted is not None and info.version != wanted:
        _audit(terminal, who, "refused", f"{Path(path).name} holds {info.version}, {wanted} was "
               "confirmed", "nothing changed")
        return OpOutcome("update_check", "refused", "upd_wrong_version",
                         detail=text("upd_wrong_version", lang, found=info.version, wanted=wanted))
    booted = status.booted
    return info, (booted.version if booted is not None and booted.version else current_version())


async def check(terminal: TerminalCore, path: str | None, lang: str, source: str) -> OpOutcome:
    """The bundle looked at, for the operator's confirmation (its version and the running one)."""
    checked = await _checked_bundle(terminal, path, lang, terminal.actor(source))
    if isinstance(checked, OpOutcome):
        return checked
    got, running = checked
    _audit(terminal, terminal.actor(source), "checked", f"{Path(got.path).name}: version {got.version}",
           "confirm asked")
    return OpOutcome("update_check", "done", "upd_confirm",
                     detail=text("upd_confirm", lang, version=got.version, current=running),
                     items=({"path": got.path, "version": got.version, "current": running,
                             "compatible": got.compatible},))


async def install(terminal: TerminalCore, path: str | None, version: str | None, lang: str,
                  source: str) -> OpOutcome:
    """Checks the bundle again (the version the operator confirmed), then installs it under the
    operation lock. CANCEL counts until the write begins; after a good install the restart is
    asked for. A failure leaves the running slot as it was."""
    outcome: list[OpOutcome] = []
    who = terminal.actor(source)

    async def work() -> TxnResult:
        terminal.progress("upd_checking", cancellable=True)
        checked = await _checked_bundle(terminal, path, lang, who, wanted=version)
        if isinstance(checked, OpOutcome):
            outcome.append(OpOutcome("update_install", checked.status, checked.message_key,
                                     detail=checked.detail, lines=checked.lines))
            return _said(outcome[-1], lang)
        got, running = checked
        if terminal.cancel_requested():  # the last moment a CANCEL counts
            _audit(terminal, who, "cancelled", f"{Path(got.path).name}: version {got.version}",
                   "nothing changed")
            outcome.append(OpOutcome("update_install", "cancelled", "upd_cancelled",
                                     detail=text("upd_cancelled", lang)))
            return _said(outcome[-1], lang)
        result = await _write(terminal, got, running, lang, who)
        outcome.append(result)
        return _said(result, lang)

    await terminal.operation("update", source, work)  # the one operation lock
    return outcome[0] if outcome else OpOutcome("update_install", "failed", "internal_error")


def _said(outcome: OpOutcome, lang: str) -> TxnResult:
    """The operation's result for a screen that did not start it (an update a till asked for):
    the words already written in full, so the screen shows them once, as they are."""
    return TxnResult(outcome.status, outcome.detail or text(outcome.message_key, lang))


async def _write(terminal: TerminalCore, info: BundleInfo, running: str, lang: str,
                 who: str) -> OpOutcome:
    agent = terminal.update_agent
    assert agent is not None
    name = Path(info.path).name
    _audit(terminal, who, "install", f"{name}: version {info.version} (running {running})", "started")
    terminal.progress("upd_writing", 0, 100, cancellable=False)

    def progress(step: InstallProgress) -> None:
        terminal.progress("upd_writing", step.percent, 100, cancellable=False)

    try:
        await agent.install(info.path, progress)
    except UpdateError as exc:
        _audit(terminal, who, "install", f"{name}: {exc}", "failed, nothing changed")
        return OpOutcome("update_install", "failed", "upd_failed",
                         detail=text("upd_failed", lang, current=running), lines=(str(exc),))
    if terminal.journal is not None:
        with terminal.journal.transaction() as cur:
            put_state(cur, {"update_installed": info.version})
    _audit(terminal, who, "install", f"{name}: version {info.version}", "installed, restart asked")
    terminal.notice = "upd_notice_restarting"
    # The restart is asked a moment later: the till's reply and the LCD's "Restarting into
    # version X" go out first (the system stops this process as soon as it is asked).
    asyncio.get_running_loop().call_later(RESTART_DELAY_S, _restart, terminal, agent)
    return OpOutcome("update_install", "done", "upd_restarting",
                     detail=text("upd_restarting", lang, version=info.version))


def _restart(terminal: TerminalCore, agent: UpdateAgent) -> None:
    try:
        agent.request_reboot()
    except UpdateError as exc:  # the slot is switched: any power cycle starts the new firmware
        log.error("%s", exc)
        terminal.notice = "upd_notice_restart_manual"
        terminal.notify_changed()


# -- the slots in words ---------------------------------------------------------------------

def slot_lines(status: UpdateStatus, lang: str) -> list[str]:
    lines = []
    for slot in status.slots:
        marks = (text("upd_mark_booted", lang) if slot.booted else "") + \
                (text("upd_mark_next", lang) if slot.boots_next else "")
        lines.append(text("upd_slot", lang, name=slot.name, version=slot.version or text(
            "upd_no_version", lang), state=text(f"upd_state_{slot.state}", lang), marks=marks))
    return lines


def boot_reason(terminal: TerminalCore, status: UpdateStatus, lang: str) -> str:
    """Why the board runs the slot it runs, in words."""
    booted = status.booted
    if booted is None:
        return text("upd_status_unknown", lang, why="no booted slot")
    st = state(terminal.journal) if terminal.journal is not None else {}
    other = status.other(booted.name)
    if st.get("update_unconfirmed") == booted.name:
        return text("upd_why_unconfirmed", lang, slot=booted.name, why=st.get("update_health", ""))
    if booted.activated and st.get(f"update_confirmed_{booted.name}") == booted.activated:
        if other is not None and other.state == "bad" and (other.activated or "") > booted.activated:
            return text("upd_why_fallback", lang, other=other.name, slot=booted.name)
        return text("upd_why_confirmed", lang, slot=booted.name)
    if booted.activated:
        return text("upd_why_new", lang, slot=booted.name)
    if other is not None and other.state == "bad" and other.activated:
        return text("upd_why_fallback", lang, other=other.name, slot=booted.name)
    return text("upd_why_normal", lang, slot=booted.name)


async def firmware_lines(terminal: TerminalCore, lang: str) -> tuple[bool, list[str], dict[str, Any]]:
    """The Firmware screen and the ECR firmware_status: this firmware's version, both slots, why
    this one runs. (ok, lines, the same as plain data)."""
    lines = [text("upd_firmware", lang, version=current_version())]
    data: dict[str, Any] = {"version": current_version()}
    agent = terminal.update_agent
    if agent is None or not agent.available:
        lines.append(text("upd_unavailable", lang))
        data["available"] = False
        return True, lines, data
    try:
        status = await agent.status()
    except UpdateError as exc:
        lines.append(text("upd_status_unknown", lang, why=str(exc)))
        data.update(available=True, problem=str(exc))
        return False, lines, data
    lines += slot_lines(status, lang)
    why = boot_reason(terminal, status, lang)
    lines.append(why)
    data.update(available=True, compatible=status.compatible, why=why,
                booted=status.booted.name if status.booted else None,
                boots_next=status.next_boot.name if status.next_boot else None,
                slots=[{"name": s.name, "version": s.version, "state": s.state, "booted": s.booted,
                        "boots_next": s.boots_next} for s in status.slots])
    return True, lines, data


# -- the first start of a new slot ---------------------------------------------------------

async def health_check(terminal: TerminalCore) -> list[str]:
    """The new firmware's own check: the journal, an echo with the host (not on a deregistered
    terminal: it has no host), the printer. Returns the catalog keys of what failed (empty:
    passed)."""
    failed: list[str] = []
    j = terminal.journal
    if j is None or not check_journal(j, "en", time.time()).passed:
        failed.append("upd_health_journal")
    if lifecycle(terminal) is not Lifecycle.ACTIVE:
        pass  # deregistered: no host to ask (the terminal is provisioned again first)
    elif terminal.link is not None:
        ok, _seconds, detail = await terminal.echo()
        if not ok:
            log.warning("health check: echo failed: %s", detail)
            failed.append("upd_health_host")
    else:
        failed.append("upd_health_host")
    printer = getattr(terminal.prints, "printer", None)
    if printer is not None:
        try:
            await printer.status()
        except Exception as exc:  # any driver failure: the printer does not answer
            log.warning("health check: printer: %s", exc)
            failed.append("upd_health_printer")
    return failed


async def confirm_at_startup(terminal: TerminalCore) -> str | None:
    """At start-up, after open(): on the first start of a newly activated slot (its activation
    stamp not yet confirmed in the journal) run the health check, and only when it passes mark
    the slot good. On any other start the slot is marked good at once (the boot counter spends
    an attempt at every boot), with no check and no host traffic. Returns the words said (None:
    an ordinary start)."""
    agent, j = terminal.update_agent, terminal.journal
    if agent is None or not agent.available or j is None:
        return None
    try:
        status = await agent.status()
    except UpdatesUnavailable:
        return None
    except UpdateError as exc:
        log.error("update status at start-up: %s", exc)
        return None
    booted = status.booted
    st = state(j)
    if booted is None:
        return None
    if not booted.activated or st.get(f"update_confirmed_{booted.name}") == booted.activated:
        # A slot proven before (or the factory's): every boot spends one of its attempts
        # (board/image/boot.cmd), so every start gives them back; no check, no host traffic.
        said = None
        other = status.other(booted.name)
        if other is not None and other.state == "bad" and other.activated and \
                st.get("update_fallback_seen") != other.activated:
            # Back on this slot because the other one ran out of boot attempts: said and kept.
            said = text("upd_why_fallback", "en", other=other.name, slot=booted.name)
            with j.transaction() as cur:
                put_state(cur, {"update_fallback_seen": other.activated})
                j.audit_in(cur, SYSTEM, "firmware update: fallback", said, "running the previous slot")
            terminal.notice = "upd_notice_fallback"
        try:
            await agent.mark_good()
        except UpdateError as exc:
            log.error("slot %s not marked good at start-up: %s", booted.name, exc)
        return said
    failed = await health_check(terminal)
    version = booted.version or current_version()
    if failed:
        why = ", ".join(text(key, "en") for key in failed)
        with j.transaction() as cur:
            put_state(cur, {"update_unconfirmed": booted.name, "update_health": why})
            j.audit_in(cur, SYSTEM, "firmware update: health check", f"slot {booted.name} version "
                       f"{version}: {why}", "failed, not marked good, restart asked")
        terminal.notice = "upd_notice_unconfirmed"
        log.error("health check of slot %s failed: %s; it is not marked good, restart in %.0f s",
                  booted.name, why, HEALTH_RESTART_S)
        # Each failed first start spends one of the slot's boot attempts: the restart, after the
        # screen has said why for a while, lets the boot counter run out and bring back the
        # previous firmware by itself (a host that was only down passes at the next start).
        asyncio.get_running_loop().call_later(HEALTH_RESTART_S, _restart_after_failed_check, agent)
        return why
    try:
        await agent.mark_good()
    except UpdateError as exc:
        _audit(terminal, SYSTEM, "mark good", f"slot {booted.name}: {exc}", "failed")
        return str(exc)
    with j.transaction() as cur:
        put_state(cur, {f"update_confirmed_{booted.name}": booted.activated})
        cur.execute("DELETE FROM terminal_state WHERE name IN ('update_unconfirmed', 'update_health')")
        j.audit_in(cur, SYSTEM, "firmware update: health check", f"slot {booted.name} version "
                   f"{version}: journal, host and printer answer", "passed, marked good")
    return text("upd_why_confirmed", "en", slot=booted.name)


def _restart_after_failed_check(agent: UpdateAgent) -> None:
    try:
        agent.request_reboot()
    except UpdateError as exc:
        log.error("restart after the failed health check: %s", exc)


# -- keypad and ECR ---------------------------------------------------------------------------

async def run_op(terminal: TerminalCore, command: StartOp, lang: str, cols: int) -> OpOutcome:
    """Keypad ops: update_sources (items: the files found), update_check (path: the file),
    update_install (path, reference = the confirmed version; authorised: the supervisor's
    password was checked on the way into Settings), firmware_status (lines)."""
    if command.op == "firmware_status":
        ok, lines, _data = await firmware_lines(terminal, lang)
        return OpOutcome("firmware_status", "done" if ok else "failed", "upd_firmware",
                         lines=tuple(lines))
    agent = terminal.update_agent
    if agent is None or not agent.available:
        return OpOutcome(command.op, "refused", "upd_unavailable")
    if command.op == "update_sources":
        found = find_bundles(terminal)
        if not found:
            return OpOutcome("update_sources", "refused", "upd_no_bundles")
        return OpOutcome("update_sources", "done", "upd_pick",
                         items=tuple({"path": str(p), "name": p.stem} for p in found))
    if command.op == "update_check":
        return await check(terminal, command.path, lang, "keypad")
    if command.op == "update_install":
        if not command.authorised:
            return OpOutcome("update_install", "refused", "password_wrong",
                             detail="the supervisor password was not checked")
        return await install(terminal, command.path, command.reference, lang, "keypad")
    return OpOutcome(command.op, "refused", "upd_unavailable", detail=f"not an update op: {command.op}")


async def ecr_op(terminal: TerminalCore, op: str, args: dict[str, Any],
                 origin: OperatorInput | None = None) -> dict[str, Any]:
    """ECR `firmware_status` and `update` {path, password, version?, check?} (docs/ecr.md)."""
    lang = terminal.language()
    source = origin.source if origin is not None else "ecr"
    if op == "firmware_status":
        ok, lines, data = await firmware_lines(terminal, lang)
        return {"ok": ok, "result": "firmware", "message": "; ".join(lines), **data}
    if op != "update":
        return {"ok": False, "result": "refused", "message": f"not an update op: {op}"}
    agent = terminal.update_agent
    if agent is None or not agent.available:
        return {"ok": False, "result": "refused", "message": text("upd_unavailable", lang)}
    if terminal.journal is None:  # service mode: nothing owed can be checked, no password either
        return {"ok": False, "result": "refused", "message": text("service_mode", lang)}
    if not await terminal.check_password(args.get("password"), "firmware update", source):
        return {"ok": False, "result": "refused", "message": text(terminal.password_refused(source), lang)}
    if args.get("check"):
        outcome = await check(terminal, args["path"], lang, source)
    else:
        outcome = await install(terminal, args["path"], args.get("version"), lang, source)
    payload: dict[str, Any] = {"ok": outcome.ok, "result": outcome.status,
                               "message": outcome.detail or text(outcome.message_key, lang)}
    if outcome.items:
        payload.update(outcome.items[0])
    if outcome.lines:  # the update system's own reason (English), for support
        payload["reason"] = outcome.lines[0]
    return payload
