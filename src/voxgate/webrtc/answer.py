"""The SDP answer to a browser's offer (RFC 8829, JSEP), as an ICE-lite agent with one bundled transport.

    plan = plan_answer(offer)                              # AnswerError: nothing the gateway can serve
    sdp = plan.to_sdp(ice=IceCredentials(...), fingerprints=cert.fingerprints(), candidates=[("192.0.2.10", 50000)])

Every offered section gets its answer, in order (JSEP): audio with one codec (Opus when offered, else
G.711), the data channel (SCTP over DTLS), and anything else (video) refused with port 0. Accepted
sections share one transport (BUNDLE, RFC 9143), so all of a call's media is one UDP flow, and the
gateway is DTLS server unless the offer insists on being it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from voxgate.transports.webrtc_offer import MediaSection, Offer, OfferError
from voxgate.webrtc.dtls import parse_fingerprint

__all__ = ["AnswerPlan", "IceCredentials", "plan_answer"]

CODECS = ("opus", "pcmu", "pcma")  # what the media path codes, in the gateway's preference
CLOCK_RATES = {"opus": 48000, "pcmu": 8000, "pcma": 8000}
MAX_MESSAGE_SIZE = 262144  # bytes one data channel message may hold, both ways (RFC 8841's attribute)
DEFAULT_SCTP_PORT = 5000


@dataclass(frozen=True)
class IceCredentials:
    ufrag: str
    password: str

    @classmethod
    def generate(cls) -> IceCredentials:
        # RFC 8839 §5.4: ufrag ≥ 24 bits, password ≥ 128 bits of randomness, ice-chars only.
        return cls(secrets.token_hex(4), secrets.token_hex(16))


@dataclass
class AnswerPlan:
    offer: Offer
    audio: MediaSection
    payload_type: int
    codec: str  # "opus" | "pcmu" | "pcma"
    data: MediaSection | None
    dtls_server: bool
    remote_ice: IceCredentials
    remote_fingerprints: list[tuple[str, str]]
    remote_sctp_port: int
    remote_max_message_size: int
    ssrc: int

    @property
    def clock_rate(self) -> int:
        return CLOCK_RATES[self.codec]

    @property
    def receives(self) -> bool:
        """Whether the browser sends us audio (a microphone), or only listens."""
        return self.audio.direction in ("sendrecv", "sendonly")

    def to_sdp(self, *, ice: IceCredentials, fingerprints: list[tuple[str, str]],
               candidates: list[tuple[str, int]]) -> str:
        accepted = [s.mid for s in (self.audio, self.data) if s is not None and s.mid is not None]
        lines = ["v=0", f"o=- {secrets.randbelow(2**62)} 2 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=ice-lite"]
        if accepted and self.offer.bundle:
            lines.append("a=group:BUNDLE " + " ".join(m for m in self.offer.bundle if m in accepted))
        lines.append("a=msid-semantic: WMS voxgate")
        first = True
        for section in self.offer.sections:
            if section is self.audio:
                lines += self._audio_lines()
            elif section is self.data:
                lines += self._data_lines()
            else:
                lines += _refused(section)
                continue
            lines += [f"a=ice-ufrag:{ice.ufrag}", f"a=ice-pwd:{ice.password}"]
            lines += [f"a=fingerprint:{algorithm} {digest}" for algorithm, digest in fingerprints]
            lines.append("a=setup:" + ("passive" if self.dtls_server else "active"))
            if first:  # bundled: the candidates once, on the first accepted section
                for number, (host, port) in enumerate(candidates, 1):
                    lines.append(f"a=candidate:{number} 1 udp {2130706431 - number} {host} {port} typ host")
                lines.append("a=end-of-candidates")
                first = False
        return "\r\n".join(lines) + "\r\n"

    def _audio_lines(self) -> list[str]:
        section, pt = self.audio, self.payload_type
        direction = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly"}.get(
            section.direction, "inactive")
        rtpmap = {"opus": "opus/48000/2", "pcmu": "PCMU/8000", "pcma": "PCMA/8000"}[self.codec]
        lines = [f"m=audio 9 {section.protocol} {pt}", "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0"]
        if section.mid is not None:
            lines.append(f"a=mid:{section.mid}")
        lines += [f"a={direction}", "a=rtcp-mux", f"a=rtpmap:{pt} {rtpmap}"]
        if self.codec == "opus":
            lines.append(f"a=fmtp:{pt} minptime=10;useinbandfec=1")
        if direction in ("sendrecv", "sendonly"):
            lines += ["a=msid:voxgate agent", f"a=ssrc:{self.ssrc} cname:voxgate",
                      f"a=ssrc:{self.ssrc} msid:voxgate agent"]
        return lines

    def _data_lines(self) -> list[str]:
        section = self.data
        assert section is not None
        lines = [f"m=application 9 {section.protocol} {' '.join(section.formats)}", "c=IN IP4 0.0.0.0"]
        if section.mid is not None:
            lines.append(f"a=mid:{section.mid}")
        if section.protocol.upper().startswith("UDP/DTLS/SCTP") or section.protocol.upper() == "TCP/DTLS/SCTP":
            lines += [f"a=sctp-port:{DEFAULT_SCTP_PORT}", f"a=max-message-size:{MAX_MESSAGE_SIZE}"]
        else:  # the pre-2017 form old clients still offer: m=application 9 DTLS/SCTP 5000
            lines.append(f"a=sctpmap:{DEFAULT_SCTP_PORT} webrtc-datachannel 1024")
        return lines


def plan_answer(offer: Offer) -> AnswerPlan:
    """What the answer will accept; OfferError (a 400 for the caller) when the offer leaves nothing to serve."""
    audio = offer.audio
    payload_type, codec = _codec(audio)
    data = offer.data
    if offer.bundle and audio.mid not in offer.bundle:
        raise OfferError("The offer's audio section is not in its BUNDLE group; the gateway serves one bundled "
                         "transport.")
    if data is not None and offer.bundle and data.mid not in offer.bundle:
        data = None  # a data channel on a transport of its own is not served: the call goes on without it
    ufrag, password = offer.transport_of(audio, "ice-ufrag"), offer.transport_of(audio, "ice-pwd")
    if not ufrag or not password:
        raise OfferError("The SDP offer has no ICE credentials ('a=ice-ufrag' and 'a=ice-pwd').")
    if offer.transport_of(audio, "ice-lite") is not None:
        raise OfferError("The offer is from an ICE-lite agent; the gateway is one too, and two lite agents "
                         "cannot connect. Offer from a full ICE agent (any browser).")
    fingerprints = offer.fingerprints_of(audio)
    if not fingerprints:
        raise OfferError("The SDP offer has no DTLS fingerprint ('a=fingerprint'); WebRTC needs DTLS-SRTP.")
    if not any(parse_fingerprint(algorithm, digest) is not None for algorithm, digest in fingerprints):
        raise OfferError("None of the offer's DTLS fingerprints is usable: give a sha-256 (or sha-1 to sha-512) "
                         "digest as colon-separated hex.")
    setup = (offer.transport_of(audio, "setup") or "actpass").lower()
    if setup not in ("actpass", "active", "passive"):
        raise OfferError(f"The offer's a=setup:{setup} is not one of actpass, active, passive.")
    sctp_port, max_message = DEFAULT_SCTP_PORT, 65536  # RFC 8841: 64 KiB when the attribute is absent
    if data is not None:
        sctp_port = _number(offer.transport_of(data, "sctp-port"), DEFAULT_SCTP_PORT, "sctp-port", 1, 65535)
        max_message = _number(offer.transport_of(data, "max-message-size"), 65536, "max-message-size", 0, 2**31)
        if max_message == 0:  # "any size": bound it by our own
            max_message = MAX_MESSAGE_SIZE
    return AnswerPlan(offer=offer, audio=audio, payload_type=payload_type, codec=codec, data=data,
                      dtls_server=setup != "passive", remote_ice=IceCredentials(ufrag, password),
                      remote_fingerprints=fingerprints, remote_sctp_port=sctp_port,
                      remote_max_message_size=min(max_message, MAX_MESSAGE_SIZE), ssrc=secrets.randbits(32))


def _codec(section: MediaSection) -> tuple[int, str]:
    offered: dict[str, int] = {}
    for pt in section.formats:
        name = section.codecs.get(pt)
        if name in CODECS and pt.isdigit() and int(pt) < 128 and name not in offered:
            offered[name] = int(pt)
    for name in CODECS:
        if name in offered:
            return offered[name], name
    raise OfferError("None of the offered audio codecs is supported; offer one of: opus, PCMU, PCMA.")


def _number(value: str | None, default: int, name: str, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value.split()[0])
    except (ValueError, IndexError):
        raise OfferError(f"The offer's a={name}:{value[:20]} is not a number.") from None
    if not low <= number <= high:
        raise OfferError(f"The offer's a={name}:{number} is out of range.")
    return number


def _refused(section: MediaSection) -> list[str]:
    formats = " ".join(section.formats) or "0"
    lines = [f"m={section.kind} 0 {section.protocol} {formats}", "c=IN IP4 0.0.0.0"]
    if section.mid is not None:
        lines.append(f"a=mid:{section.mid}")
    return [*lines, "a=inactive"]
