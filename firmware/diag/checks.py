"""Verdicts for the tests the app runs on live devices: the host echo (with its last 10
results), the printer test slip and the card reader link. The app does the I/O; these
functions turn what it saw into a DiagResult in the operator's words.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from firmware.i18n import CATALOG as RESULT_CATALOG
from firmware.printing.queue import PrintState
from firmware.ui.core import Catalog, DiagResult, say

HISTORY_SIZE = 10

CATALOG: Catalog = {
    "nothing_to_do": ("Nothing to do", "无需操作"),
    # any check (the why goes to the log, never to the screen)
    "check_failed": ("The check could not run", "检测无法进行"),
    "check_failed_next": ("Call support with the log", "请联系维护并提供日志"),
    "check_busy": ("Terminal busy", "终端忙"),
    "check_busy_next": ("Try again when idle", "请空闲时再试"),
    "check_no_journal": ("The journal is not open", "流水库未打开"),
    "check_shown": ("Shown", "已显示"),
    # echo
    "echo_ok": ("Host answered in {ms} ms", "主机应答 {ms} 毫秒"),
    "echo_failed": ("No answer from the host: {detail}", "主机无应答: {detail}"),
    "echo_next": ("Check the network cable / host address in Settings > Comms",
                  "请检查网线 / 设置 > 通讯中的主机地址"),
    "echo_host": ("Host {host}:{port}", "主机 {host}:{port}"),
    "echo_history": ("Last {count} results, newest first:", "最近{count}次结果, 新的在前:"),
    "echo_line_ok": ("{time} OK {ms}ms", "{time} 成功 {ms}毫秒"),
    "echo_line_fail": ("{time} FAIL {detail}", "{time} 失败 {detail}"),
    # printer
    "printer_ok": ("Test slip printed - check it is readable", "测试页已打印 - 请检查是否清晰"),
    "printer_ok_next": ("If the print is faint, raise the density in Settings > Printer",
                        "如字迹太淡, 请在设置 > 打印机中调高浓度"),
    "printer_stopped": ("The test slip did not finish", "测试页未打印完"),
    "printer_cancelled": ("The test slip was cancelled", "测试页已取消"),
    "printer_again": ("Run the printer test again", "请重新做打印测试"),
    "printer_next_printer_paper_out": ("Load paper, then run the test again", "请装纸后重新测试"),
    "printer_next_printer_cover_open": ("Close the printer cover, then test again",
                                        "请关好打印机盖后重新测试"),
    "printer_next_printer_offline": ("Check the printer's power and cable, then test again",
                                     "请检查打印机电源和连线后重新测试"),
    "printer_next_printer_unavailable": ("Check the printer cable, then test again",
                                         "请检查打印机连线后重新测试"),
    "printer_next_other": ("Check the printer; if it repeats, call support",
                           "请检查打印机; 如再发生请联系维护"),
    "printer_state": ("Test slip: {state}", "测试页: {state}"),
    # the test slip's print job state, in words (PrintState)
    "job_QUEUED": ("waiting", "等待打印"), "job_PRINTING": ("printing", "打印中"),
    "job_PAUSED": ("paused", "已暂停"), "job_DONE": ("printed", "已打印"),
    "job_CANCELLED": ("cancelled", "已取消"), "job_FAILED": ("failed", "打印失败"),
    "printer_problem": ("Printer reports: {problem}", "打印机状态: {problem}"),
    # reader
    "reader_ok": ("Card reader answers: {version}", "读卡器应答: {version}"),
    "reader_noisy": ("Card reader answers, but the link had {count} bad frames",
                     "读卡器应答, 但链路有{count}个错误帧"),
    "reader_noisy_next": ("Check the reader cable and its plug", "请检查读卡器连线和插头"),
    "reader_ok_next": ("Swipe a card in the reader test to check the heads", "请在读卡测试中刷卡检查磁头"),
    "reader_silent": ("Card reader did not answer", "读卡器无应答"),
    "reader_silent_next": ("Check the reader cable and power, then test again",
                           "请检查读卡器连线和电源后重新测试"),
    "reader_version": ("Version: {version}", "版本: {version}"),
    "reader_chip_yes": ("Chip slot: card present", "IC卡槽: 有卡"),
    "reader_chip_no": ("Chip slot: empty", "IC卡槽: 无卡"),
    "reader_chip_unknown": ("Chip slot: not known", "IC卡槽: 未知"),
    "reader_stats": ("Link counters:", "链路计数:"),
    "stat_noise_bytes": ("Noise bytes", "噪声字节"),
    "stat_bad_checksum": ("Bad checksum", "校验错"),
    "stat_bad_length": ("Bad length", "长度错"),
    "stat_bad_etx": ("Bad end byte", "结束符错"),
    "stat_truncated": ("Cut frames", "不完整帧"),
    "stat_bad_messages": ("Bad messages", "错误消息"),
    "stat_stray_replies": ("Stray replies", "多余应答"),
    "stat_stale_events": ("Stale events", "过期事件"),
    "stat_retries": ("Retries", "重试"),
    "stat_reconnects": ("Reconnects", "重连"),
}

# The counters that mean frames were damaged on the wire (a cable or plug problem).
DAMAGE_COUNTERS = ("bad_checksum", "bad_length", "bad_etx", "truncated")

# ---------------------------------------------------------------------------- echo


@dataclass(frozen=True)
class EchoEntry:
    at: datetime
    ok: bool
    round_trip_ms: int | None  # None when there was no answer
    detail: str  # in words: why it failed, or what the host said


class EchoHistory:
    """The last HISTORY_SIZE echo results, kept by the app for the diagnostics screen.

    clock gives the wall time of each result (tests pass a fake one).
    """

    def __init__(self, clock: Callable[[], datetime] = datetime.now) -> None:
        self._clock = clock
        self._entries: deque[EchoEntry] = deque(maxlen=HISTORY_SIZE)

    def add(self, ok: bool, seconds: float | None, detail: str) -> EchoEntry:
        ms = None if seconds is None else max(0, round(seconds * 1000))
        entry = EchoEntry(self._clock(), ok, ms, detail)
        self._entries.append(entry)
        return entry

    def newest_first(self) -> list[EchoEntry]:
        return list(reversed(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


def echo_result(ok: bool, seconds: float | None, detail: str, history: EchoHistory, lang: str,
                host: str, port: int) -> DiagResult:
    """Record one echo test in the history and say how it went (seconds: round trip)."""
    entry = history.add(ok, seconds, detail)
    lines = [say(CATALOG, "echo_host", lang, host=host, port=port),
             say(CATALOG, "echo_history", lang, count=len(history))]
    for past in history.newest_first():
        time_text = past.at.strftime("%H:%M:%S")
        if past.ok:
            lines.append(say(CATALOG, "echo_line_ok", lang, time=time_text, ms=past.round_trip_ms))
        else:
            lines.append(say(CATALOG, "echo_line_fail", lang, time=time_text, detail=past.detail))
    if ok:
        return DiagResult("echo", True, say(CATALOG, "echo_ok", lang, ms=entry.round_trip_ms),
                          say(CATALOG, "nothing_to_do", lang), tuple(lines))
    return DiagResult("echo", False, say(CATALOG, "echo_failed", lang, detail=detail),
                      say(CATALOG, "echo_next", lang), tuple(lines))


# ---------------------------------------------------------------------------- printer


def printer_result(job_state: PrintState, problem_key: str | None, lang: str) -> DiagResult:
    """The test slip's verdict. problem_key: PrinterStatus.problem (a firmware.i18n key) or None."""
    lines = [say(CATALOG, "printer_state", lang, state=say(CATALOG, f"job_{job_state.value}", lang))]
    problem = _problem_words(problem_key, lang)
    if problem:
        lines.append(say(CATALOG, "printer_problem", lang, problem=problem))
    if job_state is PrintState.DONE:
        return DiagResult("printer", True, say(CATALOG, "printer_ok", lang),
                          say(CATALOG, "printer_ok_next", lang), tuple(lines))
    if job_state is PrintState.CANCELLED:
        return DiagResult("printer", False, say(CATALOG, "printer_cancelled", lang),
                          say(CATALOG, "printer_again", lang), tuple(lines))
    if problem_key in RESULT_CATALOG:
        reason = problem
        next_key = f"printer_next_{problem_key}"
        next_step = say(CATALOG, next_key if next_key in CATALOG else "printer_next_other", lang)
    else:
        reason = say(CATALOG, "printer_stopped", lang)
        next_step = say(CATALOG, "printer_next_other", lang)
    return DiagResult("printer", False, reason, next_step, tuple(lines))


