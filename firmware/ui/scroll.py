"""Read-only scrolling text: a title row over wrapped lines that UP/DOWN move a row at a time.

Used for reports, About, diagnostics output and every message too long for the LCD; `paged()`
and `scrolled()` are the drawing and key rules the result and confirm screens share.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from firmware.ports import Frame, Key
from firmware.ui import core
from firmware.ui.texts import words

MORE_BELOW = "v"
MORE_ABOVE = "^"


def wrap_all(lines: list[str] | tuple[str, ...], cols: int) -> list[str]:
    """Each line wrapped to cols cells; an empty line stays an empty row."""
    rows: list[str] = []
    for line in lines:
        rows.extend(core.wrap(line, cols) or [""])
    return rows


def body_rows(ctx: core.UiContext) -> int:
    return max(1, ctx.rows - 1)


def clamp_top(top: int, total: int, ctx: core.UiContext) -> int:
    return max(0, min(top, total - body_rows(ctx)))


def paged(ctx: core.UiContext, title: str, body: list[str], top: int = 0,
          inverse_row: int | None = None) -> Frame:
    """Title row plus the window of body rows starting at top; the title's right edge says
    whether more rows wait above (^) or below (v), so nothing is cut without a sign."""
    top = clamp_top(top, len(body), ctx)
    window = body[top: top + body_rows(ctx)]
    marks = (MORE_ABOVE if top > 0 else "") + (MORE_BELOW if top + len(window) < len(body) else "")
    head = core.pad(title, ctx.cols - len(marks)) + marks if marks else title
    return core.frame(ctx, [head, *window], inverse_row)


def scrolled(key: Key, top: int, total: int, ctx: core.UiContext) -> int | None:
    """The new top row after UP/DOWN, or None when the key is not a scroll key or moves nothing."""
    if key not in (Key.UP, Key.DOWN):
        return None
    current = clamp_top(top, total, ctx)
    moved = clamp_top(current + (1 if key is Key.DOWN else -1), total, ctx)
    return moved if moved != current else None


@dataclass(frozen=True)
class ScrollScreen(core.Screen):
    """Lines to read; CANCEL or ENTER goes back. translate: the title and lines are catalog keys
    (or words) rendered in the current language, so a refusal follows a language switch."""

    title: str
    lines: tuple[str, ...]
    back: core.Screen
    top: int = 0
    translate: bool = False

    def rows(self, ctx: core.UiContext) -> list[str]:
        lines = [words(ctx, line) for line in self.lines] if self.translate else list(self.lines)
        return wrap_all(lines, ctx.cols)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if not isinstance(event, core.KeyIn):
            return None
        if event.key in (Key.CANCEL, Key.ENTER):
            return core.Transition(self.back)
        top = scrolled(event.key, self.top, len(self.rows(ctx)), ctx)
        if top is not None:
            return core.Transition(replace(self, top=top))
        return core.Transition(self)  # digits and the rest do nothing here

    def render(self, ctx: core.UiContext) -> Frame:
        return paged(ctx, words(ctx, self.title), self.rows(ctx), self.top)


def message(key: str, back: core.Screen, title: str = "") -> ScrollScreen:
    """A refusal or problem in words (a catalog key), read and dismissed with ENTER or CANCEL."""
    return ScrollScreen(title, (key,), back, translate=True)
