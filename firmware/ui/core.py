"""The UI's contract: the events screens take, the commands they give, and the machine that runs them.

Theory of operation. A screen is a frozen dataclass. `Ui.feed(event, ctx)` hands the event
to the current screen, which answers with a Transition (the next screen and the commands
for the app to carry out) or None (not mine: the machine's defaults apply). The machine
then renders the next screen with the same context and returns (frame, commands). Nothing
here touches a driver, the journal or a socket; time comes in through the context.

Defaults the machine applies to every screen, so no screen can forget them:
  * idle timeout: a screen with `staged = True` that has seen no key for the configured
    idle time goes back to idle, discarding what was typed (DropCard + an audit note);
  * result timeout: a screen with `result = True` (how an operation ended) goes back to idle
    after the shorter result time without a key (display.result_timeout_s; a key restarts it);
  * an operation the screen did not start (ECR, start-up backlog) is shown by the
    screen the `on_external` hook gives, over whatever is on the LCD;
  * OpDone that no screen claims is shown by the `on_result` hook.
A screen with `sensitive = True` (PIN, password) tells the app not to log any key.

A screen module may name a screen it cannot import without pointing up the module graph (idle,
the transaction flows, the settlement review) by a `Go(route, args)`: the machine builds it
through its routes before it is shown (firmware.ui.machine.ROUTES; "home" is the idle screen).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar

from firmware.i18n import text as catalog_text
from firmware.ports import Frame, Icon, Key, text_cells

Catalog = Mapping[str, tuple[str, str]]  # key -> (English, 简体中文)

# ---------------------------------------------------------------------------- context


@dataclass(frozen=True)
class UiContext:
    """The world as the screens see it; built by the app for every event, read-only."""

    now: datetime  # wall clock (the idle screen's date and time)
    mono: float  # monotonic seconds (timeouts, progress counters)
    rows: int = 4
    cols: int = 16
    lang: str = "en"
    merchant_name: str = ""
    tid: str = ""
    signed_on: bool = False
    link_up: bool | None = None  # None: not known yet
    paper: str = "none"  # "ok" | "out" | "cover" | "offline" | "none" (no printer)
    printing: str = ""  # "1/2" while a receipt prints, else ""
    reversals_due: int = 0
    advices_due: int = 0
    quarantined: int = 0  # records owed to the host that cannot be sent: a supervisor decides
    refunds_declined: int = 0  # stored refunds of the batch the host then declined (not made)
    backlog_left: int = 0  # reversals/advices the terminal is sending now (start-up, before ops)
    deregistered: bool = False
    notice: str | None = None  # a catalog key (or words) the idle screen must show
    # A receipt cut by a power loss waits for the operator: ENTER prints it again (REPRINT),
    # CANCEL drops it with a VOID slip (ConfirmPrint). None: nothing waits.
    print_confirm_job: int | None = None
    # A copy is out and the printer has no cutter: the spooler waits for the operator to tear it
    # off; ENTER at idle prints the next copy (TearOff). None: nothing waits.
    tear_off_job: int | None = None
    password_locked_s: float = 0.0  # > 0: supervisor functions are locked this long
    # The operator signed in at the keypad ("00" supervisor, "01".."99"); "" when nobody is or
    # no operators are set up (firmware/app/core/operators.py). The idle screen shows it.
    operator: str = ""
    held_orders: int = 0  # orders parked (挂单) and not yet paid or cancelled
    held_aged: int = 0  # of those, held longer than the configured age (flagged at idle)
    # The live settings, read-only (max amount, enabled types, bypass, idle timeout...).
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def setting(self, group: str, name: str, default: Any = None) -> Any:
        return self.settings.get(group, {}).get(name, default)

    @property
    def idle_timeout_s(self) -> float:
        return float(self.setting("display", "idle_timeout_s", 60))

    @property
    def result_timeout_s(self) -> float:
        return float(self.setting("display", "result_timeout_s", 15))

    def icons(self) -> frozenset[Icon]:
        icons: set[Icon] = set()
        if self.link_up is True:
            icons.add(Icon.LINK_UP)
        elif self.link_up is False:
            icons.add(Icon.LINK_DOWN)
        if self.paper == "ok":
            icons.add(Icon.PAPER_OK)
        elif self.paper != "none":
            icons.add(Icon.PAPER_OUT)
        if self.reversals_due:
            icons.add(Icon.REVERSAL_DUE)
        if self.advices_due:
            icons.add(Icon.ADVICE_DUE)
        return frozenset(icons)


# ---------------------------------------------------------------------------- events in


@dataclass(frozen=True)
class KeyIn:
    key: Key


@dataclass(frozen=True)
class Tick:
    """Time passed (the app sends one at the screen's next_wakeup, or any time)."""


@dataclass(frozen=True)
class CardPresented:
    """A card was read while the screen asked for one; the app keeps the card itself.

    Screens only ever see the masked PAN: track data never enters the UI.
    """

    pan_masked: str
    entry_mode: str  # "swipe" | "fallback"
    expiry: str | None = None  # YYMM, shown by the reader test


@dataclass(frozen=True)
class ChipSeen:
    inserted: bool  # True: inserted; False: removed


@dataclass(frozen=True)
class CardRefused:
    """The reader saw a card the terminal cannot use; message_key says why in words."""

    message_key: str


@dataclass(frozen=True)
class OpStarted:
    """An operation began that this UI did not ask for (ECR link, start-up backlog)."""

    op: str
    source: str  # "ecr" | "system"
    amount: int | None = None


@dataclass(frozen=True)
class OpStep:
    """Progress of the running operation.

    step: "card" (waiting for a card), "pin", "connecting", "sending", "reversing",
    "advice", "uploading", "settling", "printing", "signing_on".
    done/total: counters for "uploading" and "printing" (e.g. 12/40).
    cancellable: whether CANCEL still does anything (false once money may move and the
    flow cannot be stopped, e.g. settlement after its request left).
    """

    step: str
    done: int | None = None
    total: int | None = None
    cancellable: bool = True


@dataclass(frozen=True)
class PinWanted:
    """The flow needs the cardholder's PIN now."""

    pan_masked: str
    amount: int | None
    bypass_allowed: bool
    tries_left: int | None = None


@dataclass(frozen=True)
class AppChoiceWanted:
    """The chip holds several applications the terminal accepts: the cardholder picks one
    (labels in the card's priority order)."""

    labels: tuple[str, ...]


@dataclass(frozen=True)
class OpOutcome:
    """How an operation ended, as a screen shows it (no card data but the masked PAN)."""

    op: str
    status: str  # approved | declined | refused | cancelled | reversed | reversal_pending
    #              | stored | failed | settled | done | not_cancelled (a held order still paid)
    message_key: str  # catalog key or host response code
    detail: str = ""
    amount: int | None = None
    pan_masked: str | None = None
    auth_code: str | None = None
    voucher: str | None = None
    rrn: str | None = None
    batch: str | None = None
    response_code: str | None = None
    balance: int | None = None
    lines: tuple[str, ...] = ()  # extra rows (reports, diag output), already in words
    # Structured rows for screens that let the operator pick one (held orders, anomalies):
    # plain data (str/int/bool/None values), no card data but masked PANs.
    items: tuple[Mapping[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return self.status in ("approved", "settled", "done", "stored")


@dataclass(frozen=True)
class OpDone:
    outcome: OpOutcome


@dataclass(frozen=True)
class PasswordChecked:
    ok: bool
    locked_s: float = 0.0  # > 0: the function is locked for this long


@dataclass(frozen=True)
class SettingsSaved:
    """The answer to SaveSettings / RestorePrevious / FactoryDefaults / RollBackSettings."""

    ok: bool
    problems: Mapping[str, str] = field(default_factory=dict)  # "group.name" -> words
    self_tests: tuple[str, ...] = ()  # diag names to run now ("echo", "printer", "display")
    version: str = ""  # the history version the saved file replaced (for roll back)


@dataclass(frozen=True)
class DiagResult:
    name: str
    passed: bool
    reason: str  # in words: what was found
    next_step: str = ""  # in words: what the operator should do
    lines: tuple[str, ...] = ()  # extra detail rows (echo history, network info, log lines)


@dataclass(frozen=True)
class OriginalFound:
    """The answer to LookupOriginal: the original transaction as the confirm screen shows it,
    or why it cannot be used (message_key, e.g. original_not_found, original_already_voided)."""

    voucher: str
    found: bool
    message_key: str = ""
    kind: str | None = None
    amount: int | None = None
    pan_masked: str | None = None


@dataclass(frozen=True)
class OperatorAnswer:
    """The answer to SignIn, SignOut and ManageOperator: ok, a catalog key in words, and how
    long the operator (or every cashier) is locked when a PIN was refused for that."""

    ok: bool
    key: str
    locked_s: float = 0.0


UiEvent = (KeyIn | Tick | CardPresented | ChipSeen | CardRefused | OpStarted | OpStep | PinWanted
           | AppChoiceWanted | OpDone | PasswordChecked | SettingsSaved | DiagResult | OriginalFound
           | OperatorAnswer)

# ---------------------------------------------------------------------------- commands out


@dataclass(frozen=True)
class StartOp:
    """Run an operation. op is one of OPS; params as listed there.

    use_card: the card the app holds from CardPresented at idle pays for it.
    authorised: the supervisor password was already checked (PasswordChecked ok).
    """

    op: str
    amount: int | None = None
    voucher: str | None = None
    rrn: str | None = None
    date: str | None = None  # MMDD of the original (refund)
    reference: str | None = None
    use_card: bool = False
    authorised: bool = False
    order_id: int | None = None  # a held order (resume, cancel, its audit trail)
    note: str | None = None  # free text typed on the keypad (held order note)
    reason: str | None = None  # a chosen reason key (held-order cancel)
    path: str | None = None  # a directory (the deregistration backup)


# op -> what it needs. The app refuses anything else, in words.
OPS: dict[str, tuple[str, ...]] = {
    "sale": ("amount",),
    "void": ("voucher",),
    "refund": ("amount", "rrn", "date"),
    "balance": (),
    "preauth": ("amount",),
    "preauth_void": ("voucher",),
    "completion": ("voucher", "amount"),
    "completion_void": ("voucher",),
    "settle": (),
    "subtotals": (),  # X report on screen, nothing closed
    "reprint_settlement": (),
    "reprint_last": (),
    "reprint_voucher": ("voucher",),
    "report_list": (),  # the open batch's transactions, on screen
    "report_totals": (),
    "sign_on": (),
    "sign_off": (),
    "echo": (),
    "print_resume": (),  # paper loaded: ask the printer again now
}


@dataclass(frozen=True)
class CancelOp:
    """The operator pressed CANCEL while an operation runs (the app applies the semantics)."""


@dataclass(frozen=True)
class SubmitPin:
    """The PIN typed (digits), or None for a bypass the settings allow. Never logged."""

    pin: str | None = field(repr=False)


@dataclass(frozen=True)
class SubmitChoice:
    """The chip application picked (index into AppChoiceWanted.labels)."""

    index: int


@dataclass(frozen=True)
class CheckPassword:
    purpose: str  # "void" | "refund" | "settlement" | "settings" | "held_cancel" | ...
    password: str = field(repr=False)


@dataclass(frozen=True)
class DropCard:
    """Forget any card the app holds for this UI (cancel or timeout before the sale)."""


@dataclass(frozen=True)
class Audit:
    action: str
    detail: str
    outcome: str


@dataclass(frozen=True)
class SaveSettings:
    data: Mapping[str, Mapping[str, Any]]
    reason: str = "edited on the keypad"


@dataclass(frozen=True)
class RestorePrevious:
    pass


@dataclass(frozen=True)
class FactoryDefaults:
    pass


@dataclass(frozen=True)
class RollBackSettings:
    """The self-test failed and the operator chose roll back: restore `version`."""

    version: str


@dataclass(frozen=True)
class ChangePassword:
    new: str = field(repr=False)


@dataclass(frozen=True)
class RunDiag:
    name: str  # "printer" | "echo" | "network" | "journal" | "log" | "version" | ...


@dataclass(frozen=True)
class ConfirmPrint:
    """A receipt cut by a power loss: print it again (True) or drop it with a VOID slip."""

    job_id: int
    print_again: bool


@dataclass(frozen=True)
class TearOff:
    """The operator tore the last copy off: the next copy of the job may print."""

    job_id: int


@dataclass(frozen=True)
class LookupOriginal:
    """Find the original of a void or completion in the journal (answered by OriginalFound),
    so the operator sees its amount and card before confirming."""

    op: str
    voucher: str


@dataclass(frozen=True)
class SignIn:
    """Operator `code` signs in at the keypad with `pin` (00: the supervisor password)."""

    code: str
    pin: str = field(repr=False)


@dataclass(frozen=True)
class SignOut:
    """The keypad's operator signs out (by_supervisor: the supervisor signs them out)."""

    by_supervisor: bool = False


@dataclass(frozen=True)
class ManageOperator:
    """The supervisor's operator management: "add", "change_pin" (with pin) or "remove"."""

    action: str
    code: str
    pin: str | None = field(default=None, repr=False)


UiCommand = (StartOp | CancelOp | SubmitPin | SubmitChoice | CheckPassword | DropCard | Audit | SaveSettings
             | RestorePrevious | FactoryDefaults | RollBackSettings | ChangePassword | RunDiag
             | ConfirmPrint | TearOff | LookupOriginal | SignIn | SignOut | ManageOperator)

# ---------------------------------------------------------------------------- screens


@dataclass(frozen=True)
class Transition:
    screen: Screen
    commands: tuple[UiCommand, ...] = ()


class Screen:
    """Base of every screen (subclasses are frozen dataclasses).

    card_purpose: "sale" (a swipe starts a sale), "test" (reader test shows it) or None.
    staged: holds typed input that the idle timeout discards.
    sensitive: PIN / password entry: the app logs no key while it is shown.
    running: an operation runs under this screen (the idle timeout does not apply).
    result: how something ended; nothing typed to lose: home after the result timeout.
    """

    card_purpose: ClassVar[str | None] = None
    staged: ClassVar[bool] = True
    sensitive: ClassVar[bool] = False
    running: ClassVar[bool] = False
    result: ClassVar[bool] = False

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        raise NotImplementedError

    def render(self, ctx: UiContext) -> Frame:
        raise NotImplementedError

    def next_wakeup(self, ctx: UiContext) -> float | None:
        """Monotonic time at which this screen wants a Tick (None: only on events)."""
        return None


@dataclass(frozen=True)
class Go(Screen):
    """A screen named, not built: the Ui resolves it through its routes before showing it
    (a screen module names a screen of a module above it this way, so no import points up).

    A frozen dataclass like every screen, so a screen that holds one as `back` still compares
    by value. It is never the current screen: handling or drawing it is a bug, said loudly."""

    route: str
    args: tuple[Any, ...] = ()

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        raise RuntimeError(f"route {self.route!r} was not resolved before it was shown")

    def render(self, ctx: UiContext) -> Frame:
        raise RuntimeError(f"route {self.route!r} was not resolved before it was shown")


# A route builds the screen a Go names from the Go's args; it may also give commands.
Route = Callable[..., Screen | Transition]
MAX_HOPS = 8  # a Go whose route gives a Go ...: more than this is a loop of routes


@dataclass(frozen=True)
class Output:
    frame: Frame
    commands: tuple[UiCommand, ...]
    sensitive: bool  # the screen now shown takes a PIN or password


class Ui:
    """The screen machine: one current screen, fed events, with the defaults above.

    routes: what each `Go` route builds (firmware.ui.machine.ROUTES); "home" is built in, the
    idle factory. A screen that names a route the Ui does not know fails loudly, by its name.
    """

    def __init__(self, idle: Callable[[], Screen],
                 on_result: Callable[[OpOutcome, Screen], Screen],
                 on_external: Callable[[OpStarted, Screen], Screen],
                 routes: Mapping[str, Route] = MappingProxyType({})) -> None:
        self._idle = idle
        self._on_result = on_result
        self._on_external = on_external
        self._routes: dict[str, Route] = {**routes, "home": idle}
        self.screen: Screen = idle()
        self.last_input = 0.0  # mono time of the last key (for the idle timeout)

    def feed(self, event: UiEvent, ctx: UiContext) -> Output:
        commands: tuple[UiCommand, ...] = ()
        if isinstance(event, KeyIn):
            self.last_input = ctx.mono
        if isinstance(event, Tick) and self._result_read(ctx):
            self.screen = self._idle()
        elif isinstance(event, Tick) and self._timed_out(ctx):
            self.screen = self._idle()
            commands = (DropCard(), Audit("input", "idle timeout", "discarded"))
        else:
            transition = self.screen.handle(event, ctx)
            if transition is None:
                transition = self._default(event)
            if transition is not None:
                transition = self._resolve(transition)
                if transition.screen is not self.screen and not isinstance(event, KeyIn):
                    self.last_input = ctx.mono  # a new screen's timeout counts from its arrival
                self.screen = transition.screen
                commands = transition.commands
        return Output(self.screen.render(ctx), commands, self.screen.sensitive)

    def frame(self, ctx: UiContext) -> Frame:
        return self.screen.render(ctx)

    def next_wakeup(self, ctx: UiContext) -> float | None:
        own = self.screen.next_wakeup(ctx)
        deadline = None
        if self.screen.result:
            deadline = self.last_input + ctx.result_timeout_s
        elif self.screen.staged and not self.screen.running:
            deadline = self.last_input + ctx.idle_timeout_s
        if deadline is not None:
            own = deadline if own is None else min(own, deadline)
        return own

    def _result_read(self, ctx: UiContext) -> bool:
        return self.screen.result and ctx.mono - self.last_input >= ctx.result_timeout_s

    def _timed_out(self, ctx: UiContext) -> bool:
        return (self.screen.staged and not self.screen.running
                and ctx.mono - self.last_input >= ctx.idle_timeout_s)

    def _resolve(self, transition: Transition) -> Transition:
        """The transition with its screen built if it is a Go (followed while a route gives
        another Go); a route's own commands go after the transition's."""
        screen, commands = transition.screen, transition.commands
        hops = 0
        while isinstance(screen, Go):
            if hops == MAX_HOPS:
                raise RuntimeError(f"route {screen.route!r}: more than {MAX_HOPS} hops, a loop of routes?")
            route = self._routes.get(screen.route)
            if route is None:
                raise LookupError(f"no screen route {screen.route!r}: "
                                  "build the Ui with firmware.ui.machine.build_ui()")
            built = route(*screen.args)
            if isinstance(built, Transition):
                screen, commands = built.screen, (*commands, *built.commands)
            else:
                screen = built
            hops += 1
        return transition if hops == 0 else Transition(screen, commands)

    def _default(self, event: UiEvent) -> Transition | None:
        if isinstance(event, OpDone):
            return Transition(self._on_result(event.outcome, self.screen))
        if isinstance(event, OpStarted):
            return Transition(self._on_external(event, self.screen))
        return None


# ---------------------------------------------------------------------------- pick lists

DIGIT_INDEX: dict[Key, int] = {Key.D1: 0, Key.D2: 1, Key.D3: 2, Key.D4: 3, Key.D5: 4, Key.D6: 5,
                               Key.D7: 6, Key.D8: 7, Key.D9: 8}


@dataclass(frozen=True)
class ListKey:
    """What a key did to a pick list: the selection now, and whether it picked that item."""

    selected: int
    picked: bool


def key_of(event: UiEvent) -> Key | None:
    """The key of a KeyIn; None for every other event."""
    return event.key if isinstance(event, KeyIn) else None


def list_key(key: Key | None, selected: int, count: int) -> ListKey | None:
    """The keys every pick list shares: UP/DOWN move (wrapping), digit n picks item n, ENTER picks
    the selected one. None: not a list key (CANCEL and the rest are the screen's own)."""
    if key is None or count <= 0:
        return None
    if key is Key.DOWN:
        return ListKey((selected + 1) % count, False)
    if key is Key.UP:
        return ListKey((selected - 1) % count, False)
    if key in DIGIT_INDEX and DIGIT_INDEX[key] < count:
        return ListKey(DIGIT_INDEX[key], True)
    if key is Key.ENTER:
        return ListKey(selected, True)
    return None


class PickList(Screen):
    """A screen that is a list to pick from: CANCEL goes back, the other keys are list_key's.

    Subclasses are frozen dataclasses with the fields `back` (a Screen) and `sel` (int), and say
    how many items there are and what picking item i opens (`here`: this list, item i selected).
    """

    def count(self) -> int:
        raise NotImplementedError

    def pick(self, index: int, here: Screen) -> Screen:
        raise NotImplementedError

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        key = key_of(event)
        if key is None:
            return None
        if key is Key.CANCEL or (key is Key.ENTER and self.count() == 0):
            # an empty list ("No held orders") has nothing to pick: ENTER goes back as CANCEL does
            return Transition(self.back)  # type: ignore[attr-defined]
        moved = list_key(key, self.sel, self.count())  # type: ignore[attr-defined]
        if moved is None:
            return Transition(self)
        here = replace(self, sel=moved.selected)  # type: ignore[type-var]
        return Transition(self.pick(moved.selected, here) if moved.picked else here)


# ---------------------------------------------------------------------------- drawing helpers


def fit(text: str, cols: int) -> str:
    """Cut to cols cells (a CJK character counts two and is never cut in half)."""
    out, used = [], 0
    for ch in text:
        width = text_cells(ch)
        if used + width > cols:
            break
        out.append(ch)
        used += width
    return "".join(out)


def pad(text: str, cols: int) -> str:
    text = fit(text, cols)
    return text + " " * (cols - text_cells(text))


def center(text: str, cols: int) -> str:
    text = fit(text, cols)
    left = (cols - text_cells(text)) // 2
    return " " * left + text


def right(text: str, cols: int) -> str:
    text = fit(text, cols)
    return " " * (cols - text_cells(text)) + text


def wrap(text: str, cols: int) -> list[str]:
    """Words to rows of at most cols cells; CJK text breaks anywhere."""
    rows: list[str] = []
    line = ""
    for word in text.replace("\n", " \n ").split(" "):
        if word == "\n":
            rows.append(line)
            line = ""
            continue
        candidate = f"{line} {word}" if line else word
        if text_cells(candidate) <= cols:
            line = candidate
            continue
        if line:
            rows.append(line)
        line = ""
        for ch in word:
            if text_cells(line + ch) > cols:
                rows.append(line)
                line = ""
            line += ch
    if line:
        rows.append(line)
    return rows


def frame(ctx: UiContext, lines: list[str], inverse_row: int | None = None,
          icons: frozenset[Icon] | None = None) -> Frame:
    """A Frame of exactly ctx.rows rows (extra lines cut, missing ones blank)."""
    rows = [fit(line, ctx.cols) for line in lines[: ctx.rows]]
    rows += [""] * (ctx.rows - len(rows))
    if inverse_row is not None and not 0 <= inverse_row < ctx.rows:
        inverse_row = None
    return Frame(tuple(rows), inverse_row, ctx.icons() if icons is None else icons)


def pick_frame(ctx: UiContext, title: str, rows: list[str], selected: int) -> Frame:
    """A title row and the window of rows that keeps the selected one in view, shown inverse."""
    visible = max(1, ctx.rows - 1)
    top = max(0, min(selected - visible + 1, len(rows) - visible))
    return frame(ctx, [title, *rows[top: top + visible]], inverse_row=1 + selected - top)


def format_fen(amount: int) -> str:
    """12345 -> '123.45' (money is integers; never through a float)."""
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    return f"{sign}{amount // 100}.{amount % 100:02d}"


def pan_text(pan_masked: str, cols: int) -> str:
    """A masked PAN as every screen shows it: as masked where it fits; on a narrow screen the
    stars between the first 6 and the last 4 are cut to fit (at least one stays), so the last
    4 (what the cardholder checks against the card) are always in view, never cut or wrapped."""
    if len(pan_masked) <= cols:
        return pan_masked
    tail = pan_masked[-4:]
    head = pan_masked[:-4].rstrip("*")
    if len(head) + 1 + len(tail) > cols:
        head = ""  # narrower than 11 columns: the last 4 win
    return head + "*" * max(1, cols - len(head) - len(tail)) + tail


def say(catalog: Catalog, key: str, lang: str, **values: Any) -> str:
    """The sentence for key in lang, with {placeholders} filled; keys not in the screen's own
    catalog fall back to the shared result catalog (firmware.i18n, incl. host response codes)."""
    entry = catalog.get(key)
    if entry is None:
        return catalog_text(key, lang, **values)
    sentence = entry[1] if lang.startswith("zh") else entry[0]
    return sentence.format(**values) if values else sentence


def test_pattern(rows: int, cols: int, phase: int) -> list[str]:
    """Display test: phase 0 every cell lit, 1 a checkerboard, 2 the other checkerboard,
    3 row numbers and the right edge (shows cut-off rows or columns)."""
    if phase == 0:
        return ["\u2588" * cols for _ in range(rows)]
    if phase in (1, 2):
        return ["".join("\u2588" if (r + c + phase) % 2 else " " for c in range(cols))
                for r in range(rows)]
    return [(f"{r + 1}" + "-" * cols)[: cols - 1] + "|" for r in range(rows)]
