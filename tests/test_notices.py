"""What the idle screen and ECR `status` show as the terminal's notice: always a catalog key, so
it reads in the operator's language (issue 13 A13); the details go to the log.

The check reads the firmware's source with `ast`: every `<something>.notice = ...` assignment
must assign a string constant that is a catalog key, or None.
"""

from __future__ import annotations

import ast
from pathlib import Path

import firmware.app.services.deregister  # noqa: F401  (registers its sentences on import)
from firmware.i18n import CATALOG, text

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"


def _notice_assignments() -> list[tuple[str, int, ast.expr]]:
    found = []
    for path in sorted(FIRMWARE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "notice":
                    value = node.value
                    assert value is not None
                    found.append((str(path.relative_to(FIRMWARE.parent)), node.lineno, value))
    return found


def test_every_notice_the_firmware_sets_is_a_catalog_key_in_both_languages():
    assignments = _notice_assignments()
    assert len(assignments) >= 8  # the scan sees the app's notices (it would pass on nothing)
    wrong = []
    for where, line, value in assignments:
        if isinstance(value, ast.Constant) and value.value is None:
            continue
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str)
                and value.value in CATALOG):
            wrong.append(f"{where}:{line}: {ast.unparse(value)}")
    assert wrong == [], "notices must be catalog keys (words go to the log):\n" + "\n".join(wrong)


def test_the_new_notices_read_in_chinese():
    for key in ("sign_on_refused", "settlement_resuming", "settings_restored", "reader_unavailable"):
        zh = text(key, "zh_CN")
        assert zh != text(key, "en") and not any("a" <= c.lower() <= "z" for c in zh), key
