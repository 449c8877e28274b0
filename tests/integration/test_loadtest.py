"""`voxgate loadtest` as an operator runs it: a few calls over the Realtime WebSocket, Twilio and Telnyx
against a live echo gateway on loopback, a JSON report whose counts add up and a PNG that is one; and a
target off loopback refused before anything is sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import start_server
from voxgate.embedded import free_port

VOXGATE = [sys.executable, "-m", "voxgate.cli"]


def test_loadtest_calls_a_live_gateway_over_every_transport_and_reports_what_happened(tmp_path: Path) -> None:
    api_port = free_port()  # the load test stands in for the carriers' REST APIs here (Telnyx answers on it)
    live = start_server(tmp_path, engine="echo", default_agent="echo", telnyx_api_key="KEYloadtest",
                        telnyx_api_base=f"http://127.0.0.1:{api_port}")
    report_path, plot_path = tmp_path / "out" / "report.json", tmp_path / "out" / "plot.png"
    try:
        # Three calls, one per transport, each a barge-in: a request, then talking over the echo's first
        # audio; no call replaces another (--max-calls), so the run ends when the three hang up.
        result = subprocess.run(
            [*VOXGATE, "loadtest", live.base_url, "--transport", "realtime,twilio,telnyx", "--calls", "3",
             "--rate", "5", "--hold", "3", "--duration", "120", "--max-calls", "3", "--mix", "barge_in",
             "--gateway-pid", str(os.getpid()), "--carrier-api-port", str(api_port),
             "--json", str(report_path), "--png", str(plot_path)],
            env={**os.environ, "VOXGATE_API_KEY": live.api_key}, cwd=tmp_path, capture_output=True, text=True,
            timeout=240)
    finally:
        live.embedded.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "calls: 3 started, 3 completed, 0 dropped" in result.stdout, result.stdout

    report = json.loads(report_path.read_text())
    calls = report["calls"]
    assert (calls["started"], calls["completed"], calls["dropped"], calls["refused"]) == (3, 3, 0, 0), calls
    records = report["call_records"]
    assert sorted(r["transport"] for r in records) == ["realtime", "telnyx", "twilio"]
    for record in records:
        assert record["outcome"] == "completed" and record["reason"] == "caller_hung_up", record
        # The request's reply and the barge-in line's reply, each timed from the end of the caller's speech.
        assert len(record["first_response_ms"]) == 2 and all(v > 0 for v in record["first_response_ms"]), record
        assert len(record["barge_in_ms"]) == 1 and record["barge_ins_missed"] == 0, record
        assert record["unanswered"] == 0 and record["errors"] == {}, record
    assert report["first_response_ms"]["count"] == 6 and report["first_response_ms"]["p99"] is not None
    assert report["barge_in_ms"]["count"] == 3
    assert set(report["by_transport"]) == {"realtime", "twilio", "telnyx"}
    timeline = report["timeline"]
    assert max(s["live"] for s in timeline) >= 1 and timeline[-1]["live"] == 0
    assert all(s["rss_mb"] > 0 for s in timeline) and report["gateway"]["pid"] == os.getpid()

    with Image.open(plot_path) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
        image.verify()


def test_loadtest_refuses_a_target_off_loopback_unless_allowed(tmp_path: Path) -> None:
    for url in ("http://10.11.12.13:8000", "https://voice.example.com", "http://127.0.0.1.example.com"):
        result = subprocess.run([*VOXGATE, "loadtest", url, "--api-key", "k", "--json", str(tmp_path / "r.json"),
                                 "--png", str(tmp_path / "r.png")], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "not on loopback" in result.stderr and "--allow-remote" in result.stderr
        assert "voxgate loadtest ->" not in result.stdout  # refused before the run began
    assert not (tmp_path / "r.json").exists()
