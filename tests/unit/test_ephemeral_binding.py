"""How an ephemeral key's session is bound: beta patches become GA ones, offers may only add to a key's config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.control.ephemeral import merge_bound_session, to_ga_patch
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.session_config import SessionConfig

BETA = {
    "model": "gpt-4o-realtime-preview", "instructions": "Be brief.", "modalities": ["text"], "voice": "joe",
    "speed": 1.1, "input_audio_format": "g711_ulaw", "output_audio_format": "g711_alaw",
    "input_audio_transcription": {"model": "whisper-1"}, "input_audio_noise_reduction": None,
    "turn_detection": {"type": "server_vad", "silence_duration_ms": 450}, "tool_choice": "none",
    "tools": [{"type": "function", "name": "f", "description": "", "parameters": {"type": "object"}}],
    "max_response_output_tokens": 300, "temperature": 0.7, "tracing": None,
}


def test_a_beta_patch_becomes_the_same_session_in_ga() -> None:
    base = SessionConfig(id="sess_x")
    from_beta = base.updated(BETA, "beta")
    ga = to_ga_patch(BETA, "beta", from_beta)
    assert ga["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert ga["audio"]["output"]["voice"] == "joe" and ga["max_output_tokens"] == 300
    assert "temperature" not in ga  # GA has no such setting
    from_ga = base.updated(ga, "ga")
    assert from_ga.to_ga() == {**from_beta.to_ga()}


def test_a_ga_patch_is_kept_as_given_without_object_fields() -> None:
    patch = {"type": "realtime", "id": "sess_1", "instructions": "x", "audio": {"output": {"voice": "joe"}}}
    expected = {"instructions": "x", "audio": {"output": {"voice": "joe"}}}
    assert to_ga_patch(patch, "ga", SessionConfig(id="s")) == expected


def test_an_offer_may_add_but_not_override() -> None:
    minted = {"instructions": "Minted.", "audio": {"output": {"voice": "joe"}}}
    merged = merge_bound_session(minted, {"type": "realtime", "instructions": "Minted.",
                                          "audio": {"output": {"voice": "joe", "speed": 1.2},
                                                    "input": {"transcription": None}}})
    assert merged == {"instructions": "Minted.", "audio": {"output": {"voice": "joe", "speed": 1.2},
                                                           "input": {"transcription": None}}}
    with pytest.raises(RealtimeError) as refused:
        merge_bound_session(minted, {"audio": {"output": {"voice": "amy"}}})
    assert refused.value.code == "session_mismatch" and refused.value.param == "session.audio.output.voice"
    with pytest.raises(RealtimeError):
        merge_bound_session(minted, {"audio": "nope"})


leaf = st.one_of(st.integers(), st.text(max_size=3), st.none())
tree = st.recursive(st.dictionaries(st.sampled_from("abc"), leaf, max_size=3),
                    lambda children: st.dictionaries(st.sampled_from("abc"), children, max_size=3), max_leaves=8)


@given(tree, tree)
def test_merge_keeps_every_minted_value_or_refuses(minted: dict, requested: dict) -> None:
    try:
        merged = merge_bound_session(minted, requested)
    except RealtimeError as exc:
        assert exc.code == "session_mismatch"
        return

    def contains(outer: dict, inner: dict) -> bool:
        return all(k in outer and (contains(outer[k], v) if isinstance(v, dict) and isinstance(outer[k], dict)
                                   else outer[k] == v) for k, v in inner.items())

    assert contains(merged, minted) and contains(merged, requested)
