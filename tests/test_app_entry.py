"""The firmware's process entry (issue 15): the check that refuses to start without the C
extension looks where the extension is.

The check finds the repository from its own file; a module moved one folder down with the old
`parent.parent` would look in firmware/c_ext, find nothing and switch the check off without a
word (the firmware would then start on the slow path, against STYLE 7).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from firmware.app import process

REPO = Path(__file__).resolve().parents[1]


def test_the_c_extension_check_looks_in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (REPO / "c_ext").is_dir()
    # An extension that cannot be imported must stop the start; a check looking in the wrong
    # folder returns quietly instead.
    monkeypatch.setitem(sys.modules, "c_ext.posio", None)
    with pytest.raises(SystemExit):
        process.require_c_extension()
