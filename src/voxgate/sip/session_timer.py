"""SIP session timers (RFC 4028): how often a call is refreshed, and who refreshes it, so a call whose far
end vanished without a BYE is ended.

    timer = answer_session_timer(invite, SessionTimerPolicy())      # as UAS, from the INVITE
    if isinstance(timer, IntervalTooSmall): reply 422 with timer.headers()
    elif timer: put timer.headers() on the 2xx; refresh at timer.refresh_at(t) or BYE at timer.expires_at(t)

    refresh = SessionRefresh(timer, now)                            # the dialog's timer over time
    refresh.due(now)        # "refresh": send one (refresh.request_headers()), "expired": send BYE

    headers = SessionTimerPolicy().request_headers()                # as UAC, on the INVITE
    timer = accept_session_timer(response_2xx)                      # what the UAS decided (or None)

`refresh_at` is half the interval after the last refresh (§10); the side that does not refresh ends the
call at `expires_at`: the interval minus min(32 s, a third of it) after the last refresh.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal

from voxgate.sip.headers import HeaderError, parse_params
from voxgate.sip.message import Request, Response

__all__ = [
    "MIN_SE_FLOOR",
    "IntervalTooSmall",
    "RefreshDue",
    "SessionExpires",
    "SessionRefresh",
    "SessionTimer",
    "SessionTimerPolicy",
    "accept_session_timer",
    "answer_session_timer",
    "parse_min_se",
    "parse_session_expires",
]

MIN_SE_FLOOR = 90  # §4: no one may ask for less
MIN_RETRY_S = 1.0  # a refused refresh is retried half way to the expiry, never sooner than this
Refresher = Literal["uac", "uas"]
RefreshDue = Literal["refresh", "expired"]
_DELTA = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True)
class SessionExpires:
    interval: int
    refresher: Refresher | None = None

    def __str__(self) -> str:
        return f"{self.interval}" + (f";refresher={self.refresher}" if self.refresher else "")


def _delta(text: str, header: str) -> int:
    if not _DELTA.fullmatch(text):
        raise HeaderError(f"malformed {header}", "bad_session_timer")
    return int(text)


def parse_session_expires(value: str) -> SessionExpires:
    number, _, rest = value.strip().partition(";")
    interval = _delta(number.strip(), "Session-Expires")
    refresher: Refresher | None = None
    for name, param in parse_params(";" + rest) if rest else ():
        if name == "refresher":
            if param not in ("uac", "uas"):
                raise HeaderError("refresher must be uac or uas", "bad_session_timer")
            refresher = "uac" if param == "uac" else "uas"
    return SessionExpires(interval, refresher)


def parse_min_se(value: str) -> int:
    return _delta(value.strip().partition(";")[0].strip(), "Min-SE")


def _supports_timer(message: Request | Response) -> bool:
    options = {item.lower() for name in ("Supported", "Require") for item in message.headers.values(name)}
    return "timer" in options


@dataclass(frozen=True)
class SessionTimerPolicy:
    """Our side's wishes: the interval we ask for or grant (0: we ask for none, but grant what a peer
    asks), the smallest we accept, and who refreshes when it is ours to choose (the UAS, us, by default:
    we can rely on our own refreshes)."""

    interval: int = 1800
    min_se: int = MIN_SE_FLOOR
    refresher: Refresher = "uas"

    def request_headers(self) -> list[tuple[str, str]]:
        """For an INVITE we send: we support timers, ask for our interval, and state our floor."""
        return [("Supported", "timer"), ("Session-Expires", str(self.interval)), ("Min-SE", str(self.min_se))]

    def after_422(self, response: Response) -> SessionTimerPolicy:
        """The policy to retry with after a 422: the interval raised to the peer's Min-SE."""
        raw = response.headers.get("Min-SE")
        floor = parse_min_se(raw) if raw else self.min_se
        return SessionTimerPolicy(max(self.interval, floor), max(self.min_se, floor), self.refresher)


@dataclass(frozen=True)
class SessionTimer:
    """The negotiated timer, seen from our side (`we_refresh`: we send the refreshes)."""

    interval: int
    refresher: Refresher
    we_refresh: bool
    required: bool  # the peer supports timers: the 2xx carries `Require: timer`

    def refresh_at(self, since: float) -> float:
        return since + self.interval / 2

    def expires_at(self, since: float) -> float:
        return since + self.interval - min(32.0, self.interval / 3)

    def headers(self) -> list[tuple[str, str]]:
        """For the 2xx we send as UAS (and for refresh requests)."""
        out = [("Session-Expires", str(SessionExpires(self.interval, self.refresher)))]
        if self.required:
            out.append(("Require", "timer"))
        return out


@dataclass(frozen=True)
class IntervalTooSmall:
    """The request asked for less than we accept: answer 422 with these headers (§9)."""

    min_se: int

    def headers(self) -> list[tuple[str, str]]:
        return [("Min-SE", str(self.min_se))]


