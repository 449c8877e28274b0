"""A caller over a phone carrier (Twilio or Telnyx), the asyncio shell of a Conversation.

It does what the carrier does: sends the signed webhook of an incoming call, acts on the gateway's
answer (Twilio: the TwiML in the webhook's response; Telnyx: the `answer` command the gateway posts to
the carrier API, which this load test stands in for), and opens the media socket at the URL the answer
gave with the parameters and token it gave, so a gateway that mints per-call tokens is served as it
expects. It then streams 20 ms frames in real time, plays the agent's audio on the line's clock,
echoes marks once played and on `clear`, and ends with `stop`. A hang-up or transfer command from the
gateway ends the call as the agent's; TwiML or commands that decline the call are refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from voxgate.loadtest.call_socket import MicrophoneLag, end_call, stream_microphone
from voxgate.loadtest.carrier_api import ApiRequest, CarrierApiRecorder
from voxgate.loadtest.carrier_line import (
    FRAME_S,
    LineCodec,
    TelnyxMessages,
    TwilioMessages,
    media_payload_bytes,
    twilio_signature,
)
from voxgate.loadtest.carrier_webhook import (
    AnswerError,
    CarrierCommand,
    Declined,
    StreamAnswer,
    parse_carrier_command,
    parse_twiml,
    telnyx_call_initiated,
    telnyx_signature_headers,
    twilio_voice_form,
    twilio_voice_headers,
)
from voxgate.loadtest.conversation import Conversation, Frame
from voxgate.loadtest.report import CallRecord
from voxgate.loadtest.scenario import Transport
from voxgate.loadtest.speech import Lines
from voxgate.loadtest.statistics import Ending
from voxgate.loadtest.target import RemoteTargetRefused, Target

__all__ = ["CarrierCommands", "PhoneCaller"]

RATE = 8000
OPEN_TIMEOUT_S = 15.0
ANSWER_TIMEOUT_S = 15.0
ACCOUNT_SID = "AC" + "0" * 32
_LINE = LineCodec("pcmu")  # every codec the line speaks has the same 20 ms frames of 8 kHz audio


class CarrierCommands:
    """The carriers' REST API as the callers see it: a loopback server (`CarrierApiRecorder`) whose
    requests are sorted by call and queued for the call they belong to."""

    def __init__(self, port: int) -> None:
        self.api = CarrierApiRecorder(port, keep=False, on_request=self._arrived)
        self._queues: dict[str, asyncio.Queue[CarrierCommand]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return self.api.url

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.api.start()

    def stop(self) -> None:
        self.api.stop()

    def expect(self, call_id: str) -> asyncio.Queue[CarrierCommand]:
        return self._queues.setdefault(call_id, asyncio.Queue())

    def forget(self, call_id: str) -> None:
        self._queues.pop(call_id, None)

    def _arrived(self, request: ApiRequest) -> None:  # on the server's thread
        command = parse_carrier_command(request.path, request.body)
        if command is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver, command)

    def _deliver(self, command: CarrierCommand) -> None:
        queue = self._queues.get(command.call_id)
        if queue is not None:
            queue.put_nowait(command)


class PhoneCaller:
    frame_s = FRAME_S

    def __init__(self, carrier: Transport, target: Target, lines: Lines, agent: str | None, lag: MicrophoneLag,
                 http: httpx.AsyncClient, commands: CarrierCommands, twilio_auth_token: str | None = None,
                 telnyx_private_key: bytes | None = None) -> None:
        if carrier not in (Transport.TWILIO, Transport.TELNYX):
            raise ValueError(f"{carrier} is not a phone carrier")
        self.carrier, self.target, self.lines, self.agent, self.lag = carrier, target, lines, agent, lag
        self.http, self.commands = http, commands
        self.twilio_auth_token, self.telnyx_private_key = twilio_auth_token, telnyx_private_key
        self._query = f"?agent={quote(agent, safe='')}" if agent else ""

    def line_frames(self, text: str) -> int:
        return len(self._frames(text, _LINE))

    def _frames(self, text: str, codec: LineCodec) -> list[bytes]:
        return self.lines.encoded(text, RATE, codec, codec.frames)

    async def call(self, conversation: Conversation, record: CallRecord) -> Ending:
        messages: TwilioMessages | TelnyxMessages
        if self.carrier is Transport.TWILIO:
            messages = TwilioMessages(account_sid=ACCOUNT_SID)
            call_id = messages.call_sid
        else:
            messages = TelnyxMessages()
            call_id = messages.call_control_id
        commands = self.commands.expect(call_id)
        try:
            answer = await (self._twilio_answer(call_id) if self.carrier is Transport.TWILIO
                            else self._telnyx_answer(call_id, commands))
            if isinstance(answer, Ending):
                return answer
            if isinstance(answer, Declined):
                return Ending(declined=answer.reason)
            return await self._stream(answer, messages, conversation, commands)
        finally:
            self.commands.forget(call_id)

    # -- the webhook and its answer ------------------------------------------------------------------

    async def _post(self, url: str, headers: dict[str, str], *, data: dict[str, str] | None = None,
                    content: bytes | None = None) -> httpx.Response | Ending:
        try:
            response = await self.http.post(url, headers=headers, data=data, content=content)
        except httpx.HTTPError as exc:
            return Ending(error=f"webhook_{type(exc).__name__}")
        return response if response.status_code == 200 else Ending(http_status=response.status_code)

    async def _twilio_answer(self, call_sid: str) -> StreamAnswer | Declined | Ending:
        url = f"{self.target.base_url}/twilio/voice{self._query}"
        form = twilio_voice_form(call_sid, ACCOUNT_SID)
        response = await self._post(url, twilio_voice_headers(url, form, self.twilio_auth_token), data=form)
        if isinstance(response, Ending):
            return response
        try:
            return parse_twiml(response.text)
        except AnswerError:
            return Ending(error="bad_twiml")

    async def _telnyx_answer(self, call_control_id: str,
                             commands: asyncio.Queue[CarrierCommand]) -> StreamAnswer | Declined | Ending:
        body = telnyx_call_initiated(call_control_id)
        response = await self._post(f"{self.target.base_url}/telnyx/webhook{self._query}",
                                    telnyx_signature_headers(self.telnyx_private_key, body), content=body)
        if isinstance(response, Ending):
            return response
        try:
            command = await asyncio.wait_for(commands.get(), ANSWER_TIMEOUT_S)
        except TimeoutError:
            # The gateway's telnyx_api_base is not this load test's carrier API, or it is overwhelmed.
            return Ending(error="no_answer_command")
        try:
            return command.answer()
        except (AnswerError, ValueError):
            return Ending(error="bad_answer_command")

    # -- the media stream ----------------------------------------------------------------------------

    async def _stream(self, answer: StreamAnswer, messages: TwilioMessages | TelnyxMessages,
                      conversation: Conversation, commands: asyncio.Queue[CarrierCommand]) -> Ending:
        try:
            self.target.check(answer.url)
        except RemoteTargetRefused:
            return Ending(error="stream_url_not_loopback")
        messages.parameters = answer.parameters
        if isinstance(messages, TwilioMessages):
            token = self.twilio_auth_token
            headers = {"X-Twilio-Signature": twilio_signature(answer.url, {}, token)} if token else {}
        else:
            messages.auth_token, messages.codec = answer.auth_token, answer.inbound
            headers = {"x-telnyx-streaming-auth-token": answer.auth_token} if answer.auth_token else {}
        try:
            ws = await connect(answer.url, additional_headers=headers, compression=None, max_size=None, proxy=None,
                               open_timeout=OPEN_TIMEOUT_S, ping_interval=None)
        except InvalidStatus as exc:
            return Ending(http_status=exc.response.status_code)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return Ending(error=f"connect_{type(exc).__name__}")
        silence = messages.codec.silence()
        agent_ended: list[CarrierCommand] = []
        reader = asyncio.create_task(self._read(ws, messages, conversation, answer.outbound))

        async def send(frame: Frame | None, now: float) -> None:
            payload = silence if frame is None else self._frames(frame[0], messages.codec)[frame[1]]
            await ws.send(messages.media(payload))
            for name in conversation.playback.due_marks(now):
                await ws.send(messages.mark(name))

        def ended() -> bool:
            while not commands.empty():
                command = commands.get_nowait()
                if command.ends_call:
                    agent_ended.append(command)
            return bool(agent_ended) or reader.done()

        try:
            await ws.send(messages.connected())
            await ws.send(messages.start())
            await stream_microphone(conversation, FRAME_S, send, ended, self.lag)
        except ConnectionClosed:
            pass
        return await end_call(ws, reader, caller_done=conversation.done, agent_done=bool(agent_ended),
                              goodbye=messages.stop())

    @staticmethod
    async def _read(ws: ClientConnection, messages: TwilioMessages | TelnyxMessages, conversation: Conversation,
                    outbound: LineCodec) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                now = time.monotonic()
                text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
                size = media_payload_bytes(text)
                if size is not None:
                    conversation.heard(now, outbound.seconds(size))
                    continue
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                kind = message.get("event") if isinstance(message, dict) else None
                if kind == "mark":
                    conversation.playback.mark(now, str((message.get("mark") or {}).get("name", "")))
                elif kind == "clear":
                    for name in conversation.interrupted(now):  # a carrier echoes the marks it discards
                        await ws.send(messages.mark(name))
