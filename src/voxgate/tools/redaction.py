"""Masking of payment card numbers, US social security numbers and email addresses.

Pure functions, used on tool results before the model sees them, on transcripts, stored records,
what the flow brain reads and says, and logs. Masks are chosen so that masking twice changes nothing
(idempotent) and so that a mask never looks like the thing it hides:

    4111 1111 1111 1111   ->  **** **** **** 1111
    123-45-6789           ->  ***-**-****
    jane@example.com      ->  [email redacted]

Numbers are read the way speech recognition and people write them: digits in groups joined by any short
run of separators (spaces, no-break and thin spaces, "-", " - ", "/", and the grouping commas and dots
Whisper adds: "4,111,111,111,111,111", "4111.1111.1111.1111"), in any script's decimal digits
(full-width "４１１１", Arabic-Indic, Devanagari...). Every such character is folded to its ASCII
counterpart one for one, so positions in the folded text are positions in the original.

Numbers said as words, as speech recognition often writes a number read out, are read the same way:
digits ("four one one one", "oh" and "nought" for zero), pairs ("forty-one eleven", "twenty"), hundreds
("fifty-five hundred"), repeats ("double four", "triple one") and digit groups, in one run. A run holding a
Luhn-valid 13-19 digit window is masked as "**** **** **** 1111", and after a card label any nine or more,
or five or more unless they read as an amount, a date or a number the words between name ("zip", "order"):
a card cut short where the caller paused (see `_labelled_card`). Nine after an SSN label, or nine said in
three breaths of 3, 2 and 4 ("one two three, four five, six seven eight nine"), are an SSN.
Email addresses said aloud ("jane dot doe at example dot com", "j a n e at example dot co dot uk") are
masked as written ones are.

Card numbers are masked only when their Luhn check passes, so order ids, phone numbers and dates stay
readable; a random 13-19 digit number still passes Luhn one time in ten and is masked, which is the
price of never letting a real card through. SSNs are nine digits grouped 3-2-4 with one separator
("123-45-6789", "123 45 6789"), or any nine digits just after an SSN label ("my social is 123456789").

Every scan is linear in the text: the regular expressions have no nested or overlapping repetition, and
the work per digit run is bounded by the longest card number.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["EMAIL_MASK", "OFFLOAD_CHARS", "SSN_MASK", "fold", "holds_card", "luhn_valid", "mask_card", "mask_cards",
           "private_value", "redact", "redact_offloaded", "redact_value"]

SSN_MASK = "***-**-****"
EMAIL_MASK = "[email redacted]"
_CARD_MASK_PREFIX = "**** **** **** "
_CARD_MASK_HIDDEN = "**** **** **** ****"
# A card mask's visible tail; not the digits after a hidden mask ("**** **** **** **** 1234" is a mask, then 1234).
_MASKED_CARD_TAIL = re.compile(r"(?<!\* )" + re.escape(_CARD_MASK_PREFIX) + "[0-9]{4}(?![0-9])")

# Texts longer than this are redacted in a worker thread by `redact_offloaded` (a few milliseconds).
OFFLOAD_CHARS = 16 * 1024

_MIN_CARD_DIGITS = 13
_MAX_CARD_DIGITS = 19
_SSN_DIGITS = 9

# -- folding ---------------------------------------------------------------------------------------

# Non-ASCII characters that stand for a separator inside a number (or an '@'), as their ASCII form.
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043\ufe58\ufe63\uff0d\u2e3a\u2e3b"
_INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"  # soft hyphen, zero-width spaces and joiners
_PUNCTUATION = {
    "\uff0c": ",", "\ufe50": ",", "\u3001": ",", "\u060c": ",", "\u066c": ",",  # commas
    "\uff0e": ".", "\ufe52": ".", "\u3002": ".", "\u2024": ".", "\u00b7": ".", "\u2027": ".", "\u066b": ".",
    "\uff0f": "/", "\u2044": "/", "\u2215": "/",
    "\u2019": "'", "\uff07": "'",
    "\uff20": "@", "\ufe6b": "@",
}
_FOLDABLE = re.compile(
    "[" + _DASHES + _INVISIBLE + "".join(_PUNCTUATION) + r"]|(?![0-9])\d|(?![\t-\r\x1c-\x1f ])\s")


@functools.lru_cache(maxsize=1024)
def _fold_char(char: str) -> str:
    if char.isdecimal():
        return str(unicodedata.decimal(char))
    if char in ("\u2028", "\u2029", "\x85"):
        return "\n"
    if char.isspace() or char in _INVISIBLE:
        return " "
    if char in _DASHES:
        return "-"
    return _PUNCTUATION.get(char, char)


def fold(text: str) -> str:
    """`text` with every Unicode digit, space, dash and number-punctuation character as its ASCII form.

    One character for one, so the result has the same length and positions as `text`.
    """
    if text.isascii():
        return text
    return _FOLDABLE.sub(lambda m: _fold_char(m.group()), text)


# -- digit runs ------------------------------------------------------------------------------------

# Between two groups of a number: a short run of spaces, dashes, slashes, commas, dots, apostrophes, and
# the sentence marks a transcriber puts between the groups a caller pauses over ("4-1-1-1! 1-1-1-1...").
_SEPARATOR = r"[ \t,./'_!?;:-]"
_MAX_SEPARATOR = 4
# A digit that speech recognition misheard as a lone letter, in a number it writes a digit at a time ("My card
# number is 4-1-1-1. W-1-1-1. W-1-1-1-1.": "one" heard as "W"), is part of the gap between groups: a letter
# after a separator and before the next group ("1. W-1", "1 W 1", "1, W1"), or just after a group and before a
# separator ("1-W. 1", "1W, 1"). Its digit is lost, so only a card label or an SSN's grouping can judge the run;
# but the digits around it are one number and are masked as one. A letter inside a word never is.
_GAP = (rf"(?:{_SEPARATOR}{{1,{_MAX_SEPARATOR}}}(?:[A-Za-z]{_SEPARATOR}{{0,{_MAX_SEPARATOR}}})?"
        rf"|-?[A-Za-z]{_SEPARATOR}{{1,{_MAX_SEPARATOR}}})")
# A maximal run of digit groups that holds at least nine digits (fewer can be neither a card nor an
# SSN). Groups and separators are disjoint, so matching never backtracks beyond one separator run; a
# shorter run fails its lookahead within 9 digits, so no start inside a run is ever tried at length. The
# lookahead follows the first digit so that the engine skips ahead to digits.
_DIGIT_RUN = re.compile(
    rf"[0-9](?=(?:{_GAP}?[0-9]){{{_SSN_DIGITS - 1}}})"
    rf"[0-9]*(?:{_GAP}[0-9]+)*")
_DIGIT_GROUP = re.compile(r"[0-9]+")
_NOT_DIGIT = re.compile(r"[^0-9]+")
_WHITESPACE = re.compile(r"\s+")
# An SSN label, up to the first digit after it on the same line ("SSN: 123...", "my social is 123...").
# The gap may not hold '*' so that it never reaches past an earlier mask (idempotence).
_SSN_WORDS = r"\b(?:ssn|social\s+security|social)\b"
_SSN_LABEL = re.compile(_SSN_WORDS + r"[^0-9\n*]{0,24}?(?=[0-9])", re.IGNORECASE)
_SSN_MENTION = re.compile(_SSN_WORDS, re.IGNORECASE)
# Any run of digit groups, however short: what follows a card label (`_DIGIT_RUN` holds nine digits or more).
_NUMBER = re.compile(rf"[0-9]+(?:{_GAP}[0-9]+)*")
# A card label ("card", "my card number is", "credit card #", "my visa is"), then up to the number: the number
# after it is a card even when speech recognition dropped or doubled digits and the Luhn check fails ("my card
# number is 4-1-1-1-1-1-1-1-1-1": ten of sixteen), or stopped at the caller's first pause ("My card number is
# 4-1-1-1-1."). No upper bound: Whisper also repeats groups ("4111, 1111, 1111, 1111, 111, 111, 111."), and a
# Luhn window would leave the repeats. The gap may not hold '*', so a label never reaches past an earlier mask
# (idempotence), nor a digit, so the number is the first after the label.
_CARD_WORDS = r"\b(?:card|visa|master\s?card|amex|american\s+express|discover)\b"
_CARD_GAP = r"[^0-9\n*]{0,24}"
_CARD_LABEL = re.compile(rf"{_CARD_WORDS}({_CARD_GAP}?)(?=[0-9])", re.IGNORECASE)
_CARD_LABEL_ENDING = re.compile(rf"{_CARD_WORDS}({_CARD_GAP})\Z", re.IGNORECASE)  # one just before a spoken run
_CARD_MENTION = re.compile(_CARD_WORDS, re.IGNORECASE)
# After a card label, this many digits are a card in any form (more than a PIN, an amount or a date has) ...
_LABELLED_CARD_ANY_DIGITS = 9
# ... and from this many, a card unless they read as something else: a card's last four, a PIN and an expiry
# ("card expires 12/27") are shorter, and stay readable.
_LABELLED_CARD_MIN_DIGITS = 5
# What a shorter number after a card label is instead: another number the words between name ("billing zip
# 94105", "card PIN", "order"), an amount ("was charged $12,345", "a limit of 15000 dollars") or a date
# ("expires 12/2027", "declined on 01/15/2025", "2025-01-15").
_OTHER_NUMBER_WORDS = re.compile(
    r"\b(?:zip|postal|post\s?code|pin|cvv|cvc|cv2|security|exp(?:ir\w*)?|valid|phone|order|balance|limit|"
    r"charged?|paid|payment|amount|total|fee|points|miles)\b|[$\u00a2\u00a3\u00a5\u20ac\u20b9]", re.IGNORECASE)
_CURRENCY_AFTER = re.compile(
    r" ?(?:dollars?|bucks|cents?|euros?|pounds?|usd|eur|gbp|cad|aud)\b|[$\u00a2\u00a3\u00a5\u20ac\u20b9]",
    re.IGNORECASE)
_DAY = r"(?:0?[1-9]|[12][0-9]|3[01])"
_MONTH = r"(?:0?[1-9]|1[0-2])"
_DATE = re.compile(
    rf"{_MONTH}([/.-])(?:[0-9]{{2}}){{1,2}}"  # an expiry: 12/27, 12/2027
    rf"|(?:{_DAY}([/.-]){_MONTH}|{_MONTH}([/.-]){_DAY})(?:\2|\3)(?:[0-9]{{2}}){{1,2}}"  # 15/01/2025, 01/15/25
    rf"|[0-9]{{4}}([/.-]){_MONTH}\4{_DAY}")  # 2025-01-15


@dataclass
class _Run:
    """One digit run: its groups as (start, end) in the text, their digits, and which are masked."""

    folded: str
    groups: list[tuple[int, int]]
    digits: str
    sizes: list[int]  # digits in each group
    ends: list[int]  # ends[k]: digits in groups[0..k]
    taken: list[bool]  # groups masked already (or the visible tail of an earlier card mask)

    @classmethod
    def read(cls, folded: str, start: int, end: int) -> _Run:
        groups = [m.span() for m in _DIGIT_GROUP.finditer(folded, start, end)]
        digits = _NOT_DIGIT.sub("", folded[start:end])
        sizes = [b - a for a, b in groups]
        return cls(folded, groups, digits, sizes, list(itertools.accumulate(sizes)), [False] * len(groups))

    def separator(self, k: int) -> str:
        """What joins groups k and k + 1, whitespace runs read as one space."""
        return _WHITESPACE.sub(" ", self.folded[self.groups[k][1]:self.groups[k + 1][0]])

    def digits_of(self, first: int, last: int) -> str:
        return self.digits[(self.ends[first - 1] if first else 0):self.ends[last]]


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number passes. `digits` holds only 0-9."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask_card(digits: str) -> str:
    """The mask for one card number: its last four digits after a fixed run of stars."""
    return _CARD_MASK_PREFIX + digits[-4:]


def _luhn_sums(digits: str) -> tuple[list[int], list[int]]:
    """Prefix sums that give the Luhn sum of any slice of `digits` in constant time.

    A digit is doubled when an odd number of digits follows it in the slice, so which of a position's
    two values counts depends only on whether the slice ends at an even or an odd position: the slice
    [start, end) sums to `sums[end] - sums[start]` in the first list when `end` is even, else the second.
    """
    raw = digits.encode()
    plain, doubled = raw.translate(_PLAIN), raw.translate(_DOUBLED)
    ends_even, ends_odd = bytearray(plain), bytearray(plain)
    ends_even[0::2] = doubled[0::2]
    ends_odd[1::2] = doubled[1::2]
    return list(itertools.accumulate(ends_even, initial=0)), list(itertools.accumulate(ends_odd, initial=0))


_PLAIN = bytes.maketrans(b"0123456789", bytes(range(10)))
_DOUBLED = bytes.maketrans(b"0123456789", bytes(d * 2 - 9 if d > 4 else d * 2 for d in range(10)))


def _luhn_windows(ends: list[int], digits: str, first: int = 0) -> Iterator[tuple[int, int]]:
    """For each group from `first` on, the longest run of whole groups from it that is a Luhn-valid 13-19 digit
    number, as (first group, last group). `ends[k]` counts the digits in groups 0..k; linear in the groups."""
    even, odd = _luhn_sums(digits)
    count = len(ends)
    lo = hi = first  # candidate ends: the groups where a window from group i holds 13..19 digits
    for i in range(first, count):
        before = ends[i - 1] if i else 0
        while lo < count and ends[lo] < before + _MIN_CARD_DIGITS:
            lo += 1
        hi = max(hi, lo)
        while hi + 1 < count and ends[hi + 1] <= before + _MAX_CARD_DIGITS:
            hi += 1
        for j in range(min(hi, count - 1), lo - 1, -1):  # the longest window from group i is enough
            end = ends[j]
            if end - before > _MAX_CARD_DIGITS:
                continue
            sums = even if end % 2 == 0 else odd
            if (sums[end] - sums[before]) % 10 == 0:
                yield i, j
                break


def _card_spans(run: _Run, text: str, last_four: bool) -> list[tuple[int, int, str]]:
    """Every window of whole groups that is a Luhn-valid 13-19 digit number, overlapping ones merged.

    Every window, not just the leftmost: in "1 1 1 4111 1111 1111 1111" a window of ones and the card's
    first group may pass Luhn too, and masking it alone would leave the rest of the card readable.
    """
    first = 0
    # The last four digits of a card masked earlier start a run of their own; skip them so that digits
    # which follow a mask are judged alone, exactly as on the first pass.
    if run.ends[0] == 4 and text.endswith(_CARD_MASK_PREFIX, 0, run.groups[0][0]):
        run.taken[0] = True
        first = 1
    windows: list[list[int]] = []  # [first group, last group] of each masked span
    for i, j in _luhn_windows(run.ends, run.digits, first):
        if windows and i <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], j)
        else:
            windows.append([i, j])
    spans = []
    for start, last in windows:
        number = run.digits_of(start, last)
        spans.append((run.groups[start][0], run.groups[last][1], mask_card(number) if last_four else _CARD_MASK_HIDDEN))
        run.taken[start:last + 1] = [True] * (last + 1 - start)
    return spans


def _labelled_card(text: str, gap: str, start: int, end: int, digits: int) -> bool:
    """Is the number text[start:end], of `digits` digits, the card's, when a card label and then `gap` come just
    before it? Nine digits or more always are; five to eight are unless they read as another number."""
    if digits >= _LABELLED_CARD_ANY_DIGITS:
        return True
    return digits >= _LABELLED_CARD_MIN_DIGITS and not (
        _OTHER_NUMBER_WORDS.search(gap) or _CURRENCY_AFTER.match(text, end) or _DATE.fullmatch(text, start, end))


def _ssn_plausible(digits: str) -> bool:
    # Numbers the SSA never issues; rejecting them spares look-alikes such as 000-00-0000.
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _grouped_ssn_spans(run: _Run) -> list[tuple[int, int, str]]:
    """Three free groups of 3, 2 and 4 digits joined by the same separator, and by nothing else to
    their neighbours ("123-45-6789", "123 45 6789", but not "123-45-6789-0" or "1 123 45 6789")."""
    spans: list[tuple[int, int, str]] = []
    k = 0
    while k + 2 < len(run.groups):
        if run.sizes[k:k + 3] != [3, 2, 4] or any(run.taken[k:k + 3]):
            k += 1
            continue
        separator = run.separator(k)
        if (run.separator(k + 1) == separator
                and not (k > 0 and not run.taken[k - 1] and run.separator(k - 1) == separator)
                and not (k + 3 < len(run.groups) and not run.taken[k + 3] and run.separator(k + 2) == separator)
                and _ssn_plausible(run.digits_of(k, k + 2))):
            spans.append((run.groups[k][0], run.groups[k + 2][1], SSN_MASK))
            run.taken[k:k + 3] = [True] * 3
            k += 3
        else:
            k += 1
    return spans


def _labelled_ssn_span(run: _Run) -> tuple[int, int, str] | None:
    """After an SSN label: the run's first groups when they hold exactly nine digits, however grouped."""
    if run.taken[0]:
        return None
    last = bisect.bisect_left(run.ends, _SSN_DIGITS)
    if last == len(run.ends) or run.ends[last] != _SSN_DIGITS or any(run.taken[:last + 1]):
        return None
    if not _ssn_plausible(run.digits[:_SSN_DIGITS]):
        return None
    run.taken[:last + 1] = [True] * (last + 1)
    return run.groups[0][0], run.groups[last][1], SSN_MASK


