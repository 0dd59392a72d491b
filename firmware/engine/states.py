"""The life of a journal record: its states and the one table of legal transitions.

Theory of operation: a financial record is born PENDING (or ADVICE_DUE for a
refund advice) in the same SQL transaction that consumes its counters, before
any byte leaves the terminal. Every later change is one row of TRANSITIONS;
the journal refuses anything else, so an approval can never be invented for a
record whose outcome was already given up (REVERSAL_DUE, REVERSED).

A record the terminal owes the host but can no longer turn into a message (its
0400 or 0220 cannot be built from what the journal holds) is QUARANTINED: set
aside so that it blocks neither start-up nor the rest of the backlog nor new
sales, shown to the operator, and closed only by a supervisor (audited). It
still counts as unresolved, so settlement waits for that decision.
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
    FAILED = "FAILED"  # nothing moved: an enquiry without a reply, or a request never sent
    QUARANTINED = "QUARANTINED"  # owed to the host but cannot be sent: a supervisor decides


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
    ADVICE_FAILED = "advice_failed"  # not delivered, or a "try again" answer: stays due
    QUARANTINE = "quarantine"  # the owed message cannot be built from the record
    NOT_SENT = "not_sent"  # the request could not be built after the write: nothing left


S, E = TxnState, TxnEvent

TRANSITIONS: dict[tuple[TxnState, TxnEvent], TxnState] = {
    (S.PENDING, E.APPROVE): S.APPROVED,
    (S.PENDING, E.DECLINE): S.DECLINED,
    (S.PENDING, E.LOSE_REPLY): S.REVERSAL_DUE,
    (S.PENDING, E.LOSE_ENQUIRY_REPLY): S.FAILED,
    (S.REVERSAL_DUE, E.REVERSAL_ACKED): S.REVERSED,
    (S.REVERSAL_DUE, E.REVERSAL_FAILED): S.REVERSAL_DUE,
    (S.REVERSAL_DUE, E.RESOLVE_MANUALLY): S.RESOLVED_MANUALLY,
    (S.REVERSAL_DUE, E.QUARANTINE): S.QUARANTINED,
    (S.PENDING, E.NOT_SENT): S.FAILED,
    (S.APPROVED, E.VOID): S.VOIDED,
    (S.ADVICE_DUE, E.ADVICE_ACKED): S.APPROVED,
    (S.ADVICE_DUE, E.DECLINE): S.DECLINED,
    (S.ADVICE_DUE, E.ADVICE_FAILED): S.ADVICE_DUE,
    (S.ADVICE_DUE, E.QUARANTINE): S.QUARANTINED,
    (S.QUARANTINED, E.RESOLVE_MANUALLY): S.RESOLVED_MANUALLY,
}

# States in which money may have moved at the host, or a customer was promised a refund, and
# the terminal still owes work (settlement waits for every one of them).
UNRESOLVED: frozenset[TxnState] = frozenset({S.PENDING, S.REVERSAL_DUE, S.ADVICE_DUE,
                                             S.QUARANTINED})
# Follow-up records that count against their original (a void, refund or completion that is
# done, or whose outcome is still open): a second follow-up must respect them.
LIVE_FOLLOW_UP: frozenset[TxnState] = frozenset({S.PENDING, S.APPROVED, S.REVERSAL_DUE,
                                                 S.ADVICE_DUE, S.QUARANTINED})


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
