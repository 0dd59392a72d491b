"""The Diagnostics menu and its screens: tests the app runs (RunDiag -> DiagResult), the card
reader, keypad and display tests that run on the screen itself, and the PASS/FAIL result view.

Theory of operation. The menu opens a test. Tests that need the app emit RunDiag(name) and
show DiagRunning, which waits for the DiagResult of that name; CANCEL leaves at once, and a
result that arrives afterwards finds a screen that does not claim it, so it is dropped. A
result is shown by DiagResultScreen: PASS/FAIL on row 0, then the reason, the next step and
the detail lines, wrapped to the LCD and scrolled with UP/DOWN.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from firmware.digits import is_digits
from firmware.logmask import mask_text
from firmware.ports import Frame, Icon, Key, text_cells
from firmware.ui.core import (
    Audit,
    CardPresented,
    CardRefused,
    Catalog,
    ChipSeen,
    DiagResult,
    DropCard,
    RunDiag,
    Screen,
    Tick,
    Transition,
    UiContext,
    UiEvent,
    center,
    fit,
    frame,
    key_of,
    pan_text,
    pick_frame,
    right,
    say,
    test_pattern,
    wrap,
)

CATALOG: Catalog = {
    "title": ("Diagnostics", "诊断"),
    "item_printer": ("Printer test", "打印机测试"),
    "item_reader": ("Card reader", "读卡器测试"),
    "item_keypad": ("Keypad test", "键盘测试"),
    "item_display": ("Display test", "显示屏测试"),
    "item_echo": ("Echo test", "联机测试"),
    "item_network": ("Network info", "网络信息"),
    "item_journal": ("Journal check", "流水检查"),
    "item_log": ("Log viewer", "查看日志"),
    "item_version": ("Version", "版本信息"),
    "item_firmware": ("Firmware", "固件分区"),
    "testing": ("Testing... {s}s", "测试中... {s}秒"),
    "printing": ("Printing... {s}s", "打印中... {s}秒"),
    "cancel_back": ("CANCEL: back", "取消: 返回"),
    "pass": ("PASS", "通过"),
    "fail": ("FAIL", "失败"),
    "next": ("Next: {step}", "下一步:{step}"),
    "reader_title": ("Card reader test", "读卡器测试"),
    "reader_prompt": ("Swipe or insert a card", "请刷卡或插卡"),
    "reader_hint": ("F1: link check", "F1: 链路检查"),
    "chip_in": ("Chip card present", "IC卡已插入"),
    "chip_out": ("Chip card removed", "IC卡已拔出"),
    "mode_swipe": ("Swipe", "刷卡"),
    "mode_fallback": ("Fallback", "降级刷卡"),
    "expiry": ("Exp {mm}/{yy}", "有效期{mm}/{yy}"),
    "keypad_title": ("Keypad test", "键盘测试"),
    "keypad_prompt": ("Press each key", "请逐个按键"),
    "keypad_seen": ("Keys seen: {n}/{total}", "已按键: {n}/{total}"),
    "keypad_exit": ("CANCEL x2: exit", "按两次取消退出"),
    "keypad_left": ("Not yet: {keys}", "未按: {keys}"),
    "display_title": ("Display test", "显示屏测试"),
    "display_question": ("All cells shown?", "所有点都显示?"),
    "display_pass_key": ("ENTER=PASS", "确认=通过"),
    "display_fail_key": ("CANCEL=FAIL", "取消=失败"),
    "display_passed": ("Every display cell was shown", "显示屏所有点正常"),
    "display_failed": ("Some display cells did not show", "显示屏有点不显示"),
    "display_pass_next": ("Nothing to do", "无需操作"),
    "display_fail_next": ("Call support to replace the display", "请联系维护更换显示屏"),
}

# Menu order: (catalog key of the label, what opening it does).
ITEMS: tuple[tuple[str, str], ...] = (
    ("item_printer", "printer"),
    ("item_reader", "reader_test"),
    ("item_keypad", "keypad_test"),
    ("item_display", "display_test"),
    ("item_echo", "echo"),
    ("item_network", "network"),
    ("item_journal", "journal"),
    ("item_log", "log"),
    ("item_version", "version"),
    ("item_firmware", "firmware"),  # both slots, which runs and why (docs/updates.md)
)
DIAG_TITLES = {"printer": "item_printer", "reader": "item_reader", "echo": "item_echo",
               "network": "item_network", "journal": "item_journal", "log": "item_log",
               "version": "item_version", "firmware": "item_firmware"}
DIGITS = {Key.D1: 0, Key.D2: 1, Key.D3: 2, Key.D4: 3, Key.D5: 4, Key.D6: 5, Key.D7: 6, Key.D8: 7,
          Key.D9: 8, Key.D0: 9}

# Each key's name as the keypad test shows it: English and Chinese together, so an
# operator can read it whatever the language setting.
KEY_NAMES: dict[Key, str] = {
    **{key: key.value for key in (Key.D0, Key.D1, Key.D2, Key.D3, Key.D4, Key.D5, Key.D6, Key.D7,
                                  Key.D8, Key.D9, Key.D00)},
    Key.DOT: "DOT . (点)",
    Key.ENTER: "ENTER (确认)",
    Key.CANCEL: "CANCEL (取消)",
    Key.CLEAR: "CLEAR (清除)",
    Key.UP: "UP (向上)",
    Key.DOWN: "DOWN (向下)",
    Key.F1: "F1",
    Key.F2: "F2",
    Key.F3: "F3",
    Key.F4: "F4",
    Key.MENU: "MENU (菜单)",
}
PATTERN_PHASES = 4


def diag_root(back: Screen) -> Screen:
    """The Diagnostics menu; CANCEL returns to back."""
    return DiagMenu(back)


_key = key_of


# ---------------------------------------------------------------------------- menu


@dataclass(frozen=True)
class DiagMenu(Screen):
    back: Screen
    selected: int = 0

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key is Key.CANCEL:
            return Transition(self.back)
        if key is Key.UP:
            return Transition(replace(self, selected=(self.selected - 1) % len(ITEMS)))
        if key is Key.DOWN:
            return Transition(replace(self, selected=(self.selected + 1) % len(ITEMS)))
        if key is Key.ENTER:
            return self._open(self.selected, ctx)
        if key in DIGITS:
            return self._open(DIGITS[key], ctx)
        return None

    def _open(self, index: int, ctx: UiContext) -> Transition:
        here = replace(self, selected=index)  # coming back, the menu shows what was opened
        action = ITEMS[index][1]
        if action == "reader_test":
            return Transition(ReaderTest(here))
        if action == "keypad_test":
            return Transition(KeypadTest(here))
        if action == "display_test":
            return Transition(DisplayTest(here))
        return Transition(DiagRunning(here, action, ctx.mono), (RunDiag(action),))

    def render(self, ctx: UiContext) -> Frame:
        rows = [f"{(index + 1) % 10} {say(CATALOG, item[0], ctx.lang)}"
                for index, item in enumerate(ITEMS)]
        return pick_frame(ctx, say(CATALOG, "title", ctx.lang), rows, self.selected)


# ---------------------------------------------------------------------------- waiting for the app


@dataclass(frozen=True)
class DiagRunning(Screen):
    """A test the app runs: elapsed seconds until its DiagResult; CANCEL leaves (result dropped)."""

    running = True  # the app is working: the idle timeout must not cut the test short
    back: Screen
    name: str
    started: float

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        if isinstance(event, DiagResult) and event.name == self.name:
            return Transition(DiagResultScreen(self.back, event))
        if _key(event) is Key.CANCEL:
            return Transition(self.back)
        if isinstance(event, Tick):
            return Transition(self)
        return None

    def render(self, ctx: UiContext) -> Frame:
        seconds = max(0, int(ctx.mono - self.started))
        progress = "printing" if self.name == "printer" else "testing"
        title = say(CATALOG, DIAG_TITLES.get(self.name, "title"), ctx.lang)
        lines = [title, say(CATALOG, progress, ctx.lang, s=seconds)]
        lines += [""] * (ctx.rows - 3)
        lines.append(say(CATALOG, "cancel_back", ctx.lang))
        return frame(ctx, lines)

    def next_wakeup(self, ctx: UiContext) -> float | None:
        elapsed = max(0.0, ctx.mono - self.started)
        return self.started + int(elapsed) + 1  # the next whole second of the counter


# ---------------------------------------------------------------------------- verdicts


def _verdict_body(ctx: UiContext, reason: str, next_step: str, lines: tuple[str, ...]) -> list[str]:
    body = wrap(reason, ctx.cols)
    if next_step:
        body += wrap(say(CATALOG, "next", ctx.lang, step=next_step), ctx.cols)
    for line in lines:
        body += wrap(line, ctx.cols) or [""]
    return body


def _verdict_frame(ctx: UiContext, passed: bool, body: list[str], top: int) -> Frame:
    word = say(CATALOG, "pass" if passed else "fail", ctx.lang)
    header = f"== {word} =="
    visible = max(1, ctx.rows - 1)
    if len(body) > visible:
        # Where the view is in the body, so the operator knows there is more to scroll.
        position = f"{top + 1}/{len(body)}"
        left = fit(header, ctx.cols - text_cells(position) - 1)
        header = left + right(position, ctx.cols - text_cells(left))
    else:
        header = center(header, ctx.cols)
    # FAIL is drawn inverse so it stands out from PASS even at a glance.
    return frame(ctx, [header, *body[top: top + visible]], inverse_row=None if passed else 0)


def _scroll(top: int, key: Key | None, body_rows: int, ctx: UiContext) -> int | None:
    """The new first body row for UP/DOWN, or None for any other key."""
    last_top = max(0, body_rows - max(1, ctx.rows - 1))
    if key is Key.UP:
        return max(0, top - 1)
    if key is Key.DOWN:
        return min(last_top, top + 1)
    return None


@dataclass(frozen=True)
class DiagResultScreen(Screen):
    """A check's result from the app (already in words); ENTER or CANCEL goes back."""

    back: Screen
    result: DiagResult
    top: int = 0

    def _body(self, ctx: UiContext) -> list[str]:
        r = self.result
        return _verdict_body(ctx, r.reason, r.next_step, r.lines)

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key in (Key.CANCEL, Key.ENTER):
            return Transition(self.back)
        top = _scroll(self.top, key, len(self._body(ctx)), ctx)
        return None if top is None else Transition(replace(self, top=top))

    def render(self, ctx: UiContext) -> Frame:
        return _verdict_frame(ctx, self.result.passed, self._body(ctx), self.top)


