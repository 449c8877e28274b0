"""Spoken text: a reply as the local TTS should read it aloud, the way a person on the phone says it.

Piper phonemizes with espeak-ng, which reads "4567" as "four thousand five hundred sixty-seven",
"$12.50" as "dollar twelve point five zero", "15:00" as "fifteen zero zero" and "555-123-4567" as three
numbers with dashes. A person reads an order or confirmation number digit by digit, a phone number in its
groups, a year in pairs, an amount in dollars and cents. Only the audio changes: the transcript and text
events keep the reply as written ("Order 4567"), which is also what a caller's screen shows.

Pure string rewriting with bounded regexes (linear in the text, a few ms for 4096 characters); Piper runs
it per piece in its render thread.
"""

from __future__ import annotations

import re
from datetime import date

# Words after which a 4-digit number is an identifier, read digit by digit ("order 4567", "the card ending
# in 4242"); a 5+ digit run is read so anywhere. Years, amounts and counts stay numbers.
ID_WORDS = ("order", "ticket", "case", "confirmation", "reference", "ref", "booking", "number", "code",
            "account", "invoice", "pin", "id", "claim", "policy", "tracking", "member", "extension",
            "ending in", "last four")
# What may stand between the id word and the number: "order number: 4567", "ticket no. 4567", "code is 4567".
# A few words at most: bounded, so a run of them ("# # # ...") costs linear time, not quadratic.
_ID_GAP = r"(?:\s*(?:number|no\.|num|id|is|was|:|,|-|#)){0,3}\s*#?"
_ID_NUMBER = re.compile(
    r"(?P<context>(?:\b(?:" + "|".join(w.replace(" ", r"\s+") for w in ID_WORDS) + r")\b|#)" + _ID_GAP + r")"
    r"(?P<number>\d{4})(?![.,]?\d)", re.IGNORECASE)
# espeak says "#" as "hash" and ends a sentence at "no.": both are said "number".
_NUMBER_SIGN = re.compile(r"(?:#|\bno\.)\s*", re.IGNORECASE)
_LONG_RUN = re.compile(r"(?<![\d.,])\d{5,}(?![.,]?\d)(?!\s*(?:dollars?|euros?|pounds?|cents?|percent|%))")

# Phone numbers: North American with separators (+1 (555) 123-4567, 1-800-555-0100, 555.123.4567), E.164
# (+15551234567) and a local 555-0100.
_PHONE = re.compile(r"(?<![\w+])(?:(?P<country>\+?1)[ .-]?)?(?:\((?P<area>\d{3})\)[ .-]?|(?P<area_>\d{3})[ .-])"
                    r"(?P<exchange>\d{3})[ .-](?P<line>\d{4})(?![\w-])")
_E164 = re.compile(r"(?<![\w+])\+(?P<number>\d{7,15})(?!\d)")
_LOCAL_PHONE = re.compile(r"(?<![\w.+-])(?P<exchange>\d{3})-(?P<line>\d{4})(?![\w-])")

# Amounts: $12.50, €1,200, £3 million. (Amounts written with the unit after them read well already.)
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence")}
_AMOUNT = re.compile(r"(?P<unit>[$€£])\s?(?P<whole>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<fraction>\d{1,2}))?(?!\d)"
                     r"(?:\s?(?P<scale>thousand|million|billion|trillion)\b)?", re.IGNORECASE)

# Clock times: 4:30, 09:05, 15:00, 4:30 PM (not 12:30:45, nor a ratio like 3:1).
_CLOCK = re.compile(r"(?<![\d:])(?P<hour>[01]?\d|2[0-3]):(?P<minute>[0-5]\d)(?![\d:])"
                    r"(?P<suffix>\s?(?:[ap]\.?m\b\.?|[AP]\.?M\b\.?))?")

# ISO dates in free text (an LLM's, a tool's message): "2026-03-13" -> "March 13, 20 26".
_ISO_DATE = re.compile(r"(?<![\d-])(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})(?![\d-])")

# Years after a word that introduces one ("in 2026", "since 1999", "March 13, 2026") are read in pairs.
_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|december|"
           "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec")
_YEAR = re.compile(r"(?P<context>\b(?:(?:in|since|by|from|until|till|before|after|during|year)\s+|"
                   r"(?:" + _MONTHS + r")\.?\s+(?:\d{1,2}(?:st|nd|rd|th)?,?\s+)?))"
                   r"(?P<year>(?:18|19|20)\d\d)(?![.,]?\d)", re.IGNORECASE)
_DECADE = re.compile(r"(?<![\d'])(?P<century>18|19|20)(?P<tens>\d)0s\b")
_TENS_PLURAL = ("hundreds", "tens", "twenties", "thirties", "forties", "fifties", "sixties", "seventies",
                "eighties", "nineties")

# Codes of capitals and digits (a confirmation code "3FA9C2", "AB12CD") are spelled out; "10AM" is a time.
_CODE = re.compile(r"\b(?=[A-Z]*\d)(?=\d*[A-Z])(?!\d{1,2}[AP]M\b)[A-Z\d]{3,}\b")
# espeak reads a lone "A" as the article ("uh"); "eigh" it reads as the letter's name.
_LETTER_A = "eigh"