def answer_session_timer(request: Request, policy: SessionTimerPolicy) -> SessionTimer | IntervalTooSmall | None:
    """As UAS, what to do with the session timer of an INVITE or UPDATE (§9); None: no timer (the request
    asks for none and the policy's interval is 0). Raises HeaderError on a malformed Session-Expires or
    Min-SE (answer 400)."""
    supported = _supports_timer(request)
    raw = request.headers.get("Session-Expires")
    raw_min = request.headers.get("Min-SE")
    floor = max(policy.min_se, parse_min_se(raw_min) if raw_min else MIN_SE_FLOOR)
    if raw is None:
        if not policy.interval:
            return None
        interval, refresher = max(policy.interval, floor), None
    else:
        asked = parse_session_expires(raw)
        if asked.interval < policy.min_se and supported:
            return IntervalTooSmall(policy.min_se)  # without `timer` support (a proxy asked) it is raised below
        # §9: a UAS that supports timers keeps the peer's timer (it may only shorten it): granted even with
        # our own interval 0, so a peer that relies on it is not cut off
        cap = policy.interval or asked.interval
        interval, refresher = max(min(asked.interval, cap), floor), asked.refresher
    if refresher is None:
        refresher = policy.refresher if supported else "uas"  # a UAC without timers cannot refresh
    return SessionTimer(interval, refresher, we_refresh=refresher == "uas", required=supported)


def accept_session_timer(response: Response) -> SessionTimer | None:
    """As UAC, the timer the UAS put in its 2xx (§7.2); None when it chose none."""
    raw = response.headers.get("Session-Expires")
    if raw is None:
        return None
    chosen = parse_session_expires(raw)
    refresher: Refresher = chosen.refresher or "uac"
    return SessionTimer(chosen.interval, refresher, we_refresh=refresher == "uac", required=True)


class SessionRefresh:
    """One dialog's session timer over time (§10), with time passed in: when we send a refresh (we are
    the refresher) and when the session has expired (the peer's refresh, or the answer to ours, never
    came: send BYE).

        refresh = SessionRefresh(timer, now)      # the 2xx that set the timer was sent or received
        refresh.due(now)                          # None, "refresh" or "expired"
        refresh.sent(now)                         # our refresh request is out (not due again meanwhile)
        refresh.refreshed(timer, now)             # a refresh went through, either way: the timer restarts
        refresh.failed(now, min_se=...)           # ours was refused: retried later (at once after a 422)
        refresh.deadline                          # when due() may next change
    """

    def __init__(self, timer: SessionTimer, now: float, *, min_se: int = MIN_SE_FLOOR) -> None:
        self.timer = timer
        self.min_se = min_se
        self.since = now  # the last refresh (or the 2xx that started the timer)
        self.in_flight = False
        self.refreshes = 0  # refreshes that went through, either way
        self._retry_at: float | None = None

    @property
    def expires_at(self) -> float:
        """The refresher gives up at the expiry itself; the other side BYEs a little before (§10)."""
        if self.timer.we_refresh:
            return self.since + self.timer.interval
        return self.timer.expires_at(self.since)

    @property
    def refresh_at(self) -> float | None:
        """When we send the next refresh; None when it is not ours to send or one is out."""
        if not self.timer.we_refresh or self.in_flight:
            return None
        return self._retry_at if self._retry_at is not None else self.timer.refresh_at(self.since)

    @property
    def deadline(self) -> float:
        at = self.refresh_at
        return self.expires_at if at is None else min(at, self.expires_at)

    def due(self, now: float) -> RefreshDue | None:
        if now >= self.expires_at:
            return "expired"
        at = self.refresh_at
        return "refresh" if at is not None and now >= at else None

    def request_headers(self) -> list[tuple[str, str]]:
        """For our refresh request (re-INVITE or UPDATE): the interval, with us (its UAC) refreshing on."""
        return [("Session-Expires", str(SessionExpires(self.timer.interval, "uac"))),
                ("Min-SE", str(self.min_se)), ("Supported", "timer")]

    def sent(self, now: float) -> None:
        self.in_flight = True

    def refreshed(self, timer: SessionTimer, now: float) -> None:
        self.timer = timer
        self.since = now
        self.in_flight = False
        self._retry_at = None
        self.refreshes += 1

    def failed(self, now: float, *, min_se: int | None = None) -> None:
        """Our refresh got a non-2xx other than 408/481 (those end the dialog: the caller's matter): the
        session is not refreshed, so try again half way to the expiry, or give up if that is too close;
        after a 422, at once with the interval raised to the peer's Min-SE."""
        self.in_flight = False
        if min_se is not None:
            self.timer = replace(self.timer, interval=max(self.timer.interval, min_se))
            self.min_se = max(self.min_se, min_se)
            self._retry_at = now
            return
        gap = (self.expires_at - now) / 2
        self._retry_at = now + gap if gap >= MIN_RETRY_S else math.inf