def _number_spans(text: str, folded: str, last_four: bool) -> list[tuple[int, int, str]]:
    runs = {m.start(): _Run.read(folded, m.start(), m.end()) for m in _DIGIT_RUN.finditer(folded)}
    spans: list[tuple[int, int, str]] = []
    lowered = folded.lower()
    if any(word in lowered for word in ("card", "visa", "amex", "american", "discover")):
        for label in _CARD_LABEL.finditer(folded):
            start = label.end()
            labelled = runs.get(start)
            if labelled is None:  # fewer than nine digits: read here, since only a label makes them a card
                number = _NUMBER.match(folded, start)
                assert number is not None  # the label ends before a digit
                labelled = _Run.read(folded, start, number.end())
            end = labelled.groups[-1][1]
            if not any(labelled.taken) and _labelled_card(folded, label.group(1), start, end, len(labelled.digits)):
                spans.append((start, end, mask_card(labelled.digits) if last_four else _CARD_MASK_HIDDEN))
                labelled.taken[:] = [True] * len(labelled.taken)
    if not runs:
        return spans
    for run in runs.values():
        if not run.taken[0]:
            spans += _card_spans(run, text, last_four)
    if "ssn" in lowered or "social" in lowered:
        for label in _SSN_LABEL.finditer(folded):
            labelled = runs.get(label.end())
            span = _labelled_ssn_span(labelled) if labelled is not None else None
            if span is not None:
                spans.append(span)
    for run in runs.values():
        spans += _grouped_ssn_spans(run)
    return spans


