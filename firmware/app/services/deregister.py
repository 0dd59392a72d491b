"""Deregistration (注销) at the app layer: the checks, the verified backup, sign-off, the wipe, the
host's 0820/009 and the unbound check, each step recorded in the journal's terminal_state before
its effect; the start-up resume. The life cycle it records, and the core's refusal of financial
work while it is not ACTIVE, are firmware/app/core/lifecycle.py (provisioning again:
firmware/app/provision.py).

The steps and their rules are in firmware/engine/deregistration.py; this module carries them out
(files through firmware/journal/backup.py and wipe.py, host messages through the host link) and
calls terminal.fault_hook(DeregStep(...)) before each step so tests can cut the power there.

Who must give the supervisor password: a person, every time. Starting a deregistration asks it
(the screen before the final confirm, or `password` in the ECR request), and the backup goes
only to a directory export_dirs() offers. A person who resumes one interrupted after the wipe
(the host not yet told: the keypad's check offers it, or ECR `deregister` again) gives it too:
the supervisor hash is kept in terminal_state from WIPING until the last step, since the
settings that held it are wiped. Start-up asks nobody: a deregistration cut before the wipe is
forgotten (nothing changed; a new one asks again), and one cut after the wipe began is finished
on its own, as the wipe must complete whoever is at the counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.app.core.contract import OperatorInput
from firmware.app.core.lifecycle import lifecycle, put_state, reached, state
from firmware.app.core.terminal import TerminalCore
from firmware.app.services import printing
from firmware.engine.deregistration import (
    DeregRefused,
    DeregStep,
    Lifecycle,
    Step,
    cancellable,
    lifecycle_after,
    remaining,
    startup_plan,
)
from firmware.engine.model import TxnResult
from firmware.host.channel import HostChannel, HostLink
from firmware.host.errors import HostError
from firmware.host.messages import Terminal as TermIds
from firmware.host.messages import deregister_request, echo_request, signoff_request
from firmware.i18n import register, text
from firmware.journal import backup, wipe
from firmware.journal.store import Journal
from firmware.printing.dereg_slip import as_text, dereg_report
from firmware.ui.core import OpOutcome, StartOp

log = logging.getLogger("posfw.dereg")

PANEL_OPS = frozenset({"deregister_check", "deregister"})
ECR_OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "deregister_check": ((), ()),
    "deregister": (("password", "path"), ()),
}
UNBOUND_CODE = "97"  # the host's answer to every message from an unknown or unbound terminal
EXPORT_ROOTS = ("/media", "/mnt")

MESSAGES: dict[str, tuple[str, str]] = {
    "dereg_ready": ("Ready to deregister", "可以注销"),
    "dereg_blocked": ("Deregistration refused: settle and clear pending items first",
                      "不能注销:请先结算并处理未完成交易"),
    "dereg_done": ("Terminal deregistered", "终端已注销"),
    "dereg_cancelled": ("Deregistration cancelled: nothing changed", "注销已取消:未作任何更改"),
    "dereg_refused": ("Deregistration refused: nothing changed", "注销被拒绝:未作任何更改"),
    "dereg_host_pending": ("Wiped; the host is not yet told: retried at start-up",
                           "已清除;尚未通知主机:开机时重试"),
    "dereg_already": ("The terminal is already deregistered", "终端已注销"),
    "dereg_item_reversal": ("reversal(s) pending", "笔冲正未完成"),
    "dereg_item_advice": ("advice(s) not sent", "笔通知未上送"),
    "dereg_item_pending": ("transaction(s) awaiting reply", "笔交易等待应答"),
    "dereg_item_quarantined": ("set aside: a supervisor must resolve (settlement review)",
                               "笔已隔离: 需主管处理 (结算前检查)"),
    "dereg_item_settlement": ("settlement interrupted", "结算中断"),
    "dereg_item_batch": ("unsettled transaction(s): settle first", "笔未结算:请先结算"),
    "dereg_bad_dir": ("Deregistration refused: back up only to a directory the terminal offers "
                      "(deregister_check lists them); nothing changed",
                      "注销被拒绝:只能备份到终端提供的目录(见注销检查);未作任何更改"),
    "dereg_resume": ("Deregistration not finished: the host is not yet told; the supervisor "
                     "password finishes it", "注销未完成:尚未通知主机;输入主管密码后完成"),
}

register(MESSAGES)  # the screens and the ECR link word these outcomes too


# -- checks -------------------------------------------------------------------------

def pending_items(terminal: TerminalCore) -> list[dict[str, Any]]:
    """What stops deregistration now: owed host messages, an open settlement, an unsettled batch."""
    j = terminal.journal
    assert j is not None
    counts = j.unresolved_counts()
    items: list[dict[str, Any]] = []
    for state_name, key, action in (("REVERSAL_DUE", "dereg_item_reversal", "retry"),
                                    ("ADVICE_DUE", "dereg_item_advice", "retry"),
                                    ("PENDING", "dereg_item_pending", "retry"),
                                    ("QUARANTINED", "dereg_item_quarantined", "resolve")):
        if counts.get(state_name):
            items.append({"kind": key, "count": counts[state_name], "action": action})
    if j.open_settlement() is not None:
        items.append({"kind": "dereg_item_settlement", "count": 1, "action": "settle"})
    count, amount = j.read(
        "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM txn WHERE batch = ? AND settlement_id IS NULL "
        "AND state IN ('APPROVED', 'VOIDED')", (j.current_batch(),))[0]
    if count:
        items.append({"kind": "dereg_item_batch", "count": int(count), "amount": int(amount),
                      "action": "settle"})
    return items


def _offered(terminal: TerminalCore, path: str | None) -> bool:
    """Whether `path` is one of export_dirs() (the backup goes nowhere else)."""
    if not path:
        return False
    wanted = Path(path).resolve()
    return any(Path(d).resolve() == wanted for d in export_dirs(terminal))


def export_dirs(terminal: TerminalCore) -> list[str]:
    """Where a backup may go: mounted directories under /media and /mnt (a USB stick) that the
    terminal can write, then the data directory's export/ (created on demand)."""
    found: list[str] = []
    for root in EXPORT_ROOTS:
        base = Path(root)
        with contextlib.suppress(OSError):
            for candidate in sorted([base, *base.glob("*"), *base.glob("*/*")]):
                if candidate.is_dir() and os.path.ismount(candidate) and os.access(candidate, os.W_OK):
                    found.append(str(candidate))
    local = terminal.data_dir / "export"
    local.mkdir(parents=True, exist_ok=True)
    found.append(str(local))
    return found


