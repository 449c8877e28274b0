"""What a browser's SDP offer asks for, read and checked before anything is bound (sans-IO).

The caller gets a 400 that says what is wrong (not SDP at all, no audio section, only codecs the gateway
does not speak, no DTLS fingerprint or ICE credentials), and `webrtc/answer.py` plans the answer from
what is read here: the sections with their mids, codecs and directions, the transport attributes
(ICE credentials, DTLS fingerprints and role, SCTP port), session-level or per section, and the BUNDLE
group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Bounds an offer must keep: it is read on the event loop, so a 64 KB offer of 700 media sections or 1000
# candidates must not stall every call. A browser's audio, video and data offer is about 150 lines and
# 10 KB, with a few candidates.
MAX_OFFER_BYTES = 32 * 1024
MAX_OFFER_LINES = 300
MAX_MEDIA_SECTIONS = 8
MAX_CANDIDATES = 32
# Codecs the media path codes for audio, as rtpmap names them (lower case).
SUPPORTED_AUDIO = ("opus", "pcmu", "pcma")
_STATIC_PAYLOADS = {"0": "pcmu", "8": "pcma", "9": "g722", "18": "g729", "3": "gsm", "4": "g723"}


class OfferError(ValueError):
    """The offer cannot be answered; the message is fit to show the caller."""


@dataclass
class MediaSection:
    kind: str  # "audio" | "video" | "application" | ...
    port: int
    protocol: str
    formats: list[str]
    codecs: dict[str, str] = field(default_factory=dict)  # payload type -> codec name, lower case
    direction: str = "sendrecv"
    bundle_only: bool = False
    mid: str | None = None
    fmtp: dict[str, str] = field(default_factory=dict)  # payload type -> format parameters
    transport: dict[str, str] = field(default_factory=dict)  # ice-ufrag, ice-pwd, setup, sctp-port, ...
    fingerprints: list[tuple[str, str]] = field(default_factory=list)  # (hash function, hex digest)
    candidates: list[str] = field(default_factory=list)  # a=candidate values, as offered

    @property
    def enabled(self) -> bool:
        return self.port != 0 or self.bundle_only


@dataclass
class Offer:
    sections: list[MediaSection]
    session: MediaSection = field(default_factory=lambda: MediaSection("session", 0, "", []))  # session-level lines
    bundle: list[str] = field(default_factory=list)  # the mids of the offer's BUNDLE group

    def transport_of(self, section: MediaSection, name: str) -> str | None:
        """A transport attribute (ice-ufrag, ice-pwd, setup, ...) of a section, or the session's."""
        return section.transport.get(name, self.session.transport.get(name))

    def fingerprints_of(self, section: MediaSection) -> list[tuple[str, str]]:
        return section.fingerprints or self.session.fingerprints

    @property
    def data(self) -> MediaSection | None:
        """The data channel's section (SCTP over DTLS), if the offer has one."""
        return next((s for s in self.sections if s.kind == "application" and s.enabled and "SCTP" in s.protocol),
                    None)

    @property
    def audio(self) -> MediaSection:
        return next(s for s in self.sections if s.kind == "audio" and s.enabled)

    @property
    def audio_codecs(self) -> list[str]:
        """The offered audio codecs the gateway can use, in the offer's order of preference."""
        section = self.audio
        names = [section.codecs.get(pt, "") for pt in section.formats]
        return [n for n in dict.fromkeys(names) if n in SUPPORTED_AUDIO]

    @property
    def has_data_channel(self) -> bool:
        return any(s.kind == "application" and s.enabled for s in self.sections)