@dataclass(frozen=True)
class DisplayVerdict(Screen):
    """The display test's result, as the operator judged it."""

    back: Screen
    passed: bool
    top: int = 0

    def _body(self, ctx: UiContext) -> list[str]:
        reason, step = (("display_passed", "display_pass_next") if self.passed
                        else ("display_failed", "display_fail_next"))
        return _verdict_body(ctx, say(CATALOG, reason, ctx.lang), say(CATALOG, step, ctx.lang), ())

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key in (Key.CANCEL, Key.ENTER):
            return Transition(self.back)
        top = _scroll(self.top, key, len(self._body(ctx)), ctx)
        return None if top is None else Transition(replace(self, top=top))

    def render(self, ctx: UiContext) -> Frame:
        return _verdict_frame(ctx, self.passed, self._body(ctx), self.top)


# ---------------------------------------------------------------------------- card reader


@dataclass(frozen=True)
class ReaderTest(Screen):
    """Shows what the reader saw: masked PAN, entry mode, expiry, chip slot; F1: link check."""

    card_purpose = "test"
    back: Screen
    pan_masked: str | None = None
    entry_mode: str | None = None
    expiry: str | None = None
    chip: bool | None = None
    refused: str | None = None  # catalog key of the last refusal
    latest: str = ""  # "card" | "chip" | "refused": shown first

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        if isinstance(event, CardPresented):
            # Masked again: whatever the app passes, no more than first 6 / last 4 reaches the LCD.
            return Transition(replace(self, pan_masked=mask_text(event.pan_masked),
                                      entry_mode=event.entry_mode, expiry=event.expiry,
                                      refused=None, latest="card"))
        if isinstance(event, ChipSeen):
            return Transition(replace(self, chip=event.inserted, latest="chip"))
        if isinstance(event, CardRefused):
            return Transition(replace(self, refused=event.message_key, latest="refused"))
        key = _key(event)
        if key is Key.F1:
            return Transition(DiagRunning(self, "reader", ctx.mono), (RunDiag("reader"),))
        if key is Key.CANCEL:
            return Transition(self.back, (DropCard(),))
        return None

    def _card_lines(self, ctx: UiContext) -> list[str]:
        if self.pan_masked is None:
            return []
        mode = {"swipe": "mode_swipe", "fallback": "mode_fallback"}.get(self.entry_mode or "")
        details = [say(CATALOG, mode, ctx.lang) if mode else (self.entry_mode or "")]
        expiry = self.expiry or ""
        if len(expiry) == 4 and is_digits(expiry):
            details.append(say(CATALOG, "expiry", ctx.lang, mm=expiry[2:], yy=expiry[:2]))
        return [pan_text(self.pan_masked, ctx.cols), " ".join(d for d in details if d)]

    def render(self, ctx: UiContext) -> Frame:
        parts = {
            "card": self._card_lines(ctx),
            "chip": [] if self.chip is None else wrap(
                say(CATALOG, "chip_in" if self.chip else "chip_out", ctx.lang), ctx.cols),
            "refused": [] if self.refused is None else wrap(say(CATALOG, self.refused, ctx.lang), ctx.cols),
        }
        order = [self.latest] + [name for name in ("card", "chip", "refused") if name != self.latest]
        body = [line for name in order if name for line in parts[name]]
        if not body:
            body = wrap(say(CATALOG, "reader_prompt", ctx.lang), ctx.cols)
        lines = [say(CATALOG, "reader_title", ctx.lang), *body[: ctx.rows - 1]]
        if len(lines) < ctx.rows:
            lines += [""] * (ctx.rows - 1 - len(lines))
            lines.append(say(CATALOG, "reader_hint", ctx.lang))
        return frame(ctx, lines)


