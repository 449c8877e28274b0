"""Token usage in OpenAI's shape: summed across responses (a call's total, an upstream's turns)."""

from __future__ import annotations

from typing import Any

__all__ = ["add_usage"]


def add_usage(total: dict[str, Any], usage: dict[str, Any]) -> None:
    """Add `usage` into `total` in place: token counts summed, nested details included."""
    for key, value in usage.items():
        if isinstance(value, dict):
            add_usage(total.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
