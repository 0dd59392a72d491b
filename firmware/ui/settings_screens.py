"""The settings screens: groups, field lists, editors by kind, save + self-tests, restore, history.

Theory of operation. `settings_root(back)` is the groups list (the menu already checked the
supervisor password). Opening a group stages its edits in a `Staged` copy of ctx.settings
held by the field list; editors hand a new Staged back on ENTER and the unchanged one on
CANCEL. CANCEL at the field list with changes asks "Discard changes?"; the machine's idle
timeout discards them too (every editing screen is `staged`). SAVE emits SaveSettings and
waits (`running`: the app is writing); the answer either lists the wrong fields (the staged
values are kept) or names the self-tests to run: echo/printer via RunDiag, display by the
test pattern and the operator's answer. A failed test asks "1 Keep  2 Roll back"; that
screen has no timeout, because keeping untested settings must be an explicit choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from firmware.ports import Frame, Key, text_cells
from firmware.settings.model import FACTORY_PASSWORD, field_problem
from firmware.settings.model import problems as local_problems
from firmware.settings.schema import BY_KEY, GROUPS, Field, format_value, group_fields, label
from firmware.settings.staging import Staged
from firmware.ui import core
from firmware.ui.core import (
    Audit,
    ChangePassword,
    DiagResult,
    FactoryDefaults,
    KeyIn,
    RestorePrevious,
    RollBackSettings,
    RunDiag,
    SaveSettings,
    Screen,
    SettingsSaved,
    Tick,
    Transition,
    UiContext,
    UiEvent,
    key_of,
)

CATALOG: dict[str, tuple[str, str]] = {
    "settings": ("Settings", "设置"),
    "restore_previous": ("Undo last save", "恢复上一版本"),
    "factory_defaults": ("Reset defaults", "恢复出厂设置"),
    "history": ("History", "历史版本"),
    "update": ("Install update", "固件升级"),
    "save": ("Save", "保存"),
    "change_password": ("Change password", "修改密码"),
    "discard_q": ("Discard changes?", "放弃修改?"),
    "n_changes": ("{n} change(s)", "{n}项修改"),
    "yes_no": ("ENTER yes", "确认键 是"),
    "no_cancel": ("CANCEL no", "取消键 否"),
    "save_q": ("Save {n} edit(s)?", "保存{n}项修改?"),
    "no_changes": ("No changes", "没有修改"),
    "enter_save": ("ENTER save", "确认键 保存"),
    "enter_back": ("ENTER back", "确认键 返回"),
    "saving": ("Saving...", "正在保存..."),
    "restoring": ("Restoring...", "正在恢复..."),
    "rolling_back": ("Rolling back...", "正在回滚..."),
    "please_wait": ("Please wait", "请稍候"),
    "not_saved": ("Not saved:", "未保存:"),
    "saved": ("Saved", "已保存"),
    "kept": ("Saved; the test failed", "已保存; 自检未通过"),
    "rolled_back": ("Rolled back", "已回滚"),
    "roll_back_failed": ("Roll back failed:", "回滚失败:"),
    "password_changed": ("Password changed", "密码已修改"),
    "testing": ("Self-test: {name}", "自检: {name}"),
    "test_echo": ("echo", "主机回响"),
    "test_printer": ("printer", "打印机"),
    "test_display": ("display", "显示屏"),
    "all_cells_q": ("All cells shown?", "全部点亮?"),
    "test_failed": ("Test failed:", "自检失败:"),
    "keep_or_roll": ("1 Keep 2 Roll bk", "1保留 2回滚"),
    "stopped": ("stopped by the operator", "操作员中止"),
    "display_failed": ("cells missing on the LCD", "显示屏有缺点"),
    "display_next": ("check the display cable or replace the LCD", "请检查显示屏排线或更换"),
    "restore_text": ("The version before the last change becomes live. A backup is kept.",
                     "上次修改前的版本将生效。当前版本会备份。"),
    "factory_text": ("Factory values; MID, TID, host, port and password are kept. A backup is kept.",
                     "恢复出厂值; 保留商户号、终端号、主机、端口和密码。当前版本会备份。"),
    "new_password": ("New password:", "新密码:"),
    "repeat_password": ("Again:", "再输一次:"),
    "password_rule": ("6-12 digits", "6-12位数字"),
    "password_mismatch": ("Not the same", "两次不一致"),
    "password_factory": ("Not 000000", "不能为000000"),
    "ok_row": ("OK", "确定"),
    "allowed": ("! only {range}", "! 范围{range}"),
    "clear_del": ("CLR del ENT ok", "清除删 确认"),
    "loading": ("Loading...", "正在读取..."),
}

_DIGITS = {Key.D0: "0", Key.D1: "1", Key.D2: "2", Key.D3: "3", Key.D4: "4", Key.D5: "5",
           Key.D6: "6", Key.D7: "7", Key.D8: "8", Key.D9: "9"}
# Multi-tap letters, as on a phone keypad; a letter commits after MULTITAP_S or on another key.
MULTITAP: dict[Key, str] = {
    Key.D1: " .-1/:@_", Key.D2: "abc2ABC", Key.D3: "def3DEF", Key.D4: "ghi4GHI",
    Key.D5: "jkl5JKL", Key.D6: "mno6MNO", Key.D7: "pqrs7PQRS", Key.D8: "tuv8TUV",
    Key.D9: "wxyz9WXYZ", Key.D0: "0", Key.DOT: ".",
}
MULTITAP_S = 1.0
_ROOT_ITEMS = (*(f"g.{g}" for g in GROUPS), "restore_previous", "factory_defaults", "history",
               "update")  # the tenth: digit 0


def settings_root(back: Screen) -> Screen:
    """The settings groups list; CANCEL returns to back (the menu)."""
    return GroupsScreen(back)


def _say(key: str, ctx: UiContext, **values: Any) -> str:
    if key in CATALOG:
        return core.say(CATALOG, key, ctx.lang, **values)
    return label(key, ctx.lang)


_key = key_of


def _menu(ctx: UiContext, title: str, items: list[str], sel: int) -> Frame:
    """Title row + a window of items that keeps the selected one visible (inverse)."""
    return core.pick_frame(ctx, title, items, sel)


def _move(sel: int, count: int, key: Key | None) -> int | None:
    if key is Key.UP:
        return (sel - 1) % count
    if key is Key.DOWN:
        return (sel + 1) % count
    return None


def _pick(key: Key | None, count: int) -> int | None:
    """Digit keys 1..9 pick the item with that number."""
    digit = _DIGITS.get(key) if key is not None else None
    if digit == "0" and count == 10:  # a tenth item takes the 0, as the menus' tenth does
        return 9
    if digit is None or digit == "0" or int(digit) > count:
        return None
    return int(digit) - 1


def _paged(ctx: UiContext, body: list[str], offset: int, footer: str | None) -> Frame:
    """Scrolling body rows (UP/DOWN) with an optional footer row fixed at the bottom."""
    room = ctx.rows - (1 if footer else 0)
    rows = body[offset:offset + room]
    rows += [""] * (room - len(rows))
    return core.frame(ctx, rows + ([footer] if footer else []))


def _scroll(offset: int, body_len: int, room: int, key: Key | None) -> int | None:
    if key is Key.UP:
        return max(0, offset - 1)
    if key is Key.DOWN:
        return max(0, min(offset + 1, body_len - room))
    return None


def _wrap_all(ctx: UiContext, texts: list[str]) -> list[str]:
    return [row for text in texts for row in (core.wrap(text, ctx.cols) or [""])]


def _tail(text: str, cols: int) -> str:
    """The end of text that fits cols cells (a long value scrolls left while typed)."""
    out = ""
    for ch in reversed(text):
        if text_cells(ch + out) > cols:
            break
        out = ch + out
    return out


# ---------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class GroupsScreen(Screen):
    back: Screen
    sel: int = 0

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key is Key.CANCEL:
            return Transition(self.back)
        moved = _move(self.sel, len(_ROOT_ITEMS), key)
        if moved is not None:
            return Transition(replace(self, sel=moved))
        picked = _pick(key, len(_ROOT_ITEMS))
        if picked is not None:
            return self._open(picked, ctx)
        if key is Key.ENTER:
            return self._open(self.sel, ctx)
        return None

    def _open(self, index: int, ctx: UiContext) -> Transition:
        root = replace(self, sel=index)
        item = _ROOT_ITEMS[index]
        if item.startswith("g."):
            return Transition(FieldList(root, item[2:], Staged(ctx.settings)))
        if item == "history":
            return Transition(HistoryWait(root), (RunDiag("settings_history"),))
        if item == "update":
            from firmware.ui.update_screens import update_root  # its own flow: import late

            return Transition(update_root(root))
        return Transition(ConfirmScreen(root, item))

    def render(self, ctx: UiContext) -> Frame:
        items = [f"{(i + 1) % 10} {_say(item, ctx)}" for i, item in enumerate(_ROOT_ITEMS)]
        return _menu(ctx, _say("settings", ctx), items, self.sel)


# ---------------------------------------------------------------------------- field list


@dataclass(frozen=True)
class FieldList(Screen):
    root: GroupsScreen
    group: str
    staged: Staged
    sel: int = 0

    def _rows(self) -> list[str]:
        rows: list[str] = [f.key for f in group_fields(self.group)]
        if self.group == "security":
            rows.append("change_password")
        rows.append("save")
        return rows

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        rows = self._rows()
        if key is Key.CANCEL:
            if self.staged.changes:
                return Transition(DiscardConfirm(self))
            return Transition(self.root)
        if key is Key.F1:
            return Transition(SaveSummary(self))
        moved = _move(self.sel, len(rows), key)
        if moved is not None:
            return Transition(replace(self, sel=moved))
        picked = _pick(key, len(rows))
        if picked is not None:
            return self._open(replace(self, sel=picked), rows[picked])
        if key is Key.ENTER:
            return self._open(self, rows[self.sel])
        return None

    @staticmethod
    def _open(at: FieldList, row: str) -> Transition:
        if row == "save":
            return Transition(SaveSummary(at))
        if row == "change_password":
            return Transition(PasswordEntry(at))
        fld = BY_KEY[row]
        value = at.staged.get(fld.group, fld.name)
        if fld.kind == "bool":
            return Transition(replace(at, staged=at.staged.set(fld.group, fld.name, not value)))
        if fld.kind == "choice":
            index = fld.choices.index(value) if value in fld.choices else 0
            return Transition(ChoiceEditor(at, row, index))
        if fld.kind == "multi":
            chosen = tuple(v for v in fld.choices if v in (value or ()))
            return Transition(MultiEditor(at, row, chosen))
        if fld.kind == "text":
            return Transition(TextEditor(at, row, str(value or "")))
        return Transition(NumberEditor(at, row, _number_buffer(fld, value)))

    def render(self, ctx: UiContext) -> Frame:
        title = _say(f"g.{self.group}", ctx) + (" *" if self.staged.changes else "")
        items = []
        for row in self._rows():
            if row not in BY_KEY:
                items.append(_say(row, ctx))
                continue
            fld = BY_KEY[row]
            mark = "*" if self.staged.is_changed(fld.group, fld.name) else " "
            left = mark + label(fld.label, ctx.lang)
            space = ctx.cols - text_cells(left) - 1
            value = format_value(fld, self.staged.get(fld.group, fld.name), ctx.lang)
            if text_cells(value) > space > 1:
                value = core.fit(value, space - 1) + "~"  # cut: the editor shows it whole
            items.append(left + " " + core.right(value, space) if space > 0 else left)
        return _menu(ctx, title, items, self.sel)

    def with_value(self, key: str, value: Any) -> FieldList:
        group, name = key.split(".", 1)
        return replace(self, staged=self.staged.set(group, name, value))


@dataclass(frozen=True)
class DiscardConfirm(Screen):
    fields: FieldList

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key is Key.ENTER:
            count = len(self.fields.staged.changes)
            return Transition(self.fields.root.back,
                              (Audit("settings", f"{count} change(s) discarded", "cancelled"),))
        if key is Key.CANCEL:
            return Transition(self.fields)
        return None

    def render(self, ctx: UiContext) -> Frame:
        count = len(self.fields.staged.changes)
        return core.frame(ctx, [_say("discard_q", ctx), _say("n_changes", ctx, n=count),
                                _say("yes_no", ctx), _say("no_cancel", ctx)])


# ---------------------------------------------------------------------------- editors


def _number_buffer(fld: Field, value: Any) -> str:
    if fld.kind == "seconds":
        return str(round(float(value) * 10)) if isinstance(value, int | float) else ""
    return str(value) if value is not None else ""


def _number_value(fld: Field, buffer: str) -> Any:
    if fld.kind == "digits":
        return buffer
    number = int(buffer or "0")
    return number / 10 if fld.kind == "seconds" else number


def _number_text(fld: Field, buffer: str) -> str:
    if fld.kind == "digits":
        return buffer
    if fld.kind == "seconds":
        tenths = int(buffer or "0")
        return f"{tenths // 10}.{tenths % 10}s"
    if fld.unit == "fen":
        return core.format_fen(int(buffer or "0"))
    return (buffer or "0") + (fld.unit if fld.unit == "s" else "")


def _max_digits(fld: Field) -> int:
    top = fld.max or 0
    if fld.kind == "digits":
        return int(top)
    return len(str(int(top * 10 if fld.kind == "seconds" else top)))


@dataclass(frozen=True)
class NumberEditor(Screen):
    """digits / int / seconds (tenths shift in from the right: 1, 12 -> 1.2 s). The first digit
    replaces the shown value; CLEAR deletes the last digit."""

    fields: FieldList
    key: str
    buffer: str
    fresh: bool = True
    error: str = ""

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        fld = BY_KEY[self.key]
        if key is Key.CANCEL:
            return Transition(self.fields)
        if key is Key.CLEAR:
            return Transition(replace(self, buffer="" if self.fresh else self.buffer[:-1], fresh=False,
                                      error=""))
        typed = "00" if key is Key.D00 else _DIGITS.get(key) if key is not None else None
        if typed is not None:
            buffer = typed if self.fresh else self.buffer + typed
            if fld.kind != "digits":
                buffer = buffer.lstrip("0") or "0"
            if len(buffer) > _max_digits(fld):
                return Transition(self)
            return Transition(replace(self, buffer=buffer, fresh=False, error=""))
        if key is Key.ENTER:
            value = _number_value(fld, self.buffer)
            problem = field_problem(self.key, value, ctx.lang)
            if problem is not None:
                return Transition(replace(self, error=problem))
            return Transition(self.fields.with_value(self.key, value))
        return None

    def render(self, ctx: UiContext) -> Frame:
        fld = BY_KEY[self.key]
        head = [label(fld.label, ctx.lang), core.right(_number_text(fld, self.buffer), ctx.cols)]
        lo, hi = fld.min or 0, fld.max or 0
        if fld.kind == "digits":
            hint = f"{int(lo)}" if lo == hi else f"{int(lo)}-{int(hi)}"
        else:
            hint = f"{lo:g}-{hi:g}"
        if self.error:  # the value is on screen already: the allowed range says the rest
            return core.frame(ctx, [*head, _say("allowed", ctx, range=hint), _say("clear_del", ctx)])
        return core.frame(ctx, [*head, hint, _say("clear_del", ctx)])


@dataclass(frozen=True)
class ChoiceEditor(Screen):
    fields: FieldList
    key: str
    index: int

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        fld = BY_KEY[self.key]
        moved = _move(self.index, len(fld.choices), key)
        if moved is not None:
            return Transition(replace(self, index=moved))
        if key is Key.ENTER:
            return Transition(self.fields.with_value(self.key, fld.choices[self.index]))
        if key is Key.CANCEL:
            return Transition(self.fields)
        return None

    def render(self, ctx: UiContext) -> Frame:
        fld = BY_KEY[self.key]
        items = [label(f"c.{c}", ctx.lang) for c in fld.choices]
        return _menu(ctx, label(fld.label, ctx.lang), items, self.index)


@dataclass(frozen=True)
class MultiEditor(Screen):
    """ENTER toggles the selected item; ENTER on OK (or F1) stages the set."""

    fields: FieldList
    key: str
    chosen: tuple[str, ...]
    sel: int = 0

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        fld = BY_KEY[self.key]
        count = len(fld.choices) + 1
        moved = _move(self.sel, count, key)
        if moved is not None:
            return Transition(replace(self, sel=moved))
        if key is Key.F1 or (key is Key.ENTER and self.sel == len(fld.choices)):
            return Transition(self.fields.with_value(self.key, [c for c in fld.choices if c in self.chosen]))
        if key is Key.ENTER:
            item = fld.choices[self.sel]
            chosen = tuple(c for c in self.chosen if c != item) if item in self.chosen else (
                *self.chosen, item)
            return Transition(replace(self, chosen=chosen))
        if key is Key.CANCEL:
            return Transition(self.fields)
        return None

    def render(self, ctx: UiContext) -> Frame:
        fld = BY_KEY[self.key]
        items = [("[x]" if c in self.chosen else "[ ]") + label(f"c.{c}", ctx.lang) for c in fld.choices]
        items.append(_say("ok_row", ctx))
        return _menu(ctx, label(fld.label, ctx.lang), items, self.sel)


@dataclass(frozen=True)
class TextEditor(Screen):
    """Multi-tap text: each press of the same key within MULTITAP_S steps through its letters;
    the letter commits after MULTITAP_S (a Tick at next_wakeup) or when another key comes."""

    fields: FieldList
    key: str
    text: str
    pending: Key | None = None
    index: int = 0
    since: float = 0.0
    error: str = ""

    def _committed(self) -> str:
        if self.pending is None:
            return self.text
        return self.text + MULTITAP[self.pending][self.index]

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        fld = BY_KEY[self.key]
        if isinstance(event, Tick):
            if self.pending is not None and ctx.mono >= self.since + MULTITAP_S:
                return Transition(replace(self, text=self._committed(), pending=None, index=0))
            return None
        key = _key(event)
        if key is Key.CANCEL:
            return Transition(self.fields)
        if key is Key.CLEAR:
            if self.pending is not None:
                return Transition(replace(self, pending=None, index=0, error=""))
            return Transition(replace(self, text=self.text[:-1], error=""))
        if key is Key.ENTER:
            value = self._committed()
            problem = field_problem(self.key, value, ctx.lang)
            if problem is not None:
                return Transition(replace(self, text=value, pending=None, index=0, error=problem))
            return Transition(self.fields.with_value(self.key, value))
        if key in MULTITAP:
            letters = MULTITAP[key]
            if key is self.pending and ctx.mono < self.since + MULTITAP_S and len(letters) > 1:
                return Transition(replace(self, index=(self.index + 1) % len(letters), since=ctx.mono))
            text = self._committed()
            if len(text) >= int(fld.max or 0):
                return Transition(replace(self, text=text, pending=None, index=0))
            return Transition(replace(self, text=text, pending=key, index=0, since=ctx.mono, error=""))
        return None

    def next_wakeup(self, ctx: UiContext) -> float | None:
        return self.since + MULTITAP_S if self.pending is not None else None

    def render(self, ctx: UiContext) -> Frame:
        fld = BY_KEY[self.key]
        shown = _tail(self._committed() + ("" if self.pending is not None else "_"), ctx.cols)
        rows = [label(fld.label, ctx.lang), shown]
        if self.error:
            return core.frame(ctx, rows + core.wrap(self.error, ctx.cols))
        hint = MULTITAP[self.pending] if self.pending is not None else ""
        return core.frame(ctx, [*rows, hint, _say("clear_del", ctx)])


# ---------------------------------------------------------------------------- save


@dataclass(frozen=True)
class SaveSummary(Screen):
    fields: FieldList
    offset: int = 0

    def _body(self, ctx: UiContext) -> list[str]:
        changed = self.fields.staged.changed()
        if not changed:
            return [_say("no_changes", ctx)]
        rows = [_say("save_q", ctx, n=len(changed))]
        for key, (old, new) in changed.items():
            fld = BY_KEY.get(key)
            if fld is None:
                continue
            rows.append("*" + label(fld.label, ctx.lang))
            rows.append(" " + format_value(fld, old, ctx.lang) + ">" + format_value(fld, new, ctx.lang))
        return rows

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key is Key.CANCEL:
            return Transition(self.fields)
        moved = _scroll(self.offset, len(self._body(ctx)), ctx.rows - 1, key)
        if moved is not None:
            return Transition(replace(self, offset=moved))
        if key is Key.ENTER:
            staged = self.fields.staged
            if not staged.changes:
                return Transition(self.fields)
            reason = "edited on the keypad: " + ", ".join(k for k, _ in staged.changes)
            # Rebased on the live settings: the password may have changed since the list opened.
            data = Staged(ctx.settings, staged.changes).data()
            return Transition(SaveWait(self.fields), (SaveSettings(data, reason),))
        return None

    def render(self, ctx: UiContext) -> Frame:
        footer = "enter_save" if self.fields.staged.changes else "enter_back"
        return _paged(ctx, self._body(ctx), self.offset, _say(footer, ctx))


@dataclass(frozen=True)
class SaveWait(Screen):
    """The app is validating and writing; it answers with SettingsSaved."""

    running = True
    fields: FieldList

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        if not isinstance(event, SettingsSaved):
            return Transition(self) if isinstance(event, KeyIn) else None
        if not event.ok:
            return Transition(ProblemsScreen(self.fields, tuple(event.problems.items()),
                                             self.fields.staged.data()))
        return _next_test(SelfTestRun(self.fields.root, event.self_tests, event.version), 0)

    def render(self, ctx: UiContext) -> Frame:
        return core.frame(ctx, [_say("saving", ctx), _say("please_wait", ctx)])


@dataclass(frozen=True)
class ProblemsScreen(Screen):
    """Each wrong field with its message (scrolls); ENTER/CANCEL back with the staged values."""

    back_to: Screen
    problems: tuple[tuple[str, str], ...]
    data: Mapping[str, Any] | None = None  # the data that failed: to say the problems in ctx.lang
    offset: int = 0
    title: str = "not_saved"

    def _body(self, ctx: UiContext) -> list[str]:
        local = local_problems(self.data, ctx.lang) if self.data is not None else {}
        texts = [local.get(key, text) for key, text in self.problems]
        return [_say(self.title, ctx), *_wrap_all(ctx, texts)]

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key in (Key.ENTER, Key.CANCEL):
            return Transition(self.back_to)
        moved = _scroll(self.offset, len(self._body(ctx)), ctx.rows, key)
        if moved is not None:
            return Transition(replace(self, offset=moved))
        return None

    def render(self, ctx: UiContext) -> Frame:
        return _paged(ctx, self._body(ctx), self.offset, None)


# ---------------------------------------------------------------------------- self-tests


@dataclass(frozen=True)
class SelfTestRun:
    root: GroupsScreen
    tests: tuple[str, ...]
    version: str  # the backup the save made: what a roll back restores


def _next_test(run: SelfTestRun, index: int) -> Transition:
    if index >= len(run.tests):
        return Transition(DoneScreen(run.root, "saved"))
    name = run.tests[index]
    if name == "display":
        return Transition(DisplayTest(run, index))
    return Transition(DiagWait(run, index), (RunDiag(name),))


@dataclass(frozen=True)
class DiagWait(Screen):
    running = True
    run: SelfTestRun
    index: int

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        name = self.run.tests[self.index]
        if isinstance(event, DiagResult) and event.name == name:
            if event.passed:
                return _next_test(self.run, self.index + 1)
            return Transition(TestFailed(self.run, name, event.reason, event.next_step))
        if _key(event) is Key.CANCEL:
            # The test's late answer is ignored; stopping it counts as a failure to decide on.
            return Transition(TestFailed(self.run, name, _say("stopped", ctx), ""))
        return Transition(self) if isinstance(event, KeyIn) else None

    def render(self, ctx: UiContext) -> Frame:
        name = _say(f"test_{self.run.tests[self.index]}", ctx)
        return core.frame(ctx, [_say("saved", ctx), _say("testing", ctx, name=name),
                                _say("please_wait", ctx)])


@dataclass(frozen=True)
class DisplayTest(Screen):
    """The test pattern phases (ENTER: next phase; CANCEL: straight to the question)."""

    running = True
    run: SelfTestRun
    index: int
    phase: int = 0

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key is Key.ENTER and self.phase < 3:
            return Transition(replace(self, phase=self.phase + 1))
        if key in (Key.ENTER, Key.CANCEL):
            return Transition(DisplayAsk(self.run, self.index))
        return Transition(self) if key is not None else None

    def render(self, ctx: UiContext) -> Frame:
        return core.frame(ctx, core.test_pattern(ctx.rows, ctx.cols, self.phase), icons=frozenset())


@dataclass(frozen=True)
class DisplayAsk(Screen):
    running = True
    run: SelfTestRun
    index: int

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key is Key.ENTER:
            step = _next_test(self.run, self.index + 1)
            return Transition(step.screen, (Audit("settings", "display self-test", "passed"), *step.commands))
        if key is Key.CANCEL:
            return Transition(TestFailed(self.run, "display", _say("display_failed", ctx),
                                         _say("display_next", ctx)),
                              (Audit("settings", "display self-test", "failed"),))
        return None

    def render(self, ctx: UiContext) -> Frame:
        return core.frame(ctx, [_say("all_cells_q", ctx), _say("yes_no", ctx), _say("no_cancel", ctx)])


@dataclass(frozen=True)
class TestFailed(Screen):
    """'Self-test failed: reason / next step', then 1 Keep, 2 Roll back. No timeout (running):
    the settings are already live, so keeping them must be the operator's explicit choice."""

    running = True
    run: SelfTestRun
    test: str
    reason: str
    next_step: str
    offset: int = 0

    def _body(self, ctx: UiContext) -> list[str]:
        name = _say(f"test_{self.test}", ctx) if f"test_{self.test}" in CATALOG else self.test
        return [_say("test_failed", ctx), *_wrap_all(ctx, [f"{name}: {self.reason}", self.next_step])]

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key is Key.D1:
            return Transition(DoneScreen(self.run.root, "kept"),
                              (Audit("settings", f"self-test {self.test} failed", "kept"),))
        if key is Key.D2:
            return Transition(RollBackWait(self.run.root),
                              (Audit("settings", f"self-test {self.test} failed", "roll back"),
                               RollBackSettings(self.run.version)))
        moved = _scroll(self.offset, len(self._body(ctx)), ctx.rows - 1, key)
        if moved is not None:
            return Transition(replace(self, offset=moved))
        return Transition(self) if key is not None else None

    def render(self, ctx: UiContext) -> Frame:
        return _paged(ctx, self._body(ctx), self.offset, _say("keep_or_roll", ctx))


