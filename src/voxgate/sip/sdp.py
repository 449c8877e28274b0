"""SDP (RFC 8866) and the offer/answer model (RFC 3264) for one audio stream: PCMU, PCMA, Opus when
offered and preferred, telephone-event (RFC 4733), comfort noise (RFC 3389), SDES-SRTP (RFC 4568), hold.

    offer = parse_sdp(invite.body)                       # SessionDescription; raises SdpError
    answer, media = answer_offer(offer, address="192.0.2.10", port=40000, session_id=7, session_version=1)
    answer.to_bytes()                                    # the 200 OK body
    media.codec, media.telephone_event, media.remote     # what to send, where; media.on_hold when held

    offer = make_offer(address=..., port=..., session_id=..., session_version=...)   # we call out
    media = accept_answer(offer, parse_sdp(response.body))

Answer rules (RFC 3264 §6): as many m= lines as the offer, in order; a refused stream gets port 0; the
codec is our first preference the offer lists, with the offerer's payload numbers; the direction is the
complement of the offer's (their `sendonly` is our `recvonly`). An offer with no usable audio stream
raises OfferRejected (answer 488). Sizes are bounded; bad syntax raises SdpError (answer 400 or 488).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

from voxgate.sip.errors import SipError
from voxgate.sip.sdes import CryptoAttribute, SdesError, SrtpKeys, answer_crypto, new_key, parse_crypto

__all__ = [
    "Codec",
    "CodecPreferences",
    "Connection",
    "Direction",
    "MediaDescription",
    "MediaSession",
    "OfferRejected",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "SrtpPolicy",
    "accept_answer",
    "answer_offer",
    "make_offer",
    "parse_sdp",
]

MAX_SDP_BYTES = 16_384
MAX_LINES = 512
MAX_MEDIA = 16
MAX_FORMATS = 64

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
SrtpPolicy = Literal["never", "optional", "required"]
_DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")
_COMPLEMENT: dict[Direction, Direction] = {"sendrecv": "sendrecv", "sendonly": "recvonly",
                                           "recvonly": "sendonly", "inactive": "inactive"}
_LINE = re.compile(r"([a-z])=(.*)")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_RTPMAP = re.compile(r"([0-9]{1,3}) ([^/\s]+)/([0-9]{1,6})(?:/([0-9]{1,2}))?")


class SdpError(SipError):
    """A session description that does not follow the grammar or exceeds a bound."""

    default_code = "bad_sdp"


class OfferRejected(SdpError):
    """No stream of the offer can be accepted: answer 488 Not Acceptable Here."""


@dataclass(frozen=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{suffix}"


# RFC 3551 static payload types a peer may use without an rtpmap line
STATIC_PAYLOADS = {0: RtpMap(0, "PCMU", 8000), 3: RtpMap(3, "GSM", 8000), 8: RtpMap(8, "PCMA", 8000),
                   9: RtpMap(9, "G722", 8000), 13: RtpMap(13, "CN", 8000), 18: RtpMap(18, "G729", 8000)}


@dataclass(frozen=True)
class Origin:
    username: str
    session_id: str
    session_version: int
    address: str
    address_type: str = "IP4"

    def __str__(self) -> str:
        return f"{self.username} {self.session_id} {self.session_version} IN {self.address_type} {self.address}"


@dataclass(frozen=True)
class Connection:
    address: str
    address_type: str = "IP4"

    @property
    def held(self) -> bool:
        """RFC 2543-style hold: c=0.0.0.0."""
        return self.address == "0.0.0.0"

    def __str__(self) -> str:
        return f"IN {self.address_type} {self.address}"


def _attribute_value(attributes: list[tuple[str, str | None]], name: str) -> str | None:
    """The first `a=name[:value]`'s value ("" for a flag such as `a=rtcp-mux`), None when absent."""
    for key, value in attributes:
        if key == name:
            return value if value is not None else ""
    return None


