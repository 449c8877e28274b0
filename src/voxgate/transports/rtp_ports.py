"""The UDP ports SIP calls take for their media: RTP on an even port, RTCP on the odd one above it (RFC 3550
§11), from the configured range (`sip_rtp_port_min`-`sip_rtp_port_max`), so a firewall or NAT forwards
exactly that range; 0-0 lets the kernel pick ephemeral ports instead.

    ports = RtpPorts(10000, 20000)
    rtp_sock, rtcp_sock = ports.bind("192.0.2.10", rtcp=True)     # PortsExhausted: answer 503
    ...
    ports.release(rtp_sock.getsockname()[1])

Pairs are handed out round-robin from a random start, so a port just freed is the last to be taken
again (a late packet of the previous call finds nobody), and a port another process holds is skipped.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator

from voxgate.sip.errors import SipError

__all__ = ["PortsExhausted", "RtpPorts"]

EPHEMERAL_TRIES = 64  # the kernel's pick is odd half the time, or its neighbour taken


class PortsExhausted(SipError):
    """No free RTP/RTCP pair is left in the range: the call is refused (503)."""

    default_code = "rtp_ports_exhausted"


def _socket(host: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError):
        sock.close()
        return None
    sock.setblocking(False)
    return sock


class RtpPorts:
    """Pairs of media ports for one gateway's calls (one instance per SIP phone)."""

    def __init__(self, low: int = 0, high: int = 0) -> None:
        self.low = low + low % 2  # RTP takes the even port of each pair
        self.high = high
        self.pairs = max(0, (high - self.low + 1) // 2) if low else 0
        self.in_use: set[int] = set()
        self._cursor = secrets.randbelow(self.pairs) if self.pairs else 0

    @property
    def ephemeral(self) -> bool:
        return self.pairs == 0

    def bind(self, host: str, *, rtcp: bool) -> tuple[socket.socket, socket.socket | None]:
        """Bound, non-blocking sockets for RTP and (unless `rtcp` is False: rtcp-mux) RTCP on the port
        above. Raises PortsExhausted."""
        for index, port in self._candidates():
            rtp = _socket(host, port)
            if rtp is None:
                continue
            taken = rtp.getsockname()[1]
            if port == 0 and taken % 2:
                rtp.close()
                continue
            rtcp_sock = None
            if rtcp:
                rtcp_sock = _socket(host, taken + 1)
                if rtcp_sock is None:
                    rtp.close()
                    continue
            self.in_use.add(taken)
            if not self.ephemeral:
                self._cursor = (index + 1) % self.pairs
            return rtp, rtcp_sock
        where = "ephemeral ports" if self.ephemeral else f"ports {self.low}-{self.high}"
        raise PortsExhausted(f"no free RTP/RTCP port pair in {where}")

    def release(self, port: int) -> None:
        self.in_use.discard(port)

    def _candidates(self) -> Iterator[tuple[int, int]]:
        """(index, port) to try: the kernel's choice, or each free pair once from the cursor on."""
        if self.ephemeral:
            yield from ((0, 0) for _ in range(EPHEMERAL_TRIES))
            return
        for step in range(self.pairs):
            index = (self._cursor + step) % self.pairs
            port = self.low + 2 * index
            if port not in self.in_use:
                yield index, port
