"""SRTP and SRTCP (RFC 3711) for one call, keyed by SDES (`sdes.SrtpKeys`), through pylibsrtp's public API.

    context = SrtpContext(media.srtp)
    sock.sendto(context.protect(packet.to_bytes()), remote)
    data = context.unprotect(datagram)       # plain RTP; raises SrtpError (a counted drop) when it fails
    context.rekey(new_keys)                  # a re-INVITE settled other keys: only the changed side restarts

Each direction is its own libsrtp session: ours protected with our key (any SSRC we send), theirs
authenticated and decrypted with theirs (any SSRC they send), with libsrtp's replay window. A packet that
fails authentication or replays an index is refused before anything reads it.
"""

from __future__ import annotations

from pylibsrtp import Error, Policy, Session

from voxgate.sip.errors import SipError
from voxgate.sip.sdes import SrtpKeys

__all__ = ["SrtpContext", "SrtpError"]

# libsrtp's messages (pylibsrtp.Error's text) → the reason a dropped packet is counted under
_REASONS = {"authentication failure": "auth_failed", "replay check failed (bad index)": "replay",
            "replay check failed (index too old)": "replay",
            "unable to perform desired validation": "unencrypted"}  # an SRTCP packet whose E flag is clear


class SrtpError(SipError):
    default_code = "bad_packet"


def _session(key: bytes, direction: int, profile: int) -> Session:
    return Session(Policy(key, direction, 0, profile))


class SrtpContext:
    """Protect what we send, check and decrypt what arrives. Keys are held by libsrtp, never shown."""

    def __init__(self, keys: SrtpKeys) -> None:
        self.keys = keys
        self._out = _session(keys.local_key, Policy.SSRC_ANY_OUTBOUND, keys.profile)
        self._in = _session(keys.remote_key, Policy.SSRC_ANY_INBOUND, keys.profile)

    def __repr__(self) -> str:
        return f"<SrtpContext {self.keys.suite}>"

    def rekey(self, keys: SrtpKeys) -> None:
        """New keys from a re-INVITE: a direction whose key is unchanged keeps its context (its rollover
        counter and replay window), a changed one starts afresh."""
        if keys.suite != self.keys.suite or keys.local_key != self.keys.local_key:
            self._out = _session(keys.local_key, Policy.SSRC_ANY_OUTBOUND, keys.profile)
        if keys.suite != self.keys.suite or keys.remote_key != self.keys.remote_key:
            self._in = _session(keys.remote_key, Policy.SSRC_ANY_INBOUND, keys.profile)
        self.keys = keys

    def protect(self, packet: bytes) -> bytes:
        return self._out.protect(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._out.protect_rtcp(packet)

    def unprotect(self, data: bytes) -> bytes:
        try:
            return self._in.unprotect(data)
        except (Error, ValueError) as error:
            raise SrtpError(str(error), _REASONS.get(str(error), "bad_packet")) from None

    def unprotect_rtcp(self, data: bytes) -> bytes:
        try:
            return self._in.unprotect_rtcp(data)
        except (Error, ValueError) as error:
            raise SrtpError(str(error), _REASONS.get(str(error), "bad_packet")) from None
