"""Deregistration (注销) as a sans-I/O state machine: the steps, which of them CANCEL may stop,
and what a start-up after a power loss does at each. The app (firmware/app/services/deregister.py)
carries out the work of each step; nothing here touches files, sockets or the journal.

Theory of operation. The terminal's life cycle is ACTIVE -> DEREGISTERING -> DEREGISTERED.
Deregistration walks the steps in ORDER; a step is "reached" once its work is done and the
journal (terminal_state 'dereg_step') says so:

  CHECKS      batch settled, no pending reversal/advice/settlement       (nothing changes)
  BACKUP      journal copy (SQLite online backup), manifest, masked CSV  (only the export dir)
  VERIFIED    the export re-read: checksums, integrity_check, counts, totals
  (password)  the supervisor password, on the screen or in the ECR request
  SIGNED_OFF  0820/002 with the host: the host drops the working keys (a sign-on undoes it)
  WIPING      recorded BEFORE the wipe: life cycle DEREGISTERING, the host identity kept
  WIPED       keys, encrypted PANs (rows overwritten, VACUUM), merchant settings gone
  DEREGISTERED 0820/009 answered 00 (or 97: already unbound): life cycle DEREGISTERED
  REPORTED    the deregistration report queued for the printer
  UNBOUND_VERIFIED  an echo answered 97: the host agrees the terminal is unbound

CANCEL (and a power loss) up to and including the password changes nothing. SIGNED_OFF only
changed the host's working keys, which the next sign-on renews, so a power loss before WIPING
also counts as "nothing changed": start-up puts the step back to ACTIVE. From WIPING on the
terminal is past the point of no return: start-up finishes the remaining steps (the wipe is
idempotent, and so is each host step: a repeated 0820/009 is answered 97, which counts).
The exported backup is never deleted by the terminal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Lifecycle(enum.StrEnum):
    ACTIVE = "ACTIVE"
    DEREGISTERING = "DEREGISTERING"
    DEREGISTERED = "DEREGISTERED"


class Step(enum.StrEnum):
    CHECKS = "CHECKS"
    BACKUP = "BACKUP"
    VERIFIED = "VERIFIED"
    SIGNED_OFF = "SIGNED_OFF"
    WIPING = "WIPING"
    WIPED = "WIPED"
    DEREGISTERED = "DEREGISTERED"
    REPORTED = "REPORTED"
    UNBOUND_VERIFIED = "UNBOUND_VERIFIED"


ORDER: tuple[Step, ...] = tuple(Step)
# The last step CANCEL may stop after; the supervisor password comes right after it.
LAST_CANCELLABLE = Step.VERIFIED
POINT_OF_NO_RETURN = Step.WIPING
HOST_STEPS = frozenset({Step.SIGNED_OFF, Step.DEREGISTERED, Step.UNBOUND_VERIFIED})


def index(step: Step | None) -> int:
    """Position of a reached step (-1: none reached yet)."""
    return -1 if step is None else ORDER.index(step)


def cancellable(reached: Step | None) -> bool:
    """May CANCEL still stop deregistration once `reached` is done (password not yet given)?"""
    return index(reached) <= index(LAST_CANCELLABLE)


def lifecycle_after(step: Step) -> Lifecycle:
    """The life cycle the journal records together with reaching `step`."""
    if index(step) < index(POINT_OF_NO_RETURN):
        return Lifecycle.ACTIVE
    if index(step) < index(Step.DEREGISTERED):
        return Lifecycle.DEREGISTERING
    return Lifecycle.DEREGISTERED


def remaining(reached: Step | None, upto: Step = Step.UNBOUND_VERIFIED) -> tuple[Step, ...]:
    """The steps still to do after `reached`, up to and including `upto`."""
    return ORDER[index(reached) + 1: index(upto) + 1]


@dataclass(frozen=True)
class StartupPlan:
    """What start-up does with a deregistration it finds."""

    roll_back: bool  # nothing changed: forget the steps, stay ACTIVE
    resume: tuple[Step, ...]  # the steps to finish, in order (empty: nothing to do)
    why: str


def startup_plan(lifecycle: Lifecycle, reached: Step | None) -> StartupPlan:
    """The resume rule after a power loss (see the module docstring)."""
    if lifecycle is Lifecycle.ACTIVE:
        if reached is None:
            return StartupPlan(False, (), "no deregistration under way")
        if index(reached) < index(POINT_OF_NO_RETURN):
            return StartupPlan(True, (), f"deregistration stopped after {reached.value}, before "
                                         "the wipe: nothing changed, the terminal stays active")
    if reached is None or index(reached) < index(POINT_OF_NO_RETURN):
        # DEREGISTERING without a step past the point of no return cannot be written by the
        # app (both go in one transaction); treat it as the wipe having begun, the safe side.
        reached = Step.SIGNED_OFF
    todo = remaining(reached)
    if not todo:
        return StartupPlan(False, (), "the terminal is deregistered")
    return StartupPlan(False, todo, f"deregistration resumes after {reached.value}: the wipe "
                                    "had begun, so it is finished")


class DeregRefused(Exception):
    """A check refused deregistration; the message says why in words."""


@dataclass(frozen=True)
class DeregStep:
    """Given to Terminal.fault_hook before the work of each step (tests stop the process there)."""

    step: str  # a Step value, or "WIPE:<part>" between the parts of the wipe