@dataclass(frozen=True)
class RollBackWait(Screen):
    running = True
    root: GroupsScreen

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        if isinstance(event, SettingsSaved):
            if event.ok:
                return Transition(DoneScreen(self.root, "rolled_back"))
            return Transition(ProblemsScreen(self.root, tuple(event.problems.items()),
                                             title="roll_back_failed"))
        return Transition(self) if isinstance(event, KeyIn) else None

    def render(self, ctx: UiContext) -> Frame:
        return core.frame(ctx, [_say("rolling_back", ctx), _say("please_wait", ctx)])


@dataclass(frozen=True)
class DoneScreen(Screen):
    back_to: Screen
    message: str

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        if _key(event) in (Key.ENTER, Key.CANCEL):
            return Transition(self.back_to)
        return None

    def render(self, ctx: UiContext) -> Frame:
        return _paged(ctx, core.wrap(_say(self.message, ctx), ctx.cols), 0, _say("enter_back", ctx))


# ---------------------------------------------------------------------------- restore, factory, history


@dataclass(frozen=True)
class ConfirmScreen(Screen):
    """Restore previous / factory defaults: what will happen; ENTER does it, CANCEL changes nothing."""

    root: GroupsScreen
    action: str  # "restore_previous" | "factory_defaults"
    offset: int = 0

    def _body(self, ctx: UiContext) -> list[str]:
        text = "restore_text" if self.action == "restore_previous" else "factory_text"
        return [_say(self.action, ctx) + "?", *_wrap_all(ctx, [_say(text, ctx)])]

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key is Key.CANCEL:
            return Transition(self.root)
        if key is Key.ENTER:
            command = RestorePrevious() if self.action == "restore_previous" else FactoryDefaults()
            return Transition(ActionWait(self.root), (command,))
        moved = _scroll(self.offset, len(self._body(ctx)), ctx.rows - 1, key)
        if moved is not None:
            return Transition(replace(self, offset=moved))
        return None

    def render(self, ctx: UiContext) -> Frame:
        return _paged(ctx, self._body(ctx), self.offset, _say("yes_no", ctx))


