"""The few TwiML documents the gateway answers Twilio with: connect a media stream, dial a human."""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

__all__ = ["connect_stream", "dial", "hang_up", "reject_busy", "say", "say_then_connect_stream"]

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def connect_stream(url: str, parameters: Mapping[str, str]) -> str:
    """`<Connect><Stream>`: a bidirectional media stream to `url` (wss, no query string: Twilio drops it),
    with the call's data as `<Parameter>`s, which come back in the `start` message."""
    params = "".join(f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in parameters.items())
    return f"{_DECLARATION}<Response><Connect><Stream url={quoteattr(url)}>{params}</Stream></Connect></Response>"


def dial(target: str, *, whisper_url: str | None = None, action_url: str | None = None) -> str:
    """Move the call to a person: a number is dialled as is, a SIP URI inside `<Sip>`.

    A warm transfer gives `whisper_url`, TwiML Twilio runs on the person's side once they answer and
    before the caller is connected (`<Number url>`, `<Sip url>`: who is calling and why), and
    `action_url`, where Twilio reports how the dial ended (nobody answered: the caller goes back to
    the agent)."""
    sip = target.startswith(("sip:", "sips:"))
    if whisper_url is None and action_url is None:
        if sip:
            return f"<Response><Dial><Sip>{escape(target)}</Sip></Dial></Response>"
        return f"<Response><Dial>{escape(target)}</Dial></Response>"
    noun = "Sip" if sip else "Number"
    url = f" url={quoteattr(whisper_url)}" if whisper_url else ""
    action = f" action={quoteattr(action_url)}" if action_url else ""
    return f"<Response><Dial{action}><{noun}{url}>{escape(target)}</{noun}></Dial></Response>"


def say(text: str) -> str:
    """Speak `text` in Twilio's voice (a whisper to the person taking a call)."""
    return f"{_DECLARATION}<Response><Say>{escape(text)}</Say></Response>"


def say_then_connect_stream(text: str, url: str, parameters: Mapping[str, str]) -> str:
    """`<Say>` then `<Connect><Stream>`: the caller is told, then back with the agent on a new stream."""
    stream = connect_stream(url, parameters).removeprefix(_DECLARATION).removeprefix("<Response>")
    return f"{_DECLARATION}<Response><Say>{escape(text)}</Say>{stream}"


def hang_up() -> str:
    return "<Response><Hangup/></Response>"


def reject_busy() -> str:
    """Turn the call away before it is answered: the caller hears busy and nothing is billed."""
    return f'{_DECLARATION}<Response><Reject reason="busy"/></Response>'
