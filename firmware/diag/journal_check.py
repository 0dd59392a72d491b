"""The journal integrity check: SQLite's quick_check plus the firmware's own invariants
(counters ahead of every number used, no number used twice, no PENDING at rest, the audit
log's hash chain unbroken) and the work the terminal still owes (reversals, advices, an open
settlement, stuck print jobs).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from firmware.digits import is_digits
from firmware.journal import emvparams
from firmware.journal.errors import JournalError
from firmware.journal.store import COUNTER_WRAP, Journal
from firmware.printing.queue import PrintState
from firmware.ui.core import Catalog, DiagResult, say

log = logging.getLogger(__name__)

NAME = "journal"

CATALOG: Catalog = {
    # verdicts
    "ok": ("Journal OK - all checks passed", "流水正常 - 全部检查通过"),
    "ok_waiting": ("Journal OK - {count} item(s) still waiting", "流水正常 - 仍有{count}项待处理"),
    "nothing_to_do": ("Nothing to do", "无需操作"),
    "unreadable": ("Journal cannot be read", "流水无法读取"),
    "unreadable_next": ("Restart the terminal; if it repeats, call support",
                        "请重启终端; 如再发生请联系维护"),
    "damaged": ("Journal file damaged", "流水文件已损坏"),
    # the archive (firmware/journal/archive.py): checked at idle, not here
    "line_archive_none": ("Archive: empty", "归档: 无"),
    "line_archive_waiting": ("Archive: {files} file(s), not checked yet", "归档: {files}个文件, 尚未检查"),
    "line_archive_ok": ("Archive: {files} file(s), {batches} batch(es), {records} record(s) OK",
                        "归档: {files}个文件, {batches}个批次, {records}笔 正常"),
    "line_archive_problem": ("Archive: {problem}", "归档: {problem}"),
    "archive_damaged": ("Archive file damaged or altered", "归档文件损坏或被改动"),
    "archive_next": ("Keep the terminal as it is and call support", "请保持终端现状并联系维护"),
    # the chip parameter tables (firmware/journal/emvparams.py): what the kernel works with
    "line_chip_capk": ("CA keys: {count}, version {version}", "认证中心公钥: {count}个, 版本 {version}"),
    "line_chip_aid": ("Chip AIDs: {count}, version {version}", "IC卡应用: {count}个, 版本 {version}"),
    "chip_never": ("none (never downloaded)", "无 (未下载)"),
    "chip_builtin": ("built-in", "内置"),
    "damaged_next": ("Stop trading and call support", "请停止交易并联系维护"),
    "counter_behind": ("{counter} counter behind numbers already used", "{counter}计数器落后于已用号码"),
    "counter_next": ("Call support before the next sale", "下笔交易前请联系维护"),
    "duplicate": ("Same {counter} used twice", "{counter}被重复使用"),
    "audit_broken": ("Audit log altered at row {row}", "审计日志第{row}行被改动"),
    "audit_next": ("Keep the terminal as it is and call support", "请保持终端现状并联系维护"),
    "pending": ("Unfinished transaction left - recovery did not run", "有未完成交易 - 未执行恢复"),
    "pending_next": ("Restart the terminal", "请重启终端"),
    "reversals": ("Reversals waiting to be sent", "有冲正待发送"),
    "advices": ("Advices waiting to be sent", "有通知待上送"),
    "resend_next": ("The terminal retries by itself; check the network if this stays",
                    "终端会自动重发; 如持续存在请检查网络"),
    "settlement": ("Settlement interrupted", "结算中断"),
    "settlement_next": ("Run Settlement to finish it", "请执行结算以完成"),
    "print_paused": ("Printing paused", "打印已暂停"),
    "print_paused_next": ("Check the printer paper and cover", "请检查打印纸和打印机盖"),
    "print_stuck": ("A print job is stuck", "打印任务卡住"),
    "print_stuck_next": ("Restart the terminal if nothing prints", "如不打印请重启终端"),
    "print_confirm": ("A receipt cut by power loss waits", "断电中断的凭条待确认"),
    "print_confirm_next": ("At idle: ENTER reprints, CANCEL voids", "待机界面: 确认重打, 取消作废"),
    # detail lines
    "stan": ("STAN", "流水号"),
    "invoice": ("invoice", "票据号"),
    "line_integrity": ("Integrity: {verdict}", "完整性: {verdict}"),
    "line_counter_ok": ("{counter} {value} >= {used}: ok", "{counter} {value} >= {used}: 正常"),
    "line_counter_bad": ("{counter} {value} < {used}: BAD", "{counter} {value} < {used}: 错误"),
    "line_counter_unused": ("{counter} {value}: none used", "{counter} {value}: 本批未用"),
    "line_duplicate": ("{counter} {number} x{times} in batch {batch}",
                       "批次{batch} {counter}{number} 用了{times}次"),
    "line_no_duplicates": ("No {counter} used twice", "{counter}无重复"),
    "line_audit_ok": ("Audit chain: unbroken", "审计链: 完整"),
    "line_audit_broken": ("Audit chain breaks at row {row}", "审计链在第{row}行断开"),
    "line_pending": ("PENDING at rest: {count}", "静止时未完成: {count}"),
    "line_pending_running": ("PENDING (operation running): {count}", "未完成(交易进行中): {count}"),
    "line_reversals": ("Reversals due: {count}, oldest {age}, {attempts} tries",
                       "待冲正: {count}, 最早{age}, 已试{attempts}次"),
    "line_advices": ("Advices unsent: {count}, oldest {age}, {attempts} tries",
                     "待上送通知: {count}, 最早{age}, 已试{attempts}次"),
    "line_settlement": ("Settlement batch {batch}: {state}", "批次{batch}结算: {state}"),
    "line_settlement_none": ("No open settlement", "无未完成结算"),
    "line_print": ("Print job {job} {title}: {state}", "打印任务{job} {title}: {state}"),
    "line_print_confirm": ("Print job {job} {title}: waits for ENTER", "打印任务{job} {title}: 待确认"),
    "line_print_none": ("No print job stuck", "无卡住的打印任务"),
    # The error's code only (SQLITE_CORRUPT, SQLITE_IOERR...): the sentence is English and goes to
    # the log, a technician reads the code on either screen.
    "line_error": ("Journal error {code} (details in the log)", "数据库错误 {code} (详见日志)"),
    "age_minutes": ("{m}m", "{m}分"),
    "age_hours": ("{h}h{m:02d}m", "{h}小时{m:02d}分"),
    "age_days": ("{d}d{h}h", "{d}天{h}小时"),
}

# A print job that has been PRINTING this long while nothing runs is not printing any more.
STUCK_PRINTING_S = 600.0


@dataclass
class _Findings:
    """What the check found, in the order it found it; the first failure names the verdict."""

    lang: str
    lines: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (reason, next step)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def say(self, key: str, **values: object) -> str:
        return say(CATALOG, key, self.lang, **values)

    def line(self, key: str, **values: object) -> None:
        self.lines.append(self.say(key, **values))

    def fail(self, reason: str, next_key: str) -> None:
        self.failures.append((reason, self.say(next_key)))

    def warn(self, reason_key: str, next_key: str) -> None:
        self.warnings.append((self.say(reason_key), self.say(next_key)))

    def result(self) -> DiagResult:
        if self.failures:
            reason, next_step = self.failures[0]
            return DiagResult(NAME, False, reason, next_step, tuple(self.lines))
        if self.warnings:
            next_step = self.warnings[0][1]
            return DiagResult(NAME, True, self.say("ok_waiting", count=len(self.warnings)),
                              next_step, tuple(self.lines))
        return DiagResult(NAME, True, self.say("ok"), self.say("nothing_to_do"), tuple(self.lines))


def age_words(seconds: float, lang: str) -> str:
    """A short age for the LCD: 7m, 3h05m, 2d4h."""
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return say(CATALOG, "age_minutes", lang, m=minutes)
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return say(CATALOG, "age_hours", lang, h=hours, m=minutes)
    days, hours = divmod(hours, 24)
    return say(CATALOG, "age_days", lang, d=days, h=hours)


def counter_covers(counter: int, used_in_order: Sequence[int]) -> bool:
    """Whether a counter is at least every number used (numbers in the order they were used).

    Counters wrap after 999999, so right after a wrap the counter is below older numbers
    of the batch; that is fine as long as the newest use is at or below the counter and the
    number the counter gives next is not already taken.
    """
    if not used_in_order or counter >= max(used_in_order):
        return True
    return used_in_order[-1] <= counter and (counter % COUNTER_WRAP + 1) not in set(used_in_order)


def _check_counter(found: _Findings, counter_key: str, counter: int, used: Sequence[int]) -> None:
    counter_name = found.say(counter_key)
    value = f"{counter:06d}"
    if not used:
        found.line("line_counter_unused", counter=counter_name, value=value)
    elif counter_covers(counter, used):
        found.line("line_counter_ok", counter=counter_name, value=value, used=f"{max(used):06d}")
    else:
        found.line("line_counter_bad", counter=counter_name, value=value, used=f"{max(used):06d}")
        found.fail(found.say("counter_behind", counter=counter_name), "counter_next")


def _check_duplicates(found: _Findings, journal: Journal, column: str, counter_key: str) -> None:
    # column is one of two fixed names ("stan", "invoice"), never operator input.
    rows = journal.read(
        f"SELECT batch, {column}, COUNT(*) FROM txn GROUP BY batch, {column} "
        "HAVING COUNT(*) > 1 ORDER BY batch, " + column + " LIMIT 5"
    )
    counter_name = found.say(counter_key)
    if not rows:
        found.line("line_no_duplicates", counter=counter_name)
        return
    for batch, number, times in rows:
        found.line("line_duplicate", counter=counter_name, number=number, times=times, batch=batch)
    found.fail(found.say("duplicate", counter=counter_name), "counter_next")


def _numbers(values: Sequence[str]) -> list[int]:
    return [int(v) for v in values if is_digits(v)]


def check_journal(journal: Journal, lang: str, now: float, *,
                  operation_running: bool = False) -> DiagResult:
    """Check the open journal. now: wall-clock seconds (the journal's created_at clock).

    operation_running: a transaction is under way, so a PENDING record is expected.
    """
    found = _Findings(lang)
    try:
        verdict = journal.integrity()
    except sqlite3.DatabaseError as exc:
        found.line("line_error", code=_error_code(exc))
        if isinstance(exc, sqlite3.OperationalError):  # locked, I/O: not proof of damage
            found.fail(found.say("unreadable"), "unreadable_next")
        else:  # "database disk image is malformed": quick_check could not even walk the file
            found.fail(found.say("damaged"), "damaged_next")
        return found.result()
    try:
        found.line("line_integrity", verdict=verdict)
        if verdict != "ok":
            found.fail(found.say("damaged"), "damaged_next")
            return found.result()  # the invariants cannot be trusted on a damaged file
        _check_invariants(found, journal, now, operation_running)
    except (sqlite3.Error, JournalError, ValueError) as exc:
        found.line("line_error", code=_error_code(exc))
        found.fail(found.say("unreadable"), "unreadable_next")
    return found.result()


def _error_code(exc: Exception) -> str:
    """The error's short code for the screen; the whole error goes to the log."""
    log.error("journal check: %s", exc)
    return str(getattr(exc, "sqlite_errorname", None) or type(exc).__name__)


def _check_invariants(found: _Findings, journal: Journal, now: float, operation_running: bool) -> None:
    counters = journal.counters()
    batch = journal.current_batch()
    records = journal.records(batch=batch)  # in id order: the order the numbers were used
    stans = _numbers([r.stan for r in records])
    settlement = journal.open_settlement()
    if settlement is not None and settlement.batch == batch:
        stans += _numbers([s for s in (settlement.stan, settlement.end_stan) if s])
    _check_counter(found, "stan", counters["stan"], stans)
    _check_duplicates(found, journal, "stan", "stan")
    _check_counter(found, "invoice", counters["invoice"], _numbers([r.invoice for r in records]))
    _check_duplicates(found, journal, "invoice", "invoice")

    broken = journal.audit_chain_break()
    if broken is None:
        found.line("line_audit_ok")
    else:
        found.line("line_audit_broken", row=broken)
        found.fail(found.say("audit_broken", row=broken), "audit_next")

    pending = journal.unresolved_counts()["PENDING"]
    if operation_running:
        found.line("line_pending_running", count=pending)
    else:
        found.line("line_pending", count=pending)
        if pending:
            found.fail(found.say("pending"), "pending_next")

    reversals = journal.reversals_due()
    if reversals:
        oldest = min(r.created_at for r in reversals)
        found.line("line_reversals", count=len(reversals), age=age_words(now - oldest, found.lang),
                   attempts=max(r.reversal_attempts for r in reversals))
        found.warn("reversals", "resend_next")
    advices = journal.advices_due()
    if advices:
        oldest = min(r.created_at for r in advices)
        found.line("line_advices", count=len(advices), age=age_words(now - oldest, found.lang),
                   attempts=max(r.advice_attempts for r in advices))
        found.warn("advices", "resend_next")

    if settlement is None:
        found.line("line_settlement_none")
    else:
        found.line("line_settlement", batch=settlement.batch, state=settlement.state)
        found.warn("settlement", "settlement_next")

    _check_print_jobs(found, journal, now, operation_running)
    _archive(found, journal)
    _chip_tables(found, journal)


def _archive(found: _Findings, journal: Journal) -> None:
    """The last idle-time check of the archive files (the terminal runs it, off the event loop;
    reading every file here would make this screen as slow as the archive is large)."""
    files = {r.file for r in journal.archive_log() if r.state in ("MOVED", "COPYING")}
    checked = journal.archive_check
    if not files:
        found.line("line_archive_none")
    elif checked is None:
        found.line("line_archive_waiting", files=len(files))
    elif checked.ok:
        found.line("line_archive_ok", files=checked.files, batches=checked.batches,
                   records=checked.records)
    else:
        for problem in checked.problems[:3]:
            found.line("line_archive_problem", problem=problem)
        found.fail(found.say("archive_damaged"), "archive_next")


def _chip_tables(found: _Findings, journal: Journal) -> None:
    """The chip parameter tables' counts and versions (informational: a terminal never loaded
    still takes magstripe cards, and its chip cards fail offline authentication in words)."""
    status = emvparams.table_status(journal)
    capk, aid = status["capk"], status["aid"]
    found.line("line_chip_capk", count=capk.count,
               version=capk.version or found.say("chip_never"))
    found.line("line_chip_aid", count=aid.count, version=aid.version or found.say("chip_builtin"))


def _check_print_jobs(found: _Findings, journal: Journal, now: float, operation_running: bool) -> None:
    any_stuck = False
    for job in journal.print_jobs(open_only=True):
        title = job.title[:20]
        if job.needs_confirm:
            found.line("line_print_confirm", job=job.id, title=title)
            found.warn("print_confirm", "print_confirm_next")
            any_stuck = True
        elif job.state is PrintState.PAUSED:
            found.line("line_print", job=job.id, title=title, state=job.state.value)
            found.warn("print_paused", "print_paused_next")
            any_stuck = True
        elif (job.state is PrintState.PRINTING and not operation_running
              and now - job.created_at >= STUCK_PRINTING_S):
            found.line("line_print", job=job.id, title=title, state=job.state.value)
            found.warn("print_stuck", "print_stuck_next")
            any_stuck = True
    if not any_stuck:
        found.line("line_print_none")
