"""The settings model: every schema field rejects wrong values by name, migration, staging."""

from __future__ import annotations

import pytest

from firmware.settings import schema
from firmware.settings.model import (
    FACTORY,
    SettingsInvalid,
    factory,
    field_problem,
    migrate,
    problems,
    validate,
)
from firmware.settings.staging import Staged

# Wrong values per kind: a wrong type, and values out of the field's limits.
WRONG_TYPES = {
    "text": [5, None, ["x"]],
    "digits": [12345678, None, "12ab"],
    "int": ["5", 2.5, True, None],
    "seconds": ["10", True, None],
    "choice": ["nope", 1, None],
    "multi": ["sale", ["sale", "sale"], ["teleport"], None],
    "bool": ["yes", 1, None],
    "hash": ["plain", 0],
    "operators": [["01"], None, {"00": "scrypt$1$1$1$ab$cd"}, {"7": "scrypt$1$1$1$ab$cd"},
                  {"07": "1234"}],
}


def _out_of_range(fld: schema.Field) -> list[object]:
    if fld.kind == "text":
        return ["x" * (int(fld.max or 0) + 1)] + ([""] if (fld.min or 0) > 0 else [])
    if fld.kind == "digits":
        return ["1" * (int(fld.max or 0) + 1), "1" * (int(fld.min or 1) - 1)]
    if fld.kind == "int":
        return [int(fld.min or 0) - 1, int(fld.max or 0) + 1]
    if fld.kind == "seconds":
        return [(fld.min or 0) - 0.05, (fld.max or 0) + 1]
    return []


CASES = [(f.key, value) for f in schema.FIELDS for value in WRONG_TYPES[f.kind] + _out_of_range(f)]


@pytest.mark.parametrize(("key", "value"), CASES, ids=[f"{k}={v!r}"[:40] for k, v in CASES])
def test_every_field_rejects_a_wrong_value_by_name(key: str, value: object) -> None:
    data = factory()
    group, name = key.split(".")
    data[group][name] = value
    with pytest.raises(SettingsInvalid) as caught:
        validate(data)
    assert set(caught.value.problems) == {key}  # only that field, named
    fld = schema.BY_KEY[key]
    message = caught.value.problems[key]
    assert message.startswith(schema.label(fld.label, "en") + ":")
    assert len(message) <= 80  # fits a few LCD rows
    if fld.kind not in ("hash",) and value is not None:
        assert "got" in message
    zh = problems(data, "zh_CN")[key]
    assert zh.startswith(schema.label(fld.label, "zh_CN"))


def test_factory_is_valid_and_every_schema_field_is_in_factory() -> None:
    validate(factory())
    for fld in schema.FIELDS:
        assert fld.name in FACTORY[fld.group], fld.key
    assert FACTORY["comms"]["retries"] == 1
    assert FACTORY["security"]["max_password_tries"] == 5
    assert FACTORY["security"]["lock_minutes"] == 5


def test_unknown_groups_fields_and_missing_fields_are_named() -> None:
    data = factory()
    data["extra"] = {}
    data["merchant"]["nickname"] = "x"
    del data["merchant"]["tid"]
    data["printer"] = "58mm"
    found = problems(data)
    assert "unknown group" in found["extra"]
    assert "unknown field" in found["merchant.nickname"]
    assert found["merchant.tid"] == "TID: missing"
    assert "must be a table" in found["printer"]
    assert "table of groups" in problems([1, 2])["settings"]


def test_the_hash_is_never_echoed() -> None:
    data = factory()
    data["security"]["supervisor_hash"] = "123456-secret"
    assert "123456" not in problems(data)["security.supervisor_hash"]


def test_migration_fills_only_added_fields() -> None:
    old = factory()
    del old["comms"]["retries"]
    del old["security"]["max_password_tries"]
    del old["security"]["lock_minutes"]
    del old["merchant"]["tid"]  # not a new field: stays missing, reported
    data, filled = migrate(old)
    assert set(filled) == {"comms.retries", "security.max_password_tries", "security.lock_minutes"}
    assert data["comms"]["retries"] == 1
    assert list(problems(data)) == ["merchant.tid"]
    assert "retries" not in old["comms"]  # the input is not changed


def test_field_problem_words() -> None:
    assert field_problem("comms.port", 70000) == "Port: whole number 1-65535, got 70000"
    assert field_problem("comms.port", 5800) is None
    assert field_problem("comms.tpdu", "60000300AB") is None


def test_staged_changes_data_and_self_tests() -> None:
    base = factory()
    staged = Staged(base)
    assert staged.changed() == {} and staged.self_tests() == ()
    staged = (staged.set("display", "contrast", 7).set("comms", "port", 9000)
              .set("printer", "copies", 1).set("display", "language", "zh_CN"))
    assert staged.changed() == {"display.contrast": (5, 7), "comms.port": (5800, 9000),
                                "printer.copies": (2, 1), "display.language": ("en", "zh_CN")}
    assert staged.self_tests() == ("echo", "printer", "display")
    assert staged.data()["comms"]["port"] == 9000 and base["comms"]["port"] == 5800
    back = staged.set("comms", "port", 5800)  # back to the live value: no longer a change
    assert "comms.port" not in back.changed()
    assert Staged(base).set("display", "language", "zh_CN").self_tests() == ()


@pytest.mark.parametrize(("value", "ok"), [(3, True), (15, True), (300, True), (2, False), (301, False),
                                           ("10", False)])
def test_result_timeout_is_validated(value, ok) -> None:
    from firmware.settings.model import field_problem

    assert (field_problem("display.result_timeout_s", value) is None) == ok
