"""Who is really calling when a proxy is in front: `X-Forwarded-For` and `X-Forwarded-Proto`, believed only
from the proxies the operator names (`forwarded_allow_ips`). Pure.

Each proxy appends the address it was reached from, so the client is the last address in the chain that
is not a trusted proxy; a request from anywhere else keeps its own address and scheme (anyone can write
the header). Rate limits per address read the result (the ASGI scope's `client`).
"""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["TrustedProxies"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The proxies whose forwarding headers are believed: IP addresses, networks (`10.0.0.0/8`), or `*`."""

    def __init__(self, allowed: str) -> None:
        entries = [entry.strip() for entry in allowed.split(",") if entry.strip()]
        self.any = "*" in entries
        self._addresses: set[Address] = set()
        self._networks: list[Network] = []
        for entry in entries:
            if entry == "*":
                continue
            try:
                if "/" in entry:
                    self._networks.append(ipaddress.ip_network(entry, strict=False))
                else:
                    self._addresses.add(ipaddress.ip_address(entry))
            except ValueError as exc:
                raise ValueError(f"forwarded_allow_ips: {entry!r} is not an IP address or network") from exc
        self.trusts = functools.lru_cache(maxsize=1024)(self._trusts)

    def _trusts(self, host: str) -> bool:
        if self.any:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return address in self._addresses or any(address in network for network in self._networks)

    def resolve(self, peer: tuple[str, int] | None, headers: list[tuple[bytes, bytes]],
                scheme: str) -> tuple[tuple[str, int] | None, str]:
        """The client's address and the scheme it used: the peer's own unless the peer is a trusted proxy
        that says otherwise. `scheme` is the connection's (http, https, ws or wss)."""
        if peer is None or not self.trusts(peer[0]):
            return peer, scheme
        chain: list[str] = []
        proto = b""
        for name, value in headers:
            if name == b"x-forwarded-for":
                chain += [hop.strip() for hop in value.decode("latin-1").split(",")]
            elif name == b"x-forwarded-proto":
                proto = value
        if proto:
            said = proto.decode("latin-1").strip().lower()
            if said in ("http", "https"):
                scheme = said if scheme.startswith("http") else said.replace("http", "ws")
            elif said in ("ws", "wss"):
                scheme = said if scheme.startswith("ws") else said.replace("ws", "http")
        hops = [hop for hop in chain if hop]
        if not hops:
            return peer, scheme
        client = next((hop for hop in reversed(hops) if not self.trusts(_host(hop))), hops[0])
        return (_host(client), _port(client)), scheme


def _host(hop: str) -> str:
    """`1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:5678` without the port."""
    if hop.startswith("["):
        return hop[1:hop.find("]")] if "]" in hop else hop
    return hop.rsplit(":", 1)[0] if hop.count(":") == 1 else hop


def _port(hop: str) -> int:
    tail = hop.rsplit("]:", 1)[1] if hop.startswith("[") and "]:" in hop else \
        hop.rsplit(":", 1)[1] if hop.count(":") == 1 else ""
    return int(tail) if tail.isdigit() else 0
