"""Which dialect a client speaks: GA unless its handshake asks for beta.

Server events are spelt per dialect by `protocol/serialiser.py`; client events are read per dialect by
`protocol/client_events.py`.
"""

from __future__ import annotations

from voxgate.protocol.items import Dialect


def dialect_from_handshake(headers: dict[str, str], subprotocols: list[str]) -> Dialect:
    """Beta when the client says `OpenAI-Beta: realtime=v1` (header or browser subprotocol)."""
    beta_header = headers.get("openai-beta", "")
    if "realtime=v1" in beta_header.replace(" ", "").split(","):
        return "beta"
    if "openai-beta.realtime-v1" in subprotocols:
        return "beta"
    return "ga"
