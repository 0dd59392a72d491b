"""Refused ECR requests in the audit log and the log: who asked, what, and why.

A flood of garbage must not become a flood of journal writes: per source, the first refusal is
written at once, the rest of the window (WINDOW_S) are counted and written as one line when it
ends. So a source costs at most two audit lines a minute, however fast it sends.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware.i18n import register
from firmware.journal.errors import JournalError

if TYPE_CHECKING:
    from firmware.app.terminal import Terminal

log = logging.getLogger("posfw.ecr")

WINDOW_S = 60.0
REFUSED_RESULTS = frozenset({"error", "busy", "refused"})

# What a till is told when the paired-till gate (ecr_gate.py) refuses its request: in the
# terminal's language, with what to do. These replies carry no MAC ("authenticated": false).
AUTH_MESSAGES: dict[str, tuple[str, str]] = {
    "ecr_auth_required": ("This terminal takes requests from paired tills only: this one carries "
                          "no till, seq and mac - pair the till (docs/ecr.md, Paired tills); "
                          "nothing was done",
                          "本终端只接受已配对收银机的请求: 该请求没有收银机编号、序号和校验码 - "
                          "请先配对收银机; 未做任何处理"),
    "ecr_open_refused": ("Unauthenticated requests are not taken on this board (only an emulated "
                         "board allows them): paired tills only; nothing was done",
                         "本机型不接受未认证的请求 (仅模拟机型允许): 只接受已配对的收银机; "
                         "未做任何处理"),
    "ecr_not_paired": ("Till {till} is not paired with this terminal: the supervisor pairs it "
                       "(Manage > ECR tills); nothing was done",
                       "收银机 {till} 未与本终端配对: 请主管配对 (管理 > 收银机配对); 未做任何处理"),
    "ecr_bad_mac": ("Wrong MAC: the request was not sent by paired till {till}, or was changed on "
                    "the way; nothing was done",
                    "校验码 MAC 错误: 请求不是已配对的收银机 {till} 发出, 或在途中被改动; "
                    "未做任何处理"),
    "ecr_old_seq": ("seq {seq} refused: the last seq seen from till {till} is {last} (a request "
                    "never runs twice); send it again with seq {next} or more; nothing was done",
                    "序号 {seq} 被拒绝: 收银机 {till} 上一序号为 {last} (同一请求不会执行两次); "
                    "请用序号 {next} 或更大重发; 未做任何处理"),
    "ecr_bad_envelope": ("{detail}; nothing was done", "{detail}; 未做任何处理"),
    "ecr_key_unreadable": ("Till {till}'s key cannot be opened by this terminal's key store: "
                           "pair the till again; nothing was done",
                           "本终端密钥库无法打开收银机 {till} 的密钥: 请重新配对; 未做任何处理"),
    "ecr_auth_service": ("Service mode: paired tills cannot be checked without the journal - "
                         "see the terminal's screen; nothing was done",
                         "维护模式: 没有交易日志无法验证收银机 - 请看终端屏幕; 未做任何处理"),
}
register(AUTH_MESSAGES)


@dataclass
class _Window:
    count: int = 0
    last: str = ""
    timer: asyncio.TimerHandle | None = None


class RefusalLog:
    def __init__(self, terminal: Terminal, window_s: float = WINDOW_S) -> None:
        self.terminal = terminal
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}

    def note_reply(self, source: str, reply: dict[str, Any]) -> None:
        """Every reply passes here; the refusals among them are written."""
        if reply.get("result") in REFUSED_RESULTS:
            self.note(source, str(reply.get("op") or "request"), str(reply.get("message", "")))

    def note(self, source: str, what: str, why: str) -> None:
        line = f"{what}: {why}"[:300]
        window = self._windows.get(source)
        if window is not None:
            window.count += 1
            window.last = line
            return
        self._write(source, f"ecr {what} refused", why[:300])
        window = self._windows[source] = _Window()
        window.timer = asyncio.get_running_loop().call_later(self.window_s, self._close, source)

    def flush(self) -> None:
        """The link closes: counted refusals are written now."""
        for source in list(self._windows):
            timer = self._windows[source].timer
            if timer is not None:
                timer.cancel()
            self._close(source)

    def _close(self, source: str) -> None:
        window = self._windows.pop(source)
        if window.count:
            self._write(source, "ecr requests refused",
                        f"{window.count} more in {self.window_s:.0f} s; last {window.last}")

    def _write(self, source: str, action: str, detail: str) -> None:
        log.warning("%s from %s: %s", action, source, detail)
        journal = self.terminal.journal
        if journal is None:
            return  # service mode: the log line is all there is
        try:
            journal.audit(source, action, detail, "refused")
        except JournalError as exc:  # a full disk must not stop the link from answering
            log.error("refusal not audited: %s", exc)