# -- numbers said as words -------------------------------------------------------------------------

_DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "nought": "0", "one": "1", "two": "2", "three": "3",
                "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_TEENS = {"ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15",
          "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19"}
_TENS = {"twenty": "2", "thirty": "3", "forty": "4", "fourty": "4", "fifty": "5", "sixty": "6", "seventy": "7",
         "eighty": "8", "ninety": "9"}
_REPEATS = {"double": 2, "triple": 3}
_DIGIT_WORD = "zero|oh|o|nought|one|two|three|four|five|six|seven|eight|nine"
# One spoken piece of a number, as people read a card or an SSN out: a digit word ("oh" for zero), a pair
# ("forty one", "forty-one", "eleven", "twenty"), a repeat ("double four", "triple one"), or digits.
_PAIR = rf"(?:{'|'.join(_TENS)})(?:[\s-]+(?:one|two|three|four|five|six|seven|eight|nine)\b)?|{'|'.join(_TEENS)}"
_SPOKEN_TOKEN = (
    rf"\b(?:(?:{_PAIR}|one|two|three|four|five|six|seven|eight|nine)[\s-]+hundred"  # "fifty-five hundred"
    rf"|(?:double|triple)[\s-]+(?:{_DIGIT_WORD}|[0-9])|{_PAIR}|{_DIGIT_WORD}|[0-9]+)\b")
