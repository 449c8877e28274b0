"""REFER and the NOTIFYs that report on it (RFC 3515, RFC 3892 Referred-By, RFC 3420 message/sipfrag).

As transferor (the agent hands the caller to a human):

    refer = dialog.new_request("REFER", headers=refer_headers(escalation_uri, referred_by=me))
    ... 202 Accepted, then NOTIFYs:
    progress = parse_refer_notify(notify)       # TransferProgress(status=180/200/486..., final, ended)

As transferee (a peer asks us to call someone):

    referral = parse_refer(refer)               # Referral(target, referred_by, replaces)
    notify = dialog.new_request("NOTIFY", headers=notify_headers(terminated=True), body=sipfrag(200))

Malformed REFER or NOTIFY contents raise HeaderError (answer 400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voxgate.sip.headers import HeaderError, NameAddress, parse_name_address, parse_params
from voxgate.sip.message import Request, reason_phrase
from voxgate.sip.uri import SipUri, Uri, unescape

__all__ = [
    "SIPFRAG",
    "Referral",
    "TransferProgress",
    "notify_headers",
    "parse_refer",
    "parse_refer_notify",
    "parse_sipfrag",
    "refer_headers",
    "sipfrag",
]

SIPFRAG = "message/sipfrag;version=2.0"
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9]{2})(?: ([^\r\n]*))?")
MAX_SIPFRAG_BYTES = 4096


def refer_headers(target: Uri | NameAddress, *, referred_by: NameAddress | None = None) -> list[tuple[str, str]]:
    """Refer-To (and Referred-By) for a blind transfer to `target` (a sip: or tel: URI)."""
    address = target if isinstance(target, NameAddress) else NameAddress(target)
    headers = [("Refer-To", str(address))]
    if referred_by is not None:
        headers.append(("Referred-By", str(referred_by)))
    return headers


@dataclass(frozen=True)
class Referral:
    """What a received REFER asks: call `target` (for an attended transfer, replacing `replaces`)."""

    target: NameAddress
    referred_by: NameAddress | None
    replaces: str | None  # the Replaces header embedded in the Refer-To URI (RFC 3891), unescaped


def parse_refer(request: Request) -> Referral:
    """A REFER's target. Exactly one Refer-To is required (§2.4.1)."""
    values = request.headers.get_all("Refer-To")
    if len(values) != 1:
        raise HeaderError("a REFER needs exactly one Refer-To", "bad_refer")
    target = parse_name_address(values[0])
    raw_by = request.headers.get("Referred-By")
    referred_by = parse_name_address(raw_by) if raw_by else None
    replaces = None
    if isinstance(target.uri, SipUri):
        for name, value in target.uri.headers:
            if name.lower() == "replaces":
                replaces = unescape(value)
    return Referral(target, referred_by, replaces)


def sipfrag(status: int, reason: str | None = None) -> bytes:
    """A message/sipfrag body with just a status line (§2.4.5)."""
    return f"SIP/2.0 {status} {reason if reason is not None else reason_phrase(status)}\r\n".encode()


def parse_sipfrag(body: bytes) -> tuple[int, str]:
    """The status line of a message/sipfrag body."""
    if len(body) > MAX_SIPFRAG_BYTES:
        raise HeaderError("sipfrag body too large", "bad_sipfrag")
    first = body.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        line = first.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderError("sipfrag is not UTF-8", "bad_sipfrag") from exc
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise HeaderError("sipfrag does not start with a status line", "bad_sipfrag")
    return int(match.group(1)), match.group(2) or ""


def notify_headers(*, terminated: bool, expires: int = 60, reason: str = "noresource") -> list[tuple[str, str]]:
    """Event, Subscription-State and Content-Type of a NOTIFY for the implicit `refer` subscription."""
    state = f"terminated;reason={reason}" if terminated else f"active;expires={expires}"
    return [("Event", "refer"), ("Subscription-State", state), ("Content-Type", SIPFRAG)]


@dataclass(frozen=True)
class TransferProgress:
    """One NOTIFY's news: the transfer target's latest status, and whether the subscription ended."""

    status: int
    reason: str
    subscription_ended: bool

    @property
    def final(self) -> bool:
        return self.status >= 200

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300


def parse_refer_notify(request: Request) -> TransferProgress:
    """A NOTIFY for a REFER we sent: `Event: refer`, a sipfrag body, a Subscription-State."""
    event = (request.headers.get("Event") or "").split(";", 1)[0].strip().lower()
    if event != "refer":
        raise HeaderError(f"not a refer notification (Event: {event or 'none'})", "bad_event")
    state_raw = request.headers.get("Subscription-State")
    if state_raw is None:
        raise HeaderError("NOTIFY without Subscription-State", "bad_event")
    state, _, params = state_raw.partition(";")
    if params:
        parse_params(";" + params)
    if request.content_type != "message/sipfrag":
        raise HeaderError("refer notification body is not message/sipfrag", "bad_sipfrag")
    status, reason = parse_sipfrag(request.body)
    return TransferProgress(status, reason, subscription_ended=state.strip().lower() == "terminated")
