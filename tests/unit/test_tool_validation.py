"""Tool schemas checked at load, and tool-call arguments checked against them."""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.input_batches import BATCHED, batches
from voxgate.tools.validation import (
    ArgumentsError,
    ArgumentsValidator,
    PatternTooSlow,
    ToolSchemaError,
    check_tool_schema,
    ecma_pattern,
    parse_arguments,
    pattern_search,
)

BOOKING: dict[str, Any] = {
    "type": "object",
    "properties": {
        "date": {"type": "string", "format": "date"},
        "time": {"type": "string", "format": "time"},
        "email": {"type": "string", "format": "email"},
        "party": {"type": "integer", "minimum": 1, "maximum": 12},
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"qty": {"type": "integer", "minimum": 1}},
                      "required": ["qty"]},
        },
    },
    "required": ["date", "party"],
    "additionalProperties": False,
}


@pytest.fixture
def booking() -> ArgumentsValidator:
    return ArgumentsValidator("book_table", BOOKING)


def error_of(validator: ArgumentsValidator, arguments: dict[str, Any]) -> ArgumentsError:
    with pytest.raises(ArgumentsError) as caught:
        validator.validate(arguments)
    return caught.value


def test_valid_arguments_pass(booking: ArgumentsValidator) -> None:
    booking.validate({"date": "2025-03-14", "time": "19:30:00+01:00", "email": "jane@example.com",
                      "party": 4, "items": [{"qty": 2}]})


def test_a_missing_parameter_is_named(booking: ArgumentsValidator) -> None:
    error = error_of(booking, {"date": "2025-03-14"})
    assert error.param == "party"
    assert "'party' is a required property" in error.message


def test_an_unexpected_parameter_is_named(booking: ArgumentsValidator) -> None:
    error = error_of(booking, {"date": "2025-03-14", "party": 2, "colour": "red"})
    assert "'colour' was unexpected" in error.message


def test_a_nested_failure_names_its_path(booking: ArgumentsValidator) -> None:
    error = error_of(booking, {"date": "2025-03-14", "party": 2, "items": [{"qty": 1}, {"qty": 0}]})
    assert error.param == "items[1].qty"
    assert error.message.startswith("items[1].qty: 0 is less than the minimum of 1")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("date", "next tuesday"),
        ("date", "2025-02-30"),
        ("time", "7pm"),
        ("time", "19:30"),  # RFC 3339 full-time needs seconds and an offset
        ("time", "25:00:00Z"),
        ("email", "jane at example dot com"),
        ("email", "jane@localhost"),
    ],
)
def test_formats_are_asserted(booking: ArgumentsValidator, field: str, value: str) -> None:
    error = error_of(booking, {"date": "2025-03-14", "party": 2, field: value})
    assert error.param == field
    assert "is not a" in error.message


def test_date_time_format() -> None:
    validator = ArgumentsValidator("t", {"type": "object", "properties": {"at": {"format": "date-time"}}})
    validator.validate({"at": "2025-03-14T19:30:00Z"})
    for bad in ("2025-03-14 19:30", "2025-13-01T00:00:00Z", "yesterday"):
        with pytest.raises(ArgumentsError):
            validator.validate({"at": bad})


def test_every_failure_is_reported_with_the_most_relevant_first(booking: ArgumentsValidator) -> None:
    error = error_of(booking, {"date": "soon", "party": 40, "x": 1})
    parts = error.message.split("; ")
    assert len(parts) == 3
    assert any(p.startswith("date: ") for p in parts) and any(p.startswith("party: ") for p in parts)


def test_long_values_are_shortened_in_messages(booking: ArgumentsValidator) -> None:
    error = error_of(booking, {"date": "x" * 10_000, "party": 1})
    assert len(error.message) <= 200
    assert error.message.startswith("date: ") and error.message.endswith("is not a 'date'")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [("", {}), ("  ", {}), ('{"a": 1}', {"a": 1}), ('{"a": {"b": [1, 2]}}', {"a": {"b": [1, 2]}})],
)
def test_parse_arguments(arguments: str, expected: dict[str, Any]) -> None:
    assert parse_arguments(arguments) == expected


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ('{"a": 1', "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('"text"', "must be a JSON object, got str"),
        ("null", "must be a JSON object, got NoneType"),
        ("[" * 100_000, "nested too deeply"),
        ('{"a":' + "[" * 40 + "]" * 40 + "}", "nested too deeply"),
    ],
)
def test_bad_arguments_are_typed_errors(arguments: str, fragment: str) -> None:
    with pytest.raises(ArgumentsError, match=fragment):
        parse_arguments(arguments)


@given(st.text(max_size=200))
def test_parse_arguments_returns_an_object_or_raises_arguments_error(arguments: str) -> None:
    try:
        value = parse_arguments(arguments)
    except ArgumentsError:
        return
    assert isinstance(value, dict)


_BOOKING = ArgumentsValidator("book_table", BOOKING)  # validating keeps no state: one for every example


@given(st.dictionaries(st.text(max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10)))
def test_validation_never_raises_anything_but_arguments_error(arguments: dict[str, Any]) -> None:
    assert parse_arguments(json.dumps(arguments)) == arguments
    try:
        _BOOKING.validate(arguments)
    except ArgumentsError as exc:
        assert exc.message


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "object", "properties": {"n": {"type": "integr"}}}, "properties.n.type"),
        ({"type": "object", "required": "name"}, "required"),
        ({"type": "array", "items": {}}, "must describe a JSON object"),
        ({"type": "object", "properties": {"n": {"minimum": "one"}}}, "properties.n.minimum"),
    ],
)
def test_bad_schemas_are_refused_with_the_place_named(schema: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ToolSchemaError, match="tool 'lookup'") as caught:
        check_tool_schema("lookup", schema)
    assert fragment in str(caught.value)


