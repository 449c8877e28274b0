"""Slot extraction: spoken numbers, dates, times, enums, free text, and schema validation."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.engines.local.brains.slots import (
    argument_error,
    extract_argument,
    extract_date,
    extract_enum,
    extract_number,
    extract_text,
    extract_time,
    slot_kind,
    spoken_digits,
)

TODAY = date(2025, 3, 12)  # a Wednesday
ORDER_ID = {"type": "string", "pattern": "^[0-9]{4,10}$", "description": "Your order number, 4 to 10 digits"}
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.mark.parametrize(("said", "digits"), [
    ("four five six seven", "4567"),
    ("order number twelve thirty four", "1234"),
    ("45 67", "4567"),
    ("4,567", "4567"),
    ("forty-five sixty-seven", "4567"),
    ("four thousand five hundred sixty seven", "4567"),
    ("twelve hundred thirty four", "1234"),
    ("double five two one", "5521"),
    ("zero zero four two", "0042"),
    ("1-2-3-4", "1234"),
    ("#7788", "7788"),
    ("four oh five six", "4056"),
])
def test_spoken_digits(said: str, digits: str) -> None:
    assert spoken_digits(said) == [digits]


@pytest.mark.parametrize(("said", "order_id"), [
    ("Where is my order for 5-6-7?", "4567"),  # what Whisper wrote for "order four five six seven"
    ("my order is to 1 3 4", "2134"),
    ("for 5 6 7", "4567"),
    ("I'm calling for order 1234", "1234"),  # the plain reading fits: the homophone is a word
    ("order for 12", None),  # neither fits
])
def test_a_digit_misheard_as_a_word_is_tried_when_the_plain_reading_does_not_fit(said: str,
                                                                                  order_id: str | None) -> None:
    assert extract_argument("order_id", ORDER_ID, said, TODAY) == order_id


def test_separate_numbers_stay_separate() -> None:
    assert spoken_digits("I ordered 2 things, order 4567") == ["2", "4567"]
    assert spoken_digits("oh, I need help") == []


@given(st.text(alphabet="0123456789", min_size=4, max_size=10))
def test_any_id_spoken_digit_by_digit_round_trips(digits: str) -> None:
    said = "my order number is " + " ".join(WORDS[int(d)] for d in digits)
    assert extract_argument("order_id", ORDER_ID, said, TODAY) == digits


@given(st.text(alphabet="0123456789", min_size=4, max_size=10), st.sampled_from([" ", "-", ", "]))
def test_any_id_in_asr_digit_groups_round_trips(digits: str, sep: str) -> None:
    groups = [digits[i:i + 2] for i in range(0, len(digits), 2)]
    assert extract_argument("order_id", ORDER_ID, "order " + sep.join(groups), TODAY) == digits


@pytest.mark.parametrize(("said", "time"), [
    ("tomorrow at three pm", "15:00"),
    ("3 p.m.", "15:00"),
    ("3pm", "15:00"),
    ("Three PM", "15:00"),
    ("at 10:30 am", "10:30"),
    ("at ten thirty", "10:30"),
    ("next friday at noon", "12:00"),
    ("12 noon", "12:00"),
    ("quarter past two in the afternoon", "14:15"),
    ("quarter to three", "14:45"),
    ("half past ten", "10:30"),
    ("around 4 o'clock", "16:00"),
    ("tomorrow morning at nine", "09:00"),
    ("2 in the afternoon", "14:00"),
    ("at ten oh five", "10:05"),
    ("at 7 in the evening", "19:00"),
    ("midnight", "00:00"),
    ("twenty past four", "16:20"),  # was 20:00 ("twenty" read as the hour)
    ("five to ten", "09:55"),
    ("twenty five past three", "15:25"),
    ("ten minutes past two", "14:10"),
    ("at 10 to 4 in the afternoon", "15:50"),
    ("twenty to nine in the morning", "08:40"),
    ("2.30 pm", "14:30"),  # a British caller's time, as Whisper writes it
])
def test_times(said: str, time: str) -> None:
    assert extract_time(said) == time


def test_bare_numbers_are_times_only_when_answering() -> None:
    assert extract_time("in two days") is None
    assert extract_time("order 4567") is None
    assert extract_time("eleven", loose=True) == "11:00"
    assert extract_time("in 3 days", loose=True) is None
    assert extract_time("from ten to twelve") is None  # a range, not 11:50
    assert extract_time("the price is 2.30") is None


@pytest.mark.parametrize(("said", "day"), [
    ("today", "2025-03-12"),
    ("tomorrow at 3", "2025-03-13"),
    ("the day after tomorrow", "2025-03-14"),
    ("next friday at noon", "2025-03-14"),
    ("friday", "2025-03-14"),
    ("on wednesday", "2025-03-19"),
    ("this wednesday", "2025-03-12"),
    ("next wednesday", "2025-03-19"),
    ("the 3rd of december at 10:30 am", "2025-12-03"),
    ("December 3rd", "2025-12-03"),
    ("december the third, 2026", "2026-12-03"),
    ("the twenty first of March", "2025-03-21"),
    ("march the twenty-first", "2025-03-21"),
    ("March 1st", "2026-03-01"),
    ("the 18th", "2025-03-18"),
    ("the 5th", "2025-04-05"),
    ("3/21", "2025-03-21"),
    ("2025-06-30", "2025-06-30"),
    ("in two days", "2025-03-14"),
    ("in a week", "2025-03-19"),
    ("Wednesday the 19th", "2025-03-19"),
    ("a week from today", "2025-03-19"),  # was today: "today" was read first
    ("two weeks from tomorrow", "2025-03-27"),
    ("Thurs the 13th", "2025-03-13"),
    ("tues", "2025-03-18"),
])
def test_dates(said: str, day: str) -> None:
    found = extract_date(said, TODAY)
    assert found is not None and found.isoformat() == day


def test_no_date_where_none_was_said() -> None:
    assert extract_date("may I book something", TODAY) is None
    assert extract_date("order 4567", TODAY) is None
    assert extract_date("I sat in the sun on the way", TODAY) is None  # short forms that are other words


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
       st.integers(min_value=0, max_value=400))
def test_relative_days_are_never_in_the_past(today: date, offset: int) -> None:
    for said in ("tomorrow", "next monday", "friday", "the 15th", "June 1st"):
        found = extract_date(said, today)
        assert found is not None and found >= today


def test_enums_and_numbers() -> None:
    units = ["celsius", "fahrenheit"]
    assert extract_enum("make it 20 C", units) == "celsius"
    assert extract_enum("68 Fahrenheit", units) == "fahrenheit"
    assert extract_enum("seventy degrees farenheit", units) == "fahrenheit"
    assert extract_enum("degrees centigrade", units) == "celsius"
    assert extract_enum("just warm", units) is None
    assert extract_number("twenty one degrees") == 21
    assert extract_number("set it to 21.5") == 21.5
    assert extract_number("minus five") == -5


def test_free_text() -> None:
    city = {"type": "string", "description": "City name"}
    assert extract_text("city", city, "Is it going to rain in Seattle today?", answer=False) == "Seattle"
    assert extract_text("city", city, "weather in new york please", answer=False) == "new york"
    assert extract_text("city", city, "um it's Boston.", answer=True) == "Boston"
    reason = {"type": "string", "description": "Why the caller wants a person"}
    assert extract_text("reason", reason, "I want a human, this is useless.", answer=False) == \
        "I want a human, this is useless"


def test_slot_kinds() -> None:
    assert slot_kind("order_id", ORDER_ID) == "digits"
    assert slot_kind("date", {"type": "string", "format": "date"}) == "date"
    assert slot_kind("when", {"type": "string", "description": "Time, HH:MM"}) == "time"
    assert slot_kind("unit", {"type": "string", "enum": ["c", "f"]}) == "enum"
    assert slot_kind("temperature", {"type": "number"}) == "number"
    assert slot_kind("city", {"type": "string"}) == "text"
    assert slot_kind("code", {"type": "string", "pattern": "^[A-Z]{3}$"}) == "text"


def test_validation() -> None:
    assert argument_error(ORDER_ID, "4567") is None
    assert argument_error(ORDER_ID, "123") is not None
    assert argument_error({"type": "string", "format": "date"}, "2025-02-30") is not None
    assert extract_argument("order_id", ORDER_ID, "order one two three", TODAY) is None
    # An answer keeps what was heard, so the brain can say it does not fit.
    assert extract_argument("order_id", ORDER_ID, "one two three", TODAY, answer=True) == "123"
