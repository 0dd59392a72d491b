"""The terminal's screen machine: `build_ui()` wires the idle screen, the result screens and the
working screen for operations started elsewhere (ECR, system) into one core.Ui.

Theory of operation
-------------------
Idle is the root. Keys, a card or a chip there open a flow (txn.STEPS): each step is a screen
that keeps the previous one as `back`, so CANCEL goes back one level and the idle timeout
(core.Ui) discards the whole staged flow, dropping a held card. The last step (a confirm
screen, or nothing for reports and reprints) emits StartOp and shows a WorkingScreen, which
is `running`: no idle timeout, CANCEL emits CancelOp while the step is cancellable, PinWanted
pushes a PinEntry over it, and OpDone replaces it with a result screen (results.py). Results
are staged: ENTER, CANCEL or the idle timeout go back to idle; a refusal of a keypad flow (not
found, not allowed) instead shows its reason and goes back one level, to the last entry or the
menu. The on-screen reports (report_screens.py) are read over their menu: F1 prints them,
ENTER or CANCEL goes back to the menu. Supervisor functions ask for the
password first (CheckPassword, answered by PasswordChecked); the StartOp then carries
authorised=True. An OpStarted the UI did not ask for (ECR, start-up backlog) shows a working
screen titled with its source ("ECR: Sale") over whatever was shown; an OpDone that no screen
claims is shown by the result hook. Time only comes in through the context: idle wakes once a
minute, a working screen once a second while it counts, entry screens at the idle deadline.

Routes (ROUTES, given to the Ui by build_ui): a screen module never imports a module above it.
Where a screen must lead up the graph it returns a `core.Go(route, args)`, and the Ui builds
the screen through this table before showing it (repeatedly, if a route gives another Go; a
route that gives a Transition adds its commands). Every route, in one place:

    home            the idle screen (built in: the Ui's idle)     results, dereg_screens: a result read
    start           txn.start(command)                            results: F1 echo on "host unreachable"
    settle_review   review_screens.settle_review_flow(back)       txn: the settlement's confirm step
    settle_result   review_screens.settle_result_screen(o, back)  results: a settlement that did not settle

A route the Ui does not know fails loudly by its name (a Ui built by hand without ROUTES).
So the screen modules stack, each importing only modules listed before it: core, texts, scroll,
entry, results, report_screens, txn, settings_screens, review_screens, held_screens,
dereg_screens, pairing_screens, diag_screens, operator_screens, menu, idle, machine (tests/test_layout.py
fails on a circle).

Flows (txn.STEPS):
  sale, preauth: amount > confirm   void, preauth_void, completion_void: password > voucher no. > original
  > confirm   refund: password > amount > RRN > MMDD > confirm
  completion: pre-auth voucher no. > original > amount > confirm
  balance: confirm    settle: password > review (review_screens.py)    reprint_voucher: voucher
  held orders and deregistration: their own screens (held_screens.py, dereg_screens.py)

Menu tree (menu.MENUS; every item has its digit; kept equal to the table by tests/test_ui_menu.py):

    1 Sale             sale
    2 Void             void
    3 Refund           refund
    4 Balance          balance
    5 Pre-auth >
        1 Pre-auth         preauth
        2 Completion       completion
        3 Pre-auth void    preauth_void
        4 Compl. void      completion_void
    6 Settlement >
        1 Settle           settle
        2 Subtotals        subtotals
        3 Settle reprint   reprint_settlement
    7 Reprint >
        1 Last receipt     reprint_last
        2 Voucher no.      reprint_voucher
    8 Reports >
        1 Transactions     report_list
        2 Totals           report_totals
    9 Held orders >
        1 Park order       held_park
        2 Held list        held_list
    0 Manage >
        1 Settings         settings
        2 Diagnostics      diagnostics
        3 Sign on          sign_on
        4 Sign off         sign_off
        5 Language         language
        6 About            about
        7 Deregister       deregister
        8 Operators        operators
        9 Op. sign-out     sign_out
        0 ECR tills        tills

Idle shortcuts: MENU/ENTER menu, F1 sale, F2 void, F3 settle, F4 reprint last, a digit starts a
sale with that digit; settings opens firmware.ui.settings_screens.settings_root after the
password, diagnostics firmware.ui.diag_screens.diag_root, ECR tills
firmware.ui.pairing_screens.tills_root (the password first; each imported when opened).

Operators (firmware/ui/operator_screens.py; the rules: firmware/app/core/operators.py): while
operators are set up and nobody is signed in, home is the sign-in screen, not the idle screen
(build_ui's `sign_in_needed` asks the app; the panel also swaps an idle screen reached through
a `back` for it). Manage > Operators (after the supervisor password) adds, changes the PIN of,
removes, lists and signs out operators; Manage > Op. sign-out signs the keypad's operator out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from firmware.ui import core, review_screens, txn
from firmware.ui.idle import IdleScreen
from firmware.ui.menu import MENUS
from firmware.ui.operator_screens import SignInScreen
from firmware.ui.results import result_screen
from firmware.ui.texts import CATALOG

# route -> what builds its screen (the table in the docstring; "home" is the Ui's own)
ROUTES: Mapping[str, core.Route] = MappingProxyType({
    "start": txn.start,
    "settle_review": review_screens.settle_review_flow,
    "settle_result": review_screens.settle_result_screen,
})


def build_ui(sign_in_needed: Callable[[], bool] | None = None) -> core.Ui:
    """The screen machine. sign_in_needed: asked whenever home is built (start, timeouts, the
    "home" route): True makes home the operator sign-in screen instead of the idle screen."""

    def home() -> core.Screen:
        if sign_in_needed is not None and sign_in_needed():
            return SignInScreen()
        return IdleScreen()

    return core.Ui(home, result_screen, txn.external, routes=ROUTES)


def home_for(screen: core.Screen, sign_in_needed: bool) -> core.Screen | None:
    """The screen that must replace `screen` now that sign-in is (not) needed: an idle screen
    reached through a `back` while nobody is signed in becomes the sign-in screen, and a sign-in
    screen left when nobody needs to sign in (the last operator removed) the idle screen;
    None: keep it."""
    if sign_in_needed and isinstance(screen, IdleScreen):
        return SignInScreen()
    if not sign_in_needed and isinstance(screen, SignInScreen):
        return IdleScreen()
    return None


def menu_tree_text(name: str = "main", indent: str = "") -> list[str]:
    """The menu table as drawn in this module's docstring (English labels)."""
    rows: list[str] = []
    for item in MENUS[name][1]:
        key = item.shortcut
        label = CATALOG[item.label][0]
        if item.opens.startswith("menu:"):
            rows.append(f"{indent}{key} {label} >")
            rows += menu_tree_text(item.opens.removeprefix("menu:"), indent + "    ")
        else:
            rows.append(f"{indent}{key} {label:<16} {item.opens}")
    return rows