@dataclass
class MediaDescription:
    media: str
    port: int
    protocol: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    bandwidths: list[str] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        return _attribute_value(self.attributes, name)

    def attribute_values(self, name: str) -> list[str]:
        return [value or "" for key, value in self.attributes if key == name]

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        prefix = f"{payload_type} "
        for value in self.attribute_values("rtpmap"):
            if value.startswith(prefix):
                match = _RTPMAP.fullmatch(value.strip())
                if match:
                    return RtpMap(int(match.group(1)), match.group(2), int(match.group(3)),
                                  int(match.group(4) or 1))
        return STATIC_PAYLOADS.get(payload_type)

    def fmtp(self, payload_type: int) -> str | None:
        prefix = f"{payload_type} "
        for value in self.attribute_values("fmtp"):
            if value.startswith(prefix):
                return value[len(prefix):].strip()
        return None

    @property
    def direction(self) -> Direction | None:
        for key, _ in self.attributes:
            if key in _DIRECTIONS:
                return key  # type: ignore[return-value]
        return None

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        return int(value) if value and value.isdigit() and 0 < int(value) <= 1000 else None

    @property
    def crypto(self) -> list[CryptoAttribute]:
        return [parse_crypto(value) for value in self.attribute_values("crypto")]

    @property
    def rtcp_port(self) -> int:
        """RFC 3605 `a=rtcp:`; otherwise the port after RTP's; RFC 5761 `a=rtcp-mux` means the same port."""
        if self.attribute("rtcp-mux") is not None:
            return self.port
        value = (self.attribute("rtcp") or "").split(" ", 1)[0]
        if value.isdigit() and 0 < int(value) < 65536:
            return int(value)
        return self.port + 1

    def lines(self) -> list[str]:
        ports = f"{self.port}/{self.port_count}" if self.port_count else str(self.port)
        out = [f"m={self.media} {ports} {self.protocol} {' '.join(self.formats)}"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b}" for b in self.bandwidths]
        out += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        return out


@dataclass
class SessionDescription:
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    timing: str = "0 0"
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    bandwidths: list[str] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        return _attribute_value(self.attributes, name)

    def connection_for(self, media: MediaDescription) -> Connection | None:
        return media.connection or self.connection

    def direction_of(self, media: MediaDescription) -> Direction:
        """A stream's direction: its own attribute, else the session's, else sendrecv (RFC 3264 §5.1)."""
        if media.direction is not None:
            return media.direction
        for key, _ in self.attributes:
            if key in _DIRECTIONS:
                return key  # type: ignore[return-value]
        return "sendrecv"

    def to_bytes(self) -> bytes:
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"b={b}" for b in self.bandwidths]
        lines.append(f"t={self.timing}")
        lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        for media in self.media:
            lines += media.lines()
        return ("\r\n".join(lines) + "\r\n").encode()


# --- parsing -------------------------------------------------------------------------------------------------


def _connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"malformed c= line {value[:60]!r}", "bad_connection")
    address = parts[2].split("/", 1)[0]  # a multicast TTL suffix is not ours to use
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.\-]{1,253}", address):  # a host name is allowed, if unusual
            raise SdpError(f"malformed connection address {address[:60]!r}", "bad_connection") from None
    return Connection(address, parts[1])


def _origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6 or parts[3] != "IN" or not parts[1].isdigit() or not parts[2].isdigit():
        raise SdpError(f"malformed o= line {value[:60]!r}", "bad_origin")
    if len(parts[2]) > 20:
        raise SdpError("o= session version out of range", "bad_origin")
    return Origin(parts[0], parts[1], int(parts[2]), parts[5], parts[4])