# A run of spoken pieces, joined by spaces, commas, hyphens, full stops or the other marks a transcriber
# ends a pause with.
_SPOKEN_RUN = re.compile(rf"{_SPOKEN_TOKEN}(?:[\s,.!?;:\-]{{1,3}}{_SPOKEN_TOKEN})+", re.IGNORECASE)
_SPOKEN_PIECE = re.compile(_SPOKEN_TOKEN, re.IGNORECASE)
_ANY_NUMBER_WORD = re.compile(
    rf"\b(?:{_DIGIT_WORD}|{'|'.join(_TEENS)}|{'|'.join(_TENS)}|double|triple)\b", re.IGNORECASE)
_PAUSE = re.compile(r"[,.!?;:]")  # what ends a group said in one breath ("one two three, four five, ...")
_SPOKEN_SSN_GROUPS = [3, 2, 4]


_WORD_GAP = re.compile(r"[\s-]+")


@functools.lru_cache(maxsize=1024)  # a long run says the same few pieces over and over
def _spoken_digits(piece: str) -> str:
    """The digits one spoken piece stands for: "forty-one" -> "41", "double four" -> "44", "oh" -> "0"."""
    words = [word for word in _WORD_GAP.split(piece.lower()) if word]
    if words[-1] == "hundred":
        return _spoken_digits(" ".join(words[:-1])) + "00"
    if words[0] in _REPEATS:
        digit = _DIGIT_WORDS.get(words[1], words[1])
        return digit * _REPEATS[words[0]]
    if words[0] in _TENS:
        return _TENS[words[0]] + (_DIGIT_WORDS[words[1]] if len(words) > 1 else "0")
    return _TEENS.get(words[0]) or _DIGIT_WORDS.get(words[0], words[0])


