"""Registering with an upstream trunk (RFC 3261 §10), sans-IO: one binding kept alive by refreshes.

    registration = Registration(registrar=parse_uri("sip:trunk.example"), aor=parse_uri("sip:alice@trunk.example"),
                                contact=me, via=my_via, credentials=DigestClient("alice", "s3cret"))
    send(registration.start(now))                 # the first REGISTER
    request = registration.receive(response, now)  # a 401/407 gives the REGISTER with credentials; else None
    registration.timed_out(now)                   # the transaction timed out: a retry is scheduled
    registration.next_deadline()                  # when handle_timer is next due (refresh or retry), or None
    request = registration.handle_timer(now)      # the refresh or the retry, once due
    request = registration.unregister(now)        # Expires: 0 at shutdown (None if there is nothing to remove)

The binding is refreshed at `refresh_fraction` of what the registrar granted (the Contact's `expires`,
else the Expires header, else what we asked for). A failure (a final response other than 2xx, a challenge
our credentials do not answer, a timeout) is retried after `retry_min_s`, doubling up to `retry_max_s`, or
after a 503's Retry-After when that is longer; 423 Interval Too Brief is retried at once with its
Min-Expires. One Call-ID and From tag for the life of the binding, the CSeq counting up (§10.2.4).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from voxgate.sip.digest import DigestClient, DigestError, pick_challenge
from voxgate.sip.headers import NameAddress, Via, new_branch, new_tag
from voxgate.sip.message import Request, Response, new_request
from voxgate.sip.uri import SipUri, UriError, parse_uri

__all__ = ["Registration", "RegistrationPolicy", "RegistrationState", "trunk_uri"]

USER_AGENT = "voxgate"


class RegistrationState(enum.Enum):
    IDLE = "idle"  # not started
    REGISTERING = "registering"  # a REGISTER is out
    REGISTERED = "registered"  # bound until `expires_at`; refreshed before that
    FAILED = "failed"  # the last attempt failed; a retry is scheduled
    UNREGISTERING = "unregistering"
    UNREGISTERED = "unregistered"  # removed at shutdown


@dataclass(frozen=True)
class RegistrationPolicy:
    expires: int = 600  # asked for, in seconds
    refresh_fraction: float = 0.75  # of the granted time: refresh well before the binding lapses
    retry_min_s: float = 5.0
    retry_max_s: float = 300.0


def trunk_uri(text: str) -> SipUri:
    """A trunk address as configured: a sip: URI, or `host[:port]`. UriError when it is neither."""
    scheme, colon, rest = text.partition(":")
    if colon and scheme.lower() not in ("sip", "sips") and not rest.split(";")[0].isdigit():
        raise UriError(f"a trunk is a sip: URI or host[:port], not {text!r}", "bad_trunk")
    uri = parse_uri(text if text.lower().startswith(("sip:", "sips:")) else f"sip:{text}")
    if not isinstance(uri, SipUri):
        raise UriError(f"not a SIP address: {text!r}", "bad_trunk")
    if uri.secure or (uri.param("transport") or "udp").lower() != "udp":
        raise UriError(f"{text!r}: only SIP over UDP reaches a trunk so far", "unsupported_transport")
    return uri


def _delta_seconds(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


class Registration:
    """One binding of `contact` to `aor` at `registrar`."""

    def __init__(self, *, registrar: SipUri, aor: SipUri, contact: NameAddress, via: Via,
                 credentials: DigestClient | None = None, policy: RegistrationPolicy | None = None,
                 call_id: str | None = None) -> None:
        self.registrar = registrar.without_headers()
        self.aor = aor
        self.contact = contact
        self.via = via
        self.credentials = credentials
        self.policy = policy or RegistrationPolicy()
        self.call_id = call_id or f"{new_tag()}{new_tag()}@voxgate"
        self.from_tag = new_tag()
        self.state = RegistrationState.IDLE
        self.expires = self.policy.expires
        self.granted: int | None = None  # seconds the registrar granted last time
        self.expires_at: float | None = None  # when the binding lapses unless refreshed
        self.failures = 0  # consecutive failed attempts
        self.last_status: int | None = None  # the last final response's status (408: timed out)
        self.last_reason = ""
        self._cseq = 0
        self._outstanding: int | None = None  # the CSeq of the REGISTER whose answer we wait for
        self._auth_answered = 0  # challenges answered for the current attempt
        self._due: float | None = None  # the refresh or retry time

    # -- requests

    def _register(self, expires: int, authorization: tuple[str, str] | None = None) -> Request:
        self._cseq += 1
        self._outstanding = self._cseq
        headers = [("Expires", str(expires)), ("User-Agent", USER_AGENT)]
        if authorization is not None:
            headers.append(authorization)
        return new_request("REGISTER", self.registrar, via=self.via.with_params(branch=new_branch()),
                           from_=NameAddress(self.aor, params=(("tag", self.from_tag),)), to=NameAddress(self.aor),
                           call_id=self.call_id, cseq=self._cseq, contact=self.contact, headers=headers)

    def _attempt(self, now: float) -> Request:
        self._auth_answered = 0
        self._due = None
        if self.state not in (RegistrationState.UNREGISTERING, RegistrationState.REGISTERED):
            self.state = RegistrationState.REGISTERING  # a refresh keeps REGISTERED: the binding still holds
        return self._register(self._asked())

    def _asked(self) -> int:
        return 0 if self.state == RegistrationState.UNREGISTERING else self.expires

    def start(self, now: float) -> Request:
        return self._attempt(now)

    def unregister(self, now: float) -> Request | None:
        """The REGISTER that removes our binding (Expires: 0); None when there is none to remove."""
        if self.state not in (RegistrationState.REGISTERED, RegistrationState.REGISTERING) and (
                self.expires_at is None or now >= self.expires_at):
            self.state = RegistrationState.UNREGISTERED
            return None
        self.state = RegistrationState.UNREGISTERING
        return self._attempt(now)

    # -- what comes back

    def receive(self, response: Response, now: float) -> Request | None:
        """A response to our REGISTER; the next REGISTER to send at once (credentials), or None."""
        if response.cseq.method != "REGISTER" or response.cseq.number != self._outstanding or response.provisional:
            return None  # a retransmission or a stale answer
        status = response.status
        if status in (401, 407):
            return self._challenged(response, now)
        self._outstanding = None
        self.last_status, self.last_reason = status, response.reason
        unregistering = self.state == RegistrationState.UNREGISTERING
        if unregistering:
            self._unbound()
            return None
        if 200 <= status < 300:
            granted = self._granted(response)
            if granted <= 0:
                self._failed(now, "the registrar granted no time")
                return None
            self.state = RegistrationState.REGISTERED
            self.granted = granted
            self.expires_at = now + granted
            self._due = now + granted * self.policy.refresh_fraction
            self.failures = 0
            return None
        if status == 423:
            least = _delta_seconds(response.headers.get("Min-Expires"))
            if least is not None and least > self.expires and self.failures < 3:
                self.expires = least  # too brief: ask again at once for what it takes
                self.failures += 1
                return self._attempt(now)
        retry_after = _delta_seconds(response.headers.get("Retry-After")) if status == 503 else None
        self._failed(now, f"{status} {response.reason}", retry_after)
        return None

    def _challenged(self, response: Response, now: float) -> Request | None:
        if self.credentials is None:
            self._give_up(now, response.status, "challenged, and no credentials are set")
            return None
        try:
            header, challenge = pick_challenge(response)
        except DigestError as error:
            self._give_up(now, response.status, str(error))
            return None
        # Credentials refused (a fresh challenge after our answer that is not `stale`): do not loop.
        if self._auth_answered >= 2 or (self._auth_answered == 1 and not challenge.stale):
            self._give_up(now, response.status, "credentials refused")
            return None
        self._auth_answered += 1
        self.credentials.challenged(challenge)
        return self._register(self._asked(), (header, self.credentials.authorization("REGISTER", str(self.registrar))))

    def _give_up(self, now: float, status: int, reason: str) -> None:
        """This attempt failed (a retry is scheduled), or the unregistration is over either way."""
        self._outstanding = None
        self.last_status, self.last_reason = status, reason
        if self.state == RegistrationState.UNREGISTERING:
            self._unbound()
        else:
            self._failed(now, reason)

    def timed_out(self, now: float) -> None:
        """No final response to our REGISTER (the transaction layer's Timer F)."""
        self._give_up(now, 408, "no response from the registrar")

    def _failed(self, now: float, why: str, retry_after: int | None = None) -> None:
        self.failures += 1
        self.last_reason = why
        self.state = RegistrationState.FAILED
        backoff = min(self.policy.retry_max_s, self.policy.retry_min_s * 2 ** (self.failures - 1))
        self._due = now + max(backoff, retry_after or 0)

    def _unbound(self) -> None:
        self.state = RegistrationState.UNREGISTERED
        self.expires_at = None
        self._due = None

    def _granted(self, response: Response) -> int:
        """The registrar's grant for our Contact (§10.2.4): its `expires` parameter, else Expires, else ours."""
        ours = self.contact.uri
        contacts = response.contacts
        mine = [c for c in contacts if c.uri == ours] or (contacts if len(contacts) == 1 else [])
        for contact in mine:
            value = _delta_seconds(contact.param("expires"))
            if value is not None:
                return value
        header = _delta_seconds(response.headers.get("Expires"))
        return header if header is not None else self.expires

    # -- time

    def next_deadline(self) -> float | None:
        """When `handle_timer` has a REGISTER to send: the refresh, or the retry after a failure."""
        if self.state in (RegistrationState.REGISTERED, RegistrationState.FAILED):
            return self._due
        return None

    def handle_timer(self, now: float) -> Request | None:
        due = self.next_deadline()
        if due is None or now < due or self._outstanding is not None:
            return None
        return self._attempt(now)

    @property
    def registered(self) -> bool:
        return self.state == RegistrationState.REGISTERED
