"""The gateway's registration with its upstream SIP trunk: the asyncio shell round `sip.registration`.

    trunk = Trunk(signalling, settings, contact=our_contact, via=our_via)
    await trunk.start()     # REGISTER now; refreshes, challenges and retries follow on their own
    trunk.snapshot()        # {"state": "registered", "registrar": ..., "expires_in_s": ..., ...} for /readyz
    await trunk.stop()      # REGISTER with Expires: 0 (waits a little for the answer)

The timing (when to refresh, how long to back off) is the core's; this shell resolves the registrar's
address, sends what the core asks through the phone's endpoint, feeds it the answers, and reports the
state (`voxgate_sip_trunk_registered`, a log line on each change that never carries the password).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from voxgate.observability import metrics
from voxgate.sip.digest import DigestClient
from voxgate.sip.errors import SipError
from voxgate.sip.headers import NameAddress, Via
from voxgate.sip.message import Request, Response
from voxgate.sip.registration import Registration, RegistrationPolicy, RegistrationState, trunk_uri
from voxgate.sip.transaction import Address, ClientTransaction
from voxgate.sip.uri import SipUri

if TYPE_CHECKING:
    from voxgate.config import Settings

__all__ = ["Trunk", "TrunkSignalling", "resolve"]

log = logging.getLogger("voxgate.sip")

SIP_PORT = 5060
UNREGISTER_WAIT_S = 2.0  # at shutdown, how long the registrar gets to confirm the binding is gone


class TrunkSignalling(Protocol):
    def exchange(self, request: Request, peer: Address, handler: Callable[[Response | None], None], *,
                 reliable: bool = False) -> ClientTransaction | None: ...


async def resolve(uri: SipUri) -> Address:
    """The UDP address for `uri`'s host (A/AAAA records; no NAPTR/SRV lookups), port 5060 by default."""
    port = uri.port or SIP_PORT
    found = await asyncio.get_running_loop().getaddrinfo(uri.host.strip("[]"), port, type=socket.SOCK_DGRAM)
    if not found:
        raise OSError(f"no address for {uri.host}")
    host, found_port = found[0][4][:2]
    return str(host), int(found_port)


class Trunk:
    """Keeps one registration with the trunk alive while the gateway runs."""

    def __init__(self, signalling: TrunkSignalling, settings: Settings, *, contact: NameAddress, via: Via) -> None:
        self.signalling = signalling
        self.registrar = trunk_uri(settings.sip_trunk_registrar)
        user = settings.sip_trunk_user or "voxgate"
        password = settings.sip_trunk_password.get_secret_value()
        self.registration = Registration(
            registrar=SipUri(self.registrar.scheme, self.registrar.host, port=self.registrar.port),
            aor=SipUri("sip", self.registrar.host, user), contact=contact, via=via,
            credentials=DigestClient(user, password) if password else None,
            policy=RegistrationPolicy(expires=settings.sip_trunk_expires_s, retry_min_s=settings.sip_trunk_retry_s))
        self.registrations = 0  # bindings granted (the first and every refresh)
        self._address: Address | None = None
        self._outbox: Request | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        metrics.SIP_TRUNK_REGISTERED.set(0)
        self._task = self._loop.create_task(self._run(), name="sip-trunk")

    async def stop(self) -> None:
        """Remove the binding (Expires: 0) and wait up to UNREGISTER_WAIT_S for the registrar to confirm."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._loop is None:
            return
        request = self.registration.unregister(self._loop.time())
        if request is not None and self._address is not None:
            self._send_now(request, self._address)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(UNREGISTER_WAIT_S):
                    while self.registration.state == RegistrationState.UNREGISTERING:
                        self._changed.clear()
                        if self._outbox is not None:  # the registrar challenged the removal
                            request, self._outbox = self._outbox, None
                            self._send_now(request, self._address)
                        await self._changed.wait()
        metrics.SIP_TRUNK_REGISTERED.set(0)
        if self.registration.state == RegistrationState.UNREGISTERED:
            log.info("SIP trunk: unregistered from %s", self.registrar)
        else:
            log.warning("SIP trunk: %s did not confirm the unregistration", self.registrar)

    def snapshot(self) -> dict[str, Any]:
        """The registration as /readyz shows it (no credentials)."""
        registration = self.registration
        now = self._loop.time() if self._loop is not None else 0.0
        expires_in = (max(0, round(registration.expires_at - now)) if registration.expires_at is not None
                      and registration.state == RegistrationState.REGISTERED else None)
        return {"state": registration.state.value, "registrar": str(self.registrar), "expires_in_s": expires_in,
                "registrations": self.registrations, "last_status": registration.last_status,
                "last_reason": registration.last_reason}

    # -- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._outbox = self.registration.start(loop.time())
        while True:
            self._changed.clear()
            request, self._outbox = self._outbox, None
            if request is None:
                request = self.registration.handle_timer(loop.time())
            if request is not None:
                await self._send(request)
                continue  # a failure to send may have scheduled the next attempt
            deadline = self.registration.next_deadline()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if deadline is None else max(0.0, deadline - loop.time())):
                    await self._changed.wait()

    async def _send(self, request: Request) -> None:
        before = self.registration.state
        try:
            if self._address is None or before == RegistrationState.FAILED:  # the trunk may have moved
                self._address = await resolve(self.registrar)
        except (OSError, UnicodeError) as error:
            self.registration.timed_out(asyncio.get_running_loop().time())
            self.registration.last_reason = f"cannot resolve {self.registrar.host}: {error}"
            self._report(before)
            return
        self._send_now(request, self._address)

    def _send_now(self, request: Request, address: Address) -> None:
        try:
            self.signalling.exchange(request, address, self._on_response)
        except (SipError, ValueError) as error:  # pragma: no cover - our own requests are well formed
            log.error("SIP trunk: cannot send REGISTER: %s", error)

    def _on_response(self, response: Response | None) -> None:
        assert self._loop is not None
        before = self.registration.state
        now = self._loop.time()
        if response is None:
            self.registration.timed_out(now)
        else:
            if response.provisional:
                return
            granted_before = self.registration.expires_at
            self._outbox = self.registration.receive(response, now) or self._outbox
            if self.registration.registered and self.registration.expires_at != granted_before:
                self.registrations += 1
                metrics.SIP_REGISTRATIONS.labels("registered").inc()
        self._report(before)
        self._changed.set()

    def _report(self, before: RegistrationState) -> None:
        registration = self.registration
        state = registration.state
        metrics.SIP_TRUNK_REGISTERED.set(1 if state == RegistrationState.REGISTERED else 0)
        if state == before:
            return
        if state == RegistrationState.REGISTERED:
            log.info("SIP trunk: registered with %s as %s for %s s", self.registrar, registration.aor.user,
                     registration.granted)
        elif state == RegistrationState.FAILED:
            metrics.SIP_REGISTRATIONS.labels("failed").inc()
            log.warning("SIP trunk: REGISTER with %s failed (%s, %s); retrying in %.0f s", self.registrar,
                        registration.last_status, registration.last_reason,
                        (registration.next_deadline() or 0.0) - (self._loop.time() if self._loop else 0.0))
        elif state == RegistrationState.UNREGISTERED:
            metrics.SIP_REGISTRATIONS.labels("unregistered").inc()