@dataclass
class _SpokenRun:
    """A run of spoken pieces: each piece's (start, end) in the text and its digits, read once."""

    pieces: list[tuple[int, int, str]]
    digits: str
    ends: list[int]  # ends[k]: digits in pieces[0..k]

    @classmethod
    def find(cls, text: str) -> list[_SpokenRun]:
        """The runs that hold at least one number word (runs of digits alone are `_number_spans`')."""
        runs = []
        for run in _SPOKEN_RUN.finditer(text):
            pieces = [(m.start(), m.end(), _spoken_digits(m.group()))
                      for m in _SPOKEN_PIECE.finditer(text, run.start(), run.end())]
            if all(text[start:end] == digits for start, end, digits in pieces):
                continue
            digits = "".join(piece[2] for piece in pieces)
            runs.append(cls(pieces, digits, list(itertools.accumulate(len(piece[2]) for piece in pieces))))
        return runs

    def span(self, first: int, last: int) -> tuple[int, int]:
        return self.pieces[first][0], self.pieces[last][1]


def _spoken_card_spans(text: str, runs: list[_SpokenRun]) -> list[tuple[int, int, str]]:
    """Card numbers in spoken runs: after a card label the whole run (as `_labelled_card` decides, as for
    digits), else Luhn-valid windows."""
    spans: list[tuple[int, int, str]] = []
    for run in runs:
        pieces, digits, ends = run.pieces, run.digits, run.ends
        if len(digits) < _LABELLED_CARD_MIN_DIGITS:
            continue
        start, end = run.span(0, len(pieces) - 1)
        label = _CARD_LABEL_ENDING.search(text, max(0, start - 48), start)
        if label is not None and _labelled_card(text, label.group(1), start, end, len(digits)):
            spans.append((start, end, mask_card(digits)))
            continue
        taken = -1  # the last piece inside a masked window: a window that starts inside it is not another card
        for i, j in _luhn_windows(ends, digits):
            if i > taken:
                spans.append((*run.span(i, j), mask_card(digits[(ends[i - 1] if i else 0):ends[j]])))
                taken = j
    return spans