@dataclass(frozen=True)
class ActionWait(Screen):
    running = True
    root: GroupsScreen

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        if isinstance(event, SettingsSaved):
            if not event.ok:
                return Transition(ProblemsScreen(self.root, tuple(event.problems.items())))
            return _next_test(SelfTestRun(self.root, event.self_tests, event.version), 0)
        return Transition(self) if isinstance(event, KeyIn) else None

    def render(self, ctx: UiContext) -> Frame:
        return core.frame(ctx, [_say("restoring", ctx), _say("please_wait", ctx)])


@dataclass(frozen=True)
class HistoryWait(Screen):
    root: GroupsScreen

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        if isinstance(event, DiagResult) and event.name == "settings_history":
            lines = event.lines if event.passed else (event.reason, event.next_step)
            return Transition(HistoryScreen(self.root, tuple(line for line in lines if line)))
        if _key(event) is Key.CANCEL:
            return Transition(self.root)
        return None

    def render(self, ctx: UiContext) -> Frame:
        return core.frame(ctx, [_say("history", ctx), _say("loading", ctx)])


@dataclass(frozen=True)
class HistoryScreen(Screen):
    root: GroupsScreen
    lines: tuple[str, ...]
    offset: int = 0

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key in (Key.ENTER, Key.CANCEL):
            return Transition(self.root)
        moved = _scroll(self.offset, len(_history_rows(self.lines, ctx.cols)), ctx.rows - 1, key)
        if moved is not None:
            return Transition(replace(self, offset=moved))
        return None

    def render(self, ctx: UiContext) -> Frame:
        room = ctx.rows - 1
        rows = _history_rows(self.lines, ctx.cols)[self.offset:self.offset + room]
        return core.frame(ctx, [_say("history", ctx), *rows])


