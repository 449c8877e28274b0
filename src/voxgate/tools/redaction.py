"""Masking of payment card numbers, US social security numbers and email addresses.

Pure functions, used on tool results before the model sees them and, in PCI mode, on transcripts and
logs. Masks are chosen so that masking twice changes nothing (idempotent) and so that a mask never
looks like the thing it hides:

    4111 1111 1111 1111   ->  **** **** **** 1111
    123-45-6789           ->  ***-**-****
    jane@example.com      ->  [email redacted]

Card numbers are masked only when their Luhn check passes, so order ids, phone numbers and dates stay
readable; a random 13-19 digit number still passes Luhn one time in ten and is masked, which is the
price of never letting a real card through.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["EMAIL_MASK", "SSN_MASK", "luhn_valid", "mask_card", "redact", "redact_value"]

SSN_MASK = "***-**-****"
EMAIL_MASK = "[email redacted]"
_CARD_MASK_PREFIX = "**** **** **** "

# A maximal run of ASCII digits joined by single spaces or dashes, holding at least 13 digits.
# The lookbehinds make a match start only where a run starts, which keeps the scan linear; they come
# after the first digit so that the engine can skip ahead to digits (twice as fast as leading them).
_DIGIT_RUN = re.compile(r"[0-9](?<![0-9][0-9])(?<![0-9][ -][0-9])(?:[ -]?[0-9]){12,}")
_DIGIT_GROUP = re.compile(r"[0-9]+")
_DIGIT = re.compile(r"[0-9]")

_SSN_DASHED = re.compile(r"([0-9](?<![0-9][0-9])(?<![0-9]-[0-9])[0-9]{2})-([0-9]{2})-([0-9]{4})(?!-?[0-9])")
# Nine digits after an SSN label on the same line ("SSN: 123456789", "my social is 123 45 6789").
# The gap may not hold '*' so that it never reaches past an earlier mask (idempotence).
_SSN_LABELLED = re.compile(
    r"\b(?:ssn|social\s+security|social)\b[^0-9\n*]{0,24}?"
    r"(?<![0-9])([0-9]{3})[ -]?([0-9]{2})[ -]?([0-9]{4})(?![0-9])",
    re.IGNORECASE,
)

# An email address must stand alone: no address character just before it, nor just after it (a full
# stop may end a sentence), so a mask never exposes a neighbour that a second pass would then match.
# Addresses are found from each '@' outwards rather than by a regex over every letter of the text.
_EMAIL_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL_DOMAIN = re.compile(
    r"[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}(?!\.?[A-Za-z0-9_%+@-])")
_MAX_EMAIL_LOCAL = 64

_MIN_CARD_DIGITS = 13
_MAX_CARD_DIGITS = 19


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


def _ssn_plausible(area: str, group: str, serial: str) -> bool:
    # Numbers the SSA never issues; rejecting them spares look-alikes such as 000-00-0000.
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _redact_cards(text: str) -> tuple[str, int]:
    pieces: list[str] = []
    last = 0
    count = 0
    for run in _DIGIT_RUN.finditer(text):
        groups = [(m.start() + run.start(), m.end() + run.start(), m.group())
                  for m in _DIGIT_GROUP.finditer(run.group())]
        i = 0
        # The last four digits of a card we masked earlier start a run of their own; skip them so
        # that digits which follow a mask are judged alone, exactly as on the first pass.
        if len(groups[0][2]) == 4 and text.endswith(_CARD_MASK_PREFIX, 0, groups[0][0]):
            i = 1
        while i < len(groups):
            # Leftmost, longest window of whole groups that is a Luhn-valid 13-19 digit number.
            best: int | None = None
            digits = ""
            for j in range(i, len(groups)):
                digits += groups[j][2]
                if len(digits) > _MAX_CARD_DIGITS:
                    break
                if len(digits) >= _MIN_CARD_DIGITS and luhn_valid(digits):
                    best = j
            if best is None:
                i += 1
                continue
            number = "".join(g[2] for g in groups[i:best + 1])
            pieces.append(text[last:groups[i][0]])
            pieces.append(mask_card(number))
            last = groups[best][1]
            count += 1
            i = best + 1
    if not count:
        return text, 0
    pieces.append(text[last:])
    return "".join(pieces), count


def _redact_emails(text: str) -> tuple[str, int]:
    pieces: list[str] = []
    last = 0  # end of the previous address masked
    at = text.find("@")
    while at != -1:
        start = at
        while start > last and at - start <= _MAX_EMAIL_LOCAL and text[start - 1] in _EMAIL_LOCAL_CHARS:
            start -= 1
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        standalone = start == 0 or text[start - 1] not in _EMAIL_LOCAL_CHARS
        # SIP URIs (sip:queue@pbx.example.com) are routing addresses, not email, and stay readable.
        sip = text[max(0, start - 5):start].lower().endswith(("sip:", "sips:"))
        if domain is not None and standalone and 0 < at - start <= _MAX_EMAIL_LOCAL and not sip:
            pieces.append(text[last:start])
            pieces.append(EMAIL_MASK)
            last = domain.end()
        at = text.find("@", max(at + 1, last))
    if not pieces:
        return text, 0
    pieces.append(text[last:])
    return "".join(pieces), len(pieces) // 2


def _redact_ssns(text: str) -> tuple[str, int]:
    count = 0

    def mask_dashed(m: re.Match[str]) -> str:
        nonlocal count
        if not _ssn_plausible(*m.groups()):
            return m.group()
        count += 1
        return SSN_MASK

    def mask_labelled(m: re.Match[str]) -> str:
        nonlocal count
        if not _ssn_plausible(*m.groups()):
            return m.group()
        count += 1
        return m.group()[: m.start(1) - m.start()] + SSN_MASK

    if "-" in text:
        text = _SSN_DASHED.sub(mask_dashed, text)
    lowered = text.lower()
    if "ssn" in lowered or "social" in lowered:
        text = _SSN_LABELLED.sub(mask_labelled, text)
    return text, count


def _redact_once(text: str) -> tuple[str, int]:
    count = 0
    has_digits = _DIGIT.search(text) is not None
    if has_digits and _DIGIT_RUN.search(text) is not None:
        text, count = _redact_cards(text)
    if "@" in text:
        text, n = _redact_emails(text)
        count += n
    if has_digits:
        text, n = _redact_ssns(text)
        count += n
    return text, count


def redact(text: str) -> tuple[str, int]:
    """Mask card numbers, SSNs and email addresses in `text`; return the new text and how many were masked."""
    text, count = _redact_once(text)
    # A mask can change what its neighbours look like ("a@b.co123-45-6789": the email only ends once the
    # SSN is masked), so repeat until nothing changes. Each pass that masks removes digits or an '@',
    # so this ends, and text without PII is scanned once.
    n = count
    while n:
        text, n = _redact_once(text)
        count += n
    return text, count


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
