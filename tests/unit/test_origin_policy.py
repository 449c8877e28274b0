"""Which Hosts and Origins the gateway answers, and when dev mode refuses to start: pure settings, no server."""

from __future__ import annotations

import re

import pytest

from voxgate.config import Settings, UnsafeSettingsError
from voxgate.control.origin_policy import LOOPBACK_ORIGIN_PATTERN, OriginPolicy
from voxgate.hosts import host_port, is_loopback, origin_of


def test_loopback_names_and_addresses() -> None:
    for name in ("localhost", "LOCALHOST.", "app.localhost", "127.0.0.1", "127.8.9.10:8000", "[::1]:8000", "::1"):
        assert is_loopback(name), name
    for name in ("0.0.0.0", "::", "10.0.0.5", "evil.example", "localhost.evil.example", "127.0.0.1.nip.io"):
        assert not is_loopback(name), name
    assert host_port("[::1]:8000", 80) == ("::1", 8000)
    assert host_port("Voice.Example.COM", 443) == ("voice.example.com", 443)
    assert origin_of("https://voice.example.com") == ("https", "voice.example.com", 443)
    assert origin_of("null") is None and origin_of("file:///etc/passwd") is None


def test_rebinding_hosts_are_refused() -> None:
    policy = OriginPolicy(Settings(public_url="https://voice.example.com", dev_mode=False,
                                   allowed_hosts=["voxgate.internal"]))
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "10.1.2.3:8000", "voice.example.com",
                 "VOXGATE.internal:8000", None):
        assert policy.host_allowed(host), host
    # A page that rebinds its own name to 127.0.0.1 still sends that name.
    for host in ("evil.example:8000", "voice.example.com.evil.example", "localhost.evil.example"):
        assert not policy.host_allowed(host), host
    assert OriginPolicy(Settings(allowed_hosts=["*"])).host_allowed("anything.example")


def test_origins_dev_mode_allows_loopback_only() -> None:
    dev = OriginPolicy(Settings())
    host = "127.0.0.1:8000"
    assert dev.origin_allowed("http://127.0.0.1:8000", host)  # the gateway's own page
    assert dev.origin_allowed("http://localhost:3000", host)  # a local dev server
    for origin in ("http://evil.example", "https://127.0.0.1.evil.example", "null", "http://10.0.0.5:8000"):
        assert not dev.origin_allowed(origin, host), origin
    options = dev.cors_options()
    assert options["allow_origins"] == [] and options["allow_credentials"] is False
    assert re.fullmatch(LOOPBACK_ORIGIN_PATTERN, "http://localhost:5173")
    assert re.fullmatch(LOOPBACK_ORIGIN_PATTERN, "https://[::1]:8443")
    assert not re.fullmatch(LOOPBACK_ORIGIN_PATTERN, "http://localhost.evil.example")
    assert not re.fullmatch(LOOPBACK_ORIGIN_PATTERN, "http://127.0.0.1.evil.example")


def test_origins_in_production_are_configured_ones() -> None:
    prod = OriginPolicy(Settings(dev_mode=False, public_url="https://voice.example.com",
                                 cors_origins=["https://app.example"]))
    assert prod.origin_allowed("https://app.example", "127.0.0.1:8000")
    assert prod.origin_allowed("https://voice.example.com", "127.0.0.1:8000")  # own origin behind a proxy
    assert not prod.origin_allowed("http://localhost:3000", "127.0.0.1:8000")
    assert not prod.origin_allowed("http://app.example", "127.0.0.1:8000")  # scheme is part of an origin
    assert prod.cors_options() == {"allow_origins": ["https://app.example"], "allow_origin_regex": None,
                                   "allow_credentials": False}
    assert OriginPolicy(Settings(cors_origins=["*"])).origin_allowed("https://anyone.example", None)


def test_same_origin_compares_host_and_port() -> None:
    policy = OriginPolicy(Settings())
    assert policy.same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert policy.same_origin("https://localhost", "localhost:443")
    assert not policy.same_origin("http://127.0.0.1:9999", "127.0.0.1:8000")  # same site, other origin
    assert not policy.same_origin("http://localhost:8000", "127.0.0.1:8000")
    assert not policy.same_origin("http://127.0.0.1:8000", None)


@pytest.mark.parametrize("settings", [
    {"host": "0.0.0.0"}, {"host": "::"}, {"host": "192.168.1.20"}, {"host": "voice.lan"},
    {"public_url": "https://voice.example.com"},
])
def test_dev_mode_beyond_loopback_refuses_to_start(settings: dict[str, str]) -> None:
    with pytest.raises(UnsafeSettingsError) as refused:
        Settings(**settings).check_exposure()
    message = str(refused.value)
    assert "VOXGATE_DEV_MODE=false" in message and "VOXGATE_ALLOW_DEV_MODE_BEYOND_LOOPBACK=true" in message
    Settings(**settings, dev_mode=False).check_exposure()
    Settings(**settings, allow_dev_mode_beyond_loopback=True).check_exposure()


@pytest.mark.parametrize("settings", [
    {}, {"host": "localhost"}, {"host": "::1"}, {"public_url": "http://127.0.0.1:8000"},
    {"public_url": "https://localhost:8443"},
])
def test_dev_mode_on_loopback_starts(settings: dict[str, str]) -> None:
    assert Settings(**settings).exposure() is None
    Settings(**settings).check_exposure()