# -- running the steps ----------------------------------------------------------------

@dataclass
class _Run:
    lang: str
    path: str | None = None
    log_steps: list[str] = field(default_factory=list)
    wiped: dict[str, int] = field(default_factory=dict)
    host_unbound: bool = False


class _HostPending(Exception):
    """A host step after the wipe failed: the step is retried at start-up (or by deregister)."""


def _hook(terminal: TerminalCore) -> Callable[[str], None]:
    def call(name: str) -> None:
        if terminal.fault_hook is not None:
            terminal.fault_hook(DeregStep(name))
    return call


def _record(terminal: TerminalCore, step: Step, detail: str = "", **extra: str) -> None:
    j = terminal.journal
    assert j is not None
    with j.transaction() as cur:
        put_state(cur, {"dereg_step": step.value, "lifecycle": lifecycle_after(step).value, **extra})
        j.audit_in(cur, "supervisor", f"deregistration: {step.value.lower()}", detail, "done")


def _live_totals(journal: Journal) -> tuple[dict[str, int], list[list[object]]]:
    conn = sqlite3.connect(f"file:{journal.path}?mode=ro", uri=True)
    try:
        return backup.table_counts(conn), backup.txn_totals(conn)
    finally:
        conn.close()


def _identity(terminal: TerminalCore) -> dict[str, Any]:
    m, c = terminal.settings["merchant"], terminal.settings["comms"]
    assert terminal.journal is not None
    return {"tid": m["tid"], "mid": m["mid"], "host": c["host"], "port": int(c["port"]),
            "connect_timeout": float(c["connect_timeout"]), "reply_timeout": float(c["reply_timeout"]),
            "batch": terminal.journal.current_batch()}


