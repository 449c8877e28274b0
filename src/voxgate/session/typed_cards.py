"""Card numbers a client typed into a conversation item, masked before anything keeps or forwards the item.

What a client sends as text (`conversation.item.create` over the WebSocket or the WebRTC data channel, an
inline `response.input` message, a `function_call_output`) becomes the conversation every engine reads:
the `openai` engine mirrors it upstream, the `cascade` engine sends it to its LLM, the local brain reads it.
So a card number is masked in the item itself, as it arrives (PCI: the keypad is the way to give one).
SSNs and emails stay: a tool may need them, and the store and the logs redact them anyway.
"""

from __future__ import annotations

import asyncio
from typing import Any

from voxgate.tools.redaction import OFFLOAD_CHARS, mask_cards

__all__ = ["without_cards", "without_cards_offloaded"]

_TEXT_KEYS = ("text", "transcript")


def without_cards(spec: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """`spec` (a client's item, or an inline input entry) with every card number in its text masked, and how
    many were; an item without one comes back as it was."""
    count = 0

    def masked(value: Any) -> Any:
        nonlocal count
        if not isinstance(value, str) or not value:
            return value
        text, n = mask_cards(value)
        count += n
        return text

    kind = spec.get("type", "message")
    if kind == "message" and isinstance(spec.get("content"), list):
        content = [{**part, **{k: masked(part[k]) for k in _TEXT_KEYS if k in part}} if isinstance(part, dict)
                   else part for part in spec["content"]]
        cleaned = {**spec, "content": content}
    elif kind == "function_call_output" and "output" in spec:
        cleaned = {**spec, "output": masked(spec["output"])}
    else:
        return spec, 0
    return (cleaned, count) if count else (spec, 0)


def _text_chars(spec: dict[str, Any]) -> int:
    content = spec.get("content")
    parts = content if isinstance(content, list) else []
    texts = [part.get(k) for part in parts if isinstance(part, dict) for k in _TEXT_KEYS]
    texts.append(spec.get("output"))
    return sum(len(t) for t in texts if isinstance(t, str))


async def without_cards_offloaded(specs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """`without_cards` over several entries, in a worker thread when their text is long (an item may hold
    half a million characters), so that no call's audio waits on the scan."""

    def scan() -> tuple[list[dict[str, Any]], int]:
        results = [without_cards(spec) for spec in specs]
        return [spec for spec, _ in results], sum(n for _, n in results)

    if sum(_text_chars(spec) for spec in specs) <= OFFLOAD_CHARS:
        return scan()
    return await asyncio.to_thread(scan)