def test_a_schema_without_type_is_accepted() -> None:
    check_tool_schema("lookup", {"properties": {"id": {"type": "string"}}})


# -- patterns, as ECMA-262 reads them ------------------------------------------------------------------

ORDER = {"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^[0-9]{4,10}$"}},
         "patternProperties": {"^x-[a-z]+$": {"type": "integer"}}}


@pytest.mark.parametrize("value", ["4567\n", "4567\r\n", "\n4567", "4567 ", "\uff14\uff15\uff16\uff17", "45\n67"])
def test_an_anchored_pattern_refuses_what_ecma_refuses(value: str) -> None:
    error = error_of(ArgumentsValidator("lookup", ORDER), {"order_id": value})
    assert error.param == "order_id" and "does not match" in error.message


def test_an_anchored_pattern_takes_what_ecma_takes() -> None:
    validator = ArgumentsValidator("lookup", ORDER)
    validator.validate({"order_id": "4567", "x-tag": 1})
    validator.validate({"x-tag\n": "not checked: the name does not match the pattern"})
    assert error_of(validator, {"x-tag": "one"}).param == "x-tag"


@pytest.mark.parametrize(("pattern", "value", "matches"), [
    ("^a$", "a", True), ("^a$", "a\n", False), ("a$", "ba", True), ("^[$]$", "$", True), ("^[$]$", "$\n", False),
    (r"^\$$", "$", True), (r"^\\$", "\\", True), (r"^\\$", "\\\n", False), ("^[]$]+$", "]$", True),
    ("^[^]$]$", "a", True), ("^[^]$]$", "$", False), ("^(a|b$)", "b\n", False), ("^(a|b$)", "a\n", True),
    (r"^\d+$", "12", True), (r"^\d+$", "\u0661\u0662", False), (r"^\w+$", "\u00e9", False), ("^(?:x)$", "x", True),
])
def test_ecma_pattern(pattern: str, value: str, matches: bool) -> None:
    assert (ecma_pattern(pattern).search(value) is not None) is matches


@pytest.mark.parametrize(("field", "value"), [("time", "19:30:00Z\n"), ("email", "jane@example.com\n")])
def test_formats_refuse_a_trailing_newline(booking: ArgumentsValidator, field: str, value: str) -> None:
    assert error_of(booking, {"date": "2025-03-14", "party": 2, field: value}).param == field


_pattern_pieces = st.sampled_from(["^", "$", "a", "[", "]", "^", "\\", "$", "(", ")", "|", "*", "[$]", "\\$", "b", "?"])


@settings(BATCHED, max_examples=170)  # ~700 patterns and values (600 unbatched)
@given(batches(st.lists(_pattern_pieces, max_size=10).map("".join), st.text(alphabet="ab$\n\\]", max_size=6)))
def test_ecma_patterns_differ_from_pythons_only_at_a_final_newline(cases: list[tuple[str, str]]) -> None:
    for pattern, value in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "possible nested set": generated patterns are odd
            try:
                python = re.compile(pattern, re.ASCII)
            except re.error:
                continue
            ecma = ecma_pattern(pattern)  # a pattern Python takes is never broken by the translation
        if "\n" not in value:
            assert (ecma.search(value) is None) == (python.search(value) is None)
        elif ecma.search(value) is not None:
            assert python.search(value) is not None  # ECMA's '$' only ever matches less


# Catastrophic backtracking: a client's `^(a|aa)+$` against forty letters and a stop would take minutes.
EVIL = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a|aa)+$"}}, "required": ["code"]}


def test_a_pattern_that_backtracks_forever_is_an_argument_error_not_a_hang() -> None:
    validator = ArgumentsValidator("lookup", EVIL)
    error = error_of(validator, {"code": "a" * 40 + "!"})
    assert error.param == "code" and "took too long" in str(error)
    # The control: a pattern of the same shape matches what it should (the slow one is refused from now on).
    ArgumentsValidator("lookup", {"type": "object", "properties": {"code": {"pattern": "^(b|bb)+$"}}}).validate(
        {"code": "bbbb"})
    assert "took too long" in str(error_of(validator, {"code": "aaaa"}))


def test_pattern_properties_and_slot_guessing_survive_a_backtracking_pattern() -> None:
    with pytest.raises(PatternTooSlow):
        pattern_search("^(c|cc)+$", "c" * 40 + "!")
    schema = {"type": "object", "patternProperties": {"^(d|dd)+$": {"type": "integer"}}}
    assert "took too long" in str(error_of(ArgumentsValidator("t", schema), {"d" * 40 + "!": 1}))
    from voxgate.engines.local.brains.slots import slot_kind  # the flow brain reads client patterns too
    assert slot_kind("reference", {"type": "string", "pattern": "^([0-9]+)+$"}) == "digits"
    assert slot_kind("reference", {"type": "string", "pattern": "^([0-9]|[0-9][0-9])+$"}) == "digits"
    assert slot_kind("reference", {"type": "string", "pattern": "^(e|ee)+$"}) == "text"
