"""Argument extraction for the flow brain: turn what a caller said into JSON-schema typed values.

Transcripts come from Whisper, so one value arrives in many shapes: "4567", "45 67", "4,567",
"four five six seven", "forty five sixty seven", "four thousand five hundred sixty seven"; "3pm",
"3 p.m.", "Three PM", "ten thirty", "half past two in the afternoon"; "tomorrow", "next friday",
"the 3rd of December", "3/21". Everything here is pure: the caller's "today" is an argument.

A parameter's *kind* (date, time, digits, number, enum, boolean, text) is read from its schema (format,
pattern, enum, type) and, for client tools with thin schemas, from its name and description.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

import regex
from jsonschema import FormatChecker
from jsonschema.exceptions import SchemaError

from voxgate.session.yes_no import read_yes_no
from voxgate.tools.validation import PatternTooSlow, SchemaValidator, pattern_search

SlotKind = Literal["date", "time", "digits", "number", "enum", "boolean", "text"]

_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
          "eight": 8, "nine": 9}
_TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000}
_ORDINAL_UNITS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
                  "eighth": 8, "ninth": 9}
_ORDINAL_WORDS = {**_ORDINAL_UNITS, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
                  "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
                  "nineteenth": 19, "twentieth": 20, "thirtieth": 30}
_MONTHS = {name: i + 1 for i, name in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"])}
_MONTHS.update({"jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9,
                "oct": 10, "nov": 11, "dec": 12})
_WEEKDAYS = {name: i for i, name in enumerate(
    ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])}
# Typed short forms, only those that are no other English word ("sat", "sun", "wed" and "mon" are).
_WEEKDAYS.update({"tues": 1, "weds": 2, "thur": 3, "thurs": 3})
_ENUM_SYNONYMS = {"celsius": ("centigrade",)}


def normalize(text: str) -> str:
    """Lower-case and regularise ASR spellings so the extractors see one form."""
    t = text.lower().replace("’", "'").replace("‘", "'")
    t = re.sub(r"\b([ap])\.\s?m\b\.?", r"\1m", t)  # p.m. -> pm
    t = re.sub(r"\bo'?\s?clock\b", " oclock", t)
    t = re.sub(r"(\d)\s*([ap])m\b", r"\1 \2m", t)  # 3pm -> 3 pm
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 4,567 -> 4567
    t = re.sub(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", r"\1/\2/\3", t)  # keep ISO dates whole
    t = re.sub(r"(?<=\d)-(?=\d)", " ", t)  # 1-2-3-4 -> 1 2 3 4
    t = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", t)  # forty-five -> forty five
    t = re.sub(r"[#$]", " ", t)
    return t


_TOKEN = re.compile(r"\d{1,2}:\d{2}|\d+(?:/\d+)+|\d+(?:st|nd|rd|th)\b|\d+(?:\.\d+)?|[a-z]+(?:'[a-z]+)*")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(normalize(text))


# ---------------------------------------------------------------------------------------------------------
# Spoken numbers


@dataclass(frozen=True)
class _Part:
    value: int
    digits: str
    kind: Literal["digit", "teen", "tens", "compound", "numeral", "scale"]


@dataclass(frozen=True)
class NumberRun:
    """A maximal stretch of number tokens, e.g. "twelve thirty four" or "45 67", at tokens[start:end]."""

    start: int
    end: int
    parts: tuple[_Part, ...]

    @property
    def has_scale(self) -> bool:
        return any(p.kind == "scale" for p in self.parts)

    def digit_string(self) -> str:
        """How an identifier is read out: groups concatenate ("twelve thirty four" -> "1234")."""
        if self.has_scale:
            return str(self.cardinal())
        return "".join(p.digits for p in self.parts)

    def cardinal(self) -> int:
        """How a quantity is read out ("four thousand five hundred sixty seven" -> 4567)."""
        if not self.has_scale:
            return int(self.digit_string()) if len(self.parts) > 1 else self.parts[0].value
        total, current = 0, 0
        for p in self.parts:
            if p.kind == "scale" and p.value == 100:
                current = (current or 1) * 100
            elif p.kind == "scale":
                total += (current or 1) * p.value
                current = 0
            else:
                current += p.value
        return total + current


def _is_number_word(tok: str) -> bool:
    return tok in _UNITS or tok in _TEENS or tok in _TENS or tok in _SCALES or tok.isdigit()


def number_runs(toks: list[str]) -> list[NumberRun]:
    runs: list[NumberRun] = []
    i = 0
    while i < len(toks):
        parts: list[_Part] = []
        j = i
        while j < len(toks):
            tok = toks[j]
            next_num = j + 1 < len(toks) and _is_number_word(toks[j + 1])
            if tok.isdigit():
                parts.append(_Part(int(tok), tok, "numeral"))
            elif tok in _UNITS:
                parts.append(_Part(_UNITS[tok], str(_UNITS[tok]), "digit"))
            elif tok in ("oh", "o") and (parts or next_num):  # "four oh five", not "oh, I need..."
                parts.append(_Part(0, "0", "digit"))
            elif tok in _TEENS:
                parts.append(_Part(_TEENS[tok], str(_TEENS[tok]), "teen"))
            elif tok in _TENS:
                parts.append(_Part(_TENS[tok], str(_TENS[tok]), "tens"))
            elif tok in _SCALES and parts:
                parts.append(_Part(_SCALES[tok], "", "scale"))
            elif tok == "a" and j + 1 < len(toks) and toks[j + 1] in _SCALES:
                parts.append(_Part(1, "1", "digit"))
            elif tok == "and" and parts and parts[-1].kind == "scale" and next_num:
                pass
            elif tok in ("double", "triple") and j + 1 < len(toks) and toks[j + 1] in _UNITS:
                digit = _UNITS[toks[j + 1]]
                parts.extend([_Part(digit, str(digit), "digit")] * (2 if tok == "double" else 3))
                j += 1
            else:
                break
            j += 1
        if parts:
            runs.append(NumberRun(i, j, tuple(_merge_compounds(parts))))
            i = j
        else:
            i += 1
    return runs


def _merge_compounds(parts: list[_Part]) -> list[_Part]:
    """ "forty" + "five" -> 45: a tens word takes the unit digit that follows it."""
    merged: list[_Part] = []
    for p in parts:
        if p.kind == "digit" and p.value and merged and merged[-1].kind == "tens":
            tens = merged.pop()
            merged.append(_Part(tens.value + p.value, str(tens.value + p.value), "compound"))
        else:
            merged.append(p)
    return merged


def spoken_digits(text: str) -> list[str]:
    """Every digit string the caller said, in order: "order four five six seven" -> ["4567"]."""
    return [run.digit_string() for run in number_runs(tokens(text)) if run.digit_string()]


# Words speech recognition writes for a digit said before others: "order four five six seven" comes back as
# "order for 5-6-7", "two one" as "to 1".
_DIGIT_HOMOPHONES = {"for": "4", "fore": "4", "to": "2", "too": "2", "won": "1", "ate": "8"}


def misheard_digits(text: str) -> list[str]:
    """Digit strings with the digit a homophone just before them may have been: "order for 5-6-7" ->
    ["4567"]. Only for a value whose plain reading does not fit: "for 1234" is still most likely 1234."""
    toks = tokens(text)
    return [_DIGIT_HOMOPHONES[toks[run.start - 1]] + run.digit_string() for run in number_runs(toks)
            if run.start and toks[run.start - 1] in _DIGIT_HOMOPHONES and run.digit_string()]


def extract_number(text: str) -> int | float | None:
    norm = normalize(text)
    decimal = re.search(r"(-?\d+\.\d+)", norm)
    if decimal:
        return float(decimal.group(1))
    toks = _TOKEN.findall(norm)
    for run in number_runs(toks):
        value: int | float = run.cardinal()
        if run.start > 0 and toks[run.start - 1] in ("minus", "negative"):
            value = -value
        if run.end + 1 < len(toks) and toks[run.end] == "point" and toks[run.end + 1] in _UNITS:
            value = float(f"{value}.{_UNITS[toks[run.end + 1]]}")
        return value
    return None


# ---------------------------------------------------------------------------------------------------------
# Times


def extract_time(text: str, loose: bool = False) -> str | None:
    """"3 p.m." / "ten thirty" / "quarter past two in the afternoon" -> "HH:MM" (24-hour).

    Without am/pm, a bare hour must be introduced ("at three", "around 4") unless `loose` (the caller is
    answering "what time?"); hours 1-7 are then read as afternoon, as callers mean for opening hours.
    """
    norm = normalize(text)
    toks = _TOKEN.findall(norm)
    day_part = _day_part(toks)
    clock = re.search(r"\b(\d{1,2}):(\d{2})\b", norm) or re.search(r"\b(\d{1,2})\.(\d{2})(?= (?:am|pm)\b)", norm)
    if clock:  # "2:30", and "2.30 pm" as a British caller's time is written
        hour, minute = int(clock.group(1)), int(clock.group(2))
        after = norm[clock.end():].split()
        return _clock(hour, minute, after[0] if after else None, day_part)
    runs = number_runs(toks)
    relative = _minutes_past_or_to(toks, runs)
    if relative is not None:
        hour, minute, end = relative
        after = toks[end:end + 1]
        return _clock(hour, minute, after[0] if after and after[0] in ("am", "pm") else None, day_part)
    for i, tok in enumerate(toks):
        if tok in ("noon", "midday") and not (i > 0 and toks[i - 1] in ("after", "afternoon")):
            return "12:00"
        if tok == "midnight":
            return "00:00"
    for run in runs:
        hm = _hour_minute(run)
        if hm is None:
            continue
        hour, minute = hm
        before = toks[max(0, run.start - 2):run.start]
        after = toks[run.end:run.end + 3]
        marker = after[0] if after and after[0] in ("am", "pm", "oclock") else None
        if len(before) == 2 and before[1] == "past" and before[0] in ("half", "quarter") and len(run.parts) == 1:
            hour, minute = run.parts[0].value, 30 if before[0] == "half" else 15
        elif len(before) == 2 and before[1] == "to" and before[0] == "quarter" and len(run.parts) == 1:
            hour, minute = (run.parts[0].value - 1) % 12 or 12, 45
        elif marker is None and after[:1] == ["noon"] and hour == 12:
            return "12:00"
        elif marker is None and after[:2] not in (["in", "the"],) and not (
            before and before[-1] in ("at", "around", "about", "by", "till", "until", "after", "before")
        ) and not loose:
            continue
        if after[:1] and after[0] in ("days", "day", "weeks", "week", "minutes", "hours", "degrees"):
            continue
        if after[:2] == ["in", "the"] and len(after) > 2 and after[2] in ("morning", "afternoon", "evening"):
            day_part = "am" if after[2] == "morning" else "pm"
        result = _clock(hour, minute, marker, day_part)
        if result:
            return result
    return None


def _minutes_past_or_to(toks: list[str], runs: list[NumberRun]) -> tuple[int, int, int] | None:
    """ "twenty past four" -> (4, 20), "five to ten" -> (9, 55), "ten minutes after three" -> (3, 10): the hour,
    the minute, and where the hour's words end. Minutes by fives unless "minutes" is said, and never after
    "from" or "between" ("from ten to twelve" is a range, not 11:50)."""
    for first, second in itertools.pairwise(runs):
        if len(first.parts) != 1 or len(second.parts) != 1:
            continue
        between = toks[first.end:second.start]
        said_minutes = between[:1] in (["minutes"], ["minute"])
        word = between[1:] if said_minutes else between
        if word not in (["past"], ["after"], ["to"], ["till"], ["before"]):
            continue
        minutes, hour = first.parts[0].value, second.parts[0].value
        if not (1 <= hour <= 12 and 1 <= minutes <= 59 and (said_minutes or minutes % 5 == 0)):
            continue
        if first.start and toks[first.start - 1] in ("from", "between"):
            continue
        if word[0] in ("past", "after"):
            return hour, minutes, second.end
        return (hour - 1) or 12, 60 - minutes, second.end
    return None


def _day_part(toks: list[str]) -> str | None:
    if "morning" in toks:
        return "am"
    if any(t in toks for t in ("afternoon", "evening", "tonight", "night")):
        return "pm"
    return None


def _hour_minute(run: NumberRun) -> tuple[int, int] | None:
    values = [p.value for p in run.parts]
    if run.has_scale:
        return None
    if len(values) == 1:
        if run.parts[0].kind == "numeral" and len(run.parts[0].digits) in (3, 4):
            v = values[0]
            return (v // 100, v % 100) if v % 100 < 60 else None
        return (values[0], 0) if values[0] <= 24 else None
    if len(values) == 2 and values[0] <= 24 and values[1] < 60 and run.parts[1].kind != "digit":
        return values[0], values[1]
    if len(values) == 3 and values[0] <= 24 and values[1] == 0 and values[2] < 10:
        return values[0], values[2]
    return None


def _clock(hour: int, minute: int, marker: str | None, day_part: str | None) -> str | None:
    if hour > 23 or minute > 59:
        return None
    meridiem = marker if marker in ("am", "pm") else day_part
    if meridiem == "am" and hour == 12:
        hour = 0
    elif meridiem == "pm" and hour < 12:
        hour += 12
    elif meridiem is None and 1 <= hour <= 7:
        hour += 12
    return f"{hour:02d}:{minute:02d}"


# ---------------------------------------------------------------------------------------------------------
# Dates


def _ordinal_words_to_numbers(toks: list[str]) -> list[str]:
    """ "twenty first" -> "21th", "third" -> "3th", "five" -> "5", so the date patterns see one form."""
    out: list[str] = []
    i = 0
    while i < len(toks):
        tok, nxt = toks[i], toks[i + 1] if i + 1 < len(toks) else ""
        tens = _TENS.get(tok, 0)
        if tens and nxt in _ORDINAL_UNITS:
            out.append(f"{tens + _ORDINAL_UNITS[nxt]}th")
            i += 2
            continue
        if tens and nxt in _UNITS:
            out.append(str(tens + _UNITS[nxt]))
            i += 2
            continue
        if tok in _ORDINAL_WORDS:
            out.append(f"{_ORDINAL_WORDS[tok]}th")
        elif tok in _TEENS or tok in _UNITS or tok in _TENS:
            out.append(str({**_TEENS, **_UNITS, **_TENS}[tok]))
        else:
            out.append(tok)
        i += 1
    return out


def extract_date(text: str, today: date) -> date | None:
    """ "tomorrow" / "next friday" / "the 3rd of december" / "3/21" -> a date on or after `today`.

    A bare or "this" weekday is its next occurrence (today counts for "this"); "next friday" is the first
    Friday after today. A day and month without a year is the next such date.
    """
    norm = normalize(text)
    toks = _ordinal_words_to_numbers(_TOKEN.findall(norm))
    joined = " ".join(toks)
    for m in re.finditer(r"\b(\d{1,4})/(\d{1,2})(?:/(\d{2,4}))?\b", joined):
        a, b, c = int(m.group(1)), int(m.group(2)), m.group(3)
        if a > 31:  # ISO year/month/day
            found = _safe_date(a, b, int(c) if c else 0)
        else:  # US month/day[/year]
            year = int(c) + (2000 if c and len(c) == 2 else 0) if c else None
            found = _day_in_year(today, a, b, year)
        if found:
            return found
    month_names = "|".join(_MONTHS)
    day = r"(\d{1,2})(?:st|nd|rd|th)?"
    month_day = re.search(rf"\b({month_names})\s+(?:the\s+)?{day}\b(?:\s+(\d{{4}}))?", joined)
    day_month = re.search(rf"\b{day}\s+(?:of\s+)?({month_names})\b(?:\s+(\d{{4}}))?", joined)
    if month_day:
        found = _day_in_year(today, _MONTHS[month_day.group(1)], int(month_day.group(2)),
                             int(month_day.group(3)) if month_day.group(3) else None)
        if found:
            return found
    if day_month:
        found = _day_in_year(today, _MONTHS[day_month.group(2)], int(day_month.group(1)),
                             int(day_month.group(3)) if day_month.group(3) else None)
        if found:
            return found
    the_nth = re.search(r"\bthe\s+(\d{1,2})(?:st|nd|rd|th)\b", joined)
    if the_nth:
        nth = int(the_nth.group(1))
        candidate = _safe_date(today.year, today.month, nth)
        if candidate is None or candidate < today:
            nxt = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
            candidate = _safe_date(nxt.year, nxt.month, nth)
        if candidate:
            return candidate
    rel = re.search(r"\b(a|an|one|\d+)\s+(day|days|week|weeks)\s+from\s+(today|now|tomorrow)\b", joined)
    if rel:  # "a week from today": before "today" and "tomorrow" alone are read
        n = 1 if rel.group(1) in ("a", "an", "one") else int(rel.group(1))
        start = today + timedelta(days=1 if rel.group(3) == "tomorrow" else 0)
        return start + timedelta(days=n * (7 if rel.group(2).startswith("week") else 1))
    if re.search(r"\bday after tomorrow\b", joined):
        return today + timedelta(days=2)
    if "tomorrow" in toks:
        return today + timedelta(days=1)
    if "today" in toks or "tonight" in toks:
        return today
    rel = re.search(r"\bin\s+(a|an|\d+)\s+(day|days|week|weeks)\b", joined)
    if rel:
        n = 1 if rel.group(1) in ("a", "an") else int(rel.group(1))
        return today + timedelta(days=n * (7 if rel.group(2).startswith("week") else 1))
    for i, tok in enumerate(toks):
        if tok in _WEEKDAYS:
            ahead = (_WEEKDAYS[tok] - today.weekday()) % 7
            qualifier = toks[i - 1] if i > 0 else ""
            if qualifier == "next" or (ahead == 0 and qualifier != "this"):
                ahead = ahead or 7
            return today + timedelta(days=ahead)
    return None


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _day_in_year(today: date, month: int, day: int, year: int | None) -> date | None:
    if year is not None:
        return _safe_date(year, month, day)
    found = _safe_date(today.year, month, day)
    if found is not None and found < today:
        found = _safe_date(today.year + 1, month, day)
    return found


# ---------------------------------------------------------------------------------------------------------
# Enums, booleans and free text


def extract_enum(text: str, values: list[Any]) -> Any | None:
    toks = tokens(text)
    joined = " ".join(toks)
    for value in values:
        forms = {str(value).lower(), str(value).lower().replace("_", " ")}
        forms.update(_ENUM_SYNONYMS.get(str(value).lower(), ()))
        if any(re.search(rf"\b{re.escape(f)}\b", joined) for f in forms if f):
            return value
    # "20 C", "68 F": a lone letter after a number names the value it starts.
    for i, tok in enumerate(toks):
        if len(tok) == 1 and i > 0 and _is_number_word(toks[i - 1]):
            starting = [v for v in values if str(v).lower().startswith(tok)]
            if len(starting) == 1:
                return starting[0]
    # Misspellings from ASR ("farenheit").
    for tok in toks:
        if len(tok) >= 4:
            close = difflib.get_close_matches(tok, [str(v).lower() for v in values], n=1, cutoff=0.8)
            if close:
                return next(v for v in values if str(v).lower() == close[0])
    return None


def extract_boolean(text: str) -> bool | None:
    return read_yes_no(text)


_FREE_TEXT_NAMES = re.compile(r"reason|message|note|query|question|comment|detail|description|text|summary|"
                              r"topic|issue|problem|request|why")
_PHRASE_STOP = {"me", "us", "you", "it", "them", "please", "today", "tomorrow", "tonight", "now", "right",
                "this", "next", "the", "a", "an", "my", "your", "there", "here", "and", "or", "at", "on", "in",
                "for", "like", "then", "currently", "later", "soon", "weekend", "week", "morning", "afternoon",
                "evening", "is", "be", "will", "would", "today's", "thanks", "thank"}
_FILLER = re.compile(r"^(?:(?:um+|uh+|er+|oh|well|so|yeah|yes|ok|okay|sure|actually|it's|it is|that's|"
                     r"that is|i'm in|i am in|i'm at|in|at|for|the|my|our|please|just)\b[\s,]*)+", re.I)
_TRAILING_FILLER = re.compile(r"(?:[\s,]+(?:please|thanks|thank you|i think|i guess))+$", re.I)


def is_free_text(name: str, schema: dict[str, Any]) -> bool:
    """A parameter whose value is the caller's own words (a reason, a message), not a named thing."""
    return bool(_FREE_TEXT_NAMES.search(name.lower())) or (
        bool(_FREE_TEXT_NAMES.search(str(schema.get("description", "")).lower().split(",")[0]))
        and not re.search(r"\bname\b|city|place|location", str(schema.get("description", "")).lower())
    )


