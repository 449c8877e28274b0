"""SIP calls an app answers, OpenAI's SIP way: the asyncio shell round `control/call_control.py`.

    INVITE on a route with `call_control: webhook` (sip_call_control) -> 180 Ringing
      -> signed `realtime.call.incoming` to the route's url (retried, one webhook-id)
      -> the app's accept (its session config becomes the call's), reject (the code) or hangup (603), or
         nothing within answer_timeout_s (the route's fallback: its agent answers, or the code)
      -> accepted: the call runs as any SIP call, its session's events go to the app's sidebands, and the
         app may refer (REFER to sipp's side) or hang up (BYE)

The phone (`sip_phone.py`) runs the line; this holds the calls by id for the HTTP routes
(`control/realtime_calls.py`) and the sideband, and remembers the ids of calls that ended lately so an
accept for one is a conflict, not an unknown call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from voxgate.control.call_control import (
    DEFAULT_REJECT_STATUS,
    Accepted,
    CallControl,
    CallControlError,
    Decision,
    incoming_event,
)
from voxgate.control.webhook_delivery import deliver
from voxgate.protocol.ids import new_id
from voxgate.sip.uri import SipUri, TelUri

if TYPE_CHECKING:
    import httpx

    from voxgate.clock import Clock
    from voxgate.config import CallControlRoute, Settings
    from voxgate.session.session import Session
    from voxgate.sip.message import Request
    from voxgate.transports.sideband import Sideband
    from voxgate.transports.sip_call import SipCall

__all__ = ["ControlledSipCall", "ControlledSipCalls", "call_control_route"]

log = logging.getLogger("voxgate.call_control")

ENDED_REMEMBERED = 10_000  # ended calls' ids kept to answer 409 (not 404) to a late accept
ANSWER_WAIT_S = 15.0  # how long an accept waits for the call's 200 OK before it answers anyway


def call_control_route(request: Request, routes: dict[str, CallControlRoute]) -> CallControlRoute | None:
    """The route's call control: the request-URI user's, else the called number's (as `sip_routes`),
    else "*"'s; None (or `call_control: gateway`): the gateway answers."""
    route = None
    for uri in (request.uri, request.to.uri):
        key = uri.user if isinstance(uri, SipUri) else uri.digits if isinstance(uri, TelUri) else None
        if key and key in routes:
            route = routes[key]
            break
    route = route or routes.get("*")
    return route if route is not None and route.call_control == "webhook" else None


