"""The terminal's app-layer companions: held orders, the settlement review, deregistration, ECR
till pairing, firmware updates.

Owns the one table of which module carries out which keypad op (StartOp) and which ECR op, so
the front panel and the ECR server route them without knowing each companion's insides. Each
companion module exposes PANEL_OPS, ECR_OPS, run_op() and ecr_op().
"""

from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def companions() -> tuple[ModuleType, ...]:
    # Imported on first use, not with this module (the same cold start as the importlib by name
    # this replaced), and as arrows the import graph sees.
    from firmware.app.services import deregister, held, review, tills, updates

    return (held, review, deregister, tills, updates)


def for_panel_op(op: str) -> ModuleType | None:
    """The companion that carries out keypad op `op`, if any."""
    for module in companions():
        if op in module.PANEL_OPS:
            return module
    return None


def for_ecr_op(op: str) -> ModuleType | None:
    for module in companions():
        if op in module.ECR_OPS:
            return module
    return None


@functools.cache
def ecr_ops() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """op -> (required fields, optional fields) of every companion's ECR ops."""
    ops: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for module in companions():
        ops.update(module.ECR_OPS)
    return ops
