"""The menu tree as one table (MENUS), the menu screen that walks it, and the few menu entries
that are not operations: settings, diagnostics, the language switch and About.

A menu shows a title row and a window of items (3 rows at 4x16); the selected item is inverse.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import ClassVar

from firmware.ports import Frame, Key
from firmware.ui import core
from firmware.ui.entry import DIGITS, PasswordEntry
from firmware.ui.scroll import ScrollScreen
from firmware.ui.texts import t
from firmware.ui.txn import STEPS, open_flow


@dataclass(frozen=True)
class MenuItem:
    label: str  # catalog key
    shortcut: str  # the digit that picks it (every item has one: a menu holds at most ten)
    opens: str  # "menu:<name>", an operation of txn.STEPS, or one of MENU_ACTIONS


MENU_ACTIONS = ("settings", "diagnostics", "language", "about", "held_park", "held_list", "deregister",
                "operators", "sign_out", "tills")

# menu name -> (title key, items). The machine.py docstring draws this table.
MENUS: dict[str, tuple[str, tuple[MenuItem, ...]]] = {
    "main": ("menu_main", (
        MenuItem("op_sale", "1", "sale"),
        MenuItem("op_void", "2", "void"),
        MenuItem("op_refund", "3", "refund"),
        MenuItem("op_balance", "4", "balance"),
        MenuItem("menu_preauth", "5", "menu:preauth"),
        MenuItem("menu_settlement", "6", "menu:settlement"),
        MenuItem("menu_reprint", "7", "menu:reprint"),
        MenuItem("menu_reports", "8", "menu:reports"),
        MenuItem("menu_held", "9", "menu:held"),
        MenuItem("menu_manage", "0", "menu:manage"),
    )),
    # what a supervisor or the support line asks for, away from the day's operations
    "manage": ("menu_manage", (
        MenuItem("menu_settings", "1", "settings"),
        MenuItem("menu_diag", "2", "diagnostics"),
        MenuItem("op_sign_on", "3", "sign_on"),
        MenuItem("op_sign_off", "4", "sign_off"),
        MenuItem("menu_language", "5", "language"),
        MenuItem("menu_about", "6", "about"),
        MenuItem("menu_deregister", "7", "deregister"),
        MenuItem("menu_operators", "8", "operators"),
        MenuItem("menu_sign_out", "9", "sign_out"),
        MenuItem("menu_tills", "0", "tills"),
    )),
    "held": ("menu_held", (
        MenuItem("item_held_park", "1", "held_park"),
        MenuItem("item_held_list", "2", "held_list"),
    )),
    "preauth": ("menu_preauth", (
        MenuItem("op_preauth", "1", "preauth"),
        MenuItem("op_completion", "2", "completion"),
        MenuItem("op_preauth_void", "3", "preauth_void"),
        MenuItem("item_completion_void", "4", "completion_void"),
    )),
    "settlement": ("menu_settlement", (
        MenuItem("item_settle", "1", "settle"),
        MenuItem("op_subtotals", "2", "subtotals"),
        MenuItem("item_reprint_settlement", "3", "reprint_settlement"),
    )),
    "reprint": ("menu_reprint", (
        MenuItem("item_reprint_last", "1", "reprint_last"),
        MenuItem("item_reprint_voucher", "2", "reprint_voucher"),
    )),
    "reports": ("menu_reports", (
        MenuItem("op_report_list", "1", "report_list"),
        MenuItem("op_report_totals", "2", "report_totals"),
    )),
}


def menu_paths(name: str = "main", prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], MenuItem]]:
    """Every leaf of the tree with the keys that reach it from the menu (docs and tests walk it)."""
    paths = []
    for item in MENUS[name][1]:
        keys = (*prefix, item.shortcut)
        if item.opens.startswith("menu:"):
            paths += menu_paths(item.opens.removeprefix("menu:"), keys)
        else:
            paths.append((keys, item))
    return paths


def _settings_root(back: core.Screen) -> core.Screen:
    from firmware.ui.settings_screens import settings_root  # another helper's module: import late

    return settings_root(back)


def _diag_root(back: core.Screen) -> core.Screen:
    from firmware.ui.diag_screens import diag_root  # another helper's module: import late

    return diag_root(back)


@dataclass(frozen=True)
class MenuScreen(core.Screen):
    name: str
    back: core.Screen
    selected: int = 0
    top: int = 0

    @property
    def items(self) -> tuple[MenuItem, ...]:
        return MENUS[self.name][1]

    def window_top(self, ctx: core.UiContext) -> int:
        visible = max(1, ctx.rows - 1)
        top = min(self.top, self.selected)
        if self.selected >= top + visible:
            top = self.selected - visible + 1
        return max(0, min(top, len(self.items) - visible))

    def moved(self, selected: int, ctx: core.UiContext) -> MenuScreen:
        return replace(self, selected=selected, top=replace(self, selected=selected).window_top(ctx))

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if not isinstance(event, core.KeyIn):
            return None
        key, count = event.key, len(self.items)
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.UP:
            return core.Transition(self.moved((self.selected - 1) % count, ctx))
        if key is Key.DOWN:
            return core.Transition(self.moved((self.selected + 1) % count, ctx))
        if key is Key.ENTER:
            return self.open(self.selected, ctx)
        if key in DIGITS:
            for index, item in enumerate(self.items):
                if item.shortcut == DIGITS[key]:
                    return self.open(index, ctx)
        return core.Transition(self)

    def open(self, index: int, ctx: core.UiContext) -> core.Transition:
        here = self.moved(index, ctx)  # CANCEL from what opens comes back to this item
        target = self.items[index].opens
        if target.startswith("menu:"):
            return core.Transition(MenuScreen(target.removeprefix("menu:"), here))
        if target in STEPS:
            return open_flow(target, here, ctx)
        if target == "settings":
            return core.Transition(PasswordEntry("settings", partial(_settings_root, here), here))
        if target == "diagnostics":
            return core.Transition(_diag_root(here))
        if target == "language":
            return switch_language(here, ctx)
        if target == "held_park":
            from firmware.ui.held_screens import park_flow  # a companion's screens: import late

            return core.Transition(park_flow(here))
        if target == "held_list":
            from firmware.ui.held_screens import held_root

            return core.Transition(held_root(here))
        if target == "deregister":
            from firmware.ui.dereg_screens import deregister_root

            return core.Transition(deregister_root(here))
        if target == "operators":
            from firmware.ui.operator_screens import operators_root  # import late, as held's

            return core.Transition(operators_root(here))
        if target == "sign_out":
            from firmware.ui.operator_screens import sign_out

            return sign_out(here, ctx)
        if target == "tills":
            from firmware.ui.pairing_screens import tills_root  # the supervisor's: password first

            return core.Transition(tills_root(here))
        if target == "about":
            return core.Transition(AboutScreen(here), (core.RunDiag("version"),))
        raise ValueError(f"menu item opens {target!r}, which nothing handles")

    def label(self, item: MenuItem, ctx: core.UiContext) -> str:
        text = f"{item.shortcut} {t(ctx, item.label)}"
        return core.pad(text, ctx.cols - 1) + ">" if item.opens.startswith("menu:") else text

    def render(self, ctx: core.UiContext) -> Frame:
        top = self.window_top(ctx)
        visible = self.items[top: top + max(1, ctx.rows - 1)]
        position = f"{self.selected + 1}/{len(self.items)}"
        title = core.pad(t(ctx, MENUS[self.name][0]), ctx.cols - len(position)) + position
        rows = [title, *(self.label(item, ctx) for item in visible)]
        return core.frame(ctx, rows, inverse_row=1 + self.selected - top)


def other_language(lang: str) -> str:
    return "en" if lang.startswith("zh") else "zh_CN"


def switch_language(back: core.Screen, ctx: core.UiContext) -> core.Transition:
    target = other_language(ctx.lang)
    data = {group: dict(values) for group, values in ctx.settings.items()}
    data.setdefault("display", {})["language"] = target
    return core.Transition(LanguageSwitch(back, target), (core.SaveSettings(data, "language switch"),))


@dataclass(frozen=True)
class LanguageSwitch(core.Screen):
    """Waits for SettingsSaved after the language switch; a refusal is shown in words."""

    staged: ClassVar[bool] = False  # waits for the app, holds nothing typed

    back: core.Screen
    target: str

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.SettingsSaved):
            if event.ok:
                return core.Transition(self.back)
            problems = tuple(f"{name}: {why}" for name, why in event.problems.items())
            return core.Transition(ScrollScreen("language_not_saved", problems, self.back))
        if isinstance(event, core.KeyIn):
            # the save may still land; CANCEL only stops waiting for its answer here
            return core.Transition(self.back if event.key is Key.CANCEL else self)
        return None

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [t(ctx, "menu_language"), t(ctx, "saving")])


@dataclass(frozen=True)
class AboutScreen(core.Screen):
    """Waits for RunDiag("version"), then shows its lines in a scroll screen."""

    back: core.Screen

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.DiagResult) and event.name == "version":
            lines = event.lines or (event.reason,)
            return core.Transition(ScrollScreen("menu_about", tuple(lines), self.back))
        if isinstance(event, core.KeyIn):
            return core.Transition(self.back if event.key is Key.CANCEL else self)
        return None

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [t(ctx, "menu_about"), t(ctx, "reading")])
