"""Call control by an app, OpenAI's SIP way, for voxgate's own SIP calls. Sans-IO: no sockets, no clocks.

An inbound call on a route with `call_control: webhook` rings while the app is told of it with a signed
`realtime.call.incoming` webhook, and waits for the app's word on the call-control routes:

    pending ──accept(session)──► accepted ──hangup / the call ends──► ended
       │ ──reject(status)──► rejected           (refer: only while accepted)
       │ ──hangup──────────► rejected (603)
       │ ──no answer in time──► fallen back (the route's default agent, or a refusal with its code)
       └ ──the caller gives up (CANCEL)──► ended

Only the first word counts: a second accept, or an accept after a reject, is a conflict (409), which is
also what the app's retry of an accept whose answer it lost hears. The shells (the SIP phone's
`transports/controlled_sip_calls.py`, the HTTP routes in `control/realtime_calls.py`) carry out what this
decides; this module also holds the wire shapes they share (the webhook's body, the routes' bodies).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "AUTH_HEADERS",
    "DEFAULT_REJECT_STATUS",
    "Accepted",
    "CallControl",
    "CallControlError",
    "Decision",
    "FellBack",
    "Rejected",
    "incoming_event",
    "refer_target",
    "reject_status",
    "retry_delays",
    "session_of",
]

DEFAULT_REJECT_STATUS = 603  # Decline, as OpenAI's /reject without a status_code
AUTH_HEADERS = frozenset({"authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate"})
MAX_SIP_HEADERS = 100  # an INVITE with more is not one a PBX sends; the app is told the first ones
MAX_HEADER_VALUE = 1024
REFER_SCHEMES = ("tel:", "sip:", "sips:")
MAX_TARGET_CHARS = 256

State = Literal["pending", "accepted", "rejected", "fallen_back", "ended"]


class CallControlError(Exception):
    """An app's request that the call's state or the body refuses: `status` (400, 404, 409) and `code`
    for the HTTP problem, `param` naming the field at fault."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param


@dataclass(frozen=True, slots=True)
class Accepted:
    session: dict[str, Any]  # the validated session config (GA shape): the call's session starts with it


@dataclass(frozen=True, slots=True)
class Rejected:
    status: int  # the final response to the INVITE


@dataclass(frozen=True, slots=True)
class FellBack:
    """The app never answered: the route's fallback (`status` None: the route's agent answers)."""

    status: int | None


Decision = Accepted | Rejected | FellBack


class CallControl:
    """One inbound call's state under an app's control."""

    def __init__(self, call_id: str, *, deadline: float, fallback_status: int | None) -> None:
        self.call_id = call_id
        self.deadline = deadline  # by when (the shell's clock) the app must have answered
        self.fallback_status = fallback_status  # None: fall back to the route's agent
        self.state: State = "pending"
        self.decision: Decision | None = None

    def _decide(self, decision: Decision, state: State) -> Decision:
        self.decision, self.state = decision, state
        return decision

    def conflict(self, action: str) -> CallControlError:
        """Why `action` cannot be done in this state (409)."""
        what = {"accepted": "was already accepted", "rejected": "was rejected",
                "fallen_back": "was answered by the gateway (no answer from the app in time)",
                "ended": "has ended"}.get(self.state, f"is {self.state}")
        return CallControlError(409, "call_not_pending" if self.state != "ended" else "call_ended",
                                f"Cannot {action} call {self.call_id}: it {what}.")

    def accept(self, session: dict[str, Any]) -> Accepted:
        if self.state != "pending":
            raise self.conflict("accept")
        decision = self._decide(Accepted(session), "accepted")
        assert isinstance(decision, Accepted)
        return decision

    def reject(self, status: int = DEFAULT_REJECT_STATUS) -> Rejected:
        if self.state != "pending":
            raise self.conflict("reject")
        decision = self._decide(Rejected(status), "rejected")
        assert isinstance(decision, Rejected)
        return decision

    def hang_up(self) -> Rejected | None:
        """A pending call is declined (603); an accepted one ends (None: the shell hangs up the line)."""
        if self.state == "pending":
            return self.reject()
        if self.state == "accepted":
            self.state = "ended"
            return None
        raise self.conflict("hang up")

    def check_refer(self) -> None:
        """A transfer needs a call the app accepted and that still runs."""
        if self.state != "accepted":
            raise self.conflict("refer")

    def expire(self, now: float) -> FellBack | None:
        """The answer time has passed: the fallback, once; None while it has not, or once decided."""
        if self.state != "pending" or now < self.deadline:
            return None
        decision = self._decide(FellBack(self.fallback_status), "fallen_back")
        assert isinstance(decision, FellBack)
        return decision

    def ended(self) -> None:
        """The call is over (the caller hung up or cancelled, or the line ended it)."""
        self.state = "ended"


