"""Screens named by a route (core.Go) and built by the Ui: an unknown route fails loudly by its
name, a Go that leads to another Go is followed, a route's commands are kept, a screen holding a
Go still compares by value, and every route a screen module names is in machine.ROUTES."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from firmware.ports import Frame, Key
from firmware.ui import core, machine
from firmware.ui.idle import IdleScreen
from firmware.ui.results import ResultScreen, result_screen
from firmware.ui.review_screens import SettleResult

UI = Path(__file__).resolve().parents[1] / "firmware" / "ui"
CTX = core.UiContext(now=datetime(2025, 5, 1, 10, 0), mono=100.0)


@dataclass(frozen=True)
class Marker(core.Screen):
    """A screen that draws its name and, on ENTER, goes where it was told."""

    name: str
    then: core.Transition | None = None

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.KeyIn) and event.key is Key.ENTER:
            return self.then
        return None

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [self.name])


HOME = Marker("home")


def ui_at(then: core.Transition, routes: dict[str, core.Route] | None = None) -> core.Ui:
    ui = core.Ui(lambda: HOME, lambda o, s: s, lambda e, s: s, routes=routes or {})
    ui.screen = Marker("start", then)
    return ui


def enter(ui: core.Ui) -> core.Output:
    return ui.feed(core.KeyIn(Key.ENTER), CTX)


def test_an_unknown_route_fails_loudly_with_its_name() -> None:
    ui = ui_at(core.Transition(core.Go("nowhere")))
    with pytest.raises(LookupError, match=r"'nowhere'.*build_ui"):
        enter(ui)


def test_a_go_leading_to_another_go_is_followed() -> None:
    routes: dict[str, core.Route] = {
        "first": lambda n: core.Go("second", (n + 1,)),
        "second": lambda n: Marker(f"second {n}"),
    }
    ui = ui_at(core.Transition(core.Go("first", (1,))), routes)
    assert enter(ui).frame.rows[0] == "second 2"
    assert ui.screen == Marker("second 2")


def test_home_is_built_in_and_is_the_idle_factory() -> None:
    ui = ui_at(core.Transition(core.Go("home")))
    enter(ui)
    assert ui.screen is HOME


def test_a_loop_of_routes_fails_loudly() -> None:
    ui = ui_at(core.Transition(core.Go("again")), {"again": lambda: core.Go("again")})
    with pytest.raises(RuntimeError, match="'again'"):
        enter(ui)


def test_a_route_returning_a_transition_keeps_its_commands() -> None:
    routes: dict[str, core.Route] = {
        "run": lambda op: core.Transition(Marker(f"running {op}"), (core.StartOp(op),)),
    }
    ui = ui_at(core.Transition(core.Go("run", ("echo",)), (core.DropCard(),)), routes)
    out = enter(ui)
    assert out.commands == (core.DropCard(), core.StartOp("echo"))  # the transition's own first
    assert out.frame.rows[0] == "running echo"


def test_a_go_is_never_shown_unresolved() -> None:
    with pytest.raises(RuntimeError, match="'home'"):
        core.Go("home").render(CTX)
    with pytest.raises(RuntimeError, match="'home'"):
        core.Go("home").handle(core.Tick(), CTX)


def test_a_screen_holding_a_go_as_back_still_compares_equal() -> None:
    unsettled = core.OpOutcome("settle", "settled", "settled_unbalanced")
    # results.py names both the settlement's result screen and the home it returns to
    assert result_screen(unsettled) == core.Go("settle_result", (unsettled, core.Go("home")))
    built = machine.ROUTES["settle_result"](unsettled, core.Go("home"))
    assert built == SettleResult(unsettled, core.Go("home"))
    assert built == machine.ROUTES["settle_result"](unsettled, core.Go("home"))
    assert built != SettleResult(unsettled, core.Go("start"))


def test_build_ui_resolves_what_the_result_screens_name() -> None:
    ui = machine.build_ui()
    ui.feed(core.OpDone(core.OpOutcome("settle", "settled", "settled_unbalanced")), CTX)
    assert isinstance(ui.screen, SettleResult)
    ui.feed(core.KeyIn(Key.ENTER), CTX)
    assert isinstance(ui.screen, IdleScreen)
    ui.feed(core.OpDone(core.OpOutcome("reprint_last", "failed", "host_unreachable")), CTX)
    assert isinstance(ui.screen, ResultScreen)
    assert ui.feed(core.KeyIn(Key.F1), CTX).commands == (core.StartOp("echo"),)


def _named_routes() -> set[str]:
    """Every route a screen module names: the string in `Go("...")` / `core.Go("...")`."""
    found: set[str] = set()
    for path in UI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "Go" and node.args and isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
    return found


def test_every_route_a_screen_names_is_in_the_machine() -> None:
    assert _named_routes() == {*machine.ROUTES, "home"}
