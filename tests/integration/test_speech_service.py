"""voxgate as a speech service: the official SDK speaks a sentence through /v1/audio/speech and gets it
back as text from /v1/audio/transcriptions, in every format; bad requests get a clear 4xx."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import wave

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI, AuthenticationError, BadRequestError

from tests.conftest import LiveServer
from voxgate.audio.containers import SPEECH_FORMATS, decode_file
from voxgate.config import Settings
from voxgate.speech_service import Busy, SpeechService

SENTENCE = "What is the status of my order please?"


def client_for(live: LiveServer, key: str | None = None) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key or live.api_key, base_url=f"{live.base_url}/v1", max_retries=0)


async def test_the_sdk_speaks_a_sentence_and_transcribes_it_back(live_server: LiveServer) -> None:
    client = client_for(live_server)
    spoken = await client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="wav")
    audio = spoken.content
    with wave.open(io.BytesIO(audio)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24_000, 1, 2)
        assert 1.0 < wav.getnframes() / 24_000 < 6.0
    text = await client.audio.transcriptions.create(model="whisper-1", file=("request.wav", audio))
    words = text.text.lower()
    assert "status" in words and "order" in words
    plain = await client.audio.transcriptions.create(model="whisper-1", file=("request.wav", audio),
                                                     response_format="text")
    assert "order" in str(plain).lower()
    verbose = await client.audio.transcriptions.create(model="whisper-1", file=("request.wav", audio),
                                                       response_format="verbose_json")
    assert verbose.duration == pytest.approx(wave.open(io.BytesIO(audio)).getnframes() / 24_000, abs=0.05)


@pytest.mark.parametrize("name", ["mp3", "opus", "aac", "flac"])
async def test_every_compressed_format_decodes_to_the_same_speech(live_server: LiveServer, name: str) -> None:
    client = client_for(live_server)
    spoken = await client.audio.speech.create(model="tts-1", voice="joe", input="Thank you, goodbye.",
                                              response_format=name)  # type: ignore[arg-type]
    assert spoken.response.headers["content-type"] == SPEECH_FORMATS[name].content_type
    pcm = decode_file(spoken.content)
    assert 0.5 < pcm.size / 16_000 < 4.0 and np.abs(pcm).max() > 1000
    text = await client.audio.transcriptions.create(model="whisper-1", file=(f"reply.{name}", spoken.content))
    assert "goodbye" in text.text.lower()


async def test_pcm_is_streamed_as_24_khz_samples(live_server: LiveServer) -> None:
    client = client_for(live_server)
    received = bytearray()
    async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="One. Two. Three.", response_format="pcm", speed=1.5) as response:
        async for chunk in response.iter_bytes():
            received += chunk
    assert len(received) % 2 == 0
    seconds = len(received) / 2 / 24_000
    assert 0.5 < seconds < 4.0


async def test_bad_requests_get_a_clear_error_naming_the_parameter(live_server: LiveServer) -> None:
    client = client_for(live_server)
    with pytest.raises(AuthenticationError):
        await client_for(live_server, key="vg_wrong").audio.speech.create(model="tts-1", voice="alloy", input="hi")
    cases = [
        ({"input": ""}, "input"),
        ({"voice": "nobody"}, "voice"),
        ({"speed": 9}, "speed"),
        ({"response_format": "ogg"}, "response_format"),
        ({"input": "x" * 4097}, "input"),
    ]
    for change, param in cases:
        body = {"model": "tts-1", "voice": "alloy", "input": "hi", **change}
        with pytest.raises(BadRequestError) as refused:
            await client.audio.speech.create(**body)  # type: ignore[arg-type]
        assert refused.value.body["param"] == param, change  # type: ignore[index]
    with pytest.raises(BadRequestError) as garbage:
        await client.audio.transcriptions.create(model="whisper-1", file=("x.wav", b"RIFF not really a wave file"))
    assert garbage.value.body["code"] == "invalid_audio"  # type: ignore[index]
    tone = io.BytesIO()
    with wave.open(tone, "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(16_000)
        wav.writeframes(np.zeros(1600, np.int16).tobytes())
    with pytest.raises(BadRequestError) as french:
        await client.audio.transcriptions.create(model="whisper-1", file=("x.wav", tone.getvalue()), language="fr")
    assert french.value.body["param"] == "language"  # type: ignore[index]


async def test_an_upload_over_the_limit_is_refused_before_it_is_read(live_server: LiveServer) -> None:
    limit = live_server.gateway.settings.speech_max_upload_bytes
    async with httpx.AsyncClient(base_url=live_server.base_url,
                                 headers={"Authorization": f"Bearer {live_server.api_key}"}) as http:
        reply = await http.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                                files={"file": ("big.wav", b"\0" * (limit + 1))})
        assert reply.status_code == 413 and reply.json()["error"]["param"] == "file"
        # The gateway carries on.
        assert (await http.get("/healthz")).status_code == 200


def test_requests_beyond_the_waiting_room_are_turned_away() -> None:
    service = SpeechService(Settings(speech_max_waiting=2))
    with service.turn(), service.turn():
        assert service.full
        with pytest.raises(Busy), service.turn():
            pass
    assert not service.full


async def test_a_client_that_leaves_before_the_answer_is_no_server_error(
        live_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """A cascade whose turn was cancelled hangs up on its speech request: the answer finds nobody, which is
    logged as the client's leaving, not as an unhandled server error with a traceback."""
    body = json.dumps({"model": "tts-1", "voice": "alloy", "input": SENTENCE * 3}).encode()
    host, port = live_server.base_url.removeprefix("http://").split(":")
    with caplog.at_level(logging.DEBUG, logger="voxgate"):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"POST /v1/audio/speech HTTP/1.1\r\nhost: {host}:{port}\r\n".encode()
                     + b"content-type: application/json\r\n"
                     + f"authorization: Bearer {live_server.api_key}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
                     + body)
        await writer.drain()
        writer.close()  # gone before the voice is rendered
        for _ in range(600):  # until the gateway has tried to answer (the voice renders in well under 60 s)
            if any("the client has gone" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the gateway never finished the request: {[r.getMessage() for r in caplog.records]}")
    # The gateway's own records (another test's client, collected meanwhile, may log through asyncio)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("voxgate")], caplog.text