def _history_rows(lines: tuple[str, ...], cols: int) -> list[str]:
    """Long reasons wrap onto indented rows (store.history_lines indents reasons by one space)."""
    rows: list[str] = []
    for line in lines:
        indent = " " if line.startswith(" ") else ""
        rows += [indent + part for part in (core.wrap(line.strip(), cols - len(indent)) or [""])]
    return rows


# ---------------------------------------------------------------------------- password


@dataclass(frozen=True)
class PasswordEntry(Screen):
    """New supervisor password, typed twice, masked. No digit is in repr (sensitive screen)."""

    sensitive = True
    fields: FieldList
    first: str | None = field(default=None, repr=False)  # the first entry, once typed
    digits: str = field(default="", repr=False)
    error: str = ""

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key is Key.CANCEL:
            return Transition(self.fields)
        if key is Key.CLEAR:
            return Transition(replace(self, digits=self.digits[:-1], error=""))
        typed = "00" if key is Key.D00 else _DIGITS.get(key) if key is not None else None
        if typed is not None:
            return Transition(replace(self, digits=(self.digits + typed)[:12], error=""))
        if key is not Key.ENTER:
            return None
        if self.first is None:
            if not 6 <= len(self.digits) <= 12:
                return Transition(replace(self, digits="", error="password_rule"))
            if self.digits == FACTORY_PASSWORD:
                return Transition(replace(self, digits="", error="password_factory"))
            return Transition(PasswordEntry(self.fields, first=self.digits))
        if self.digits != self.first:
            return Transition(PasswordEntry(self.fields, error="password_mismatch"))
        return Transition(PasswordWait(self.fields), (ChangePassword(self.digits),))

    def render(self, ctx: UiContext) -> Frame:
        prompt = "new_password" if self.first is None else "repeat_password"
        bottom = _say(self.error, ctx) if self.error else _say("password_rule", ctx)
        return core.frame(ctx, [_say("change_password", ctx), _say(prompt, ctx),
                                core.right("*" * len(self.digits), ctx.cols), bottom])


@dataclass(frozen=True)
class PasswordWait(Screen):
    running = True
    fields: FieldList

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        if isinstance(event, SettingsSaved):
            if event.ok:
                return Transition(DoneScreen(self.fields, "password_changed"))
            return Transition(ProblemsScreen(self.fields, tuple(event.problems.items())))
        return Transition(self) if isinstance(event, KeyIn) else None

    def render(self, ctx: UiContext) -> Frame:
        return core.frame(ctx, [_say("change_password", ctx), _say("please_wait", ctx)])