async def _host_exchange(terminal: TerminalCore, ident: dict[str, Any],
                         build: Callable[[str, TermIds, str], Any]) -> str:
    """One unMACed management message on a link of its own (the settings may be wiped already)."""
    j = terminal.journal
    assert j is not None
    term = TermIds(tid=ident["tid"], mid=ident["mid"])
    channel = HostChannel(ident["host"], int(ident["port"]), connect_timeout=ident["connect_timeout"],
                          connect_attempts=2)
    link = HostLink(channel, term, None)  # no MAC, no sign-on: no key store needed
    try:
        reply = await link.request(build(j.allocate_stan(), term, ident["batch"]), mac=False,
                                   timeout=ident["reply_timeout"])
    except HostError as exc:
        raise _HostPending(f"host unreachable: {exc}") from exc
    finally:
        await channel.close()
    return str(reply.fields.get("39", ""))


async def _do_step(terminal: TerminalCore, step: Step, run: _Run) -> None:
    j = terminal.journal
    assert j is not None
    if step is Step.CHECKS:
        items = pending_items(terminal)
        if items:
            raise DeregRefused(text("dereg_blocked", run.lang) + ": " + ", ".join(
                f"{i['count']} {text(i['kind'], run.lang)}" for i in items))
        if lifecycle(terminal) is not Lifecycle.ACTIVE:
            raise DeregRefused(text("dereg_already", run.lang))
        _record(terminal, step)
    elif step is Step.BACKUP:
        if not run.path:
            raise DeregRefused("choose a backup directory first")
        target = await asyncio.to_thread(backup.export, j.path, Path(run.path),
                                         str(terminal.settings["merchant"]["tid"]))
        _record(terminal, step, str(target), dereg_backup=str(target))
    elif step is Step.VERIFIED:
        where = Path(state(j)["dereg_backup"])
        counts, totals = _live_totals(j)
        verdict = await asyncio.to_thread(backup.verify, where, counts, totals)
        if not verdict.ok:
            raise DeregRefused(str(verdict))
        _record(terminal, step, str(verdict), dereg_backup_txns=str(verdict.counts.get("txn", 0)))
    elif step is Step.SIGNED_OFF:
        assert terminal.link is not None
        try:
            reply = await terminal.link.request(
                signoff_request(j.allocate_stan(), terminal.term, j.current_batch()), mac=False,
                timeout=float(terminal.settings["comms"]["reply_timeout"]))
        except HostError as exc:
            raise DeregRefused(f"the host cannot be reached to sign off ({exc})") from exc
        if reply.fields.get("39") != "00":
            raise DeregRefused(f"the host refused the sign-off ({reply.fields.get('39')})")
        terminal.link.forget_keys()  # the working keys leave the key store here
        _record(terminal, step)
    elif step is Step.WIPING:
        # The point of no return, written before any of the wipe's effects. The supervisor
        # hash is kept until the end: the settings are wiped, and a person who resumes an
        # interrupted deregistration must still give the supervisor password.
        _record(terminal, step, "wipe begins", dereg_identity=json.dumps(_identity(terminal)),
                dereg_supervisor=str(terminal.settings["security"]["supervisor_hash"]))
    elif step is Step.WIPED:
        ident = json.loads(state(j)["dereg_identity"])
        terminal.forget_keys()
        destroyed: list[str] = []

        def destroy_keys() -> int:
            # The key store's objects, in the wipe's key part (before the PANs are cleared). A
            # store that cannot be reached is said in words and the wipe goes on.
            destroyed.extend(terminal.destroy_keys())
            for line in destroyed:
                log.warning("deregistration: %s", line)
            return sum(line.endswith(" destroyed") for line in destroyed)

        run.wiped = wipe.wipe(terminal.data_dir, j.path, ident["tid"], between=lambda part: _hook(
            terminal)(f"WIPE:{part}"), destroy_keys=destroy_keys)
        pad = await terminal.destroy_pad_keys()  # a PIN pad board's DES keys, over its link
        destroyed.extend(pad)
        run.wiped["card_key"] += sum(line.endswith(" destroyed") for line in pad)
        _record(terminal, step, json.dumps(run.wiped) + "; " + "; ".join(destroyed),
                dereg_wiped=json.dumps(run.wiped), dereg_keys=json.dumps(destroyed))
    elif step is Step.DEREGISTERED:
        ident = json.loads(state(j)["dereg_identity"])
        code = await _host_exchange(terminal, ident, deregister_request)
        if code not in ("00", UNBOUND_CODE):  # 97: a repeat after a power loss, already unbound
            raise _HostPending(f"the host answered {code} to the deregistration")
        _record(terminal, step, f"host answered {code}")
    elif step is Step.REPORTED:
        st = state(j)
        ident = json.loads(st["dereg_identity"])
        doc = dereg_report(lang=run.lang, columns=32, tid=ident["tid"], mid=ident["mid"], at=time.time(),
                           backup_dir=st.get("dereg_backup", ""),
                           backup_txns=int(st.get("dereg_backup_txns", "0")),
                           steps=[s.value for s in Step], wiped=json.loads(st.get("dereg_wiped", "{}")),
                           host_unbound=True, keys=json.loads(st.get("dereg_keys", "[]")))
        _record(terminal, step, doc.title, dereg_report=json.dumps(as_text(doc), ensure_ascii=False))
        desk = printing.desk(terminal)
        if desk is not None:
            # Queued after the lines are kept (it prints from them); a power loss in between
            # resumes after REPORTED, and the report can still be printed from the held lines.
            desk.dereg_report()
    elif step is Step.UNBOUND_VERIFIED:
        ident = json.loads(state(j)["dereg_identity"])
        code = await _host_exchange(terminal, ident, lambda _stan, term, batch: echo_request(term, batch))
        if code != UNBOUND_CODE:
            raise _HostPending(f"the host still answers {code}: the terminal is not unbound")
        run.host_unbound = True
        _record(terminal, step, "host answers 97")
        with j.transaction() as cur:  # nothing left to resume: the kept hash goes
            cur.execute("DELETE FROM terminal_state WHERE name = 'dereg_supervisor'")