def extract_text(name: str, schema: dict[str, Any], text: str, answer: bool) -> str | None:
    """Free text: a reason is the utterance itself; a name or place follows "in/for/at..."; an answer to
    "what's the city?" is the whole reply without its filler words."""
    clean = text.strip().strip(" .!?,;")
    if not clean:
        return None
    if is_free_text(name, schema):
        return clean
    if answer:
        answer_text = _TRAILING_FILLER.sub("", _FILLER.sub("", clean).strip(" .!?,;")).strip(" .!?,;")
        return answer_text or None
    words = re.findall(r"[A-Za-z][A-Za-z'-]*|[,.!?;]", text)
    found: list[str] = []
    for i, word in enumerate(words):
        if word.lower() not in ("in", "for", "at", "near", "to", "from", "of", "called", "named"):
            continue
        phrase: list[str] = []
        for w in words[i + 1:i + 5]:
            if w in ",.!?;" or w.lower() in _PHRASE_STOP:
                break
            phrase.append(w)
        if phrase:
            found.append(" ".join(phrase))
    # Whisper capitalises names, so "in Seattle" beats "going to rain".
    named = [f for f in found if f[0].isupper()]
    candidates = named or found
    return candidates[0] if candidates else None


# ---------------------------------------------------------------------------------------------------------
# By schema