# ---------------------------------------------------------------------------- keypad


@dataclass(frozen=True)
class KeypadTest(Screen):
    """Names every key pressed and counts the distinct ones; CANCEL twice in a row leaves."""

    back: Screen
    seen: frozenset[Key] = frozenset()
    last: Key | None = None

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key is Key.CANCEL and self.last is Key.CANCEL:
            return Transition(self.back)
        return Transition(replace(self, seen=self.seen | {key}, last=key))

    def render(self, ctx: UiContext) -> Frame:
        name = KEY_NAMES[self.last] if self.last is not None else say(CATALOG, "keypad_prompt", ctx.lang)
        lines = [say(CATALOG, "keypad_title", ctx.lang), center(name, ctx.cols),
                 say(CATALOG, "keypad_seen", ctx.lang, n=len(self.seen), total=len(Key))]
        if ctx.rows > 4:  # room to list the keys still to press
            left = " ".join(key.value for key in Key if key not in self.seen)
            if left:
                lines += wrap(say(CATALOG, "keypad_left", ctx.lang, keys=left), ctx.cols)[: ctx.rows - 4]
        lines += [""] * (ctx.rows - 1 - len(lines))
        lines.append(say(CATALOG, "keypad_exit", ctx.lang))
        return frame(ctx, lines)


