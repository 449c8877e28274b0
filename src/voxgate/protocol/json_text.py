"""JSON text from clients, read with its nesting bounded.

Python's decoder gives up on deep nesting only near the interpreter's recursion limit, with a
RecursionError, and every later reader of a deep value recurses again (schema checks, redaction,
copies); so nesting is bounded where JSON comes in, and a too-deep document is a client error.
"""

from __future__ import annotations

import json
from typing import Any

from voxgate.protocol.errors import RealtimeError

# No client event nests deeper than a tool schema inside a session inside the event (about 15 levels).
MAX_JSON_DEPTH = 32


def parse_json(raw: str | bytes, what: str = "The message") -> Any:
    """JSON text to a value, or a RealtimeError (`invalid_json`) for bad JSON and nesting over MAX_JSON_DEPTH."""
    try:
        data = json.loads(raw)
    except RecursionError:  # far too deep: the decoder gave up before the end
        raise RealtimeError("invalid_json", f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RealtimeError("invalid_json", f"{what} is not valid JSON: {exc}") from exc
    if nested_too_deep(raw, data):
        raise RealtimeError("invalid_json", f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels.")
    return data


def nested_too_deep(raw: str | bytes, value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Does `value`, decoded from `raw`, nest arrays and objects more than `limit` deep?"""
    brackets = raw.count("[") + raw.count("{") if isinstance(raw, str) else raw.count(b"[") + raw.count(b"{")
    if brackets <= limit:  # counting the brackets settles nearly every message without a walk
        return False
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