class ControlledSipCall:
    """One inbound SIP call while an app controls it."""

    owner: str | None = None  # the gateway's own call: any operator key may act on it (Principal.sees)

    def __init__(self, call: SipCall, route: CallControlRoute, agent_name: str | None, deadline: float) -> None:
        self.id = new_id("rtc")  # OpenAI's call ids look so; the session (and its call record) take it too
        self.call = call
        self.route = route
        self.agent_name = agent_name  # the route's agent: what the accepted session is checked against
        self.control = CallControl(self.id, deadline=deadline,
                                   fallback_status=route.fallback_status if route.fallback == "reject" else None)
        self._decided: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._answered = asyncio.Event()  # the 200 OK went out, or the call ended first

    @property
    def session(self) -> Session | None:
        return self.call.session

    @property
    def sidebands(self) -> set[Sideband]:
        return self.call.sidebands

    async def wait_ended(self) -> None:
        await self.call.wait_ended()

    # -- the app's word (control/realtime_calls.py) --------------------------------------------------

    async def accept(self, session: dict[str, Any]) -> None:
        """Take the (validated) session config; returns once the caller has the 200 OK. CallControlError
        409 when it was decided already, or the call ended before it could be answered."""
        self._decide(self.control.accept(session))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ANSWER_WAIT_S):
                await self._answered.wait()
        if self.call.ended and not self.call.answered:
            raise CallControlError(409, "call_ended", f"Call {self.id} ended before it could be answered.")

    def reject(self, status: int) -> None:
        self._decide(self.control.reject(status))

    def hang_up(self) -> None:
        declined = self.control.hang_up()
        if declined is not None:
            self._decide(declined)
            return
        if not self.call.answered:  # accepted, its 200 OK not out yet: the INVITE still wants a final answer
            self.call.refuse(DEFAULT_REJECT_STATUS)
        self.call.end("app_hung_up")

    async def refer(self, target: str) -> None:
        """REFER the caller to `target`, as the agent's own transfer does: once what the agent is saying has
        been heard; the outcome (NOTIFY) ends the call, or the caller is told and the call goes on. Both
        are in the call record."""
        self.control.check_refer()
        session = self.call.session
        if session is None or session.closed or self.call.ended:
            raise CallControlError(409, "call_ended", f"Call {self.id} has ended.")
        await session.transfer(target, "referred by the app")

    def _decide(self, decision: Decision) -> None:
        if not self._decided.done():
            self._decided.set_result(decision)

    # -- the phone's side ----------------------------------------------------------------------------

    async def decision(self) -> Decision | None:
        """The app's word, or the fallback once the answer time is up; None when the call ended first
        (the caller gave up)."""
        loop = asyncio.get_running_loop()
        ended = loop.create_task(self.call.wait_ended())
        waits: set[asyncio.Future[Any]] = {self._decided, ended}
        try:
            while True:
                wait = max(0.0, self.control.deadline - loop.time())
                await asyncio.wait(waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if self._decided.done():
                    return self._decided.result()
                if self.call.ended:
                    self.control.ended()
                    return None
                fallback = self.control.expire(loop.time())
                if fallback is not None:
                    log.info("%s: no answer from the app in %.0f s: %s", self.call.name, self.route.answer_timeout_s,
                             f"refused {fallback.status}" if fallback.status else "the agent answers")
                    return fallback
        finally:
            ended.cancel()

    def answered(self) -> None:
        """The call's 200 OK went out (or it never will): an accept waiting for it returns."""
        self._answered.set()


class ControlledSipCalls:
    """The phone's app-controlled calls by id, and the webhooks that tell the apps of them."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient, clock: Clock) -> None:
        self.settings = settings
        self.http = http  # the gateway's client: no redirects followed, so the app's URL is the only target
        self.clock = clock  # the real wall clock (webhook timestamps are checked against the app's)
        self._live: dict[str, ControlledSipCall] = {}
        self._ended: OrderedDict[str, CallControl] = OrderedDict()
        self._deliveries: dict[str, asyncio.Task[bool]] = {}

    def get(self, call_id: str) -> ControlledSipCall | None:
        return self._live.get(call_id)

    def find(self, call_id: str) -> ControlledSipCall:
        """The live call for an app's request; CallControlError 409 for one that ended lately, else 404."""
        call = self._live.get(call_id)
        if call is not None:
            return call
        ended = self._ended.get(call_id)
        if ended is not None:
            raise ended.conflict("act on")
        raise CallControlError(404, "call_id_not_found", f"No call {call_id!r}.")

    def open(self, call: SipCall, route: CallControlRoute, agent_name: str | None) -> ControlledSipCall:
        """A ringing call the app is now told of (the webhook goes out in the background)."""
        settings, clock = self.settings, self.clock
        loop = asyncio.get_running_loop()
        controlled = ControlledSipCall(call, route, agent_name, loop.time() + route.answer_timeout_s)
        self._live[controlled.id] = controlled
        body = incoming_event(new_id("evt"), controlled.id, int(clock.time()), call.invite.headers)
        self._deliveries[controlled.id] = loop.create_task(deliver(
            self.http, route.url, settings.sip_webhook_secret.get_secret_value(), new_id("wh"), body,
            attempts=settings.sip_webhook_attempts, first_retry_s=settings.sip_webhook_retry_s,
            timeout_s=settings.sip_webhook_timeout_s, now=clock.time), name="call-control-webhook")
        return controlled

    def decided(self, controlled: ControlledSipCall, decision: Decision | None) -> None:
        """No more deliveries once the app has spoken (or the call is over); a call the app does not
        control (rejected, fallen back, cancelled) leaves the live set."""
        delivery = self._deliveries.pop(controlled.id, None)
        if delivery is not None:
            delivery.cancel()
        if not isinstance(decision, Accepted):
            self.finish(controlled)

    def finish(self, controlled: ControlledSipCall) -> None:
        """The call is over."""
        controlled.answered()
        if controlled.control.state in ("pending", "accepted"):
            controlled.control.ended()
        if self._live.pop(controlled.id, None) is not None:
            self._ended[controlled.id] = controlled.control
            while len(self._ended) > ENDED_REMEMBERED:
                self._ended.popitem(last=False)

    def close(self) -> None:
        for delivery in self._deliveries.values():
            delivery.cancel()
        self._deliveries.clear()