# ---------------------------------------------------------------------------- display


@dataclass(frozen=True)
class DisplayTest(Screen):
    """Test patterns (core.test_pattern phases 0-3, ENTER next), then the operator's verdict."""

    back: Screen
    phase: int = 0  # 0-3: patterns; PATTERN_PHASES: the question

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = _key(event)
        asking = self.phase >= PATTERN_PHASES
        if key is Key.ENTER:
            if not asking:
                return Transition(replace(self, phase=self.phase + 1))
            return Transition(DisplayVerdict(self.back, True),
                              (Audit("diagnostics", "display test", "pass"),))
        if key is Key.CANCEL:
            if not asking:
                return Transition(self.back)
            return Transition(DisplayVerdict(self.back, False),
                              (Audit("diagnostics", "display test", "fail"),))
        return None

    def render(self, ctx: UiContext) -> Frame:
        if self.phase < PATTERN_PHASES:
            # Phase 0 lights every status icon too, so a dead icon segment shows.
            icons = frozenset(Icon) if self.phase == 0 else frozenset()
            return frame(ctx, test_pattern(ctx.rows, ctx.cols, self.phase), icons=icons)
        lines = [say(CATALOG, "display_title", ctx.lang), say(CATALOG, "display_question", ctx.lang),
                 say(CATALOG, "display_pass_key", ctx.lang), say(CATALOG, "display_fail_key", ctx.lang)]
        return frame(ctx, lines)