def _problem_words(problem_key: str | None, lang: str) -> str:
    """The printer's problem in words; a key no catalog knows is shown as it is, not guessed at."""
    if not problem_key:
        return ""
    if problem_key in RESULT_CATALOG:
        return say(CATALOG, problem_key, lang)
    return problem_key[:40]


# ---------------------------------------------------------------------------- card reader


def reader_result(version: str | None, chip_present: bool | None, stats: Mapping[str, int],
                  lang: str) -> DiagResult:
    """The reader link check: did it answer V, what sits in the chip slot, the link counters."""
    lines: list[str] = []
    if version is not None:
        lines.append(say(CATALOG, "reader_version", lang, version=version))
    chip_key = ("reader_chip_unknown" if chip_present is None
                else "reader_chip_yes" if chip_present else "reader_chip_no")
    lines.append(say(CATALOG, chip_key, lang))
    if stats:
        lines.append(say(CATALOG, "reader_stats", lang))
        for name, value in stats.items():
            label_key = f"stat_{name}"
            label = say(CATALOG, label_key, lang) if label_key in CATALOG else name
            lines.append(f"{label}: {value}")
    if version is None:
        return DiagResult("reader", False, say(CATALOG, "reader_silent", lang),
                          say(CATALOG, "reader_silent_next", lang), tuple(lines))
    damaged = sum(int(stats.get(name, 0)) for name in DAMAGE_COUNTERS)
    if damaged:
        # It answers, so it passes; the words say the cable deserves a look.
        return DiagResult("reader", True, say(CATALOG, "reader_noisy", lang, count=damaged),
                          say(CATALOG, "reader_noisy_next", lang), tuple(lines))
    return DiagResult("reader", True, say(CATALOG, "reader_ok", lang, version=version),
                      say(CATALOG, "reader_ok_next", lang), tuple(lines))
