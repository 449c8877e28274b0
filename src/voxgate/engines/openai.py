"""The OpenAI Realtime engine: each gateway session is answered by an upstream Realtime session.

The gateway keeps everything a call needs (turns, VAD, barge-in, truncation, gateway tools, records,
metrics); the upstream only answers. Per gateway session there is one upstream WebSocket (GA dialect,
`Authorization: Bearer <key>`), opened on the first response and closed with the session. Before each
response the conversation is mirrored onto it (openai_upstream.py), then `response.create`; the
upstream's text, 24 kHz pcm16 audio and function calls stream back as engine outputs. Gateway tools
run in the Session, which calls `respond` again with the tool output in the history.

A reader task per connection parses every upstream event, so acks, rate limits and the tail of a
cancelled response are handled even while no response is being read; it hands the response in flight
to `respond` through a bounded queue (a slow session slows its own upstream socket, nobody else's).

The caller's words are transcribed here by the local Whisper (`transcribe` has no session, so it cannot
ask the upstream) and sent with the audio, so records, redaction and transcripts work as with the local
engine and the upstream is not asked to transcribe the same audio again.

The key never leaves this module: it is sent only in the handshake header, websockets' DEBUG logging
(which prints handshake headers) is off for the upstream socket, and every upstream text that reaches
a log line or an error passes through `_scrub`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Collection, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from voxgate.audio.formats import PCM24K, InputDecoder
from voxgate.engines.base import Engine, EngineError, EngineOutput, ResponseRequest
from voxgate.engines.openai_upstream import (
    UPSTREAM_RATE,
    Note,
    Output,
    RateLimits,
    ResponseEnded,
    Send,
    UpstreamConversation,
    UpstreamError,
)
from voxgate.engines.reconnect import ReconnectPolicy
from voxgate.observability import metrics
from voxgate.protocol.usage import add_usage

if TYPE_CHECKING:
    from voxgate.config import Settings
    from voxgate.engines.local.stt import WhisperTranscriber

log = logging.getLogger("voxgate.openai")
# websockets logs every handshake header at DEBUG, Authorization included: never below INFO here.
_wire_log = logging.getLogger("voxgate.openai.wire")
_wire_log.setLevel(logging.INFO)

LINK_KEY = "openai.link"  # request.state: this session's UpstreamLink
USAGE_KEY = "openai.usage"  # request.state: usage of links already closed, not yet reported
# Outputs buffered between the reader and the response. The session plays audio out at real time
# while the upstream generates faster, so a long reply waits here; the bound must cover minutes
# (about 200 s of OpenAI's ~100 ms deltas, ~10 MB at worst) because a reader blocked for longer
# than the keepalive timeout stops reading pongs and the upstream connection is dropped.
QUEUE_EVENTS = 2048
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
RETRY_AFTER_CAP_S = 10.0


def realtime_url(base_url: str, model: str, *, call_id: str | None = None) -> str:
    """`https://api.openai.com/v1` -> `wss://api.openai.com/v1/realtime?model=...` (http -> ws); with
    `call_id`, the sideband of that live call instead: `...?call_id=...`."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"openai_base_url must be an http(s) or ws(s) URL, not {base_url!r}")
    query = urlencode([*parse_qsl(parts.query), ("call_id", call_id) if call_id is not None else ("model", model)])
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/realtime", query, ""))


class _Lost:
    """The connection ended while a response was being read."""


