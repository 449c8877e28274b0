"""How a carrier hands a call to a gateway, sans-IO: the webhook it sends, and the answer it acts on.

A phone call starts with the carrier's signed webhook, and the gateway's answer says where to stream the
call's media and with what: Twilio reads a TwiML document from the webhook's response (`<Connect><Stream
url>` with `<Parameter>`s), Telnyx receives an `answer` call command on its REST API (`stream_url`,
`stream_auth_token`, `custom_parameters`, codecs). A load generator, like a carrier, uses exactly what
the answer says, so per-call tokens or URLs a gateway mints are honoured without knowing them. An answer
that declines the call (TwiML `<Reject>`, or `<Hangup>` without a stream; a Telnyx `reject` or `hangup`
command instead of `answer`) is a `Declined`.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote
from xml.etree import ElementTree

from voxgate.loadtest.carrier_line import LineCodec, twilio_signature

__all__ = ["AnswerError", "CarrierCommand", "Declined", "StreamAnswer", "parse_carrier_command", "parse_twiml",
           "telnyx_call_initiated", "telnyx_signature_headers", "twilio_voice_form", "twilio_voice_headers"]

MAX_ANSWER_BYTES = 64 * 1024  # a TwiML answer is a few hundred bytes


class AnswerError(ValueError):
    """The gateway's answer is neither a stream nor a refusal."""


@dataclass(frozen=True)
class StreamAnswer:
    """Stream this call's media to `url`, with these parameters in `start` (and this token, for Telnyx)."""

    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    auth_token: str | None = None
    inbound: LineCodec = field(default_factory=LineCodec)  # what the line sends
    outbound: LineCodec = field(default_factory=LineCodec)  # what the gateway sends back


@dataclass(frozen=True)
class Declined:
    """The gateway told the carrier not to connect the call (it is busy, or refuses it)."""

    reason: str


# -- Twilio ------------------------------------------------------------------------------------------


def twilio_voice_form(call_sid: str, account_sid: str = "AC" + "0" * 32, caller: str = "+15557654321",
                      called: str = "+15551234567") -> dict[str, str]:
    """The fields Twilio posts to a number's voice webhook when a call comes in (reference §1.1)."""
    return {"CallSid": call_sid, "AccountSid": account_sid, "From": caller, "To": called, "CallStatus": "ringing",
            "Direction": "inbound", "ApiVersion": "2010-04-01"}


def twilio_voice_headers(url: str, form: dict[str, str], auth_token: str | None) -> dict[str, str]:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if auth_token:
        headers["x-twilio-signature"] = twilio_signature(url, form, auth_token)
    return headers


def parse_twiml(document: str) -> StreamAnswer | Declined:
    """What Twilio would do with the webhook's TwiML: open a stream, or end the call."""
    if len(document) > MAX_ANSWER_BYTES:
        raise AnswerError("the TwiML answer is too large")
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError as exc:
        raise AnswerError(f"the answer is not TwiML: {exc}") from exc
    if root.tag != "Response":
        raise AnswerError(f"the answer's root is <{root.tag}>, not <Response>")
    stream = root.find("./Connect/Stream")
    if stream is not None and stream.get("url"):
        parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        return StreamAnswer(str(stream.get("url")), parameters)
    reject = root.find("Reject")
    if reject is not None:
        return Declined(f"reject:{reject.get('reason', 'rejected')}")
    if root.find("Hangup") is not None:
        return Declined("hangup")
    raise AnswerError("the TwiML neither connects a stream nor ends the call")


# -- Telnyx ------------------------------------------------------------------------------------------


def telnyx_call_initiated(call_control_id: str) -> bytes:
    """The `call.initiated` webhook body of an incoming call (reference §2.1)."""
    return json.dumps({"data": {
        "record_type": "event", "event_type": "call.initiated", "id": str(uuid.uuid4()),
        "occurred_at": "2025-01-01T00:00:00.000000Z",
        "payload": {"call_control_id": call_control_id, "call_leg_id": str(uuid.uuid4()),
                    "call_session_id": str(uuid.uuid4()), "connection_id": "1234", "direction": "incoming",
                    "from": "+15557654321", "to": "+15551234567", "state": "parked"}}}).encode()


