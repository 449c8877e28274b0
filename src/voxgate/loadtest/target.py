"""The gateway a load test aims at, and the rule that keeps it on this machine unless told otherwise.

A load generator is a small denial of service: by default it only talks to loopback (127.0.0.0/8, ::1,
`localhost`), and that covers every URL it is handed on the way too (a carrier's stream URL comes from
the gateway's answer). Host names other than `localhost` are not resolved to find out: a name is
refused unless `--allow-remote` says the operator means it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["RemoteTargetRefused", "Target", "is_loopback", "require_loopback"]


class RemoteTargetRefused(ValueError):
    """A URL that is not on loopback, without --allow-remote."""


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(url: str, allow_remote: bool) -> None:
    host = urlsplit(url).hostname or ""
    if not allow_remote and not is_loopback(host):
        raise RemoteTargetRefused(f"{url} is not on loopback: a load test targets this machine unless "
                                  "--allow-remote is given")


@dataclass(frozen=True)
class Target:
    base_url: str  # http(s)://host:port[/prefix], no trailing slash
    api_key: str
    allow_remote: bool = False

    @classmethod
    def parse(cls, url: str, api_key: str, allow_remote: bool = False) -> Target:
        parts = urlsplit(url.strip())
        scheme = {"http": "http", "ws": "http", "https": "https", "wss": "https"}.get(parts.scheme)
        if scheme is None or not parts.hostname:
            raise ValueError(f"expected the gateway's URL, like http://127.0.0.1:8000, got {url!r}")
        base = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        require_loopback(base, allow_remote)
        return cls(base, api_key, allow_remote)

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1)

    def check(self, url: str) -> None:
        """A URL the gateway handed us (a stream URL) obeys the same rule as the target."""
        require_loopback(url, self.allow_remote)