class UpstreamLink:
    """One upstream WebSocket: its mirror, its reader task, and the response being read, if any."""

    def __init__(self, ws: ClientConnection, conversation: UpstreamConversation, engine: OpenAIEngine) -> None:
        self.ws = ws
        self.conversation = conversation
        self._engine = engine
        self.lost: str | None = None  # why the connection ended
        self.idle = asyncio.Event()  # no upstream response in flight
        self.idle.set()
        self._queue: asyncio.Queue[Note | _Lost] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def begin(self, request: ResponseRequest, user_audio: bytes | None,
                    timeout_s: float) -> asyncio.Queue[Note | _Lost]:
        """Mirror the conversation and create a response; returns the queue its outputs arrive on."""
        if not self.idle.is_set():  # the tail of an abandoned response: the upstream must finish it first
            async with asyncio.timeout(timeout_s):
                await self.idle.wait()
        if self.lost:
            raise EngineError(self._engine.scrub(f"the upstream connection was lost: {self.lost}"))
        events = self.conversation.begin_response(request, user_audio)
        queue: asyncio.Queue[Note | _Lost] = asyncio.Queue(QUEUE_EVENTS)
        self._queue = queue
        self.idle.clear()
        for event in events:
            await self.send(event)
        return queue

    def abandon(self, queue: asyncio.Queue[Note | _Lost], cancel: bool) -> None:
        """Stop reading a response; with `cancel`, also stop the upstream generating it."""
        if self._queue is queue:
            self._queue = None
        while not queue.empty():  # frees a reader blocked on a full queue
            queue.get_nowait()
        if cancel and not self.lost:
            for event in self.conversation.cancel():
                self._spawn(self.send(event))

    async def send(self, event: dict[str, Any]) -> None:
        try:
            await self.ws.send(json.dumps(event))
        except ConnectionClosed as exc:
            self.lost = self.lost or _closed(exc)
            raise EngineError(self._engine.scrub(f"the upstream connection was lost: {self.lost}")) from None

    async def close(self) -> None:
        self.lost = self.lost or "closed by the gateway"
        self._reader.cancel()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2.0)
        await asyncio.gather(self._reader, *self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # an error here is not worth a log

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                for note in self.conversation.receive(event):
                    await self._handle(note)
                if not self.conversation.in_flight:
                    self.idle.set()
            self.lost = self.lost or "closed by the upstream"
        except ConnectionClosed as exc:
            self.lost = self.lost or _closed(exc)
        except asyncio.CancelledError:
            self.lost = self.lost or "closed by the gateway"
            raise
        except Exception as exc:  # a bug here must cost this call, loudly, not hang it
            log.exception("upstream reader failed")
            self.lost = self.lost or f"reader failed: {type(exc).__name__}"
        finally:
            self.idle.set()
            queue = self._queue
            if queue is not None:
                with contextlib.suppress(asyncio.QueueFull):  # when full, `respond` sees `lost` once drained
                    queue.put_nowait(_Lost())

    async def _handle(self, note: Note) -> None:
        if isinstance(note, Output | ResponseEnded):
            queue = self._queue
            if queue is not None:
                await queue.put(note)
        elif isinstance(note, Send):
            await self.send(note.event)
        elif isinstance(note, RateLimits):
            metrics.UPSTREAM_RATE_LIMIT_UPDATES.inc()
            for limit in note.limits:
                if isinstance(limit.get("name"), str) and isinstance(limit.get("remaining"), int | float):
                    metrics.UPSTREAM_RATE_LIMIT_REMAINING.labels(limit["name"]).set(limit["remaining"])
                    if limit["remaining"] == 0:
                        log.warning("upstream rate limit reached: %s, resets in %s s", limit["name"],
                                    limit.get("reset_seconds"))
        elif isinstance(note, UpstreamError):
            if note.code and "rate_limit" in note.code:
                metrics.UPSTREAM_RATE_LIMITED.labels("session").inc()
            log.warning("upstream error (%s): %s", note.code, self._engine.scrub(note.message))


def _closed(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return "connection closed without a close frame"
    return f"connection closed ({frame.code}{' ' + frame.reason if frame.reason else ''})"


def _upstream_audio(request: ResponseRequest) -> bytes | None:
    """The caller's turn as pcm16 at 24 kHz, the rate the upstream takes: as sent when it already is."""
    wire, fmt = request.user_audio_wire, request.user_audio_format
    if not wire or fmt is None:
        return None
    if fmt == PCM24K:
        return wire  # no re-encoding on the way through
    pcm = InputDecoder(fmt, UPSTREAM_RATE).decode(wire)
    return pcm.astype("<i2").tobytes()


def _refusal_code(body: bytes | bytearray | None) -> str | None:
    """The `error.code` of a refused handshake's JSON body, if it has one (the message may quote the key)."""
    try:
        code = json.loads(bytes(body or b""))["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) and len(code) <= 64 else None


class OpenAIEngine(Engine):
    transcribes = True
    name = "openai"

    def __init__(self, *, api_key: str, base_url: str = "https://api.openai.com/v1", model: str = "gpt-realtime",
                 connect_timeout_s: float = 10.0, max_retries: int = 2, response_timeout_s: float = 30.0,
                 local_transcription: bool = True, stt_threads: int = 2, stt_concurrency: int = 1,
                 stt_model: str = "",
                 policy: ReconnectPolicy | None = None) -> None:
        if not api_key:
            raise ValueError("the openai engine needs an API key: set OPENAI_API_KEY (or VOXGATE_OPENAI_API_KEY)")
        self._key = api_key
        self.url = realtime_url(base_url, model)
        self.upstream = urlsplit(self.url).netloc
        self.model = model
        self.connect_timeout_s = connect_timeout_s
        self.max_retries = max(0, max_retries)
        self.response_timeout_s = response_timeout_s
        self.policy = policy or ReconnectPolicy()
        self._local_transcription = local_transcription
        self._stt_threads = stt_threads
        self._stt_concurrency = stt_concurrency
        self._stt_model = stt_model
        self.stt: WhisperTranscriber | None = None
        self._links: set[UpstreamLink] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIEngine:
        return cls(api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url,
                   model=settings.openai_model, connect_timeout_s=settings.openai_connect_timeout_s,
                   max_retries=settings.openai_max_retries, response_timeout_s=settings.openai_response_timeout_s,
                   stt_threads=settings.stt_threads, stt_concurrency=settings.stt_max_concurrency,
                   stt_model=settings.stt_model)

    def scrub(self, text: str) -> str:
        """`text` with the key masked: for anything from the upstream that reaches a log or an error."""
        return text.replace(self._key, "****")

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._local_transcription:
            from voxgate.engines.local.stt import WhisperTranscriber

            loop = asyncio.get_running_loop()
            self.stt = await loop.run_in_executor(None, WhisperTranscriber.shared, self._stt_threads,
                                                  self._stt_concurrency, self._stt_model)
        log.info("openai engine: upstream %s, model %s, local transcription %s", self.upstream, self.model,
                 "on" if self.stt else "off")

    async def aclose(self) -> None:
        links, self._links = list(self._links), set()
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)

    async def close_session(self, state: dict[str, Any]) -> None:
        link = state.pop(LINK_KEY, None)
        if isinstance(link, UpstreamLink):
            self._links.discard(link)
            await link.close()

    def voices(self) -> Sequence[str]:
        return ()  # any name: the upstream's own voices, or its default when it refuses one

    def take_usage(self, state: dict[str, Any]) -> dict[str, Any] | None:
        usage: dict[str, Any] = state.pop(USAGE_KEY, None) or {}
        link = state.get(LINK_KEY)
        if isinstance(link, UpstreamLink):
            add_usage(usage, link.conversation.take_usage() or {})
        return usage  # {} rather than None: the session must not estimate usage the upstream bills for

    async def transcribe(self, pcm16k: np.ndarray, language: str | None = None) -> str | None:
        if self.stt is None:
            return None
        if not pcm16k.size:
            return ""
        return (await self.stt.transcribe(pcm16k)).text

    # -- responses ---------------------------------------------------------------------------------

    async def respond(self, request: ResponseRequest) -> AsyncIterator[EngineOutput]:
        link = await self._link(request.state)
        audio = _upstream_audio(request)
        try:
            queue = await link.begin(request, audio, self.response_timeout_s)
        except TimeoutError:  # the previous response never ended: start over on a fresh connection
            log.warning("upstream %s: a previous response never ended; reconnecting", self.upstream)
            link.lost = "a previous response never ended"
            link = await self._link(request.state)
            queue = await link.begin(request, audio, self.response_timeout_s)
        outcome = "abandoned"  # the session stopped reading (a tool call): let the upstream finish
        task = asyncio.current_task()
        try:
            while True:
                if link.lost and queue.empty():
                    raise self._failure("lost", f"the upstream connection was lost mid-response: {link.lost}")
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as
                    # the queue yields an item, and a barge-in would then not stop this response.
                    async with asyncio.timeout(self.response_timeout_s):
                        note = await queue.get()
                except TimeoutError:
                    outcome = "timeout"
                    link.lost = "timed out"
                    raise self._failure("timeout", f"the upstream sent nothing for {self.response_timeout_s:g} s") \
                        from None
                if isinstance(note, Output):
                    yield note.value
                elif isinstance(note, ResponseEnded):
                    outcome = "ended"
                    if note.status == "failed":
                        if note.code and "rate_limit" in note.code:
                            metrics.UPSTREAM_RATE_LIMITED.labels("response").inc()
                        raise self._failure("failed", f"the upstream response failed ({note.code or 'error'}): "
                                                      f"{note.error}")
                    return
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            # A cancel that lands while the session is between two outputs closes this generator
            # (GeneratorExit) rather than raising in it: the task's own state tells them apart.
            cancelled = outcome == "cancelled" or (task is not None and task.cancelling() > 0)
            link.abandon(queue, cancel=cancelled or outcome == "timeout")
            if link.lost:
                await self._drop(request.state, link)

    def _failure(self, reason: str, message: str) -> EngineError:
        metrics.UPSTREAM_FAILURES.labels(reason).inc()
        message = self.scrub(message)
        log.warning("upstream %s: %s", self.upstream, message)
        return EngineError(message)

    # -- connections -------------------------------------------------------------------------------

    async def _link(self, state: dict[str, Any]) -> UpstreamLink:
        link = state.get(LINK_KEY)
        if isinstance(link, UpstreamLink):
            if not link.lost:
                return link
            await self._drop(state, link)
        link = await self._connect()
        state[LINK_KEY] = link
        return link

    async def _drop(self, state: dict[str, Any], link: UpstreamLink) -> None:
        """Forget a dead connection; its unreported usage stays with the session."""
        if state.get(LINK_KEY) is link:
            del state[LINK_KEY]
            add_usage(state.setdefault(USAGE_KEY, {}), link.conversation.take_usage() or {})
        self._links.discard(link)
        await link.close()

    async def _connect(self) -> UpstreamLink:
        ws = await open_upstream(self.url, self._key, policy=self.policy, connect_timeout_s=self.connect_timeout_s,
                                 max_retries=self.max_retries)
        link = UpstreamLink(ws, UpstreamConversation(), self)
        self._links.add(link)
        return link


class UpstreamRefused(EngineError):
    """The upstream answered the handshake with a status that retrying will not change."""

    def __init__(self, message: str, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def open_upstream(url: str, key: str, *, policy: ReconnectPolicy, connect_timeout_s: float,
                        max_retries: int, final_statuses: Collection[int] = (401, 403)) -> ClientConnection:
    """A Realtime WebSocket to the upstream (a session's, or a call's sideband), with `max_retries` retries
    under `policy`'s backoff and circuit breaker. Raises UpstreamRefused for `final_statuses`, EngineError
    otherwise; the key goes in the handshake header only, and no error text quotes it."""
    upstream = urlsplit(url).netloc
    wait = policy.wait_s(time.monotonic())
    if wait > 0:
        metrics.UPSTREAM_CONNECTS.labels("circuit_open").inc()
        raise EngineError(f"the upstream {upstream} is unavailable after repeated failures; "
                          f"the next attempt is in {wait:.0f} s")
    last = "no attempt"
    for attempt in range(max_retries + 1):
        retry_after = 0.0
        try:
            ws = await connect(url, additional_headers={"Authorization": f"Bearer {key}"},
                               open_timeout=connect_timeout_s, max_size=MAX_MESSAGE_BYTES, logger=_wire_log)
        except InvalidStatus as exc:
            status = exc.response.status_code
            code = _refusal_code(exc.response.body)
            last = f"HTTP {status}" + (f" ({code})" if code else "")
            if status in final_statuses:
                metrics.UPSTREAM_CONNECTS.labels("refused").inc()
                if status != 404:  # an ended call's sideband is no sign of a failing upstream
                    policy.failed(time.monotonic(), random.random())
                hint = "; check the OpenAI API key" if status in (401, 403) else ""
                raise UpstreamRefused(f"the upstream {upstream} refused the connection: {last}{hint}", status,
                                      code) from None
            policy.failed(time.monotonic(), random.random())
            if status == 429:
                metrics.UPSTREAM_CONNECTS.labels("rate_limited").inc()
                metrics.UPSTREAM_RATE_LIMITED.labels("handshake").inc()
                with contextlib.suppress(TypeError, ValueError):
                    retry_after = min(float(exc.response.headers.get("Retry-After", 0)), RETRY_AFTER_CAP_S)
            else:
                metrics.UPSTREAM_CONNECTS.labels("error").inc()
        except TimeoutError:
            last = f"no answer within {connect_timeout_s:g} s"
            metrics.UPSTREAM_CONNECTS.labels("timeout").inc()
            policy.failed(time.monotonic(), random.random())
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            last = f"{type(exc).__name__}: {exc}".replace(key, "****")
            metrics.UPSTREAM_CONNECTS.labels("error").inc()
            policy.failed(time.monotonic(), random.random())
        else:
            policy.succeeded()
            metrics.UPSTREAM_CONNECTS.labels("ok").inc()
            return ws
        if attempt == max_retries or policy.wait_s(time.monotonic()) > 0:
            break
        await asyncio.sleep(max(policy.delay(attempt, random.random()), retry_after))
    log.warning("upstream %s unreachable: %s", upstream, last)
    raise EngineError(f"could not connect to the upstream {upstream}: {last}")
