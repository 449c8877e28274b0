"""This gateway as one node of several sharing a Redis: heartbeat, the live-call registry, lost nodes,
and control requests relayed to the node holding a call.

    node = ClusterNode(settings, "gw-a", calls, load=admission.snapshot)
    await node.start()                  # first heartbeat; listens for relayed requests and their answers
    node.serve(app)                     # relayed requests run through this app
    await node.hold("rtc_123")          # this node holds the call (one SET)
    await node.holder("rtc_123")        # "gw-a": the node holding it, if that node is alive
    await node.relay(request, "gw-b")   # run an HTTP request on gw-b, get its answer (PUBLISH, then wait)
    await node.carry(websocket, "gw-b") # serve a WebSocket from gw-b's app, frames both ways (tunnel.py)
    node.release("rtc_123"); await node.stop()

Keys (all under `voxgate:`): `node:<id>` this node's load as JSON, expiring after three missed beats;
`nodes` the set of nodes seen; `call:<id>` the node holding a call (its own expiry, a backstop, is the
longest a session lives). A call's holder counts only while that node's key lives, so a killed node's
calls stop resolving within three beats. Each beat also looks for nodes in `nodes` whose key expired:
the one survivor whose SREM removes such a node closes that node's live call records as `dropped`.

Channels: `voxgate:relay:<id>` takes requests for this node, `voxgate:reply:<id>` their answers,
`voxgate:tunnel:<id>` the messages of WebSockets carried to or from this node (by tunnel id). Redis
trouble never ends a call: registry writes that fail are logged (only cross-node control misses that
call), and a relay that cannot be made is answered 503 by the route.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from voxgate.cluster.relay import MalformedRelay, RelayedAnswer, RelayedRequest, answer_here
from voxgate.cluster.tunnel import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    Opening,
    TunnelEnd,
    TunnelLost,
    carry,
    serve_through,
    to_wire,
    tunnel_message,
)

if TYPE_CHECKING:
    from voxgate.config import Settings
    from voxgate.store.calls import CallStore

__all__ = ["ClusterNode", "RelayFailed"]

log = logging.getLogger("voxgate.cluster")

PREFIX = "voxgate:"
MISSED_BEATS = 3  # a node silent this many beats is lost
# The holder of a call, only while the holding node is alive: one round trip.
_HOLDER = """
local node = redis.call('GET', KEYS[1])
if node and redis.call('EXISTS', ARGV[1] .. node) == 1 then return node end
return false
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RelayFailed(Exception):
    """A control request could not be carried to the node holding the call (Redis down, or no answer)."""