async def _run_steps(terminal: TerminalCore, steps: tuple[Step, ...], run: _Run,
                     cancel_set: Callable[[], bool]) -> OpOutcome:
    hook = _hook(terminal)
    for step in steps:
        hook(step.value)
        if cancellable(reached(terminal.journal)) and step is not Step.CHECKS and cancel_set():  # type: ignore[arg-type]
            _forget(terminal, "cancelled by the operator")
            return OpOutcome("deregister", "cancelled", "dereg_cancelled")
        terminal.progress(f"dereg_{step.value.lower()}", cancellable=cancellable(
            reached(terminal.journal)))  # type: ignore[arg-type]
        try:
            await _do_step(terminal, step, run)
        except (DeregRefused, backup.BackupError) as exc:
            _forget(terminal, str(exc))
            return OpOutcome("deregister", "refused", "dereg_refused", detail=str(exc),
                             items=tuple(pending_items(terminal)))
        except _HostPending as exc:
            terminal.notice = "dereg_host_pending"
            log.warning("deregistration: %s", exc)
            return OpOutcome("deregister", "failed", "dereg_host_pending", detail=str(exc))
        run.log_steps.append(step.value)
    terminal.notice = "dereg_done"
    st = state(terminal.journal)  # type: ignore[arg-type]
    report = tuple(json.loads(st.get("dereg_report", "[]")))
    return OpOutcome("deregister", "done", "dereg_done", detail=st.get("dereg_backup", ""), lines=report)


