"""Settings > Update firmware: the update files found on the USB stick, the file checked (its
version shown beside the running one for the supervisor's confirmation), the install with its
progress, and how it ended. Sans-I/O; the app runs "update_sources", "update_check" and
"update_install" (firmware/app/services/updates.py).

Nothing changes before the confirm screen's ENTER. CANCEL counts while the file is checked once
more; from the moment the write begins the screen says it cannot be cancelled. The supervisor's
password was given on the way into Settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from firmware.ports import Frame, Key
from firmware.ui import core
from firmware.ui.entry import NOTE_S
from firmware.ui.results import home
from firmware.ui.scroll import paged, scrolled, wrap_all
from firmware.ui.texts import words

CATALOG: core.Catalog = {
    "upd_title": ("Update firmware", "固件升级"),
    "upd_looking": ("Looking for update files...", "查找升级文件..."),
    "upd_files": ("Update file", "升级文件"),
    "upd_checking_file": ("Checking the file...", "校验升级包..."),
    "upd_confirm_title": ("Install?", "确认安装?"),
    "upd_enter_install": ("ENTER=install CANCEL=back", "确认=安装 取消=返回"),
    "upd_step_checking": ("Checking the file", "正在校验升级包"),
    "upd_step_writing": ("Writing {pct}%: do not switch off", "写入{pct}% 勿关机"),
    "upd_no_cancel": ("Cannot cancel", "不能取消"),
    "upd_cancelling": ("Cancelling...", "正在取消..."),
    "upd_cancel_stops": ("CANCEL stops it", "取消键可停止"),
    "upd_wait": ("Please wait", "请稍候"),
}


def _t(ctx: core.UiContext, key: str, **values: Any) -> str:
    if key in CATALOG:
        return core.say(CATALOG, key, ctx.lang, **values)
    return words(ctx, key)  # the shared catalogs, or words the app already wrote


_key = core.key_of


def update_root(back: core.Screen) -> core.Screen:
    """The update flow: looks for files at once; CANCEL on any screen before the install goes back
    a level, in the end to `back` (the settings list)."""
    return Looking(back)


class _AskOnce(core.Screen):
    """A screen that starts one read-only op on its first tick and waits for it; CANCEL just goes
    back (the op only reads). Subclasses have the fields `back` and `sent` and say which op,
    what comes after it and their words."""

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True
    op: ClassVar[str]
    words: ClassVar[str]  # the catalog key shown while waiting
    back: core.Screen
    sent: bool

    def start(self) -> core.StartOp:
        return core.StartOp(self.op)

    def after(self, outcome: core.OpOutcome) -> core.Screen:
        raise NotImplementedError

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.Tick) and not self.sent:
            return core.Transition(replace(self, sent=True), (self.start(),))
        if isinstance(event, core.OpDone) and event.outcome.op == self.op:
            return core.Transition(self.after(event.outcome))
        key = _key(event)
        if key is Key.CANCEL:
            return core.Transition(self.back)
        return core.Transition(self) if key is not None else None

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        return None if self.sent else ctx.mono

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [_t(ctx, "upd_title"), *core.wrap(_t(ctx, self.words), ctx.cols)])


@dataclass(frozen=True)
class Looking(_AskOnce):
    """Asks for the files found."""

    op: ClassVar[str] = "update_sources"
    words: ClassVar[str] = "upd_looking"
    back: core.Screen
    sent: bool = False

    def after(self, outcome: core.OpOutcome) -> core.Screen:
        files = tuple((str(i["path"]), str(i["name"])) for i in outcome.items if i.get("path"))
        return FilePick(files, self.back) if outcome.ok and files else UpdateResult(outcome, self.back)


@dataclass(frozen=True)
class FilePick(core.PickList):
    """The *.raucb files found: UP/DOWN or a digit, ENTER checks the one picked."""

    files: tuple[tuple[str, str], ...]  # (path, name)
    back: core.Screen
    sel: int = 0

    def count(self) -> int:
        return len(self.files)

    def pick(self, index: int, here: core.Screen) -> core.Screen:
        return Checking(self.files[index][0], here)

    def render(self, ctx: core.UiContext) -> Frame:
        return core.pick_frame(ctx, _t(ctx, "upd_files"),
                               [f"{i + 1} {name}" for i, (_p, name) in enumerate(self.files)], self.sel)


@dataclass(frozen=True)
class Checking(_AskOnce):
    """The file checked by the app (signature, model, version); CANCEL goes back to the list."""

    op: ClassVar[str] = "update_check"
    words: ClassVar[str] = "upd_checking_file"
    path: str
    back: core.Screen
    sent: bool = False

    def start(self) -> core.StartOp:
        return core.StartOp(self.op, path=self.path)

    def after(self, outcome: core.OpOutcome) -> core.Screen:
        if outcome.ok and outcome.items:
            return Confirm(self.path, str(outcome.items[0]["version"]), outcome.detail, self.back)
        return UpdateResult(outcome, self.back)


@dataclass(frozen=True)
class Confirm(core.Screen):
    """"Install version X? Now running Y": ENTER installs it, CANCEL goes back to the list."""

    path: str
    version: str
    question: str  # the app's words, in the screen's language
    back: core.Screen
    top: int = 0

    def rows(self, ctx: core.UiContext) -> list[str]:
        return wrap_all([self.question, _t(ctx, "upd_enter_install")], ctx.cols)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.ENTER:
            return core.Transition(Working(self.back), (core.StartOp(
                "update_install", path=self.path, reference=self.version, authorised=True),))
        top = scrolled(key, self.top, len(self.rows(ctx)), ctx)
        return core.Transition(replace(self, top=top) if top is not None else self)

    def render(self, ctx: core.UiContext) -> Frame:
        return paged(ctx, _t(ctx, "upd_confirm_title"), self.rows(ctx), self.top)


@dataclass(frozen=True)
class Working(core.Screen):
    """The check, then the write with its percentage; CANCEL only while the app says it counts."""

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True

    back: core.Screen
    step: str = "upd_checking"
    done: int | None = None
    cancellable: bool = True
    cancelling: bool = False
    note_until: float = 0.0

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.OpStep):
            return core.Transition(replace(self, step=event.step, done=event.done,
                                           cancellable=event.cancellable))
        if isinstance(event, core.OpDone) and event.outcome.op == "update_install":
            return core.Transition(UpdateResult(event.outcome, self.back))
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
        if self.step == "upd_writing":
            now = _t(ctx, "upd_step_writing", pct=self.done or 0)
        else:
            now = _t(ctx, "upd_step_checking")
        notes: list[str] = []
        if self.cancelling:
            notes = core.wrap(_t(ctx, "upd_cancelling"), ctx.cols)
        elif not self.cancellable:
            notes = core.wrap(_t(ctx, "upd_no_cancel"), ctx.cols) if self.note_until > ctx.mono \
                or ctx.rows > 4 else []
        elif ctx.rows > 4:
            notes = [_t(ctx, "upd_cancel_stops")]
        lines = [_t(ctx, "upd_title"), *core.wrap(now, ctx.cols)]
        return core.frame(ctx, [*lines[: max(1, ctx.rows - len(notes))], *notes])


@dataclass(frozen=True)
class UpdateResult(core.Screen):
    """How it ended, in the app's words: restarting, cancelled, refused or failed (why)."""

    outcome: core.OpOutcome
    back: core.Screen
    top: int = 0

    def rows(self, ctx: core.UiContext) -> list[str]:
        o = self.outcome
        return wrap_all([o.detail or _t(ctx, o.message_key)], ctx.cols)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key in (Key.ENTER, Key.CANCEL):
            if self.outcome.op == "update_install" and self.outcome.ok:
                return core.Transition(home())  # the restart comes; idle says so meanwhile
            return core.Transition(self.back)
        top = scrolled(key, self.top, len(self.rows(ctx)), ctx)
        return core.Transition(replace(self, top=top) if top is not None else self)

    def render(self, ctx: core.UiContext) -> Frame:
        return paged(ctx, _t(ctx, "upd_title"), self.rows(ctx), self.top)
