"""Media tokens and the replay cache: the pure cores behind carrier media-socket authentication.

Time is a parameter here, so expiry is tested by moving it, not by waiting.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.transports.media_tokens import MediaGrant, MediaTokenError, MediaTokens
from voxgate.transports.replay_cache import ReplayCache

T0 = 1_700_000_000.0
GRANT = MediaGrant("twilio", "CA" + "1" * 32, "AC" + "2" * 32, "acme", "+15557654321", "+15551234567")


def refused(tokens: MediaTokens, token: str | None, call_id: str, now: float, carrier: str = "twilio") -> str:
    with pytest.raises(MediaTokenError) as error:
        tokens.redeem(token, carrier, call_id, now)
    assert error.value.message
    return error.value.reason


def test_a_token_opens_its_own_call_once() -> None:
    tokens = MediaTokens(ttl_s=60, max_tokens=100)
    token = tokens.mint(GRANT, T0)
    assert refused(tokens, None, GRANT.call_id, T0) == "missing"
    assert refused(tokens, "", GRANT.call_id, T0) == "missing"
    assert refused(tokens, token + "x", GRANT.call_id, T0) == "unknown"  # forged
    assert refused(tokens, token, "CA" + "9" * 32, T0) == "wrong_call"  # another call's start
    assert refused(tokens, token, GRANT.call_id, T0, carrier="telnyx") == "wrong_call"  # another carrier
    assert tokens.redeem(token, "twilio", GRANT.call_id, T0 + 1) == GRANT  # not spent by the attempts above
    assert refused(tokens, token, GRANT.call_id, T0 + 2) == "reused"  # a replayed handshake


def test_a_token_expires_and_is_then_forgotten() -> None:
    tokens = MediaTokens(ttl_s=60, max_tokens=100)
    token = tokens.mint(GRANT, T0)
    assert refused(tokens, token, GRANT.call_id, T0 + 60.001) == "expired"
    assert refused(tokens, token, GRANT.call_id, T0 + 121) == "unknown"  # remembered one more TTL only
    assert len(tokens) == 0
    fresh = tokens.mint(GRANT, T0 + 200)
    assert tokens.redeem(fresh, "twilio", GRANT.call_id, T0 + 260) == GRANT  # at the TTL: still live


def test_only_hashes_are_held_and_the_store_is_bounded() -> None:
    tokens = MediaTokens(ttl_s=60, max_tokens=3)
    minted = [tokens.mint(MediaGrant("telnyx", f"v3:{n}"), T0) for n in range(4)]
    assert len(tokens) == 3
    assert refused(tokens, minted[0], "v3:0", T0, carrier="telnyx") == "unknown"  # the oldest made room
    assert tokens.redeem(minted[3], "telnyx", "v3:3", T0).call_id == "v3:3"
    held = repr(vars(tokens))
    assert not any(token in held for token in minted)
    assert len(set(minted)) == 4 and all(len(token) >= 40 for token in minted)  # 256 random bits each


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["mint", "redeem", "forge", "wait"]), st.integers(0, 3),
                          st.integers(0, 3), st.floats(0, 50)), max_size=40))
def test_no_sequence_of_uses_opens_a_call_twice_late_or_for_another_call(
        steps: list[tuple[str, int, int, float]]) -> None:
    tokens = MediaTokens(ttl_s=60, max_tokens=5)
    now = T0
    minted: list[tuple[str, str, float]] = []  # token, call id, minted at
    opened: set[str] = set()
    for action, pick, call, wait in steps:
        call_id = f"CA{call}"
        if action == "mint":
            minted.append((tokens.mint(MediaGrant("twilio", call_id), now), call_id, now))
        elif action == "wait":
            now += wait
        elif action == "redeem" and minted:
            token, bound_to, minted_at = minted[pick % len(minted)]
            try:
                grant = tokens.redeem(token, "twilio", call_id, now)
            except MediaTokenError:
                continue
            assert grant.call_id == bound_to == call_id
            assert now - minted_at <= 60
            assert token not in opened
            opened.add(token)
        elif action == "forge":
            with pytest.raises(MediaTokenError):
                tokens.redeem(f"forged-{pick}", "twilio", call_id, now)
        assert len(tokens) <= 5


def test_replay_cache_remembers_within_its_window_and_within_its_bound() -> None:
    cache = ReplayCache(window_s=300, max_keys=2)
    assert not cache.seen("event:1", T0)
    assert cache.seen("event:1", T0 + 299)
    assert not cache.seen("event:1", T0 + 301)  # forgotten: a timestamp that old is refused anyway
    assert not cache.seen("event:2", T0 + 302)
    assert not cache.seen("event:3", T0 + 303)  # the bound: the oldest ("event:1") goes
    assert len(cache) == 2
    assert cache.seen("event:3", T0 + 304)
    assert not cache.seen("x" * 1_000_000, T0 + 305)  # any key costs the same few bytes
    assert cache.seen("x" * 1_000_000, T0 + 306)
