"""Session timers over time (RFC 4028 §10) on an explicit clock: when we refresh, when the session expires,
what a refused refresh does; and what a UAS grants when its own interval is 0."""

from __future__ import annotations

import math

from voxgate.sip.headers import NameAddress, Via, new_branch
from voxgate.sip.message import Request, new_request
from voxgate.sip.session_timer import (
    SessionRefresh,
    SessionTimer,
    SessionTimerPolicy,
    answer_session_timer,
)
from voxgate.sip.uri import parse_uri

WE_REFRESH = SessionTimer(90, "uas", we_refresh=True, required=True)
THEY_REFRESH = SessionTimer(90, "uac", we_refresh=False, required=True)


def invite(*headers: tuple[str, str]) -> Request:
    return new_request("INVITE", parse_uri("sip:bot@192.0.2.10"),
                       via=Via("UDP", "192.0.2.1", 5062).with_params(branch=new_branch()),
                       from_=NameAddress(parse_uri("sip:alice@example.com"), None, (("tag", "a1"),)),
                       to=NameAddress(parse_uri("sip:bot@example.com")), call_id="call-9", cseq=1,
                       headers=list(headers))


def test_the_refresher_refreshes_at_half_the_interval_and_the_timer_restarts() -> None:
    refresh = SessionRefresh(WE_REFRESH, 1000.0)
    assert refresh.due(1044.9) is None and refresh.deadline == 1045.0
    assert refresh.due(1045.0) == "refresh"
    refresh.sent(1045.0)
    assert refresh.due(1046.0) is None and refresh.deadline == 1090.0  # one refresh out at a time
    refresh.refreshed(WE_REFRESH, 1046.0)
    assert refresh.refreshes == 1 and refresh.due(1090.9) is None and refresh.due(1091.0) == "refresh"


def test_the_refresher_gives_up_at_the_expiry_when_its_refresh_is_never_answered() -> None:
    refresh = SessionRefresh(WE_REFRESH, 0.0)
    refresh.sent(45.0)
    assert refresh.due(89.9) is None
    assert refresh.due(90.0) == "expired"


def test_the_other_side_ends_the_session_a_little_before_the_expiry_unless_refreshed() -> None:
    refresh = SessionRefresh(THEY_REFRESH, 0.0)
    assert refresh.refresh_at is None and refresh.due(45.0) is None  # not ours to send
    assert refresh.due(59.9) is None and refresh.due(60.0) == "expired"  # 90 - min(32, 90/3)
    refresh.refreshed(THEY_REFRESH, 50.0)
    assert refresh.due(100.0) is None and refresh.expires_at == 110.0


def test_a_refused_refresh_is_tried_again_half_way_to_the_expiry_until_too_close() -> None:
    refresh = SessionRefresh(WE_REFRESH, 0.0)
    refresh.sent(45.0)
    refresh.failed(46.0)  # 500, 491, ...: the session goes on
    assert refresh.refresh_at == 68.0 and refresh.due(67.0) is None and refresh.due(68.0) == "refresh"
    refresh.sent(68.0)
    refresh.failed(89.5)  # 0.25 s left: no more tries, the session expires
    assert refresh.refresh_at == math.inf and refresh.due(89.9) is None and refresh.due(90.0) == "expired"


def test_a_422_retries_at_once_with_the_peers_min_se() -> None:
    refresh = SessionRefresh(WE_REFRESH, 0.0)
    refresh.sent(45.0)
    refresh.failed(45.5, min_se=180)
    assert refresh.due(45.5) == "refresh" and refresh.timer.interval == 180
    assert refresh.request_headers() == [("Session-Expires", "180;refresher=uac"), ("Min-SE", "180"),
                                         ("Supported", "timer")]
    assert refresh.expires_at == 180.0


def test_a_uas_without_an_interval_of_its_own_asks_none_but_grants_the_peers() -> None:
    off = SessionTimerPolicy(interval=0, min_se=90)
    assert answer_session_timer(invite(("Supported", "timer")), off) is None
    granted = answer_session_timer(invite(("Supported", "timer"), ("Session-Expires", "3600;refresher=uac")), off)
    assert granted == SessionTimer(3600, "uac", we_refresh=False, required=True)
    capped = answer_session_timer(invite(("Session-Expires", "3600")), SessionTimerPolicy(interval=1800))
    assert isinstance(capped, SessionTimer) and capped.interval == 1800 and capped.we_refresh


def test_too_short_an_interval_from_a_uac_without_timers_is_raised_not_refused() -> None:
    """§9: only a UAC that supports timers can retry after a 422; for one that does not (a proxy added the
    Session-Expires) the interval is raised to our Min-SE and we refresh."""
    timer = answer_session_timer(invite(("Session-Expires", "60")), SessionTimerPolicy(min_se=120))
    assert timer == SessionTimer(120, "uas", we_refresh=True, required=False)