def telnyx_signature_headers(private_key: bytes | None, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Telnyx sends: Ed25519 over `timestamp|body` with the account's key (reference §2.4);
    `private_key` is the raw 32-byte seed. Without a key, only the content type."""
    headers = {"content-type": "application/json"}
    if private_key is None:
        return headers
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = Ed25519PrivateKey.from_private_bytes(private_key).sign(ts.encode() + b"|" + body)
    return {**headers, "telnyx-signature-ed25519": base64.b64encode(signature).decode(), "telnyx-timestamp": ts}


@dataclass(frozen=True)
class CarrierCommand:
    """A call command a gateway sent to a carrier's REST API."""

    call_id: str  # Twilio's CallSid, Telnyx's call_control_id
    action: str  # Telnyx: answer, hangup, reject, transfer, send_dtmf...; Twilio: hangup, transfer, update
    body: dict[str, Any]

    @property
    def ends_call(self) -> bool:
        """The agent hung up or handed the call to someone else: the carrier takes it from here."""
        return self.action in ("hangup", "transfer", "reject")

    def answer(self) -> StreamAnswer | Declined:
        """What Telnyx would do with this command, when it is the call's first."""
        if self.action in ("reject", "hangup"):
            return Declined(f"{self.action}:{self.body.get('cause', '')}".rstrip(":"))
        if self.action != "answer":
            raise AnswerError(f"the call's first command is {self.action!r}, not answer")
        url = self.body.get("stream_url")
        if not isinstance(url, str) or not url:
            raise AnswerError("the answer command asks for no media stream")
        raw = self.body.get("custom_parameters") or []
        pairs = [(p.get("name"), p.get("value")) for p in raw if isinstance(p, dict)] if isinstance(raw, list) else []
        token = self.body.get("stream_auth_token")
        rate = int(self.body.get("stream_bidirectional_sampling_rate") or 8000)
        # The line sends L16 at 8 kHz (a rate Telnyx streams at); what comes back is at the asked rate.
        return StreamAnswer(url, {str(k): str(v) for k, v in pairs}, token if isinstance(token, str) else None,
                            inbound=_telnyx_codec(self.body.get("stream_codec"), 8000),
                            outbound=_telnyx_codec(self.body.get("stream_bidirectional_codec"), rate))


def _telnyx_codec(name: object, rate: int) -> LineCodec:
    codec = str(name or "PCMU").upper()
    if codec == "L16":
        return LineCodec("l16", rate)
    return LineCodec("pcma" if codec == "PCMA" else "pcmu", 8000)


def parse_carrier_command(path: str, body: bytes) -> CarrierCommand | None:
    """A request to the carrier API stand-in as a call command: Telnyx's
    `POST /v2/calls/{call_control_id}/actions/{action}` (JSON) or Twilio's
    `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` (a form: `Status=completed` hangs up,
    `Twiml` moves the call); None for anything else."""
    parts = [unquote(p) for p in path.split("?", 1)[0].strip("/").split("/")]
    if len(parts) == 5 and parts[:2] == ["v2", "calls"] and parts[3] == "actions":
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = {}
        return CarrierCommand(parts[2], parts[4], data if isinstance(data, dict) else {})
    if len(parts) == 5 and parts[0] == "2010-04-01" and parts[1] == "Accounts" and parts[3] == "Calls" \
            and parts[4].endswith(".json"):
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        action = "hangup" if form.get("Status") == "completed" else "transfer" if "<Dial" in form.get("Twiml", "") \
            else "update"
        return CarrierCommand(parts[4].removesuffix(".json"), action, dict(form))
    return None
