"""The few TwiML documents the gateway answers Twilio with: connect a media stream, dial a human."""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

__all__ = ["connect_stream", "dial", "hang_up", "reject_busy"]

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def connect_stream(url: str, parameters: Mapping[str, str]) -> str:
    """`<Connect><Stream>`: a bidirectional media stream to `url` (wss, no query string: Twilio drops it),
    with the call's data as `<Parameter>`s, which come back in the `start` message."""
    params = "".join(f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in parameters.items())
    return f"{_DECLARATION}<Response><Connect><Stream url={quoteattr(url)}>{params}</Stream></Connect></Response>"


def dial(target: str) -> str:
    """Move the call to a person: a number is dialled as is, a SIP URI inside `<Sip>`."""
    if target.startswith(("sip:", "sips:")):
        return f"<Response><Dial><Sip>{escape(target)}</Sip></Dial></Response>"
    return f"<Response><Dial>{escape(target)}</Dial></Response>"


def hang_up() -> str:
    return "<Response><Hangup/></Response>"


def reject_busy() -> str:
    """Turn the call away before it is answered: the caller hears busy and nothing is billed."""
    return f'{_DECLARATION}<Response><Reject reason="busy"/></Response>'