def _media(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"malformed m= line {value[:60]!r}", "bad_media")
    media, ports, protocol, formats = parts[0], parts[1], parts[2], parts[3:]
    if not _TOKEN.fullmatch(media) or not re.fullmatch(r"[A-Za-z0-9/_.\-]+", protocol):
        raise SdpError(f"malformed m= line {value[:60]!r}", "bad_media")
    port_text, _, count_text = ports.partition("/")
    if not port_text.isdigit() or int(port_text) > 65535 or (count_text and not count_text.isdigit()):
        raise SdpError(f"malformed m= port {ports[:20]!r}", "bad_media")
    if len(formats) > MAX_FORMATS or not all(_TOKEN.fullmatch(f) for f in formats):
        raise SdpError("too many or malformed formats", "bad_media")
    if protocol.upper().startswith("RTP/") or protocol.upper().startswith("UDP/TLS/RTP/"):
        if not all(f.isdigit() and int(f) < 128 for f in formats):
            raise SdpError("RTP formats must be payload types 0-127", "bad_media")
    return MediaDescription(media, int(port_text), protocol, formats, int(count_text) if count_text else None)


def _attribute(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    if not _TOKEN.fullmatch(name):
        raise SdpError(f"malformed attribute {value[:40]!r}", "bad_attribute")
    return name, rest if colon else None


def parse_sdp(data: bytes | str) -> SessionDescription:
    """A session description; raises SdpError. Line order is read leniently, field syntax strictly."""
    if len(data) > MAX_SDP_BYTES:
        raise SdpError("session description too large", "too_large")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise SdpError("session description is not UTF-8", "not_utf8") from exc
    lines = [line for line in re.split(r"\r?\n", text) if line]
    if len(lines) > MAX_LINES:
        raise SdpError("too many lines", "too_large")
    if not lines or lines[0].strip() != "v=0":
        raise SdpError("a session description starts with v=0", "bad_version")
    origin: Origin | None = None
    session = SessionDescription(Origin("-", "0", 0, "0.0.0.0"))
    current: MediaDescription | None = None
    for line in lines[1:]:
        match = _LINE.fullmatch(line.rstrip(" "))
        if match is None:
            raise SdpError(f"malformed line {line[:40]!r}", "bad_line")
        kind, value = match.groups()
        if kind == "m":
            if len(session.media) >= MAX_MEDIA:
                raise SdpError("too many media descriptions", "too_large")
            current = _media(value)
            session.media.append(current)
        elif kind == "a":
            (current.attributes if current else session.attributes).append(_attribute(value))
        elif kind == "c":
            if current is None:
                session.connection = _connection(value)
            else:
                current.connection = _connection(value)
        elif kind == "b":
            (current.bandwidths if current else session.bandwidths).append(value)
        elif kind == "o" and current is None:
            if origin is not None:
                raise SdpError("more than one o= line", "bad_origin")
            origin = _origin(value)
        elif kind == "s" and current is None:
            session.session_name = value
        elif kind == "t" and current is None:
            session.timing = value
        elif kind == "v":
            raise SdpError("more than one v= line", "bad_version")
        # i, u, e, p, z, k, r: informational, not needed for audio
    if origin is None:
        raise SdpError("missing o= line", "bad_origin")
    for media in session.media:
        try:
            media.crypto  # noqa: B018 - checked here so the accessor cannot fail later
        except SdesError as exc:
            raise SdpError(str(exc), exc.code) from exc
    session.origin = origin
    return session


# --- offer / answer -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    """The negotiated audio codec, with the payload type the offerer numbered it."""

    name: str  # upper case: PCMU, PCMA, OPUS
    payload_type: int
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def samples_per_20ms(self) -> int:
        return self.clock_rate // 50


@dataclass(frozen=True)
class CodecPreferences:
    """Which audio codecs we take, best first (encoding names; add "opus" to accept Opus), whether we
    negotiate RFC 4733 telephone-event and RFC 3389 comfort noise (G.711 lines: the agent's silence goes as an
    occasional CN packet instead of a packet every 20 ms), our packet time, and SRTP: `never`, `optional`
    (when offered) or `required` (refuse plain RTP)."""

    order: tuple[str, ...] = ("PCMU", "PCMA")
    telephone_event: bool = True
    comfort_noise: bool = True
    ptime: int = 20
    srtp: SrtpPolicy = "optional"


_CLOCKS = {"PCMU": (8000, 1), "PCMA": (8000, 1), "OPUS": (48000, 2), "G722": (8000, 1)}
_OPUS_FMTP = "minptime=10;useinbandfec=1"


@dataclass(frozen=True)
class MediaSession:
    """What an offer/answer settled for the audio stream, from our side."""

    codec: Codec
    remote_address: str
    remote_port: int
    remote_rtcp_port: int
    direction: Direction  # ours: sendrecv, or recvonly while the peer holds us
    remote_direction: Direction
    ptime: int  # what the peer asked to receive (default 20 ms)
    telephone_event: int | None = None  # its payload type, when negotiated
    srtp: SrtpKeys | None = None
    rtcp_mux: bool = False  # RFC 5761: RTCP shares the RTP port (the offer asked, the answer agreed)
    comfort_noise: int | None = None  # RFC 3389 CN's payload type, when both sides listed it

    @property
    def remote(self) -> tuple[str, int]:
        return self.remote_address, self.remote_port

    @property
    def on_hold(self) -> bool:
        """The peer put us on hold: it sends nothing (sendonly/inactive), or the old c=0.0.0.0 form."""
        return self.remote_direction in ("sendonly", "inactive") or self.remote_address == "0.0.0.0"

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")


def _as_codec(rtpmap: RtpMap, names: set[str]) -> Codec | None:
    """`rtpmap` as a codec we take (its name among `names`, at the clock rate that name implies)."""
    name = rtpmap.encoding.upper()
    if name not in names:
        return None
    clock = _CLOCKS.get(name)
    if clock is not None and (rtpmap.clock_rate, rtpmap.channels if name == "OPUS" else 1) != clock:
        return None
    return Codec(name, rtpmap.payload_type, rtpmap.clock_rate, rtpmap.channels,
                 _OPUS_FMTP if name == "OPUS" else None)


def _rtpmaps(media: MediaDescription) -> list[RtpMap]:
    return [rtpmap for fmt in media.formats if (rtpmap := media.rtpmap(int(fmt))) is not None]


def _pick_codec(media: MediaDescription, preferences: CodecPreferences) -> Codec | None:
    """As answerer: our first preference that the offer lists."""
    offered = _rtpmaps(media)
    for name in preferences.order:
        for rtpmap in offered:
            codec = _as_codec(rtpmap, {name.upper()})
            if codec is not None:
                return codec
    return None


def _pick_telephone_event(media: MediaDescription, clock_rate: int) -> int | None:
    for fmt in media.formats:
        rtpmap = media.rtpmap(int(fmt))
        if rtpmap and rtpmap.encoding.lower() == "telephone-event" and rtpmap.clock_rate == clock_rate:
            return rtpmap.payload_type
    return None


def _pick_comfort_noise(media: MediaDescription, codec: Codec, event: int | None) -> int | None:
    """CN at the codec's clock rate, where `media` lists it; never beside Opus, which has its own DTX, and
    not when its number is also the codec's or telephone-event's (one number mapped twice: a broken SDP)."""
    if codec.name == "OPUS":
        return None
    for fmt in media.formats:
        rtpmap = media.rtpmap(int(fmt))
        if rtpmap and rtpmap.encoding.upper() == "CN" and rtpmap.clock_rate == codec.clock_rate:
            return None if rtpmap.payload_type in (event, codec.payload_type) else rtpmap.payload_type
    return None


def _audio_lines(codec: Codec, event: int | None, preferences: CodecPreferences,
                 direction: Direction, comfort_noise: int | None = None) -> list[tuple[str, str | None]]:
    attributes: list[tuple[str, str | None]] = [
        ("rtpmap", str(RtpMap(codec.payload_type, "opus" if codec.name == "OPUS" else codec.name,
                              codec.clock_rate, codec.channels)))]
    if codec.fmtp:
        attributes.append(("fmtp", f"{codec.payload_type} {codec.fmtp}"))
    if event is not None:
        attributes += [("rtpmap", f"{event} telephone-event/{codec.clock_rate}"), ("fmtp", f"{event} 0-16")]
    if comfort_noise is not None:
        attributes.append(("rtpmap", f"{comfort_noise} CN/{codec.clock_rate}"))
    attributes += [("ptime", str(preferences.ptime)), (direction, None)]
    return attributes


def _secure(protocol: str) -> bool | None:
    """True for SRTP with SDES, False for plain RTP, None for a profile we do not speak (DTLS, AVPF)."""
    upper = protocol.upper()
    return {"RTP/AVP": False, "RTP/SAVP": True}.get(upper)


def answer_offer(offer: SessionDescription, *, address: str, port: int, session_id: int, session_version: int,
                 preferences: CodecPreferences | None = None, direction: Direction = "sendrecv",
                 local_key: bytes | None = None) -> tuple[SessionDescription, MediaSession]:
    """Our answer to `offer` and what it settles. The first acceptable audio stream is used; every other
    stream is refused with port 0. Raises OfferRejected when no stream is acceptable."""
    prefs = preferences or CodecPreferences()
    address_type = "IP6" if ":" in address else "IP4"
    answer = SessionDescription(Origin("-", str(session_id), session_version, address, address_type),
                                connection=Connection(address, address_type))
    settled: MediaSession | None = None
    for media in offer.media:
        refused = MediaDescription(media.media, 0, media.protocol, media.formats[:1])
        secure = _secure(media.protocol)
        connection = offer.connection_for(media)
        codec = _pick_codec(media, prefs) if media.media == "audio" and secure is not None else None
        if (settled is not None or codec is None or connection is None or media.port == 0
                or (secure and prefs.srtp == "never") or (not secure and prefs.srtp == "required")):
            answer.media.append(refused)
            continue
        keys = None
        crypto_line = None
        if secure:
            try:
                offered_crypto = media.crypto
            except SdesError:
                offered_crypto = []
            key = local_key or new_key()
            crypto_line = answer_crypto(offered_crypto, key)
            if crypto_line is None:
                answer.media.append(refused)
                continue
            remote = next(c for c in offered_crypto if c.tag == crypto_line.tag)
            keys = SrtpKeys(crypto_line.suite, key, remote.key)
        remote_direction = offer.direction_of(media)
        ours = _intersect(_COMPLEMENT[remote_direction], direction)
        event = _pick_telephone_event(media, codec.clock_rate) if prefs.telephone_event else None
        comfort_noise = _pick_comfort_noise(media, codec, event) if prefs.comfort_noise else None
        attributes = _audio_lines(codec, event, prefs, ours, comfort_noise)
        if crypto_line is not None:
            attributes.append(("crypto", str(crypto_line)))
        mux = media.attribute("rtcp-mux") is not None
        if mux:
            attributes.append(("rtcp-mux", None))
        formats = [str(pt) for pt in (codec.payload_type, event, comfort_noise) if pt is not None]
        answer.media.append(MediaDescription("audio", port, media.protocol, formats, attributes=attributes))
        settled = MediaSession(codec, connection.address, media.port, media.rtcp_port, ours, remote_direction,
                               media.ptime or 20, event, keys, mux, comfort_noise)
    if settled is None:
        raise OfferRejected("no acceptable audio stream in the offer", "no_common_codec")
    return answer, settled


def _intersect(allowed: Direction, wanted: Direction) -> Direction:
    sends = allowed in ("sendrecv", "sendonly") and wanted in ("sendrecv", "sendonly")
    receives = allowed in ("sendrecv", "recvonly") and wanted in ("sendrecv", "recvonly")
    return "sendrecv" if sends and receives else "sendonly" if sends else "recvonly" if receives else "inactive"


def make_offer(*, address: str, port: int, session_id: int, session_version: int,
               preferences: CodecPreferences | None = None, direction: Direction = "sendrecv",
               local_key: bytes | None = None) -> SessionDescription:
    """Our offer: every codec we accept, in preference order (static or conventional dynamic numbers),
    telephone-event at each clock rate used, SDES crypto when SRTP is required."""
    prefs = preferences or CodecPreferences()
    address_type = "IP6" if ":" in address else "IP4"
    formats: list[str] = []
    attributes: list[tuple[str, str | None]] = []
    clocks: list[int] = []
    for name in prefs.order:
        upper = name.upper()
        if upper == "PCMU":
            formats.append("0")
            attributes.append(("rtpmap", "0 PCMU/8000"))
        elif upper == "PCMA":
            formats.append("8")
            attributes.append(("rtpmap", "8 PCMA/8000"))
        elif upper == "OPUS":
            formats.append("111")
            attributes += [("rtpmap", "111 opus/48000/2"), ("fmtp", f"111 {_OPUS_FMTP}")]
        else:
            continue
        clock = _CLOCKS[upper][0]
        if clock not in clocks:
            clocks.append(clock)
    if prefs.telephone_event:
        for index, clock in enumerate(clocks):
            event = 101 + index
            formats.append(str(event))
            attributes += [("rtpmap", f"{event} telephone-event/{clock}"), ("fmtp", f"{event} 0-16")]
    if prefs.comfort_noise and 8000 in clocks:  # static payload type 13: CN/8000, for the G.711 codecs
        formats.append("13")
        attributes.append(("rtpmap", "13 CN/8000"))
    attributes += [("ptime", str(prefs.ptime)), (direction, None)]
    protocol = "RTP/AVP"
    if prefs.srtp == "required":
        protocol = "RTP/SAVP"
        attributes.append(("crypto", str(CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80", local_key or new_key()))))
    return SessionDescription(Origin("-", str(session_id), session_version, address, address_type),
                              connection=Connection(address, address_type),
                              media=[MediaDescription("audio", port, protocol, formats, attributes=attributes)])


def accept_answer(offer: SessionDescription, answer: SessionDescription,
                  preferences: CodecPreferences | None = None) -> MediaSession:
    """What the peer's answer to our offer settles. Raises OfferRejected when it refused the audio."""
    prefs = preferences or CodecPreferences()
    if len(answer.media) != len(offer.media):
        raise SdpError("the answer's m= lines do not match the offer's", "answer_mismatch")
    for ours, theirs in zip(offer.media, answer.media, strict=True):
        if ours.media != "audio" or theirs.port == 0:
            continue
        connection = answer.connection_for(theirs)
        names = {name.upper() for name in prefs.order}  # as offerer: the answer's first codec we offered
        codec = next((c for r in _rtpmaps(theirs) if (c := _as_codec(r, names)) is not None), None)
        if codec is None or connection is None:
            raise OfferRejected("the answer names no codec we offered", "no_common_codec")
        keys = None
        if _secure(theirs.protocol):
            offered = {c.tag: c for c in ours.crypto}
            chosen = next((c for c in theirs.crypto if c.tag in offered and c.supported), None)
            if chosen is None:
                raise OfferRejected("the answer's crypto matches none we offered", "bad_crypto")
            keys = SrtpKeys(chosen.suite, offered[chosen.tag].key, chosen.key)
        remote_direction = answer.direction_of(theirs)
        ours_direction = _intersect(_COMPLEMENT[remote_direction], offer.direction_of(ours))
        event = _pick_telephone_event(theirs, codec.clock_rate) if prefs.telephone_event else None
        mux = ours.attribute("rtcp-mux") is not None and theirs.attribute("rtcp-mux") is not None
        # CN only where we offered it too (an answer may not add a format the offer lacked)
        comfort_noise = (_pick_comfort_noise(theirs, codec, event)
                         if prefs.comfort_noise and _pick_comfort_noise(ours, codec, None) is not None else None)
        return MediaSession(codec, connection.address, theirs.port, theirs.rtcp_port, ours_direction,
                            remote_direction, theirs.ptime or 20, event, keys, mux, comfort_noise)
    raise OfferRejected("the answer refused every audio stream", "no_common_codec")
