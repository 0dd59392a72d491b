"""The terminal's app-layer companions: held orders, the settlement review, deregistration.

Owns the one table of which module carries out which keypad op (StartOp) and which ECR op, so
the front panel and the ECR server route them without knowing each companion's insides. Each
companion module exposes PANEL_OPS, ECR_OPS, run_op() and ecr_op().
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType

log = logging.getLogger("posfw.app")

MODULES = ("firmware.app_held", "firmware.app_review", "firmware.app_deregister")


@functools.cache
def companions() -> tuple[ModuleType, ...]:
    found = []
    for name in MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise  # the companion is there but something it needs is not: a real fault
            log.error("app companion %s is not installed: its operations are unavailable", name)
    return tuple(found)


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
