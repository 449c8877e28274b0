"""Talk to a voxgate agent with your voice (a WAV file) through the official openai SDK.

    .venv/bin/python examples/talk.py --key <api key> --wav question.wav      # any mono 16-bit WAV
    .venv/bin/python examples/talk.py --key <api key> --say "what is the status of order 4567"

The audio is streamed at real time with server VAD, like a microphone would; the agent's spoken reply
is written to reply.wav and its transcript printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import wave

import numpy as np
import soxr
from openai import AsyncOpenAI

RATE = 24000


def load_wav(path: str) -> np.ndarray:
    with wave.open(path, "rb") as wav:
        if wav.getsampwidth() != 2:
            raise SystemExit("need a 16-bit WAV")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, wav.getnchannels())[:, 0]
        return soxr.resample(pcm, wav.getframerate(), RATE).astype(np.int16)


def synthesize(text: str) -> np.ndarray:
    from voxgate.engines.local.tts import PiperSynthesizer

    tts = PiperSynthesizer()
    pcm = np.concatenate(list(tts.synthesize_sync(text)))
    return soxr.resample(pcm, tts.sample_rate, RATE).astype(np.int16)


async def talk(args: argparse.Namespace) -> None:
    speech = load_wav(args.wav) if args.wav else synthesize(args.say)
    audio = np.concatenate([speech, np.zeros(RATE, dtype=np.int16)])  # a second of silence ends the turn
    client = AsyncOpenAI(api_key=args.key, base_url=f"http://{args.host}/v1", websocket_base_url=f"ws://{args.host}/v1")
    reply = bytearray()
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {
            "input": {"transcription": {"model": "whisper-1"},
                      "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}})

        async def send() -> None:
            frame = RATE // 50
            for start in range(0, audio.size, frame):
                chunk = audio[start:start + frame].astype("<i2").tobytes()
                await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(send())
        async for event in conn:
            if event.type == "conversation.item.input_audio_transcription.completed":
                print(f"you:   {event.transcript}")
            elif event.type == "response.output_audio.delta":
                reply.extend(base64.b64decode(event.delta))
            elif event.type == "response.output_audio_transcript.done":
                print(f"agent: {event.transcript}")
            elif event.type == "error":
                print(f"error: {event.error.message}")
            elif event.type == "response.done":
                break
        await sender
    with wave.open("reply.wav", "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(reply))
    print(f"reply.wav: {len(reply) / 2 / RATE:.1f} s of audio")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="an API key (make run prints one)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wav", help="a mono 16-bit WAV file of your request")
    source.add_argument("--say", help="synthesize this request with the local TTS voice")
    asyncio.run(talk(parser.parse_args()))
