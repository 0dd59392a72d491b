"""Staged settings edits: the live settings plus the operator's not-yet-saved changes (pure).

A Staged is immutable; set() returns a new one, so a screen can keep it as a field and
CANCEL simply drops it. Nothing here validates or saves (model.py, store.py do).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firmware.settings.schema import self_tests_for


@dataclass(frozen=True)
class Staged:
    base: Mapping[str, Mapping[str, Any]]
    changes: tuple[tuple[str, Any], ...] = ()  # ("group.name", new value), in edit order

    def set(self, group: str, name: str, value: Any) -> Staged:
        key = f"{group}.{name}"
        kept = tuple((k, v) for k, v in self.changes if k != key)
        if self.base.get(group, {}).get(name) == value:
            return Staged(self.base, kept)  # set back to the live value: no longer a change
        return Staged(self.base, (*kept, (key, copy.deepcopy(value))))

    def get(self, group: str, name: str) -> Any:
        key = f"{group}.{name}"
        for k, v in self.changes:
            if k == key:
                return v
        return self.base.get(group, {}).get(name)

    def is_changed(self, group: str, name: str) -> bool:
        return any(k == f"{group}.{name}" for k, _ in self.changes)

    def changed(self) -> dict[str, tuple[Any, Any]]:
        out = {}
        for key, new in self.changes:
            group, name = key.split(".", 1)
            out[key] = (self.base.get(group, {}).get(name), new)
        return out

    def data(self) -> dict[str, dict[str, Any]]:
        out = {group: dict(copy.deepcopy(dict(fields))) for group, fields in self.base.items()}
        for key, new in self.changes:
            group, name = key.split(".", 1)
            out.setdefault(group, {})[name] = copy.deepcopy(new)
        return out

    def self_tests(self) -> tuple[str, ...]:
        """The diags the changed fields need, in the fixed order echo, printer, display."""
        return self_tests_for([k for k, _ in self.changes])
