"""OpenTelemetry spans over OTLP/HTTP to a real receiver on loopback: a spoken call with the local engine
gives a call span, a turn span with a child per budget stage, and the gateway tool's `execute_tool` span
(GenAI semantic conventions). A gateway without `otel_endpoint` has no tracer at all."""

from __future__ import annotations

import base64
import http.server
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import finished_call, start_server
from tests.speech import silence, speak

REQUEST = "what is the status of order four five six seven"


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint: every span POSTed to /v1/traces, decoded."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    yield otlp
    otlp.stop()


def attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


async def test_a_spoken_call_is_traced_by_call_turn_stage_and_tool(tmp_path: Path, receiver: OtlpReceiver) -> None:
    live = start_server(tmp_path, engine="local", otel_endpoint=receiver.url)
    try:
        audio = np.concatenate([silence(300, 24000), speak(REQUEST, rate=24000), silence(900, 24000)])
        async with websockets.connect(f"{live.ws_url}/v1/realtime", additional_headers=live.auth) as ws:
            session_id = json.loads(await ws.recv())["session"]["id"]
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
                "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}}}))
            pcm = audio.astype("<i2").tobytes()
            for start in range(0, len(pcm), 9600):  # 200 ms at a time
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(pcm[start:start + 9600]).decode()}))
            spoken = False
            while not spoken:  # the tool's answer, spoken
                event = json.loads(await ws.recv())
                spoken = event["type"] == "response.done" and any(
                    part.get("type") == "output_audio" for item in event["response"]["output"]
                    for part in item.get("content", []))
        record = await finished_call(live, session_id)
    finally:
        live.embedded.stop()  # flushes the spans still queued
    by_name: dict[str, list[Any]] = {}
    for span in receiver.spans:
        by_name.setdefault(span.name, []).append(span)
    (call,) = by_name["voxgate.call acme"]
    assert attributes(call)["voxgate.call.id"] == session_id
    assert attributes(call)["voxgate.transport"] == "realtime_ws" and attributes(call)["gen_ai.system"] == "local"
    assert attributes(call)["voxgate.call.status"] == record["status"]
    (tool,) = by_name["execute_tool lookup_order"]
    assert attributes(tool)["gen_ai.operation.name"] == "execute_tool" and tool.parent_span_id == call.span_id
    assert tool.trace_id == call.trace_id
    turns = by_name["voxgate.turn"]
    assert len(turns) == len(record["latency"]) >= 1 and all(t.parent_span_id == call.span_id for t in turns)
    stages = [s for s in receiver.spans if s.name.startswith("voxgate.turn.") and s.parent_span_id == turns[0].span_id]
    assert [attributes(s)["voxgate.stage"] for s in stages] == [
        stage for stage, ms in record["latency"][0]["stages"].items() if ms is not None]
    first_token = next(s for s in stages if s.name == "voxgate.turn.first_token")
    assert attributes(first_token)["gen_ai.operation.name"] == "chat"
    # The stages tile their turn: each starts where the one before it ended.
    assert stages[0].start_time_unix_nano == turns[0].start_time_unix_nano
    assert all(a.end_time_unix_nano == b.start_time_unix_nano for a, b in itertools.pairwise(stages))


def test_without_an_endpoint_there_is_no_tracer(tmp_path: Path) -> None:
    from voxgate.config import Settings
    from voxgate.gateway import Gateway

    assert Gateway(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'vg.db'}")).tracing is None
