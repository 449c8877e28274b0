"""Server-minted identifiers, shaped like OpenAI's (`event_…`, `item_…`, `resp_…`, `sess_…`, `call_…`)."""

from __future__ import annotations

import os
import string

_ALPHABET = string.ascii_letters + string.digits
# Every random byte maps to a letter or digit in one C call: an id a phone call mints 50 times a second
# (one per event) costs ~0.5 µs, not the 16 µs of drawing 20 characters one by one. 256 is not a
# multiple of 62, so 8 characters are a little likelier: 5.94 bits of randomness each, 119 per id.
_BYTE_TO_CHAR = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) for b in range(256))


def new_id(prefix: str, length: int = 20) -> str:
    return f"{prefix}_{os.urandom(length).translate(_BYTE_TO_CHAR).decode('ascii')}"
