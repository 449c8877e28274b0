"""Conversation ordering, internal (gateway tool) items, and what a truncated reply leaves heard."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.audio.formats import PCM24K
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.items import ContentPart, Item
from voxgate.session.conversation import Conversation
from voxgate.session.session import heard_transcript


def message(item_id: str, role: str = "user", text: str = "hi") -> Item:
    kind = "input_text" if role == "user" else "output_text"
    return Item(id=item_id, type="message", role=role, content=[ContentPart(type=kind, text=text)])  # type: ignore[arg-type]


def test_insert_positions_and_previous_ids() -> None:
    conv = Conversation()
    assert conv.add(message("a")) is None
    assert conv.add(message("b")) == "a"
    assert conv.add(message("c"), after="root") is None
    assert conv.add(message("d"), after="a") == "a"
    assert [i.id for i in conv.visible()] == ["c", "a", "d", "b"]
    with pytest.raises(RealtimeError):
        conv.add(message("e"), after="missing")
    with pytest.raises(RealtimeError):
        conv.add(message("a"))


def test_internal_items_are_invisible_but_in_history() -> None:
    conv = Conversation()
    conv.add(message("u1", text="where is order 4567"))
    conv.add(Item(id="fc", type="function_call", call_id="c1", name="lookup_order", arguments="{}"), internal=True)
    conv.add(Item(id="fo", type="function_call_output", call_id="c1", output='{"status":"shipped"}'), internal=True)
    assert conv.add(message("a1", role="assistant", text="It shipped.")) == "u1"
    assert conv.get("fc") is None
    kinds = [h.kind for h in conv.history()]
    assert kinds == ["user", "function_call", "function_call_output", "assistant"]
    assert conv.history()[2].name == "lookup_order"


def audio_part(segments: list[tuple[float, str]], total_ms: float) -> ContentPart:
    nbytes = int(PCM24K.bytes_per_ms * total_ms)
    return ContentPart(type="output_audio", transcript=" ".join(t for _, t in segments),
                       audio=bytearray(nbytes - nbytes % 2), audio_format=PCM24K, segments=segments)


def test_truncation_keeps_only_heard_words() -> None:
    part = audio_part([(0.0, "Order 4567 has shipped."), (2000.0, "It arrives on Friday.")], 4000.0)
    assert heard_transcript(part, 4000) == "Order 4567 has shipped. It arrives on Friday."
    assert heard_transcript(part, 2000) == "Order 4567 has shipped."
    assert heard_transcript(part, 0) == ""
    partial = heard_transcript(part, 3000)
    assert partial.startswith("Order 4567 has shipped. It")
    assert "Friday" not in partial


@given(st.floats(0, 5000))
def test_heard_words_grow_with_time(ms: float) -> None:
    part = audio_part([(0.0, "one two three four"), (2500.0, "five six seven eight")], 5000.0)
    shorter = heard_transcript(part, ms).split()
    longer = heard_transcript(part, min(ms + 300, 5000)).split()
    assert longer[:len(shorter)] == shorter