def read_offer(sdp: str) -> Offer:
    """Parse and check an SDP offer; raises OfferError with a message for the caller."""
    if len(sdp.encode("utf-8", "replace")) > MAX_OFFER_BYTES:
        raise OfferError(f"The SDP offer is larger than {MAX_OFFER_BYTES} bytes.")
    lines = [line.strip() for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise OfferError("The body is not an SDP offer (it must start with 'v=0').")
    if len(lines) > MAX_OFFER_LINES:
        raise OfferError(f"The SDP offer has {len(lines)} lines; at most {MAX_OFFER_LINES} are accepted.")
    media = sum(line.startswith("m=") for line in lines)
    if media > MAX_MEDIA_SECTIONS:
        raise OfferError(f"The SDP offer has {media} media sections; at most {MAX_MEDIA_SECTIONS} are accepted.")
    candidates = sum(line.startswith("a=candidate:") for line in lines)
    if candidates > MAX_CANDIDATES:
        raise OfferError(f"The SDP offer has {candidates} ICE candidates; at most {MAX_CANDIDATES} are accepted.")
    for number, line in enumerate(lines, 1):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise OfferError(f"SDP line {number} is not of the form '<letter>=<value>': {line[:40]!r}.")
    if not any(line.startswith("o=") for line in lines):
        raise OfferError("The SDP offer has no origin ('o=') line.")
    # WebRTC media is always DTLS-SRTP over ICE: without these the call could never connect.
    if not any(line.startswith("a=fingerprint:") for line in lines):
        raise OfferError("The SDP offer has no DTLS fingerprint ('a=fingerprint'); WebRTC needs DTLS-SRTP.")
    if not any(line.startswith("a=ice-ufrag:") for line in lines) or \
            not any(line.startswith("a=ice-pwd:") for line in lines):
        raise OfferError("The SDP offer has no ICE credentials ('a=ice-ufrag' and 'a=ice-pwd').")
    sections: list[MediaSection] = []
    session = MediaSection("session", 0, "", [])
    bundle: list[str] = []
    for line in lines:
        if line.startswith("m="):
            sections.append(_media_line(line))
        elif line.startswith("a=group:BUNDLE"):
            bundle = line.split()[1:]
        elif line.startswith("a="):
            _attribute(sections[-1] if sections else session, line[2:])
    audio = [s for s in sections if s.kind == "audio" and s.enabled]
    if not audio:
        raise OfferError("The SDP offer has no audio section; a realtime call needs a microphone or a "
                         "recvonly audio transceiver.")
    offer = Offer(sections, session, bundle)
    if not offer.audio_codecs:
        offered = sorted({offer.audio.codecs.get(pt, pt) for pt in offer.audio.formats})
        raise OfferError(f"None of the offered audio codecs ({', '.join(offered)}) is supported; "
                         f"offer one of: opus, PCMU, PCMA.")
    return offer


def _media_line(line: str) -> MediaSection:
    parts = line[2:].split()
    if len(parts) < 4:
        raise OfferError(f"Malformed media line: {line[:60]!r}.")
    kind, port, protocol, *formats = parts
    try:
        port_number = int(port.split("/")[0])
    except ValueError:
        raise OfferError(f"Malformed port in media line: {line[:60]!r}.") from None
    if not 0 <= port_number <= 65535:
        raise OfferError(f"Port out of range in media line: {line[:60]!r}.")
    section = MediaSection(kind=kind, port=port_number, protocol=protocol, formats=formats)
    for pt in formats:
        if pt in _STATIC_PAYLOADS:
            section.codecs[pt] = _STATIC_PAYLOADS[pt]
    return section


def _attribute(section: MediaSection, attribute: str) -> None:
    name, _, value = attribute.partition(":")
    if name == "rtpmap":
        pt, _, encoding = value.partition(" ")
        codec = encoding.split("/")[0].strip().lower()
        if pt and codec:
            section.codecs[pt] = codec
    elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
        section.direction = name
    elif name == "bundle-only":
        section.bundle_only = True
    elif name == "mid":
        section.mid = value.strip()
    elif name == "fmtp":
        pt, _, parameters = value.partition(" ")
        section.fmtp[pt] = parameters.strip()
    elif name in ("ice-ufrag", "ice-pwd", "setup", "sctp-port", "max-message-size", "ice-options"):
        section.transport[name] = value.strip()
    elif name == "ice-lite":
        section.transport[name] = "1"
    elif name == "fingerprint":
        algorithm, _, digest = value.strip().partition(" ")
        section.fingerprints.append((algorithm.lower(), digest.strip()))
    elif name == "sctpmap":  # the pre-2017 form: a=sctpmap:5000 webrtc-datachannel 1024
        section.transport.setdefault("sctp-port", value.split()[0] if value.split() else "")
    elif name == "candidate":
        section.candidates.append(value)
