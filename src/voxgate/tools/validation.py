"""Checking tool schemas when an agent loads, and tool-call arguments before a tool runs.

Schemas are JSON Schema Draft 2020-12. Formats are asserted, not just annotated: `date` (YYYY-MM-DD),
`time` (RFC 3339 full-time, e.g. "14:30:00Z" or "14:30:00+02:00"), `date-time` and `email` reject
malformed values, so a tool never receives "next Tuesday" where it asked for a date. Patterns mean what
JSON Schema says they mean (ECMA-262), not what Python's `re` makes of them: "^[0-9]{4}$" refuses "1234"
followed by a newline. Error messages name the parameter at fault ("items[0].qty: -1 is less than the
minimum of 1") because the model reads them and retries.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import regex
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from voxgate.protocol.json_text import MAX_JSON_DEPTH, nested_too_deep

__all__ = [
    "ArgumentsError",
    "ArgumentsValidator",
    "PatternTooSlow",
    "SchemaValidator",
    "ToolSchemaError",
    "check_tool_schema",
    "ecma_pattern",
    "parse_arguments",
    "pattern_search",
]

_MAX_ERRORS = 5
_MAX_MESSAGE_CHARS = 200

_TIME = re.compile(
    r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9]|60)(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")


class ToolSchemaError(ValueError):
    """A tool's `parameters` is not a usable JSON schema (raised when the agent's tools are built)."""


@dataclass
class ArgumentsError(Exception):
    """The model's arguments are not a JSON object, or break the tool's schema."""

    message: str
    param: str | None = None  # path of the first failing parameter, e.g. "items[0].qty"

    def __str__(self) -> str:
        return self.message


def _format_checker() -> FormatChecker:
    checker = FormatChecker()

    # jsonschema asserts `time` and `date-time` only when optional packages are installed; these
    # checks have no dependencies and follow RFC 3339 as Draft 2020-12 asks.
    @checker.checks("time", raises=ValueError)
    def is_time(instance: object) -> bool:
        return not isinstance(instance, str) or _TIME.fullmatch(instance) is not None

    @checker.checks("date-time", raises=ValueError)
    def is_date_time(instance: object) -> bool:
        if not isinstance(instance, str):
            return True
        date, sep, time = instance.partition("T") if "T" in instance else instance.partition("t")
        if not sep or _TIME.fullmatch(time) is None or len(date) != 10:
            return False
        dt.date.fromisoformat(date)
        return True

    # The stock check only looks for an "@"; a model that writes "jane at example dot com" should hear no.
    @checker.checks("email")
    def is_email(instance: object) -> bool:
        return not isinstance(instance, str) or _EMAIL.fullmatch(instance) is not None

    return checker


_FORMAT_CHECKER = _format_checker()


# A pattern is matched for at most about this long. Schemas come from clients (session.update tools) as
# well as agents: `^(a|aa)+$` against forty letters would otherwise hold the interpreter (and every call)
# for minutes. The `regex` module releases the GIL while it matches and stops near the time limit (it
# looks at the clock now and then: a few times the limit in practice). A pattern that ran out of time
# once is refused at once from then on, so a client cannot spend the limit again and again. The limit is
# the wall clock's (all `regex` can watch), which a thread that was simply not running on a loaded machine
# also reaches: only a match that spent half the limit on the CPU itself is slow and remembered (one stall
# remembered `^[0-9]{4,10}$` and failed every later order lookup in the process); one that ran out of wall
# time without is tried again, at most PATTERN_TRIES times in all.
PATTERN_TIME_LIMIT_S = 0.02
PATTERN_TRIES = 3
_too_slow: set[str] = set()
_TOO_SLOW_REMEMBERED = 1024


class PatternTooSlow(ValueError):
    """A schema pattern did not finish matching within PATTERN_TIME_LIMIT_S."""


def pattern_search(pattern: str, text: str) -> bool:
    """Does the ECMA-262 `pattern` match somewhere in `text`? PatternTooSlow when it takes too long;
    regex.error when the pattern is not one."""
    if pattern in _too_slow:
        raise PatternTooSlow(f"the pattern {pattern[:80]!r} took too long to match before")
    compiled = ecma_pattern(pattern)
    for _ in range(PATTERN_TRIES):
        started = time.thread_time()
        try:
            return compiled.search(text, timeout=PATTERN_TIME_LIMIT_S, concurrent=True) is not None
        except TimeoutError:
            if time.thread_time() - started >= PATTERN_TIME_LIMIT_S / 2:
                if len(_too_slow) >= _TOO_SLOW_REMEMBERED:
                    _too_slow.clear()
                _too_slow.add(pattern)
                raise PatternTooSlow(f"the pattern {pattern[:80]!r} took too long to match") from None
    raise PatternTooSlow(f"the pattern {pattern[:80]!r} took too long to match: the machine was too busy to run it")


@functools.lru_cache(maxsize=1024)
def ecma_pattern(pattern: str) -> regex.Pattern[str]:
    r"""A schema `pattern` compiled to match as ECMA-262 reads it, which is what JSON Schema specifies.

    Python's `$` also matches before a final newline ("^[0-9]{4}$" would take "1234\n"); ECMA's only at
    the very end, so every `$` outside a character class becomes `\Z`. ECMA's `\d` and `\w` are ASCII.
    """
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            # A ']' right after '[' or '[^' is a literal inside the class, not its end (as `re` reads it).
            skip = 2 if pattern[i + 1:i + 2] == "^" else 1
            if pattern[i + skip:i + skip + 1] == "]":
                out.append(pattern[i:i + skip + 1])
                i += skip + 1
                continue
        elif char == "$":
            out.append(r"\Z")
            i += 1
            continue
        out.append(char)
        i += 1
    return regex.compile("".join(out), regex.ASCII | regex.VERSION0)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        matched = pattern_search(pattern, instance)
    except (PatternTooSlow, regex.error) as exc:
        yield ValidationError(f"{instance[:80]!r} cannot be checked against the pattern: {exc}")
        return
    if not matched:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any,
                        schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            try:
                matched = pattern_search(pattern, name)
            except (PatternTooSlow, regex.error) as exc:
                yield ValidationError(f"property {name[:80]!r} cannot be checked against the pattern: {exc}")
                continue
            if matched:
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


# Draft 2020-12 with its patterns read as ECMA-262 (`ecma_pattern`).
SchemaValidator = validators.extend(Draft202012Validator, {"pattern": _pattern,
                                                           "patternProperties": _pattern_properties})


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _shorten(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    # Keep both ends: the value quoted at the start can be huge, the rule it broke comes at the end.
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def check_tool_schema(tool_name: str, schema: dict[str, Any]) -> None:
    """Raise ToolSchemaError unless `schema` is a valid Draft 2020-12 schema for an arguments object."""
    try:
        SchemaValidator.check_schema(schema)
    except SchemaError as exc:
        where = _path(exc.path) or "parameters"
        raise ToolSchemaError(
            f"tool {tool_name!r}: invalid parameters schema at {where}: {_shorten(exc.message)}") from None
    declared = schema.get("type")
    if declared is not None and declared != "object":
        raise ToolSchemaError(
            f"tool {tool_name!r}: parameters must describe a JSON object (type: object), not {declared!r}")


def parse_arguments(arguments: str) -> dict[str, Any]:
    """Decode the model's arguments string; it must hold a JSON object. A blank string means no arguments."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise ArgumentsError(
            f"arguments are not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ArgumentsError("arguments are nested too deeply") from None
    if nested_too_deep(arguments, value):  # schema checks and redaction would recurse through it again
        raise ArgumentsError(f"arguments are nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    if not isinstance(value, dict):
        raise ArgumentsError(f"arguments must be a JSON object, got {type(value).__name__}")
    return value


class ArgumentsValidator:
    """A tool's schema compiled once; `validate` is called on every tool call."""

    def __init__(self, tool_name: str, schema: dict[str, Any]) -> None:
        check_tool_schema(tool_name, schema)
        self.tool_name = tool_name
        self._validator = SchemaValidator(schema, format_checker=_FORMAT_CHECKER)

    def validate(self, arguments: dict[str, Any]) -> None:
        """Raise ArgumentsError naming the failing parameters unless `arguments` fits the schema."""
        errors = list(self._validator.iter_errors(arguments))
        if not errors:
            return
        first = best_match(errors)
        ordered = [first, *sorted((e for e in errors if e is not first), key=lambda e: list(e.absolute_path))]
        messages = [self._describe(e) for e in ordered[:_MAX_ERRORS]]
        if len(errors) > _MAX_ERRORS:
            messages.append(f"and {len(errors) - _MAX_ERRORS} more")
        raise ArgumentsError("; ".join(messages), param=_path(first.absolute_path) or _missing_name(first))

    @staticmethod
    def _describe(error: ValidationError) -> str:
        where = _path(error.absolute_path)
        return _shorten(f"{where}: {error.message}" if where else error.message)


def _missing_name(error: ValidationError) -> str | None:
    # A missing property fails at its parent; name the property itself so the model knows what to add.
    if error.validator == "required" and isinstance(error.instance, dict):
        required: Any = error.validator_value
        missing = [name for name in required if name not in error.instance]
        if missing:
            return _path([*error.absolute_path, missing[0]])
    return None
