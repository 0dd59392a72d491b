"""Deregistration (注销) screens: the check, what blocks it (with the offer to settle), the backup
directory, the warning, the supervisor password, the final confirm, the working screen and the
result. Sans-I/O; the app runs "deregister_check" and "deregister"
(firmware/app/services/deregister.py).

Nothing that changes anything is emitted before the final confirm's ENTER: CANCEL on every
screen up to there goes back one level (from the final confirm to the warning, the password
having been given) and the check itself only reads. A deregistration interrupted after the
wipe (the host not yet told) is offered to be finished, again only after the supervisor
password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from firmware.ports import Frame, Key, text_cells
from firmware.ui import core
from firmware.ui.entry import NOTE_S, PasswordEntry
from firmware.ui.results import body, home
from firmware.ui.scroll import paged, scrolled, wrap_all
from firmware.ui.texts import money, op_title, words
from firmware.ui.txn import WorkingScreen

# The OpStep names the app sends while deregistering (firmware.engine.deregistration.Step).
STEPS = ("dereg_checks", "dereg_backup", "dereg_verified", "dereg_signed_off", "dereg_wiping",
         "dereg_wiped", "dereg_deregistered", "dereg_reported", "dereg_unbound_verified")

# What blocks deregistration: the app's item kinds (and the short names of the issue) -> ours.
KINDS = {
    "dereg_item_reversal": "reversal", "reversal": "reversal",
    "dereg_item_advice": "advice", "advice": "advice",
    "dereg_item_pending": "pending", "pending": "pending",
    "dereg_item_quarantined": "quarantined", "quarantined": "quarantined",
    "dereg_item_settlement": "settlement_open", "settlement_open": "settlement_open",
    "dereg_item_batch": "unsettled", "unsettled": "unsettled",
}

CATALOG: core.Catalog = {
    "dereg_title": ("Deregister", "终端注销"),
    "dereg_checking": ("Checking...", "检查中..."),
    "dereg_blocked_title": ("Not ready", "不能注销"),
    "dereg_what_reversal": ("{n} reversal(s) pending", "{n}笔冲正未完成"),
    "dereg_what_advice": ("{n} advice(s) not sent", "{n}笔通知未上送"),
    "dereg_what_pending": ("{n} txn(s) awaiting a reply", "{n}笔交易等待应答"),
    "dereg_what_quarantined": ("{n} set aside: resolve in review", "{n}笔已隔离: 请在结算检查处理"),
    "dereg_what_settlement_open": ("Settlement interrupted", "结算中断"),
    "dereg_what_unsettled": ("{n} txn(s) not settled", "{n}笔交易未结算"),
    "dereg_what_other": ("{n} x {kind}", "{kind} {n}笔"),
    "dereg_todo_retry": ("Sent when the host answers: check the link, try later",
                         "主机应答后自动发送：请检查网络，稍后再试"),
    "dereg_todo_settle": ("Settle first", "请先结算"),
    "dereg_offer_settle": ("1 Settle now", "1 现在结算"),
    "dereg_hint_back": ("CANCEL=back", "取消=返回"),
    "dereg_dir_title": ("Backup to", "备份到"),
    "dereg_no_dirs": ("No directory to back up to", "没有可用的备份目录"),
    "dereg_warn_title": ("Warning", "注意"),
    "dereg_warning": ("Deregistration wipes keys, card data and merchant settings; the backup stays in "
                      "{dir}", "注销将清除密钥、卡数据和商户设置；备份保留在 {dir}"),
    "dereg_enter_continue": ("ENTER=continue", "按确认继续"),
    "dereg_confirm_q": ("Deregister now?", "现在注销终端?"),
    "dereg_no_undo": ("It cannot be undone", "注销后不能撤回"),
    "dereg_enter_yes": ("ENTER=yes CANCEL=no", "确认=是 取消=否"),
    "dereg_working": ("Deregistering", "正在注销"),
    "dereg_step_n": ("Step {n}/{total}", "步骤 {n}/{total}"),
    "dereg_step_wait": ("Please wait...", "请稍候..."),
    "dereg_step_dereg_checks": ("Checking", "检查终端"),
    "dereg_step_dereg_backup": ("Writing backup", "写入备份"),
    "dereg_step_dereg_verified": ("Verifying backup", "校验备份"),
    "dereg_step_dereg_signed_off": ("Signing off", "签退中"),
    "dereg_step_dereg_wiping": ("Wipe begins", "开始清除"),
    "dereg_step_dereg_wiped": ("Wiping keys+data", "清除密钥和数据"),
    "dereg_step_dereg_deregistered": ("Telling the host", "通知主机"),
    "dereg_step_dereg_reported": ("Printing report", "打印注销报告"),
    "dereg_step_dereg_unbound_verified": ("Confirm unbound", "确认主机已解绑"),
    "dereg_cancelling": ("Cancelling...", "正在取消..."),
    "dereg_cannot_cancel": ("Can't cancel now", "现在不能取消"),
    "dereg_cancel_stops": ("CANCEL=stop", "取消=停止"),
    "dereg_res_done": ("Terminal deregistered", "终端已注销"),
    "dereg_res_cancelled": ("Cancelled - nothing changed", "已取消，未作任何更改"),
    "dereg_backup_in": ("Backup: {dir}", "备份：{dir}"),
    "dereg_check_again": ("ENTER=check again", "确认=重新检查"),
    "dereg_resume_title": ("Not finished", "注销未完成"),
    "dereg_resume_text": ("Wiped; the host is not yet told. ENTER=finish it",
                          "已清除，尚未通知主机。确认=完成注销"),
    # the app's message keys (firmware/app/services/deregister.py MESSAGES; the refusal's:
    # firmware/app/core/lifecycle.py), so they read in both languages
    "dereg_ready": ("Ready to deregister", "可以注销"),
    "dereg_blocked": ("Deregistration refused: settle and clear pending items first",
                      "不能注销：请先结算并处理未完成交易"),
    "dereg_done": ("Terminal deregistered", "终端已注销"),
    "dereg_cancelled": ("Deregistration cancelled: nothing changed", "注销已取消：未作任何更改"),
    "dereg_refused": ("Deregistration refused: nothing changed", "注销被拒绝：未作任何更改"),
    "dereg_host_pending": ("Wiped; the host is not yet told: retried at start-up",
                           "已清除；主机尚未收到通知，开机时重试"),
    "dereg_already": ("The terminal is already deregistered", "终端已注销"),
    "dereg_bad_dir": ("Deregistration refused: back up only to a directory the terminal offers "
                      "(deregister_check lists them); nothing changed",
                      "注销被拒绝：只能备份到终端提供的目录（见注销检查）；未作任何更改"),
    "dereg_terminal_deregistered": ("Terminal deregistered: provision it again first",
                                    "终端已注销：请先重新装机"),
}

DIGIT_INDEX = core.DIGIT_INDEX


def _t(ctx: core.UiContext, key: str, **values: Any) -> str:
    if key in CATALOG:
        return core.say(CATALOG, key, ctx.lang, **values)
    return words(ctx, key)  # the shared catalogs, or words the app already wrote


_key = core.key_of


def _path_rows(label: str, path: str, cols: int) -> list[str]:
    """label + path over as many rows as it takes, later rows indented under the path."""
    indent = " " * text_cells(label)
    rows, line = [], label
    for ch in path:
        if text_cells(line + ch) > cols:
            rows.append(line)
            line = indent
        line += ch
    return [*rows, line]


def _tail(path: str, cells: int) -> str:
    """The end of a path (its most telling part) in at most `cells` cells, '~' marking a cut."""
    if text_cells(path) <= cells:
        return path
    out = ""
    for ch in reversed(path):
        if text_cells(ch + out) > cells - 1:
            break
        out = ch + out
    return "~" + out


def deregister_root(back: core.Screen) -> core.Screen:
    """The deregistration flow: checks at once (StartOp("deregister_check") on the first Tick);
    CANCEL on any screen before the operation starts goes back a level, in the end to `back`."""
    return Checking(back)


# ---------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class Checking(core.Screen):
    """Asks for the check at once and waits; the check only reads, so CANCEL just goes back."""

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True

    back: core.Screen
    sent: bool = False

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.Tick) and not self.sent:
            return core.Transition(replace(self, sent=True), (core.StartOp("deregister_check"),))
        if isinstance(event, core.OpDone) and event.outcome.op == "deregister_check":
            return core.Transition(after_check(event.outcome, self.back))
        key = _key(event)
        if key is Key.CANCEL:
            return core.Transition(self.back)
        return core.Transition(self) if key is not None else None

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        return None if self.sent else ctx.mono

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [_t(ctx, "dereg_title"), _t(ctx, "dereg_checking")])


def after_check(outcome: core.OpOutcome, back: core.Screen) -> core.Screen:
    """Problems -> what blocks; none -> the backup directory; anything else -> in words."""
    dirs = tuple(str(i["path"]) for i in outcome.items if i.get("kind") == "dir" and i.get("path"))
    problems = tuple(i for i in outcome.items if i.get("kind") != "dir")
    if problems:
        return Blocked(problems, back)
    if outcome.message_key == "dereg_resume":
        return ResumeOffer(back)
    if outcome.ok:
        if dirs:
            return DirPick(dirs, back)
        return DeregResult(core.OpOutcome("deregister_check", "refused", "dereg_no_dirs"), back)
    return DeregResult(outcome, back)


@dataclass(frozen=True)
class Blocked(core.Screen):
    """What stops deregistration and what to do; "1 Settle now" where settling clears it."""

    items: tuple[Mapping[str, Any], ...]
    back: core.Screen
    top: int = 0

    @property
    def offers_settle(self) -> bool:
        return any(i.get("action") == "settle" for i in self.items)

    def rows(self, ctx: core.UiContext) -> list[str]:
        lines: list[str] = []
        for item in self.items:
            kind = KINDS.get(str(item.get("kind")), "")
            n = item.get("count", 1)
            what = (_t(ctx, f"dereg_what_{kind}", n=n) if kind
                    else _t(ctx, "dereg_what_other", n=n, kind=item.get("kind")))
            lines.append(what)
            if item.get("amount") is not None:
                lines.append(core.right(money(ctx, int(item["amount"])), ctx.cols))
            lines.append(_t(ctx, "dereg_todo_settle" if item.get("action") == "settle"
                            else "dereg_todo_retry"))
        if self.offers_settle:
            lines.append(_t(ctx, "dereg_offer_settle"))
        lines.append(_t(ctx, "dereg_hint_back"))
        return wrap_all(lines, ctx.cols)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key in (Key.CANCEL, Key.ENTER):
            return core.Transition(self.back)
        if key is Key.D1 and self.offers_settle:
            return core.Transition(PasswordEntry("settlement", SettleRun(self.back), self))
        top = scrolled(key, self.top, len(self.rows(ctx)), ctx)
        return core.Transition(replace(self, top=top) if top is not None else self)

    def render(self, ctx: core.UiContext) -> Frame:
        return paged(ctx, _t(ctx, "dereg_blocked_title"), self.rows(ctx), self.top)


@dataclass(frozen=True)
class SettleRun(core.Screen):
    """The settlement offered by Blocked (password already checked): starts at once, shows its
    progress like every settlement, then its result with the offer to check again."""

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True

    back: core.Screen  # where the deregistration flow returns (the menu)
    work: core.Screen | None = None
    sent: bool = False

    def _work(self) -> core.Screen:
        return self.work if self.work is not None else WorkingScreen("settle")

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.Tick) and not self.sent:
            return core.Transition(replace(self, sent=True, work=self._work()),
                                   (core.StartOp("settle", authorised=True),))
        if isinstance(event, core.OpDone) and event.outcome.op == "settle":
            return core.Transition(SettleResult(event.outcome, self.back))
        if not self.sent:
            return core.Transition(self) if isinstance(event, core.KeyIn) else None
        moved = self._work().handle(event, ctx)
        if moved is None:
            return None
        if isinstance(moved.screen, core.Go):
            return moved  # a screen named (a result's way home) is the Ui's to build: never held inside
        return core.Transition(replace(self, work=moved.screen), moved.commands)

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        return self._work().next_wakeup(ctx) if self.sent else ctx.mono

    def render(self, ctx: core.UiContext) -> Frame:
        return self._work().render(ctx)


@dataclass(frozen=True)
class SettleResult(core.Screen):
    outcome: core.OpOutcome
    back: core.Screen
    top: int = 0

    def rows(self, ctx: core.UiContext) -> list[str]:
        return wrap_all([*body(self.outcome, ctx), _t(ctx, "dereg_check_again"),
                         _t(ctx, "dereg_hint_back")], ctx.cols)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key is Key.ENTER:
            return core.Transition(deregister_root(self.back))
        if key is Key.CANCEL:
            return core.Transition(self.back)
        top = scrolled(key, self.top, len(self.rows(ctx)), ctx)
        return core.Transition(replace(self, top=top) if top is not None else self)

    def render(self, ctx: core.UiContext) -> Frame:
        return paged(ctx, op_title(ctx, "settle"), self.rows(ctx), self.top)


@dataclass(frozen=True)
class ResumeOffer(core.Screen):
    """An interrupted deregistration past the wipe: ENTER asks the supervisor password, then
    finishes it (ResumeRun); CANCEL leaves it for the next start-up."""

    back: core.Screen

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.ENTER:
            return core.Transition(DeregPassword("deregistration", ResumeRun(self.back), self))
        return core.Transition(self)

    def render(self, ctx: core.UiContext) -> Frame:
        return paged(ctx, _t(ctx, "dereg_resume_title"),
                     wrap_all([_t(ctx, "dereg_resume_text")], ctx.cols), 0)


@dataclass(frozen=True)
class ResumeRun(core.Screen):
    """The password was right: starts the rest of the deregistration at once."""

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True

    back: core.Screen

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.Tick):
            return core.Transition(DeregWorking("", self.back),
                                   (core.StartOp("deregister", path="", authorised=True),))
        return core.Transition(self) if isinstance(event, core.KeyIn) else None

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        return ctx.mono

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [_t(ctx, "dereg_working"), _t(ctx, "dereg_step_wait")])


# ---------------------------------------------------------------------------- the way to the op


@dataclass(frozen=True)
class DirPick(core.PickList):
    """Where the backup goes: UP/DOWN or a digit, ENTER; CANCEL leaves the flow."""

    dirs: tuple[str, ...]
    back: core.Screen
    sel: int = 0

    def count(self) -> int:
        return len(self.dirs)

    def pick(self, index: int, here: core.Screen) -> core.Screen:
        return WipeWarning(self.dirs[index], here)

    def render(self, ctx: core.UiContext) -> Frame:
        # Every path whole, wrapped under its digit (a path cut to one row, "1.~rminal/export",
        # did not say where the backup would go); the window keeps the selected one in view.
        rows: list[tuple[int, str]] = []
        for i, path in enumerate(self.dirs):
            rows += [(i, row) for row in _path_rows(f"{i + 1} ", path, ctx.cols)]
        mine = [n for n, (i, _) in enumerate(rows) if i == self.sel]
        visible = max(1, ctx.rows - 1)
        top = max(0, min(mine[0], mine[-1] - visible + 1, len(rows) - visible))
        position = f"{self.sel + 1}/{len(self.dirs)}"
        head = core.pad(_t(ctx, "dereg_dir_title"), ctx.cols - len(position)) + position
        return core.frame(ctx, [head, *(row for _, row in rows[top: top + visible])],
                          inverse_row=1 + mine[0] - top)


@dataclass(frozen=True)
class WipeWarning(core.Screen):
    """What deregistration wipes and where the backup stays; ENTER asks the password."""

    path: str
    back: DirPick
    top: int = 0

    def rows(self, ctx: core.UiContext) -> list[str]:
        return wrap_all([_t(ctx, "dereg_warning", dir=self.path), _t(ctx, "dereg_enter_continue")],
                        ctx.cols)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.ENTER:
            return core.Transition(DeregPassword("deregistration", FinalConfirm(self.path, self), self))
        top = scrolled(key, self.top, len(self.rows(ctx)), ctx)
        return core.Transition(replace(self, top=top) if top is not None else self)

    def render(self, ctx: core.UiContext) -> Frame:
        return paged(ctx, _t(ctx, "dereg_warn_title"), self.rows(ctx), self.top)


@dataclass(frozen=True)
class DeregPassword(PasswordEntry):
    """The supervisor password, titled for deregistration (the shared titles lack it)."""

    def render(self, ctx: core.UiContext) -> Frame:
        base = super().render(ctx)
        return replace(base, rows=(core.fit(_t(ctx, "dereg_title"), ctx.cols), *base.rows[1:]))


@dataclass(frozen=True)
class FinalConfirm(core.Screen):
    """The last chance: ENTER starts the deregistration; CANCEL goes back to the warning."""

    path: str
    back: WipeWarning

    @property
    def root(self) -> core.Screen:
        return self.back.back.back

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.ENTER:
            return core.Transition(DeregWorking(self.path, self.root),
                                   (core.StartOp("deregister", path=self.path, authorised=True),))
        return core.Transition(self)

    def render(self, ctx: core.UiContext) -> Frame:
        hint = core.wrap(_t(ctx, "dereg_enter_yes"), ctx.cols)
        if ctx.rows <= 4:
            lines = [_t(ctx, "dereg_confirm_q"), _tail(self.path, ctx.cols)]
        else:
            lines = [_t(ctx, "dereg_confirm_q"), *core.wrap(_t(ctx, "dereg_no_undo"), ctx.cols),
                     *core.wrap(self.path, ctx.cols)]
        lines = lines[: ctx.rows - len(hint)]
        return core.frame(ctx, [*lines, *hint])


# ---------------------------------------------------------------------------- running and after


@dataclass(frozen=True)
class DeregWorking(core.Screen):
    """The steps in words; CANCEL stops it only while the app says the step is cancellable."""

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True

    path: str
    back: core.Screen
    step: str | None = None
    cancellable: bool = True
    cancelling: bool = False
    note_until: float = 0.0

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.OpStep):
            return core.Transition(replace(self, step=event.step, cancellable=event.cancellable))
        if isinstance(event, core.OpDone) and event.outcome.op == "deregister":
            return core.Transition(DeregResult(event.outcome, self.back))
        key = _key(event)
        if key is None:
            return None
        if key is not Key.CANCEL or self.cancelling:
            return core.Transition(self)
        if self.cancellable:
            return core.Transition(replace(self, cancelling=True), (core.CancelOp(),))
        return core.Transition(replace(self, note_until=ctx.mono + NOTE_S))

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        return self.note_until if self.note_until > ctx.mono else None

    def render(self, ctx: core.UiContext) -> Frame:
        key = f"dereg_step_{self.step}" if f"dereg_step_{self.step}" in CATALOG else "dereg_step_wait"
        lines = [_t(ctx, "dereg_working"), *core.wrap(_t(ctx, key), ctx.cols)]
        if self.step in STEPS:
            lines.append(_t(ctx, "dereg_step_n", n=STEPS.index(self.step) + 1, total=len(STEPS)))
        notes: list[str] = []
        if self.cancelling:
            notes = core.wrap(_t(ctx, "dereg_cancelling"), ctx.cols)
        elif self.note_until > ctx.mono:
            notes = core.wrap(_t(ctx, "dereg_cannot_cancel"), ctx.cols)
        if ctx.rows > 4:  # the big LCD: where the backup goes and whether CANCEL still stops it
            lines += core.wrap(_t(ctx, "dereg_backup_in", dir=self.path), ctx.cols)
            if self.cancellable and not self.cancelling:
                notes.append(_t(ctx, "dereg_cancel_stops"))
        return core.frame(ctx, [*lines[: max(1, ctx.rows - len(notes))], *notes])


@dataclass(frozen=True)
class DeregResult(core.Screen):
    """How it ended, scrollable: done (the backup and the report), cancelled, or why not."""

    outcome: core.OpOutcome
    back: core.Screen
    top: int = 0

    def rows(self, ctx: core.UiContext) -> list[str]:
        o = self.outcome
        if o.status == "done" and o.op == "deregister":
            lines = [_t(ctx, "dereg_res_done")]
            if o.detail:
                lines.append(_t(ctx, "dereg_backup_in", dir=o.detail))
        elif o.status == "cancelled":
            lines = [_t(ctx, "dereg_res_cancelled")]
        else:
            lines = [_t(ctx, o.message_key)]
            if o.detail:
                lines.append(o.detail)
        return wrap_all([*lines, *o.lines], ctx.cols)

    @property
    def finished(self) -> bool:
        return self.outcome.op == "deregister" and self.outcome.status == "done"

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key in (Key.ENTER, Key.CANCEL):
            if self.finished:
                return core.Transition(home())  # idle shows the DEREGISTERED banner
            return core.Transition(self.back)
        top = scrolled(key, self.top, len(self.rows(ctx)), ctx)
        return core.Transition(replace(self, top=top) if top is not None else self)

    def render(self, ctx: core.UiContext) -> Frame:
        return paged(ctx, _t(ctx, "dereg_title"), self.rows(ctx), self.top)