def _forget(terminal: TerminalCore, why: str) -> None:
    """Before the wipe: back to ACTIVE, nothing changed (the export stays where it is)."""
    j = terminal.journal
    assert j is not None
    with j.transaction() as cur:
        step = cur.execute("SELECT value FROM terminal_state WHERE name = 'dereg_step'").fetchone()
        cur.execute("DELETE FROM terminal_state WHERE name IN ('dereg_step', 'dereg_backup_txns')")
        put_state(cur, {"lifecycle": Lifecycle.ACTIVE.value})
        j.audit_in(cur, "supervisor", "deregistration stopped",
                   f"{why} (after {step[0] if step else 'nothing'})", "nothing changed")


def _path_refusal(terminal: TerminalCore, path: str | None, lang: str, source: str) -> OpOutcome | None:
    """A deregistration not yet begun backs up only to an offered directory (export_dirs):
    any other path is refused in words, audited, nothing changed."""
    if lifecycle(terminal) is not Lifecycle.ACTIVE or _offered(terminal, path):
        return None
    assert terminal.journal is not None
    terminal.journal.audit(terminal.actor(source), "deregistration refused",
                           f"backup path not offered: {path}"[:300], "nothing changed")
    return OpOutcome("deregister", "refused", "dereg_bad_dir",
                     detail="offered: " + ", ".join(export_dirs(terminal)))


async def deregister(terminal: TerminalCore, path: str | None, lang: str, source: str) -> OpOutcome:
    """The whole sequence (password already checked), or its remainder after a host failure."""
    refused = _path_refusal(terminal, path, lang, source)
    if refused is not None:
        return refused
    outcome: list[OpOutcome] = []

    async def work() -> TxnResult:
        assert terminal.journal is not None
        life = lifecycle(terminal)
        if life is Lifecycle.ACTIVE:
            steps = remaining(None)
        else:
            steps = remaining(reached(terminal.journal))
            if not steps:
                outcome.append(OpOutcome("deregister", "refused", "dereg_already"))
                return TxnResult("refused", "dereg_already")
        got = await _run_steps(terminal, steps, _Run(lang, path),
                               cancel_set=terminal.cancel_requested)
        outcome.append(got)
        return TxnResult(got.status, got.message_key, detail=got.detail)

    await terminal.operation("deregister", source, work)  # the one operation lock
    return outcome[0] if outcome else OpOutcome("deregister", "failed", "internal_error")


async def resume_at_startup(terminal: TerminalCore) -> OpOutcome | None:
    """Call after Terminal.open(): before the wipe a cut deregistration is forgotten (nothing
    changed); once the wipe began it is finished now (the host steps when the host answers)."""
    j = terminal.journal
    if j is None:
        return None
    life, step = lifecycle(terminal), reached(j)
    if wipe.is_marked(terminal.data_dir) and life is Lifecycle.ACTIVE:
        # A marker without the journal's word cannot be written by this module; keep it safe.
        log.error("DEREGISTERED marker present but the journal says ACTIVE: treating as deregistering")
        life = Lifecycle.DEREGISTERING
    plan = startup_plan(life, step)
    log.info("deregistration at start-up: %s", plan.why)
    if plan.roll_back:
        _forget(terminal, "power lost before the wipe")
        return OpOutcome("deregister", "cancelled", "dereg_cancelled", detail=plan.why)
    if life is Lifecycle.ACTIVE:
        return None
    if terminal.link is not None:
        terminal.link.forget_keys()
    kept = state(j).get("dereg_supervisor")
    if kept:  # the settings are wiped: a person who resumes gives the password of before
        terminal.settings["security"]["supervisor_hash"] = kept
    terminal.notice = "dereg_terminal_deregistered"
    if not plan.resume:
        return None
    lang = str(terminal.settings.get("display", {}).get("language", "en"))
    async with terminal.exclusive():
        return await _run_steps(terminal, plan.resume, _Run(lang), cancel_set=lambda: False)