def spoken_text(text: str) -> str:
    """The text to give the TTS for `text`: ids digit by digit, phone numbers in groups, years in pairs,
    amounts in units, times and codes as a person reads them. Everything else is left as it is."""
    text = _PHONE.sub(_phone, text)
    text = _E164.sub(_e164, text)
    text = _LOCAL_PHONE.sub(lambda m: f"{digits(m['exchange'])}, {digits(m['line'])}", text)
    text = _AMOUNT.sub(_amount, text)
    text = _ISO_DATE.sub(_iso_date, text)
    text = _CLOCK.sub(_clock, text)
    text = _CODE.sub(lambda m: spelled(m.group()), text)
    text = _ID_NUMBER.sub(lambda m: _NUMBER_SIGN.sub("number ", m["context"]) + digits(m["number"]), text)
    text = _LONG_RUN.sub(lambda m: digits(m.group()), text)
    text = _YEAR.sub(lambda m: m["context"] + year(int(m["year"])), text)
    return _DECADE.sub(_decade, text)


def digits(run: str) -> str:
    """A digit string read one digit at a time, in groups a listener can hold: "4567" -> "4 5 6 7",
    "202501" -> "2 0 2, 5 0 1", "5551234567" -> "5 5 5, 1 2 3, 4 5 6 7" (threes, then fours at the end)."""
    if len(run) <= 5:
        return " ".join(run)
    fours = len(run) % 3  # 0, 1 or 2 groups of four make the rest divide into threes
    threes = (len(run) - 4 * fours) // 3
    sizes = [3] * threes + [4] * fours
    groups, start = [], 0
    for size in sizes:
        groups.append(" ".join(run[start:start + size]))
        start += size
    return ", ".join(groups)


def spelled(code: str) -> str:
    """A code of letters and digits read character by character, grouped like `digits`."""
    return digits(code).replace("A", _LETTER_A)


def year(value: int) -> str:
    """A year as it is said: 2026 -> "20 26", 1999 -> "19 99", 1905 -> "19 oh 5", 1900 -> "19 hundred";
    2000-2009 stay whole ("two thousand five")."""
    century, rest = divmod(value, 100)
    if 2000 <= value <= 2009:
        return str(value)
    if rest == 0:
        return f"{century} hundred"
    return f"{century} oh {rest}" if rest < 10 else f"{century} {rest}"


def clock_time(hour: int, minute: int) -> str:
    """A 24-hour time as a person says it: (15, 0) -> "3 PM", (9, 30) -> "9:30 AM", (12, 0) -> "noon"."""
    if (hour, minute) == (12, 0):
        return "noon"
    suffix = "AM" if hour < 12 else "PM"
    h12 = hour % 12 or 12
    return f"{h12} {suffix}" if minute == 0 else f"{h12}:{minute:02d} {suffix}"


def _clock(m: re.Match[str]) -> str:
    hour, minute, suffix = int(m["hour"]), int(m["minute"]), m["suffix"] or ""
    if not suffix and (hour == 0 or hour > 12 or m["hour"].startswith("0")):  # 24-hour: said in 12
        return _CLOCK.sub(_clock, clock_time(hour, minute))  # "3 PM" as it is, "9:05 AM" as below
    if minute == 0:
        return f"{hour}{suffix}" if suffix else f"{hour} o'clock"
    return f"{hour} oh {minute}{suffix}" if minute < 10 else f"{hour} {minute}{suffix}"


def _decade(m: re.Match[str]) -> str:
    if m["century"] == "20" and m["tens"] == "0":
        return "two thousands"
    return f"{m['century']} {_TENS_PLURAL[int(m['tens'])]}"


def _phone(m: re.Match[str]) -> str:
    groups = [digits(m["area"] or m["area_"]), digits(m["exchange"]), digits(m["line"])]
    if m["country"]:
        groups.insert(0, "plus 1" if m["country"].startswith("+") else "1")
    return ", ".join(groups)


def _e164(m: re.Match[str]) -> str:
    number = m["number"]
    if len(number) == 11 and number.startswith("1"):  # +1 NANP: country, area, exchange, line
        return f"plus 1, {digits(number[1:4])}, {digits(number[4:7])}, {digits(number[7:])}"
    return f"plus {digits(number)}"


def _amount(m: re.Match[str]) -> str:
    one, many, cent, cents = _CURRENCIES[m["unit"]]
    whole, fraction, scale = m["whole"], m["fraction"], m["scale"]
    if scale:  # "$1.5 million" -> "1.5 million dollars"
        return f"{whole}{'.' + fraction if fraction else ''} {scale.lower()} {many}"
    hundredths = int(fraction.ljust(2, "0")) if fraction else 0
    if whole == "0" and hundredths:
        return f"{hundredths} {cent if hundredths == 1 else cents}"
    said = f"{whole} {one if whole == '1' else many}"
    return f"{said} {hundredths}" if hundredths else said


def _iso_date(m: re.Match[str]) -> str:
    try:
        day = date(int(m["year"]), int(m["month"]), int(m["day"]))
    except ValueError:
        return m.group()
    return f"{day:%B} {day.day}, {year(day.year)}"


__all__ = ["ID_WORDS", "clock_time", "digits", "spelled", "spoken_text", "year"]
