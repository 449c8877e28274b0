"""Spoken text: what the local TTS reads for a reply (ids digit by digit, phones in groups, years in pairs...)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.engines.local.spoken_text import ID_WORDS, clock_time, digits, spoken_text, year

ACME = Path(__file__).resolve().parents[2] / "examples" / "agents" / "acme.yaml"


@pytest.mark.parametrize(("text", "said"), [
    # Ids: 5+ digits anywhere, 4 digits after an id word, the acme demo's replies among them.
    ("Order 4567 has shipped with UPS.", "Order 4 5 6 7 has shipped with UPS."),
    ("Order 55501 was cancelled.", "Order 5 5 5 0 1 was cancelled."),
    ("Order 202501 has shipped with DHL.", "Order 2 0 2, 5 0 1 has shipped with DHL."),
    ("I couldn't find an order with number 9999.", "I couldn't find an order with number 9 9 9 9."),
    ("the card ending in 4242.", "the card ending in 4 2 4 2."),
    ("Your ticket number is 1234", "Your ticket number is 1 2 3 4"),
    ("booking reference: 1234", "booking reference: 1 2 3 4"),
    ("Case ID 3141, account 8080", "Case ID 3 1 4 1, account 8 0 8 0"),
    ("ticket #4567 and #1234", "ticket number 4 5 6 7 and number 1 2 3 4"),  # espeak says "#" as "hash"
    ("order no. 1234", "order number 1 2 3 4"),  # and ends a sentence at "no."
    ("tracking 1Z999AA10123456784", "tracking 1 Z 9, 9 9 eigh, eigh 1 0, 1 2 3, 4 5 6, 7 8 4"),
    ("Your confirmation code is 3FA9C2.", "Your confirmation code is 3 F eigh, 9 C 2."),
    ("Your confirmation number is 7.", "Your confirmation number is 7."),  # short numbers are said as numbers
    # Counts and quantities stay numbers.
    ("We have 1500 units and 4,567 customers", "We have 1500 units and 4,567 customers"),
    ("12000 dollars, 10,000 people, 3.14159", "12000 dollars, 10,000 people, 3.14159"),
    # Years in pairs, after a word that introduces one.
    ("Open since 1999, moved in 2026.", "Open since 19 99, moved in 20 26."),
    ("Founded in 1905, rebuilt in 1900 and in 2005", "Founded in 19 oh 5, rebuilt in 19 hundred and in 2005"),
    ("March 13, 2026 and Jan 2030", "March 13, 20 26 and Jan 20 30"),
    ("the 1990s and the 2000s", "the 19 nineties and the two thousands"),
    ("Order 2025 from 2024", "Order 2 0 2 5 from 20 24"),  # an id word wins over a year
    ("on 2026-03-13", "on March 13, 20 26"),
    # Amounts in units.
    ("That's $12.50.", "That's 12 dollars 50."),
    ("$1,200 or $1 or $0.05 or $3.5 million", "1,200 dollars or 1 dollar or 5 cents or 3.5 million dollars"),
    ("€20 and £7.5", "20 euros and 7 pounds 50"),
    ("1,200 dollars", "1,200 dollars"),
    # Times: 24-hour ones in 12, minutes as a person says them.
    ("at 4:30, 15:00, 09:05, 00:30", "at 4 30, 3 PM, 9 oh 5 AM, 12 30 AM"),
    ("at 10:00 AM or 2:05 pm or 10 am or 3 p.m.", "at 10 AM or 2 oh 5 pm or 10 am or 3 p.m."),
    ("at 12:00 or 4:00", "at 12 o'clock or 4 o'clock"),
    ("at 10AM, 3PM", "at 10AM, 3PM"),  # a time, not a code to spell
    ("12:30:45 and 3:1", "12:30:45 and 3:1"),
    # Phone numbers in their groups.
    ("Call 555 123 4567.", "Call 5 5 5, 1 2 3, 4 5 6 7."),
    ("(555) 123-4567 or 555.123.4567", "5 5 5, 1 2 3, 4 5 6 7 or 5 5 5, 1 2 3, 4 5 6 7"),
    ("+1 (555) 123-4567 or 1-800-555-0100", "plus 1, 5 5 5, 1 2 3, 4 5 6 7 or 1, 8 0 0, 5 5 5, 0 1 0 0"),
    ("+15551234567 or +442071234567", "plus 1, 5 5 5, 1 2 3, 4 5 6 7 or plus 4 4 2, 0 7 1, 2 3 4, 5 6 7"),
    ("dial 555-0100", "dial 5 5 5, 0 1 0 0"),
    # Ordinals and everything without digits read well as they are.
    ("the 21st, the 3rd", "the 21st, the 3rd"),
    ("Thanks for calling Acme. Goodbye!", "Thanks for calling Acme. Goodbye!"),
])
def test_spoken_text_examples(text: str, said: str) -> None:
    assert spoken_text(text) == said
    assert spoken_text(said) == said  # read twice (a caller that already passed spoken text), the same


@pytest.mark.parametrize(("run", "said"), [
    ("4567", "4 5 6 7"), ("55501", "5 5 5 0 1"), ("202501", "2 0 2, 5 0 1"), ("1234567", "1 2 3, 4 5 6 7"),
    ("12345678", "1 2 3 4, 5 6 7 8"), ("5551234567", "5 5 5, 1 2 3, 4 5 6 7"),
    ("12345678901", "1 2 3, 4 5 6 7, 8 9 0 1"),
])
def test_digits_are_grouped_in_threes_then_fours(run: str, said: str) -> None:
    assert digits(run) == said


def test_years_and_clock_times() -> None:
    assert [year(y) for y in (2026, 1999, 1905, 1900, 2000, 2009, 2010)] == \
        ["20 26", "19 99", "19 oh 5", "19 hundred", "2000", "2009", "20 10"]
    assert [clock_time(*t) for t in ((15, 0), (9, 30), (12, 0), (0, 0), (23, 59))] == \
        ["3 PM", "9:30 AM", "noon", "12 AM", "11:59 PM"]


@given(st.text(alphabet=st.characters(blacklist_categories=("Nd", "No", "Cs"))))
def test_text_without_digits_is_read_as_it_is(text: str) -> None:
    assert spoken_text(text) == text


@given(st.sampled_from(ID_WORDS), st.from_regex(r"[0-9]{4,16}", fullmatch=True))
def test_an_id_is_read_digit_by_digit_and_keeps_every_digit(word: str, number: str) -> None:
    said = spoken_text(f"Your {word} is {number}.")
    assert re.sub(r"\D", "", said) == number  # every digit, in order
    assert not re.search(r"\d\d", said), said  # and no two of them said together as a number


def test_the_acme_agent_s_lines_with_ids_are_spoken_digit_by_digit() -> None:
    # The demo's templates, filled as its tools fill them.
    from voxgate.agents import load_agent
    from voxgate.engines.local.brains.flow import render

    agent = load_agent(ACME)
    lookup, book, pay = (agent.tool(name) for name in ("lookup_order", "book_appointment", "pay_invoice"))
    assert lookup is not None and book is not None and pay is not None
    assert spoken_text(render(lookup.say or "", {"order_id": "4567", "summary": "has shipped with UPS"}) or "") \
        == "Order 4 5 6 7 has shipped with UPS."
    booked = render(book.say or "", {"date": "2026-03-13", "time": "15:30", "appointment_id": 12}) or ""
    assert booked == "You're booked for Friday, March 13 at 3:30 PM. Your confirmation number is 12."
    assert spoken_text(booked) == "You're booked for Friday, March 13 at 3 30 PM. Your confirmation number is 12."
    paid = render(pay.say or "", {"card_last4": "4242", "confirmation": "3FA9C2"}) or ""
    assert spoken_text(paid).endswith("card ending in 4 2 4 2. Your confirmation code is 3 F eigh, 9 C 2.")