def _spoken_ssn_spans(text: str, runs: list[_SpokenRun]) -> list[tuple[int, int, str]]:
    """SSNs in spoken runs: the first nine digits after an SSN label ("my social is one two three four five
    six seven eight nine"), or nine said in three breaths of 3, 2 and 4 digits ("one two three, four five,
    six seven eight nine") that stand alone."""
    spans: list[tuple[int, int, str]] = []
    for run in runs:
        pieces, ends = run.pieces, run.ends
        nine = bisect.bisect_left(ends, _SSN_DIGITS)
        if (nine < len(ends) and ends[nine] == _SSN_DIGITS and _ssn_plausible(run.digits[:_SSN_DIGITS])
                and _SSN_MENTION.search(text, max(0, pieces[0][0] - 40), pieces[0][0]) is not None):
            spans.append((*run.span(0, nine), SSN_MASK))
            continue
        groups: list[list[int]] = [[0]]  # piece indexes, cut where the caller paused
        for k in range(1, len(pieces)):
            if _PAUSE.search(text, pieces[k - 1][1], pieces[k][0]):
                groups.append([])
            groups[-1].append(k)
        sizes = [ends[group[-1]] - (ends[group[0] - 1] if group[0] else 0) for group in groups]
        if sizes == _SPOKEN_SSN_GROUPS and _ssn_plausible(run.digits):
            spans.append((*run.span(0, len(pieces) - 1), SSN_MASK))
    return spans


