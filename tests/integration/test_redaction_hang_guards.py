"""Redaction's hang guards: inputs shaped to make a backtracking pattern or a per-piece rescan go quadratic.

Each is large on purpose (up to 15 MB): at that size a quadratic pass takes minutes and trips the timeout,
where the linear code takes under a second. They are slow by design, so they run with the integration
layer; tests/unit/test_redaction.py holds the examples and the properties.
"""

from __future__ import annotations

import pytest

from voxgate.tools.redaction import redact


@pytest.mark.timeout(60)  # a hang guard, not a measurement: each input takes well under a second
@pytest.mark.parametrize("text", [
    "@" * 15_000_000,  # froze every call for 26 s (H4)
    "a@" * 500_000,
    "a" * 1_000_000 + "@",
    "a@" + "b." * 500_000,
    "1 " * 100_000,
    "1-" * 100_000 + "x",
    "social " * 100_000 + "1",
    "\uff11 " * 100_000,
    "one two " * 100_000,  # 0.8 s; a window per piece and a fresh Luhn sum per window took 70 s
    "forty " * 100_000,
    "double " * 100_000,
    "fifty five hundred " * 100_000,
    "a " * 200_000 + "at",
    "a at b dot " * 50_000,
    "x dot " * 100_000,
])
def test_adversarial_inputs_take_linear_time(text: str) -> None:
    redacted, count = redact(text)
    assert len(redacted) <= len(text) + 10 * count
