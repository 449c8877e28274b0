"""Fuzz inputs for a stateless parser: in batches, and built from a seeded Random where they are bulky.

Hypothesis' own work per example (its bookkeeping, the mutations it derives, the search for a novel
choice sequence) costs more than parsing one input, and so does each of its draws: a mutated SIP message
or a nested JSON frame drawn field by field took hundreds of draws, and the fuzz tests spent over 90 % of
their time in hypothesis, not in the parsers. So:
- inputs come in batches per example (up to eight; up to sixteen where they are seeded, in half the
  examples): a failing batch still shrinks to the one input that fails;
- a bulky input is built by plain code from a `random.Random` seeded by one hypothesis draw (`seeded`):
  the run stays repeatable (conftest derandomises hypothesis), a failure prints the seed that builds it, and
  the parser gets the same kinds of inputs for a tenth of the cost. What it gives up is shrinking inside
  that one input; the parsers' own fixed regression cases stay as examples beside each test.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

T = TypeVar("T")
BATCHED = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def batches(*inputs: st.SearchStrategy[Any], max_size: int = 8) -> st.SearchStrategy[list[Any]]:
    """One to `max_size` inputs for one example (a tuple of them where the parser takes several). Seeded
    inputs cost hypothesis one draw each, so their tests take batches of up to 16 in half the examples: as
    many inputs, half of hypothesis' per-example work."""
    return st.lists(inputs[0] if len(inputs) == 1 else st.tuples(*inputs), min_size=1, max_size=max_size)


def seeded(build: Callable[[random.Random], T]) -> st.SearchStrategy[T]:
    """What `build` makes from a Random seeded by one hypothesis draw."""
    return st.integers(0, 2**64 - 1).map(lambda seed: build(random.Random(seed)))


def text_from(rnd: random.Random, alphabet: Sequence[str], max_size: int) -> str:
    return "".join(rnd.choices(alphabet, k=rnd.randint(0, max_size)))


ANY_CHARACTERS = [chr(code) for code in [*range(0x20, 0x7F), 0, 9, 10, 13, 0x7F, 0xA0, 0xE9, 0x2028, 0xFEFF,
                                         0xFF10, 0x4E2D, 0x1F600]]


def any_text(rnd: random.Random, max_size: int) -> str:
    """Printable ASCII mostly, with controls, non-BMP and full-width digits now and then."""
    return text_from(rnd, ANY_CHARACTERS, max_size)


SCALARS: list[Any] = [None, True, False, 0, -1, 2**63, -(10**30), 10**30, 1.5, -0.0, float("inf"), float("-inf"),
                      float("nan"), 1e308, "8000", "PCMU", "audio/x-mulaw", "inbound", "", "1"]


def json_value(rnd: random.Random, leaves: int = 6) -> Any:
    """Any JSON value (with NaN and infinities, which json.dumps writes): scalars, lists and objects nested a
    few deep."""
    kind = rnd.randrange(10) if leaves > 1 else 0
    if kind < 6:
        scalar = rnd.randrange(4)
        if scalar == 0:
            return rnd.choice(SCALARS)
        if scalar == 1:
            return rnd.randint(-(2**70), 2**70)
        if scalar == 2:
            return rnd.uniform(-1e9, 1e9)
        return any_text(rnd, 20)
    budget = rnd.randint(0, min(4, leaves - 1))
    if kind < 8:
        return [json_value(rnd, leaves // 2) for _ in range(budget)]
    return {any_text(rnd, 8): json_value(rnd, leaves // 2) for _ in range(budget)}
