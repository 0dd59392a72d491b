"""The mutation operators (tests/mutation) plant the faults they claim, and only those.

`make mutate` is too slow for `make test`; these checks keep its fault generator honest: a
generator that silently made no mutants (or mutated docstrings only) would give a perfect
score to any test suite.
"""

from __future__ import annotations

import ast
import textwrap

from tests.mutation.operators import mutants

SOURCE = textwrap.dedent('''
    """Module docstring is never mutated."""
    import logging

    log = logging.getLogger(__name__)
    UNRESOLVED = frozenset({S.PENDING, S.REVERSAL_DUE})
    TABLE = {(S.PENDING, E.APPROVE): S.APPROVED, (S.PENDING, E.DECLINE): S.DECLINED}
    SQL = "SELECT id FROM txn WHERE state IN ('PENDING', 'REVERSAL_DUE')"


    def approved(code: str, tries: int) -> bool:
        """Docstring."""
        log.info("code %s", code)
        if code == "00" and tries < 3:
            return True
        tries += 1
        return False
''')


def _descriptions(source: str = SOURCE) -> set[str]:
    return {m.description for m in mutants("m.py", source)}


def test_the_faults_a_bad_commit_makes_are_planted() -> None:
    found = _descriptions()
    for expected in ("== -> !=", "< -> <=", "and -> or", "+= -> -=", "update dropped",
                     "3 -> 4", "3 -> 2", "True -> False", "returns None",
                     "'00' -> 'XX'", "S.PENDING dropped from the collection",
                     "'PENDING' dropped from an SQL IN list",
                     "row (S.PENDING, E.APPROVE) dropped",
                     "row (S.PENDING, E.APPROVE) gives S.DECLINED"):
        assert expected in found, expected


def test_docstrings_annotations_and_log_calls_are_left_alone() -> None:
    for m in mutants("m.py", SOURCE):
        changed = ast.parse(m.mutated_source)
        assert ast.get_docstring(changed) == "Module docstring is never mutated."
        assert "code %s" in m.mutated_source
        assert "def approved(code: str, tries: int) -> bool:" in m.mutated_source


def test_every_mutant_parses_and_differs_from_the_original() -> None:
    found = mutants("m.py", SOURCE)
    assert len(found) >= 20
    for m in found:
        ast.parse(m.mutated_source)
        assert m.mutated_source != SOURCE
    assert len({m.mutated_source for m in found}) == len(found), "two mutants are the same"


def test_a_mutant_keeps_its_name_when_code_above_it_moves() -> None:
    before = {m.key for m in mutants("m.py", SOURCE)}
    moved = SOURCE.replace("import logging\n", "import logging\nimport os\n\n\n")
    after = {m.key for m in mutants("m.py", moved)}
    assert before <= after


def test_a_pragma_keeps_a_line_out() -> None:
    marked = SOURCE.replace('if code == "00" and tries < 3:',
                            'if code == "00" and tries < 3:  # pragma: no mutate')
    assert "== -> !=" not in _descriptions(marked)


def test_a_table_is_spoken_for_by_the_lines_that_read_it(tmp_path) -> None:
    """A mutant in a module-level table runs at import; its tests are those running its readers,
    also through a second table built from the first."""
    from tests.mutation.references import ReferenceIndex

    pkg = tmp_path / "firmware"
    pkg.mkdir()
    (pkg / "codes.py").write_text(textwrap.dedent('''
        _ROWS = [("00", "ok"), ("05", "no")]
        CODES = dict(_ROWS)

        class Kind:
            SALE = "sale"

        def lookup(code):
            return CODES.get(code)
    '''))
    (pkg / "flow.py").write_text("def kind(k):\n    return k is Kind.SALE\n")
    index = ReferenceIndex(tmp_path)
    assert index.reading_lines("firmware/codes.py", 2) == {("firmware/codes.py", 9)}
    assert index.reading_lines("firmware/codes.py", 6) == {("firmware/flow.py", 2)}
    assert index.reading_lines("firmware/codes.py", 8) == set()  # a function line defines nothing


def test_dataclass_options_are_left_alone_but_the_class_body_is_not() -> None:
    """`frozen=True` forbids assignments no code makes: flipping it plants nothing a behaviour
    test can see. The fields' defaults are still mutated."""
    source = textwrap.dedent('''
        from dataclasses import dataclass

        @dataclass(frozen=True, slots=True)
        class Reply:
            code: str = "00"
            tries: int = 3
    ''')
    found = {(m.line, m.description) for m in mutants("m.py", source)}
    assert not [f for f in found if f[0] == 4], found
    assert {d for _, d in found} >= {"'00' -> 'XX'", "3 -> 4"}


def test_every_mutant_listed_as_equivalent_is_still_planted() -> None:
    """tests/mutation/equivalent.toml names mutants by key: a key whose code changed or went
    away must leave the list with it (a stale entry would hide nothing, but reads as a claim)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = tomllib.loads((root / "tests/mutation/equivalent.toml").read_text())["equivalent"]
    keys = [entry["key"] for entry in listed]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    planted: dict[str, set[str]] = {}
    for entry in listed:
        module = entry["key"].split("::")[0]
        if module not in planted:
            planted[module] = {m.key for m in mutants(module, (root / module).read_text())}
        assert entry["key"] in planted[module], entry["key"]
        assert len(entry["why"]) > 40, entry["key"]
