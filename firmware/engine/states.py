"""The life of a journal record: its states and the one table of legal transitions.

Theory of operation: a financial record is born PENDING (or ADVICE_DUE for a
refund advice) in the same SQL transaction that consumes its counters, before
any byte leaves the terminal. Every later change is one row of TRANSITIONS;
the journal refuses anything else, so an approval can never be invented for a
record whose outcome was already given up (REVERSAL_DUE, REVERSED).
"""

from __future__ import annotations

from enum import StrEnum


class TxnState(StrEnum):
    PENDING = "PENDING"  # durable, may be on the wire; outcome unknown
    APPROVED = "APPROVED"  # host approved (or acknowledged the advice); durable
    DECLINED = "DECLINED"  # host said no; nothing moved
    REVERSAL_DUE = "REVERSAL_DUE"  # outcome unknown: a 0400 must be acknowledged
    REVERSED = "REVERSED"  # host acknowledged the reversal (00 or 25)
    RESOLVED_MANUALLY = "RESOLVED_MANUALLY"  # supervisor closed an unreversible record
    VOIDED = "VOIDED"  # an approved record whose void was approved
    ADVICE_DUE = "ADVICE_DUE"  # refund advice stored, not yet acknowledged
    FAILED = "FAILED"  # non-reversible enquiry without a reply: nothing moved


class TxnEvent(StrEnum):
    APPROVE = "approve"
    DECLINE = "decline"
    LOSE_REPLY = "lose_reply"  # timeout, link loss, malformed, bad MAC, cancel, power loss
    LOSE_ENQUIRY_REPLY = "lose_enquiry_reply"  # same, for a request that moves no money
    REVERSAL_ACKED = "reversal_acked"
    REVERSAL_FAILED = "reversal_failed"
    RESOLVE_MANUALLY = "resolve_manually"
    VOID = "void"
    ADVICE_ACKED = "advice_acked"
    ADVICE_FAILED = "advice_failed"


S, E = TxnState, TxnEvent

TRANSITIONS: dict[tuple[TxnState, TxnEvent], TxnState] = {
    (S.PENDING, E.APPROVE): S.APPROVED,
    (S.PENDING, E.DECLINE): S.DECLINED,
    (S.PENDING, E.LOSE_REPLY): S.REVERSAL_DUE,
    (S.PENDING, E.LOSE_ENQUIRY_REPLY): S.FAILED,
    (S.REVERSAL_DUE, E.REVERSAL_ACKED): S.REVERSED,
    (S.REVERSAL_DUE, E.REVERSAL_FAILED): S.REVERSAL_DUE,
    (S.REVERSAL_DUE, E.RESOLVE_MANUALLY): S.RESOLVED_MANUALLY,
    (S.APPROVED, E.VOID): S.VOIDED,
    (S.ADVICE_DUE, E.ADVICE_ACKED): S.APPROVED,
    (S.ADVICE_DUE, E.DECLINE): S.DECLINED,
    (S.ADVICE_DUE, E.ADVICE_FAILED): S.ADVICE_DUE,
}

# States in which money may have moved at the host and the terminal still owes work.
UNRESOLVED: frozenset[TxnState] = frozenset({S.PENDING, S.REVERSAL_DUE, S.ADVICE_DUE})


class IllegalTransition(Exception):
    """A state change that the table does not allow (a bug, never a host reply)."""


def next_state(state: TxnState, event: TxnEvent) -> TxnState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"{event.value} is not allowed from {state.value}") from None


def diagram() -> str:
    """The transition table as Graphviz dot, for the docs."""
    lines = ["digraph txn {"]
    for (src, ev), dst in TRANSITIONS.items():
        lines.append(f'  {src.value} -> {dst.value} [label="{ev.value}"];')
    lines.append("}")
    return "\n".join(lines)