# -- keypad and ECR -------------------------------------------------------------------

def _check_outcome(terminal: TerminalCore, lang: str) -> OpOutcome:
    life = lifecycle(terminal)
    if life is not Lifecycle.ACTIVE:
        assert terminal.journal is not None
        todo = remaining(reached(terminal.journal))
        if todo:  # wiped, the host not yet told: the supervisor may finish it
            return OpOutcome("deregister_check", "done", "dereg_resume", detail=todo[0].value)
        return OpOutcome("deregister_check", "refused", "dereg_already", detail=life.value)
    items = pending_items(terminal)
    dirs = tuple({"kind": "dir", "path": p} for p in export_dirs(terminal))
    if items:
        return OpOutcome("deregister_check", "refused", "dereg_blocked",
                         detail="; ".join(f"{i['count']} {text(i['kind'], lang)}" for i in items),
                         items=tuple(items))
    return OpOutcome("deregister_check", "done", "dereg_ready", items=dirs)


async def run_op(terminal: TerminalCore, command: StartOp, lang: str, cols: int) -> OpOutcome:
    """Keypad ops: deregister_check (items: problems, or the backup directories) and deregister
    (path = the chosen directory; authorised: the supervisor password was checked)."""
    if command.op == "deregister_check":
        return _check_outcome(terminal, lang)
    if command.op == "deregister":
        if not command.authorised:
            return OpOutcome("deregister", "refused", "password_wrong",
                             detail="the supervisor password was not checked")
        return await deregister(terminal, command.path, lang, "keypad")
    return OpOutcome(command.op, "refused", "dereg_refused", detail=f"not a deregistration op: {command.op}")


async def ecr_op(terminal: TerminalCore, op: str, args: dict[str, Any],
                 origin: OperatorInput | None = None) -> dict[str, Any]:
    """An ECR request (ECR_OPS); origin.source: the ECR peer that asked (audited)."""
    lang = str(terminal.settings.get("display", {}).get("language", "en"))
    source = origin.source if origin is not None else "ecr"
    if op == "deregister_check":
        outcome = _check_outcome(terminal, lang)
    elif op == "deregister":
        # The password is asked whoever starts or resumes it (a deregistration past the wipe
        # keeps the supervisor hash until it is done); the path first, not to spend a try.
        assert terminal.journal is not None
        done = lifecycle(terminal) is not Lifecycle.ACTIVE and not remaining(reached(terminal.journal))
        refused = _path_refusal(terminal, args["path"], lang, source)
        if refused is not None:
            outcome = refused
        elif not done and not await terminal.check_password(args["password"], "deregistration",
                                                             source):
            return {"ok": False, "result": "refused",
                    "message": text(terminal.password_refused(source), lang)}
        else:
            outcome = await deregister(terminal, args["path"], lang, source)
    else:
        return {"ok": False, "result": "refused", "message": f"not a deregistration op: {op}"}
    payload: dict[str, Any] = {"ok": outcome.ok, "result": outcome.status,
                               "message": text(outcome.message_key, lang),
                               "lifecycle": lifecycle(terminal).value}
    if terminal.journal is not None:
        payload["step"] = state(terminal.journal).get("dereg_step", "")
    if outcome.detail:
        payload["detail"] = outcome.detail
    if outcome.items:
        payload["items"] = [dict(i) for i in outcome.items]
    if outcome.lines:
        payload["report"] = list(outcome.lines)
    return payload