def incoming_event(event_id: str, call_id: str, created_at: int, sip_headers: Iterable[tuple[str, str]]) -> bytes:
    """The `realtime.call.incoming` body OpenAI sends: the INVITE's headers in order, as name/value pairs,
    without the authentication headers (a digest response is not the app's), bounded."""
    headers = [{"name": name, "value": value[:MAX_HEADER_VALUE]} for name, value in sip_headers
               if name.lower() not in AUTH_HEADERS][:MAX_SIP_HEADERS]
    event = {"object": "event", "id": event_id, "type": "realtime.call.incoming", "created_at": created_at,
             "data": {"call_id": call_id, "sip_headers": headers}}
    return json.dumps(event, separators=(",", ":")).encode()


def _object(body: bytes, *, empty_ok: bool) -> dict[str, Any]:
    if not body.strip() and empty_ok:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CallControlError(400, "invalid_json", "The body must be a JSON object.") from exc
    if not isinstance(value, dict):
        raise CallControlError(400, "invalid_json", "The body must be a JSON object.")
    return value


def reject_status(body: bytes) -> int:
    """`/reject`'s `{status_code?}`: a SIP final failure (400-699), 603 when absent."""
    status = _object(body, empty_ok=True).get("status_code", DEFAULT_REJECT_STATUS)
    if status is None:
        return DEFAULT_REJECT_STATUS
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 699:
        raise CallControlError(400, "invalid_value", "status_code must be a SIP failure code from 400 to 699.",
                               param="status_code")
    return status


def refer_target(body: bytes) -> str:
    """`/refer`'s `{target_uri}`: a tel:, sip: or sips: URI (the REFER's Refer-To)."""
    target = _object(body, empty_ok=False).get("target_uri")
    if not isinstance(target, str) or not target.strip():
        raise CallControlError(400, "missing_required_parameter", "target_uri (a tel: or sip: URI) is required.",
                               param="target_uri")
    target = target.strip()
    if (len(target) > MAX_TARGET_CHARS or not target.lower().startswith(REFER_SCHEMES)
            or any(ch in target for ch in "<>\r\n\" ")):
        raise CallControlError(400, "invalid_value", "target_uri must be a tel: or sip: URI, such as "
                               "tel:+14155550123 or sip:agent@example.com.", param="target_uri")
    return target


def session_of(body: bytes) -> dict[str, Any]:
    """`/accept`'s body: a GA session object, `type: "realtime"` required (the shell validates the rest)."""
    session = _object(body, empty_ok=False)
    if session.get("type") != "realtime":
        raise CallControlError(400, "invalid_value" if "type" in session else "missing_required_parameter",
                               "type must be \"realtime\".", param="type")
    return session


def retry_delays(attempts: int, first_s: float, longest_s: float = 60.0) -> list[float]:
    """The waits before each retry of a delivery: `first_s`, doubling, at most `longest_s`."""
    return [min(first_s * 2 ** n, longest_s) for n in range(max(0, attempts - 1))]
