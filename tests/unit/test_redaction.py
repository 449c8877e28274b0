"""Redaction of card numbers, SSNs and emails: examples, then properties over generated text."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from voxgate.tools.redaction import EMAIL_MASK, SSN_MASK, luhn_valid, redact, redact_value


def luhn_complete(body: str) -> str:
    """Append the check digit that makes `body` pass Luhn."""
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("some check digit always works")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 thanks", "card **** **** **** 1111 thanks"),
        ("4111-1111-1111-1111", "**** **** **** 1111"),
        ("visa:4012888888881881.", "visa:**** **** **** 1881."),
        ("amex 3782 822463 10005", "amex **** **** **** 0005"),  # 15 digits in 4-6-5 groups
        ("digits 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 as spoken", "digits **** **** **** 1111 as spoken"),
        ("call 555 4111111111111111", "call 555 **** **** **** 1111"),  # a number beside the card
        ("4111111111111111 4111111111111111", "**** **** **** 1111 **** **** **** 1111"),
        ("**4111111111111111**", "****** **** **** 1111**"),  # markdown bold does not hide a card
    ],
)
def test_card_numbers_are_masked_keeping_the_last_four(text: str, expected: str) -> None:
    assert redact(text) == (expected, expected.count("**** **** ****"))


@pytest.mark.parametrize(
    "text",
    [
        "order 12345678 ships tomorrow",
        "call 415-555-0100 ext 1234",
        "+1 (415) 555-0100",
        "meeting on 2024-01-15 at 10:30",
        "tracking 4111111111111112",  # 16 digits, Luhn fails
        "invoice 1234567890123456789012",  # 22 digits: too long to be a card
        "ids 1234 5678",
        "ssn 000-00-0000",  # never issued
        "total 1,234,567.89 dollars",
    ],
)
def test_ordinary_numbers_are_left_alone(text: str) -> None:
    assert redact(text) == (text, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssn 123-45-6789", f"ssn {SSN_MASK}"),
        ("on file: 123-45-6789.", f"on file: {SSN_MASK}."),
        ("SSN:123456789", f"SSN:{SSN_MASK}"),
        ("my social is 123 45 6789", f"my social is {SSN_MASK}"),
        ("Social Security Number: 123456789", f"Social Security Number: {SSN_MASK}"),
    ],
)
def test_ssns_are_masked(text: str, expected: str) -> None:
    assert redact(text) == (expected, 1)


def test_nine_digits_without_a_label_are_not_an_ssn() -> None:
    assert redact("order 123456789") == ("order 123456789", 0)


def test_emails_are_masked() -> None:
    text = "write to jane.doe+billing@example.co.uk or BOB@EXAMPLE.COM."
    assert redact(text) == (f"write to {EMAIL_MASK} or {EMAIL_MASK}.", 2)
    assert redact("meet @ noon, user@localhost") == ("meet @ noon, user@localhost", 0)
    assert redact("transfer to sip:queue@pbx.example.com") == ("transfer to sip:queue@pbx.example.com", 0)


def test_redact_value_walks_json_and_masks_card_numbers_stored_as_numbers() -> None:
    value: dict[str, Any] = {
        "customer": {"email": "jane@example.com", "card": 4111111111111111, "orders": [12345, "A-77"]},
        "notes": ["ssn 123-45-6789", 1.5, True, None],
        "jane@example.com": "key holds an address",
    }
    redacted, count = redact_value(value)
    assert redacted == {
        "customer": {"email": EMAIL_MASK, "card": "**** **** **** 1111", "orders": [12345, "A-77"]},
        "notes": [f"ssn {SSN_MASK}", 1.5, True, None],
        EMAIL_MASK: "key holds an address",
    }
    assert count == 4
    assert value["customer"]["card"] == 4111111111111111  # the input is not modified


# --- properties -------------------------------------------------------------------------------------

# Text around a number: no digits (which would extend the number) and no '*' (see the mask-tail rule).
_surrounding = st.text(alphabet=string.ascii_letters + " .,:;!?()'\"\n", max_size=40)
_luhn_16 = st.text(alphabet="0123456789", min_size=15, max_size=15).map(luhn_complete)


def _grouped(number: str, sep: str) -> str:
    return sep.join(number[i:i + 4] for i in range(0, len(number), 4))


@given(_surrounding, _luhn_16, st.sampled_from(["", " ", "-"]), _surrounding)
@example("card ", "4111111111111111", " ", " ok")
def test_any_luhn_valid_16_digit_number_in_text_is_masked(
        before: str, number: str, sep: str, after: str) -> None:
    text = before + _grouped(number, sep) + after
    redacted, count = redact(text)
    assert count >= 1
    assert number[:12] not in redacted.replace(" ", "").replace("-", "")
    assert "**** **** **** " + number[-4:] in redacted or EMAIL_MASK in redacted


@given(_surrounding, st.text(alphabet="0123456789", min_size=13, max_size=19), _surrounding)
def test_digit_strings_failing_luhn_are_left_alone(before: str, digits: str, after: str) -> None:
    if luhn_valid(digits):
        digits = digits[:-1] + str((int(digits[-1]) + 1) % 10)  # one check digit off
    text = before + digits + after
    assert redact(text) == (text, 0)


@given(_surrounding, st.text(alphabet="0123456789", max_size=12), _surrounding)
def test_short_digit_strings_are_left_alone(before: str, digits: str, after: str) -> None:
    text = before + digits + after
    assert redact(text)[0] == text


_pieces = st.one_of(
    st.text(alphabet="0123456789 -", max_size=24),
    st.sampled_from(["4111111111111111", "4111 1111 1111 1111", "123-45-6789", "ssn ", "social ", " @ ",
                     "a@b.co", "jane@example.com", "sip:", "@", "*", "**** **** **** ", "\n", "x", ".", "-"]),
    _luhn_16,
    st.text(max_size=8),
)


@given(st.lists(_pieces, max_size=12).map("".join))
def test_redaction_is_idempotent(text: str) -> None:
    once, _ = redact(text)
    assert redact(once) == (once, 0)


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.lists(_pieces).map("".join),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
))
def test_redact_value_is_idempotent(value: object) -> None:
    once, _ = redact_value(value)
    assert redact_value(once) == (once, 0)
