"""TLS without a proxy: a self-signed localhost certificate, trusted by a client that was given it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from cryptography import x509

from tests.conftest import LiveServer, start_server
from voxgate.certificates import CERT_FILE, KEY_FILE, TlsSettingsError, self_signed, sip_tls_files, tls_files
from voxgate.config import Settings
from voxgate.embedded import free_port


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("tls"), engine="echo", tls_self_signed=True)
    yield live
    live.embedded.stop()


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


async def test_wss_and_https_with_a_self_signed_certificate(tls_gateway: LiveServer) -> None:
    cert = tls_gateway.embedded.tls_cert
    assert cert is not None and tls_gateway.ws_url.startswith("wss://")
    context = trusting(cert)
    port = tls_gateway.base_url.rsplit(":", 1)[1]
    for base in (tls_gateway.base_url, f"https://localhost:{port}"):
        async with httpx.AsyncClient(verify=context) as http:
            assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
    async with websockets.connect(f"{tls_gateway.ws_url}/v1/realtime?model=x", ssl=context,
                                  additional_headers=tls_gateway.auth) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
    # A client that was not given the certificate refuses it: the test above really verified it.
    with pytest.raises(ssl.SSLCertVerificationError):
        await websockets.connect(f"{tls_gateway.ws_url}/v1/realtime?model=x", ssl=ssl.create_default_context(),
                                 additional_headers=tls_gateway.auth)
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{tls_gateway.base_url}/healthz")


def test_the_self_signed_pair_is_made_once_for_the_names_needed(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    assert (cert.name, key.name) == (CERT_FILE, KEY_FILE)
    assert key.stat().st_mode & 0o777 == 0o600
    first = cert.read_bytes()
    assert self_signed(tmp_path)[0].read_bytes() == first  # reused while it covers the names and is fresh
    names = x509.load_pem_x509_certificate(first).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert {"localhost"} <= set(names.value.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "::1"} <= {str(ip) for ip in names.value.get_values_for_type(x509.IPAddress)}
    self_signed(tmp_path, host="voice.lan")  # another listening name: made again, covering it
    again = x509.load_pem_x509_certificate(cert.read_bytes())
    assert "voice.lan" in again.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName)


def test_tls_settings_that_cannot_be_served_say_why(tmp_path: Path) -> None:
    with pytest.raises(TlsSettingsError, match="go together"):
        tls_files(Settings(tls_cert=tmp_path / "cert.pem"))
    with pytest.raises(TlsSettingsError, match="not both"):
        tls_files(Settings(tls_self_signed=True, tls_cert=tmp_path / "c", tls_key=tmp_path / "k"))
    with pytest.raises(TlsSettingsError, match="not a readable file"):
        tls_files(Settings(tls_cert=tmp_path / "missing.pem", tls_key=tmp_path / "missing-key.pem"))
    cert, key = self_signed(tmp_path)
    assert tls_files(Settings(tls_cert=cert, tls_key=key)) == (cert, key)
    assert tls_files(Settings()) is None


def test_sip_tls_uses_its_own_pair_else_the_gateways(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "sip")
    gateway_cert, gateway_key = self_signed(tmp_path / "https")
    assert sip_tls_files(Settings()) is None  # no certificate: no SIP over TLS
    assert sip_tls_files(Settings(tls_cert=gateway_cert, tls_key=gateway_key)) == (gateway_cert, gateway_key)
    both = Settings(tls_cert=gateway_cert, tls_key=gateway_key, sip_tls_cert=cert, sip_tls_key=key)
    assert sip_tls_files(both) == (cert, key)
    assert sip_tls_files(both.model_copy(update={"sip_tls_port": 0})) is None
    with pytest.raises(TlsSettingsError, match="sip_tls_cert and sip_tls_key go together"):
        sip_tls_files(Settings(sip_tls_cert=cert))


def test_serve_with_a_self_signed_certificate_prints_where_it_is(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "VOXGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'vg.db'}",
           "VOXGATE_DATA_DIR": str(tmp_path / "data"), "VOXGATE_API_KEYS": "k", "ACME_DB": str(tmp_path / "acme.db")}
    command = [sys.executable, "-m", "voxgate.cli", "serve", "--port", str(port), "--engine", "echo",
               "--tls-self-signed"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        lines: list[str] = []
        cert = None
        deadline = time.monotonic() + 120
        while cert is None and time.monotonic() < deadline and server.poll() is None:
            lines.append(server.stdout.readline())
            match = re.search(r"TLS certificate .*: (\S+)", lines[-1])
            cert = Path(match.group(1)) if match else None
        assert cert == (tmp_path / "data" / CERT_FILE).resolve(), "".join(lines)
        assert any(f"https://127.0.0.1:{port}" in line for line in lines)
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"https://127.0.0.1:{port}/readyz", verify=trusting(cert)).status_code == 200:
                    break
            time.sleep(0.2)
        assert httpx.get(f"https://127.0.0.1:{port}/readyz", verify=trusting(cert)).json()["status"] == "ready"
    finally:
        server.terminate()
        server.wait(timeout=30)
