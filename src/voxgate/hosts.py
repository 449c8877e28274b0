"""Host names as the gateway meets them: in its own settings, in Host headers and in browsers' Origins."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost",)  # and every name under .localhost (RFC 6761: resolved to loopback)
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def host_name(authority: str) -> str:
    """The name in a Host header or URL authority, without port, brackets, trailing dot or case."""
    authority = authority.strip().lower()
    if authority.startswith("["):  # [::1]:8000
        return authority[1:].split("]", 1)[0]
    if authority.count(":") == 1:
        authority = authority.split(":", 1)[0]
    return authority.rstrip(".")


def host_port(authority: str, default_port: int) -> tuple[str, int]:
    """(name, port) of a Host header or URL authority; `default_port` when it names none."""
    text = authority.strip()
    rest = text.rsplit("]", 1)[-1] if text.startswith("[") else text
    port = rest.rsplit(":", 1)[1] if rest.count(":") == 1 else ""
    return host_name(text), int(port) if port.isdigit() else default_port


def ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(name: str) -> bool:
    """`localhost`, a name under `.localhost`, or a loopback address (127.0.0.0/8, ::1)."""
    name = host_name(name)
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host name, port) of a URL or Origin, default ports filled in; None if it has no host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname or scheme not in DEFAULT_PORTS:
        return None
    return scheme, host_name(parts.hostname), port or DEFAULT_PORTS[scheme]