def holds_card(text: str) -> bool:
    """Does `text` hold a card number (in digits or in words) that redaction would mask?"""
    return mask_cards(text)[1] > 0


def mask_cards(text: str) -> tuple[str, int]:
    """Mask card numbers only (in digits or words), leaving SSNs and emails: what a caller typed or said
    must not reach the model with a card in it, while an email they gave a tool still may."""
    spans = _spoken_card_spans(text, _SpokenRun.find(text)) if _ANY_NUMBER_WORD.search(text) else []
    if spans:
        text = _splice(text, spans)
    folded = fold(text)
    cards = [span for span in _number_spans(text, folded, True) if span[2] != SSN_MASK]
    return (_splice(text, cards) if cards else text), len(spans) + len(cards)


# -- emails ----------------------------------------------------------------------------------------

# An email address must stand alone: no address character just before it, nor just after it (a full
# stop may end a sentence), so a mask never exposes a neighbour that a second pass would then match.
# The lookbehind lets a local part start only where a run of address characters starts (it follows the
# first character so that the engine skips ahead to address characters), and the domain's labels are
# delimited by dots, so the scan is linear: 15 MB of "@" take a tenth of a second.
_EMAIL_CHAR = "[A-Za-z0-9._%+-]"
_EMAIL = re.compile(
    rf"{_EMAIL_CHAR}(?<!{_EMAIL_CHAR}{_EMAIL_CHAR}){_EMAIL_CHAR}{{0,63}}"
    r"@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}(?!\.?[A-Za-z0-9_%+@-])")


def _email_spans(text: str, folded: str) -> list[tuple[int, int, str]]:
    spans = []
    for m in _EMAIL.finditer(folded):
        # SIP URIs (sip:queue@pbx.example.com) are routing addresses, not email, and stay readable.
        if not folded[max(0, m.start() - 5):m.start()].lower().endswith(("sip:", "sips:")):
            spans.append((m.start(), m.end(), EMAIL_MASK))
    return spans


# An address said aloud, as speech recognition writes it: "jane at example dot com", "jane dot doe at
# gmail.com", "j a n e at example dot co dot uk", "jane@example dot com". It needs a spoken "at" or "dot"
# (the written form is `_EMAIL`'s) and a domain that ends in a common top-level domain after a dot, which
# everyday speech never says; a site named after "us", "me" or "visit" ("visit us at example dot com") is
# a site, not an address. Labels and their joins are disjoint, and each repeat is bounded: linear.
_TOP_LEVEL = ("com|org|net|edu|gov|mil|io|co|ai|app|dev|info|biz|email|online|site|tech|uk|us|ca|au|nz|ie|de|fr|"
              "es|it|nl|be|ch|se|dk|fi|pl|pt|eu|in|jp|br|mx|za")
_NOT_A_MAILBOX = ("us|me|him|her|them|it|you|we|look|visit|visiting|here|there|home|work|online|site|website|"
                  "page|find|found|reach|email|mail|write|contact|available|is|are|was|be|located|based|out|"
                  "up|shop|buy|order|ordered|bought|sign|log|go|check|apply|register|book|click")
_SPOKEN_JOIN = r"\s+(?:dot|underscore|dash|hyphen)\s+"
_SPOKEN_EMAIL = re.compile(
    rf"(?<![A-Za-z0-9._%+@-])(?!(?:{_NOT_A_MAILBOX})\s+at\s)"
    rf"(?:[A-Za-z0-9](?:\s[A-Za-z0-9]){{1,63}}(?![A-Za-z0-9])"  # spelled out, a letter at a time
    rf"|[A-Za-z0-9._%+-]{{1,64}}(?:{_SPOKEN_JOIN}[A-Za-z0-9._%+-]{{1,64}}){{0,4}})"
    rf"(?:\s+at\s+|\s*@\s*)(?:[A-Za-z0-9-]{{1,63}}(?:\s+dot\s+|\.)){{1,5}}(?:{_TOP_LEVEL})\b",
    re.IGNORECASE)
_SPOKEN_EMAIL_HINT = re.compile(r"\s(?:at|dot)\s|@", re.IGNORECASE)