def slot_kind(name: str, schema: dict[str, Any]) -> SlotKind:
    """What sort of value a parameter takes, from its schema first and its name/description second."""
    description = str(schema.get("description", "")).lower()
    lname = name.lower()
    kind = schema.get("type")
    if "enum" in schema:
        return "enum"
    if kind in ("integer", "number"):
        return "number"
    if kind == "boolean":
        return "boolean"
    fmt = schema.get("format")
    if fmt == "date" or "yyyy-mm-dd" in description or lname == "date" or lname.endswith("_date"):
        return "date"
    if fmt == "time" or "hh:mm" in description or lname == "time" or lname.endswith("_time"):
        return "time"
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and _digits_only_pattern(pattern):
        return "digits"
    if pattern is None and re.search(r"(^|_)(id|number|zip|pin|code)$", lname) and "name" not in lname:
        return "digits"
    return "text"


def _digits_only_pattern(pattern: str) -> bool:
    try:
        samples_ok = any(pattern_search(pattern, s) for s in ("1234", "0042", "123456", "12345678", "12",
                                                              "1234567890"))
        return samples_ok and not pattern_search(pattern, "abcd") and not pattern_search(pattern, "12ab")
    except (PatternTooSlow, regex.error):  # a client's pattern: one that cannot be tried is not digits
        return False


