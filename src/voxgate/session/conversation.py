"""The conversation: an ordered list of items, as OpenAI keeps it, plus the gateway's own.

Items the gateway adds for its server-side tools are `internal`: the engine sees them (so it can
speak about a tool's result) but clients never do, and `previous_item_id` skips them.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxgate.engines.base import HistoryEntry
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.items import Item


@dataclass
class _Entry:
    item: Item
    internal: bool


class Conversation:
    def __init__(self, max_items: int = 1000) -> None:
        self._entries: list[_Entry] = []
        self.max_items = max_items

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, item_id: str) -> Item | None:
        for entry in self._entries:
            if entry.item.id == item_id and not entry.internal:
                return entry.item
        return None

    def visible(self) -> list[Item]:
        return [e.item for e in self._entries if not e.internal]

    def previous_of(self, item_id: str) -> str | None:
        """The id of the visible item just before `item_id` (None when it is first)."""
        prev: str | None = None
        for entry in self._entries:
            if entry.item.id == item_id:
                return prev
            if not entry.internal:
                prev = entry.item.id
        return prev

    def add(self, item: Item, *, after: str | object | None = None, internal: bool = False) -> str | None:
        """Insert `item`; `after` is an item id, "root" for the start, or None to append.

        Returns the previous visible item's id, for `previous_item_id`.
        """
        if any(e.item.id == item.id for e in self._entries):
            raise RealtimeError("item_already_exists", f"Item with id {item.id!r} already exists.", param="item.id")
        if len(self._entries) >= self.max_items:
            self._drop_oldest()
        entry = _Entry(item, internal)
        if after is None:
            self._entries.append(entry)
        elif after == "root":
            self._entries.insert(0, entry)
        else:
            index = next((i for i, e in enumerate(self._entries) if e.item.id == after and not e.internal), None)
            if index is None:
                raise RealtimeError("item_not_found", f"previous_item_id {after!r} does not exist.",
                                    param="previous_item_id")
            self._entries.insert(index + 1, entry)
        return self.previous_of(item.id)

    def delete(self, item_id: str) -> None:
        for i, entry in enumerate(self._entries):
            if entry.item.id == item_id and not entry.internal:
                del self._entries[i]
                return
        raise RealtimeError("item_not_found", f"Item with id {item_id!r} not found.", param="item_id")

    def _drop_oldest(self) -> None:
        # Context is bounded like OpenAI's truncation "auto": the oldest items leave first.
        del self._entries[0]

    def history(self) -> list[HistoryEntry]:
        """What the engine may see: everything that was said and heard, tool calls included."""
        out: list[HistoryEntry] = []
        for entry in self._entries:
            item = entry.item
            if item.type == "message":
                text = item.text
                if item.role == "assistant" and not text:
                    continue  # a reply cut before any of it was heard never happened for the caller
                out.append(HistoryEntry(kind=item.role or "user", text=text))
            elif item.type == "function_call":
                out.append(HistoryEntry(kind="function_call", name=item.name or "", call_id=item.call_id or "",
                                        arguments=item.arguments or ""))
            else:
                out.append(HistoryEntry(kind="function_call_output", call_id=item.call_id or "",
                                        output=item.output or "",
                                        name=self._call_name(item.call_id)))
        return out

    def _call_name(self, call_id: str | None) -> str:
        for entry in self._entries:
            if entry.item.type == "function_call" and entry.item.call_id == call_id:
                return entry.item.name or ""
        return ""