def _spoken_email_spans(folded: str) -> list[tuple[int, int, str]]:
    spans = []
    for m in _SPOKEN_EMAIL.finditer(folded):
        said = m.group()
        if "@" in said and not re.search(r"\s(?:dot|underscore|dash|hyphen)\s|\s@|@\s", said, re.IGNORECASE):
            continue  # a written address: `_EMAIL`'s, which knows a SIP URI from an address
        spans.append((m.start(), m.end(), EMAIL_MASK))
    return spans


# -- putting it together ---------------------------------------------------------------------------


def _splice(text: str, spans: list[tuple[int, int, str]]) -> str:
    pieces: list[str] = []
    last = 0
    for start, end, mask in sorted(spans):
        pieces.append(text[last:start])
        pieces.append(mask)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def _redact_once(text: str, last_four: bool) -> tuple[str, int]:
    count = 0
    if _ANY_NUMBER_WORD.search(text):
        runs = _SpokenRun.find(text)
        spoken = [(s, e, m if last_four else _CARD_MASK_HIDDEN) for s, e, m in _spoken_card_spans(text, runs)]
        if not spoken:  # an SSN only where no card is (the next pass reads what a card mask leaves)
            spoken = _spoken_ssn_spans(text, runs)
        if spoken:
            text = _splice(text, spoken)
            count += len(spoken)
    folded = fold(text)
    spans = _number_spans(text, folded, last_four)
    if spans:
        text = _splice(text, spans)
        folded = fold(text)
        count += len(spans)
    if "@" in folded:
        spans = _email_spans(text, folded)
        if spans:
            text = _splice(text, spans)
            folded = fold(text)
            count += len(spans)
    if _SPOKEN_EMAIL_HINT.search(folded):
        spans = _spoken_email_spans(folded)
        if spans:
            text = _splice(text, spans)
            count += len(spans)
    return text, count


def redact(text: str, *, last_four: bool = True) -> tuple[str, int]:
    """Mask card numbers, SSNs and email addresses in `text`; return the new text and how many were masked.

    `last_four=False` hides a card's last four digits too, for readers that must not take them for
    something else (the flow brain must not read the tail of a card as an order number).
    """
    text, count = _redact_once(text, last_four)
    # A mask can change what its neighbours look like ("a@b.co123-45-6789": the email only ends once the
    # SSN is masked), so repeat until nothing changes. Each pass that masks removes digits or an '@',
    # so this ends, and text without PII is scanned once.
    n = count
    while n:
        text, n = _redact_once(text, last_four)
        count += n
    if not last_four and _CARD_MASK_PREFIX in text:  # a card masked earlier (a stored or typed text) keeps its tail
        text = _MASKED_CARD_TAIL.sub(_CARD_MASK_HIDDEN, text)
    return text, count


def private_value(value: str, said: str) -> bool:
    """Is `value`, taken from what a caller `said`, something redaction hides: a card number, an SSN or an
    email in itself, or as many digits as an SSN or a card has where `said` names one (a slot reads "my
    social is, um, one two three four five six seven eight nine" whose words no run of numbers joins)?"""
    if redact(value)[1]:
        return True
    if not value.isdigit():
        return False
    return (len(value) == _SSN_DIGITS and _SSN_MENTION.search(said) is not None) or (
        len(value) >= _LABELLED_CARD_ANY_DIGITS and _CARD_MENTION.search(said) is not None)


async def redact_offloaded(text: str) -> str:
    """`redact(text)[0]`, in a worker thread when the text is long, so that no call's audio waits."""
    if len(text) <= OFFLOAD_CHARS:
        return redact(text)[0]
    return (await asyncio.to_thread(redact, text))[0]


def redact_value(value: Any) -> tuple[Any, int]:
    """Redact every string inside a JSON value (dict keys included); return a new value and the count.

    Integers that are Luhn-valid card numbers become masked strings, since a card number stored as a
    JSON number is still a card number. Two keys that mask to the same text merge, the later winning.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value, 0
    if isinstance(value, int):
        digits = str(abs(value))
        if _MIN_CARD_DIGITS <= len(digits) <= _MAX_CARD_DIGITS and luhn_valid(digits):
            return mask_card(digits), 1
        return value, 0
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        total = 0
        for key, item in value.items():
            if isinstance(key, str):
                key, n = redact(key)
                total += n
            out[key], n = redact_value(item)
            total += n
        return out, total
    if isinstance(value, list | tuple):
        items = []
        total = 0
        for item in value:
            new, n = redact_value(item)
            items.append(new)
            total += n
        return items, total
    return value, 0