def extract_argument(name: str, schema: dict[str, Any], text: str, today: date, answer: bool = False) -> Any:
    """The value the caller gave for one parameter, or None. `answer`: the caller is replying to a
    question about this parameter, so a bare "3" or "Boston" counts."""
    kind = slot_kind(name, schema)
    if kind == "date":
        found = extract_date(text, today)
        return found.isoformat() if found else None
    if kind == "time":
        return extract_time(text, loose=answer)
    if kind == "enum":
        return extract_enum(text, list(schema["enum"]))
    if kind == "boolean":
        return extract_boolean(text)
    if kind == "number":
        number = extract_number(text)
        if number is not None and schema.get("type") == "integer":
            return int(number) if float(number).is_integer() else None
        return number
    if kind == "digits":
        candidates = spoken_digits(text)
        valid = [c for c in candidates if argument_error(schema, c) is None]
        if not valid:
            valid = [c for c in misheard_digits(text) if argument_error(schema, c) is None]
        if valid:
            return valid[0]
        if answer and candidates:
            return max(candidates, key=len)  # wrong, but the caller should hear what we understood
        return None
    return extract_text(name, schema, text, answer)


_FORMATS = FormatChecker()


def argument_error(schema: dict[str, Any], value: Any) -> str | None:
    """Why `value` does not fit the parameter's schema (pattern, format, enum, range), or None."""
    try:
        error = next(iter(SchemaValidator(schema, format_checker=_FORMATS).iter_errors(value)), None)
    except SchemaError as exc:
        return f"invalid schema: {exc.message}"
    return error.message if error is not None else None