class ClusterNode:
    """This gateway's part in the cluster (see the module's docs)."""

    def __init__(self, settings: Settings, node: str, calls: CallStore,
                 load: Callable[[], dict[str, Any]]) -> None:
        self.node = node
        timeout = settings.cluster_relay_timeout_s
        self.redis: Redis = Redis.from_url(settings.redis_url, health_check_interval=30, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)
        self._calls = calls
        self._load = load
        self._beat_s = settings.cluster_heartbeat_s
        self._lease_ms = int(settings.cluster_heartbeat_s * MISSED_BEATS * 1000)
        self._call_expiry_s = settings.session_max_seconds + 60
        self._relay_timeout_s = settings.cluster_relay_timeout_s
        self._holder = self.redis.register_script(_HOLDER)
        self.held: set[str] = set()  # the ids of the calls this node holds (what `holds` answers from)
        self._app: ASGIApp | None = None
        self._pending: dict[str, asyncio.Future[RelayedAnswer]] = {}
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self._loops: list[asyncio.Task[None]] = []  # the heartbeat and the listener
        self._tasks: set[asyncio.Task[Any]] = set()  # relayed requests being answered, entries being forgotten
        self._tunnels: dict[str, TunnelEnd] = {}  # carried WebSockets, either end, by tunnel id
        self.requests_channel = f"{PREFIX}relay:{node}"
        self.replies_channel = f"{PREFIX}reply:{node}"
        self.tunnels_channel = f"{PREFIX}tunnel:{node}"

    # -- life ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join: the first heartbeat, then listen. Raises when Redis cannot be reached (start-up fails loudly)."""
        await self.beat()
        await self._pubsub.subscribe(self.requests_channel, self.replies_channel, self.tunnels_channel)
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._beat_forever()), loop.create_task(self._listen())]

    def serve(self, app: ASGIApp) -> None:
        """Run relayed requests and carried WebSockets through `app` from now on (until then they are
        answered 503)."""
        self._app = app

    async def stop(self) -> None:
        """Leave: no more beats; this node's key and its calls' entries go at once rather than on expiry."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:  # the last calls' entries being deleted, answers being sent
            await asyncio.wait(self._tasks, timeout=2.0)
        with contextlib.suppress(RedisError, OSError):
            async with self.redis.pipeline() as pipe:
                pipe.delete(self._key("node", self.node))
                pipe.srem(f"{PREFIX}nodes", self.node)
                for call_id in self.held:
                    pipe.delete(self._key("call", call_id))
                await pipe.execute()
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
        await self.redis.aclose()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _key(kind: str, name: str) -> str:
        return f"{PREFIX}{kind}:{name}"

    # -- heartbeat and lost nodes ------------------------------------------------------------------

    async def beat(self) -> None:
        """Say this node is alive, with its load (what `voxgate:node:<id>` holds)."""
        async with self.redis.pipeline() as pipe:
            pipe.set(self._key("node", self.node), json.dumps(self._load()), px=self._lease_ms)
            pipe.sadd(f"{PREFIX}nodes", self.node)
            await pipe.execute()

    async def nodes(self) -> dict[str, dict[str, Any]]:
        """Every live node and the load it last reported."""
        names = sorted(_text(n) for n in await self.redis.smembers(f"{PREFIX}nodes"))
        loads = await self.redis.mget([self._key("node", n) for n in names]) if names else []
        return {n: json.loads(load) for n, load in zip(names, loads, strict=True) if load is not None}

    async def reap(self) -> dict[str, list[str]]:
        """Close the live call records of nodes whose heartbeat lapsed; returns {node: closed call ids}."""
        reaped: dict[str, list[str]] = {}
        for raw in await self.redis.smembers(f"{PREFIX}nodes"):
            name = _text(raw)
            if name == self.node or await self.redis.exists(self._key("node", name)):
                continue
            if await self.redis.srem(f"{PREFIX}nodes", name):  # only one survivor wins each lost node
                reaped[name] = await self._calls.close_abandoned(name, "node lost")
                log.warning("node %s lost (no heartbeat for %d beats): %d call(s) closed as dropped",
                            name, MISSED_BEATS, len(reaped[name]))
        return reaped

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._beat_s)
            try:
                await self.beat()
                await self.reap()
            except (RedisError, OSError) as exc:  # the next beat tries again; calls carry on meanwhile
                log.warning("cluster heartbeat failed: %s", exc)
            except Exception:
                log.exception("cluster heartbeat failed")

    # -- the registry of live calls ---------------------------------------------------------------------

    def holds(self, call_id: str) -> bool:
        return call_id in self.held

    async def hold(self, call_id: str) -> None:
        """Record that this node holds `call_id` (awaited: a control request right after sees it)."""
        self.held.add(call_id)
        try:
            await self.redis.set(self._key("call", call_id), self.node, ex=self._call_expiry_s)
        except (RedisError, OSError) as exc:
            log.warning("call %s not registered in Redis (%s): other nodes cannot steer it", call_id, exc)

    def release(self, call_id: str) -> None:
        """The call is over here; its registry entry goes in the background."""
        if call_id in self.held:
            self.held.discard(call_id)
            self._spawn(self._forget(call_id))

    async def _forget(self, call_id: str) -> None:
        try:
            await self.redis.delete(self._key("call", call_id))
        except (RedisError, OSError) as exc:  # it expires on its own; the holder check ignores it meanwhile
            log.debug("call %s left in Redis until it expires: %s", call_id, exc)

    async def holder(self, call_id: str) -> str | None:
        """The live node holding `call_id`, or None. Raises RelayFailed when Redis cannot be asked."""
        try:
            node = await self._holder(keys=[self._key("call", call_id)], args=[f"{PREFIX}node:"])
        except (RedisError, OSError) as exc:
            raise RelayFailed(f"the call registry is unreachable: {exc}") from exc
        return node.decode() if isinstance(node, bytes) else None

    # -- relayed control requests -------------------------------------------------------------------------

    async def relay(self, request: Request, node: str) -> RelayedAnswer | None:
        """Run `request` on `node` and return its answer; None when no such node is listening."""
        relayed = await RelayedRequest.of(request, secrets.token_hex(8), self.replies_channel)
        answer: asyncio.Future[RelayedAnswer] = asyncio.get_running_loop().create_future()
        self._pending[relayed.id] = answer
        try:
            try:
                listeners = await self.redis.publish(self._key("relay", node), relayed.to_wire())
            except (RedisError, OSError) as exc:
                raise RelayFailed(f"cannot publish to {node}: {exc}") from exc
            if not listeners:
                return None
            try:
                return await asyncio.wait_for(answer, self._relay_timeout_s)
            except TimeoutError as exc:
                raise RelayFailed(f"{node} did not answer within {self._relay_timeout_s:.0f} s") from exc
        finally:
            self._pending.pop(relayed.id, None)

    async def _listen(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:  # redis-py subscribes again when it reconnects
                log.warning("cluster channel lost: %s", exc)
                await asyncio.sleep(self._beat_s)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode()
            if channel == self.replies_channel:
                self._answered(message["data"])
            elif channel == self.requests_channel:
                self._spawn(self._answer(message["data"]))
            elif channel == self.tunnels_channel:
                self._tunnel_message(message["data"])

    def _answered(self, data: bytes) -> None:
        try:
            answer = RelayedAnswer.from_wire(data)
        except MalformedRelay as exc:
            log.warning("malformed relay answer dropped: %s", exc)
            return
        waiting = self._pending.get(answer.id)
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)

    async def _answer(self, data: bytes) -> None:
        try:
            request = RelayedRequest.from_wire(data)
        except MalformedRelay as exc:
            log.warning("malformed relay request dropped: %s", exc)
            return
        if self._app is None:
            answer = RelayedAnswer(request.id, 503, [(b"retry-after", b"1")], b"")
        else:
            answer = await answer_here(self._app, request)
        try:
            await self.redis.publish(request.reply_to, answer.to_wire())
        except (RedisError, OSError) as exc:
            log.warning("relay answer to %s lost: %s", request.reply_to, exc)

    # -- carried WebSockets (tunnel.py) ----------------------------------------------------------------------

    def _end(self, tunnel: str, peer: str, accepts: frozenset[str]) -> TunnelEnd:
        channel = self._key("tunnel", peer)

        async def publish(data: str) -> int:
            try:
                return int(await self.redis.publish(channel, data))
            except RedisError as exc:
                raise TunnelLost(f"cannot publish to {peer}: {exc}") from exc

        async def peer_alive() -> bool:
            try:
                return bool(await self.redis.exists(self._key("node", peer)))
            except (RedisError, OSError):  # not known to be gone: frames would not flow either way
                return True

        end = TunnelEnd(tunnel, publish, peer_alive, self._beat_s * MISSED_BEATS, accepts)
        self._tunnels[tunnel] = end
        return end

    async def carry(self, websocket: WebSocket, node: str) -> bool:
        """Serve `websocket` from `node`'s app until either side ends it; False (nothing sent to the client)
        when no such node is listening. Raises RelayFailed when Redis cannot be reached."""
        opening = Opening.of(websocket, secrets.token_hex(16), self.node)
        end = self._end(opening.tunnel, node, SERVER_MESSAGES)
        try:
            try:
                listeners = await self.redis.publish(self._key("tunnel", node), to_wire(opening))
            except (RedisError, OSError) as exc:
                raise RelayFailed(f"cannot publish to {node}: {exc}") from exc
            if not listeners:
                return False
            await carry(websocket, end)
            return True
        finally:
            self._tunnels.pop(opening.tunnel, None)

    def _tunnel_message(self, data: bytes) -> None:
        try:
            message = tunnel_message(data)
        except MalformedRelay as exc:
            log.warning("malformed tunnel message dropped: %s", exc)
            return
        if not isinstance(message, Opening):
            end = self._tunnels.get(message.tunnel)
            if end is not None:
                end.delivered(message)
            return
        if message.tunnel in self._tunnels:
            log.warning("tunnel %s opened twice; the second opening dropped", message.tunnel)
            return
        self._spawn(self._serve_tunnel(message, self._end(message.tunnel, message.node, CLIENT_MESSAGES)))

    async def _serve_tunnel(self, opening: Opening, end: TunnelEnd) -> None:
        try:
            if self._app is None:  # starting: the client is refused, and may try again
                await end.send({"type": "websocket.http.response.start", "status": 503,
                                "headers": [(b"retry-after", b"1")]})
                await end.send({"type": "websocket.http.response.body", "body": b""})
                await end.end()
            else:
                await serve_through(self._app, opening, end)
        except TunnelLost:
            pass
        finally:
            self._tunnels.pop(opening.tunnel, None)
