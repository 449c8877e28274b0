"""Server-minted identifiers, shaped like OpenAI's (`event_…`, `item_…`, `resp_…`, `sess_…`, `call_…`)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 20) -> str:
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))
