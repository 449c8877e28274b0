"""WebRTC data channels (RFC 8831) over an `SctpAssociation`, opened with DCEP (RFC 8832): sans-IO too.

    channels = DataChannels(association, dtls_client=False)
    channels.receive(packet, now)                      # instead of association.receive: events become ours
    while (event := channels.next_event()) is not None:
        match event:
            case ChannelOpened(channel): ...           # the browser opened `oai-events`, say
            case ChannelMessage(channel, data): ...    # str or bytes
            case ChannelClosed(channel): ...
    channels.send(channel, '{"type": "session.update"}', now)
    for packet in association.datagrams_to_send(now):  # as always, after every call
        dtls.send(packet)

The association's events are read here (`pump`, which `next_event` and `receive` call): a shell that uses
DataChannels reads events from it, never from the association. A channel is one SCTP stream in each
direction with the same id; the DTLS client opens even ids, the server odd ones. DATA_CHANNEL_OPEN and
DATA_CHANNEL_ACK (PPID 50) go reliable and ordered; the opener sends its messages ordered until the ACK
comes (§6), since an unordered one could overtake the OPEN. A message on a channel we opened before its ACK
arrived counts as the ACK (the peer had the OPEN, or it could not have told the stream from another).

Closing (RFC 8831 §6.7) resets our outgoing stream; the peer answers by resetting its own, and the channel
is closed, its stream id free again, once both are done. When the peer starts it, we answer in kind.

Partial reliability: a channel's limit (retransmits, or lifetime in ms) applies to what we send, through
the association's abandon-and-FORWARD-TSN. Strings are PPID 51, binary 53, the empty ones 56 and 57 with a
single zero byte (SCTP carries no empty message); the deprecated partial PPIDs 52 and 54 are put together
up to the association's max_message_size. A malformed OPEN, an OPEN on a stream in use, a message on a
stream with no channel, invalid UTF-8: counted in `stats`, dropped.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from voxgate.webrtc.sctp import (
    Closed,
    Established,
    MessageReceived,
    OutgoingStreamsReset,
    SctpAssociation,
    StreamsReset,
)

__all__ = [
    "AssociationClosed",
    "AssociationEstablished",
    "Channel",
    "ChannelClosed",
    "ChannelEvent",
    "ChannelMessage",
    "ChannelOpened",
    "DataChannelStats",
    "DataChannels",
]

PPID_DCEP = 50
PPID_STRING = 51
PPID_STRING_PARTIAL = 52  # deprecated (RFC 8831 §8): a fragment, the message ends with a 51
PPID_BINARY = 53
PPID_BINARY_PARTIAL = 54
PPID_STRING_EMPTY = 56
PPID_BINARY_EMPTY = 57

_DATA_CHANNEL_ACK = 0x02
_DATA_CHANNEL_OPEN = 0x03
_OPEN_HEADER = struct.Struct("!BBHIHH")  # type, channel type, priority, reliability parameter, lengths

_UNORDERED = 0x80
_RELIABLE = 0x00
_PARTIAL_RELIABLE_REXMIT = 0x01
_PARTIAL_RELIABLE_TIMED = 0x02
_CHANNEL_TYPES = frozenset({_RELIABLE, _PARTIAL_RELIABLE_REXMIT, _PARTIAL_RELIABLE_TIMED}
                           | {kind | _UNORDERED for kind in (_RELIABLE, _PARTIAL_RELIABLE_REXMIT,
                                                             _PARTIAL_RELIABLE_TIMED)})
_MAX_STREAM_ID = 65534  # 65535 is reserved (RFC 8832 §6)

ChannelState = Literal["connecting", "open", "closing", "closed"]


@dataclass(eq=False)
class Channel:
    stream_id: int
    label: str
    protocol: str = ""
    ordered: bool = True
    max_retransmits: int | None = None
    max_packet_lifetime: int | None = None  # milliseconds
    priority: int = 0
    state: ChannelState = "connecting"
    _acked: bool = field(default=False, repr=False)  # the peer has our OPEN: unordered sends are safe
    _local_reset: Literal["", "requested", "done"] = field(default="", repr=False)
    _remote_reset: bool = field(default=False, repr=False)

    def __repr__(self) -> str:
        return f"<Channel {self.stream_id} {self.label!r} {self.state}>"


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """The peer opened a channel (our DATA_CHANNEL_ACK is on its way), or a channel we opened was acked."""

    channel: Channel


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    channel: Channel
    data: str | bytes


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    channel: Channel


@dataclass(frozen=True, slots=True)
class AssociationEstablished:
    pass


@dataclass(frozen=True, slots=True)
class AssociationClosed:
    reason: str


ChannelEvent = ChannelOpened | ChannelMessage | ChannelClosed | AssociationEstablished | AssociationClosed


@dataclass
class DataChannelStats:
    malformed: int = 0  # DCEP messages we could not read
    opens_ignored: int = 0  # an OPEN on a stream in use, or one we cannot answer on
    no_channel: int = 0  # messages on a stream with no channel
    unknown_ppid: int = 0
    bad_utf8: int = 0
    oversized: int = 0  # partial (PPID 52/54) messages put together past max_message_size: dropped


class DataChannels:
    def __init__(self, association: SctpAssociation, *, dtls_client: bool) -> None:
        self.association = association
        self.dtls_client = dtls_client
        self.stats = DataChannelStats()
        self._channels: dict[int, Channel] = {}
        self._events: deque[ChannelEvent] = deque()
        self._next_id = 0 if dtls_client else 1
        self._partial: dict[int, list[bytes]] = {}  # stream → PPID 52/54 fragments so far
        self._partial_size: dict[int, int] = {}
        self._oversized: set[int] = set()  # streams discarding the rest of an oversized partial message
        self._now = 0.0  # the latest `now` we were given: DATA_CHANNEL_ACKs sent from next_event() need one

    def __repr__(self) -> str:
        return f"<DataChannels {len(self._channels)} channels>"

    @property
    def channels(self) -> list[Channel]:
        return list(self._channels.values())

    def receive(self, packet: bytes, now: float) -> None:
        self.association.receive(packet, now)
        self.pump(now)

    def handle_timer(self, now: float) -> None:
        self.association.handle_timer(now)
        self.pump(now)

    def next_event(self) -> ChannelEvent | None:
        self.pump(self._now)
        return self._events.popleft() if self._events else None

    def open(self, label: str, now: float, *, protocol: str = "", ordered: bool = True,
             max_retransmits: int | None = None, max_packet_lifetime: int | None = None,
             priority: int = 0) -> Channel:
        """Open a channel (send DATA_CHANNEL_OPEN); ChannelOpened comes with the peer's ACK, but messages
        may be sent at once."""
        self._now = now
        if max_retransmits is not None and max_packet_lifetime is not None:
            raise ValueError("max_retransmits and max_packet_lifetime are exclusive")
        label_bytes, protocol_bytes = label.encode(), protocol.encode()
        if len(label_bytes) > 0xFFFF or len(protocol_bytes) > 0xFFFF:
            raise ValueError("label or protocol too long")
        stream_id = self._free_stream_id()
        kind, parameter = _RELIABLE, 0
        if max_retransmits is not None:
            kind, parameter = _PARTIAL_RELIABLE_REXMIT, max_retransmits
        elif max_packet_lifetime is not None:
            kind, parameter = _PARTIAL_RELIABLE_TIMED, max_packet_lifetime
        if not ordered:
            kind |= _UNORDERED
        message = _OPEN_HEADER.pack(_DATA_CHANNEL_OPEN, kind, priority, parameter, len(label_bytes),
                                    len(protocol_bytes)) + label_bytes + protocol_bytes
        self.association.send(stream_id, PPID_DCEP, message, now)
        channel = Channel(stream_id, label, protocol, ordered, max_retransmits, max_packet_lifetime, priority)
        self._channels[stream_id] = channel
        return channel

    def send(self, channel: Channel, data: str | bytes, now: float) -> None:
        """Raises ConnectionError on a channel closing or closed; what `SctpAssociation.send` raises."""
        self._now = now
        if channel.state not in ("connecting", "open") or self._channels.get(channel.stream_id) is not channel:
            raise ConnectionError(f"channel {channel.label!r} is {channel.state}")
        if isinstance(data, str):
            payload, ppid = (data.encode(), PPID_STRING) if data else (b"\x00", PPID_STRING_EMPTY)
        else:
            payload, ppid = (bytes(data), PPID_BINARY) if data else (b"\x00", PPID_BINARY_EMPTY)
        lifetime = None if channel.max_packet_lifetime is None else channel.max_packet_lifetime / 1000
        self.association.send(channel.stream_id, ppid, payload, now, ordered=channel.ordered or not channel._acked,
                              max_retransmits=channel.max_retransmits, lifetime=lifetime)

    def close(self, channel: Channel, now: float) -> None:
        """Reset our outgoing stream; ChannelClosed comes once the peer has reset its own."""
        self._now = now
        if channel.state in ("connecting", "open") and self._channels.get(channel.stream_id) is channel:
            self._reset(channel, now)

    def pump(self, now: float) -> None:
        """Turn the association's events into channel events."""
        self._now = now
        association = self.association
        while (event := association.next_event()) is not None:
            if isinstance(event, MessageReceived):
                if event.ppid == PPID_DCEP:
                    self._on_dcep(event.stream_id, event.data, now)
                else:
                    self._on_message(event.stream_id, event.ppid, event.data)
            elif isinstance(event, StreamsReset):
                for stream_id in event.stream_ids:
                    self._on_remote_reset(stream_id, now)
            elif isinstance(event, OutgoingStreamsReset):
                for stream_id in event.stream_ids:
                    channel = self._channels.get(stream_id)
                    if channel is not None and channel._local_reset == "requested":
                        channel._local_reset = "done"
                        if channel._remote_reset:
                            self._closed(channel)
            elif isinstance(event, Established):
                self._events.append(AssociationEstablished())
            elif isinstance(event, Closed):
                for channel in list(self._channels.values()):
                    self._closed(channel)
                self._events.append(AssociationClosed(event.reason))

    # -------------------------------------------------------------------------------------- internals

    def _free_stream_id(self) -> int:
        limit = min(self.association.outbound_streams - 1, _MAX_STREAM_ID)
        start = self._next_id if self._next_id <= limit else self._next_id % 2
        stream_id = start
        while stream_id in self._channels:
            stream_id += 2
            if stream_id > limit:
                stream_id %= 2
            if stream_id == start:
                raise BufferError("no free stream id")
        self._next_id = stream_id + 2
        return stream_id

    def _on_dcep(self, stream_id: int, data: bytes, now: float) -> None:
        if data[:1] == bytes([_DATA_CHANNEL_ACK]):
            channel = self._channels.get(stream_id)
            if channel is not None and channel.state == "connecting":
                self._opened(channel)
            return
        if data[:1] != bytes([_DATA_CHANNEL_OPEN]):
            self.stats.malformed += 1
            return
        if len(data) < _OPEN_HEADER.size:
            self.stats.malformed += 1
            return
        _, kind, priority, parameter, label_length, protocol_length = _OPEN_HEADER.unpack_from(data)
        if kind not in _CHANNEL_TYPES or len(data) != _OPEN_HEADER.size + label_length + protocol_length:
            self.stats.malformed += 1
            return
        try:
            label = data[12 : 12 + label_length].decode()
            protocol = data[12 + label_length :].decode()
        except UnicodeDecodeError:
            self.stats.malformed += 1
            return
        if stream_id in self._channels or stream_id > _MAX_STREAM_ID:
            self.stats.opens_ignored += 1
            return
        try:
            self.association.send(stream_id, PPID_DCEP, bytes([_DATA_CHANNEL_ACK]), now)
        except (ValueError, ConnectionError, BufferError):
            self.stats.opens_ignored += 1  # a stream we cannot send on, or no room: the OPEN goes unanswered
            return
        reliability = kind & ~_UNORDERED
        channel = Channel(stream_id, label, protocol, not kind & _UNORDERED,
                          parameter if reliability == _PARTIAL_RELIABLE_REXMIT else None,
                          parameter if reliability == _PARTIAL_RELIABLE_TIMED else None, priority, "open", True)
        self._channels[stream_id] = channel
        self._events.append(ChannelOpened(channel))

    def _opened(self, channel: Channel) -> None:
        channel.state = "open"
        channel._acked = True
        self._events.append(ChannelOpened(channel))

    def _on_message(self, stream_id: int, ppid: int, data: bytes) -> None:
        channel = self._channels.get(stream_id)
        if channel is None:
            self.stats.no_channel += 1
            return
        if channel.state == "connecting":
            self._opened(channel)  # the peer sends on it: it has our OPEN (RFC 8832 §6)
        if ppid in (PPID_STRING_PARTIAL, PPID_BINARY_PARTIAL):
            self._add_partial(stream_id, data)
            return
        if ppid in (PPID_STRING_EMPTY, PPID_BINARY_EMPTY):
            data = b""  # the single zero byte stands for nothing
        elif ppid not in (PPID_STRING, PPID_BINARY):
            self.stats.unknown_ppid += 1
            return
        if stream_id in self._oversized:
            self._oversized.discard(stream_id)
            self.stats.oversized += 1
            return
        if stream_id in self._partial:
            data = b"".join([*self._partial.pop(stream_id), data])
            self._partial_size.pop(stream_id, None)
        if ppid in (PPID_STRING, PPID_STRING_EMPTY):
            try:
                self._events.append(ChannelMessage(channel, data.decode()))
            except UnicodeDecodeError:
                self.stats.bad_utf8 += 1
        else:
            self._events.append(ChannelMessage(channel, data))

    def _add_partial(self, stream_id: int, data: bytes) -> None:
        if stream_id in self._oversized:
            return
        size = self._partial_size.get(stream_id, 0) + len(data)
        if size > self.association.max_message_size:
            self._partial.pop(stream_id, None)
            self._partial_size.pop(stream_id, None)
            self._oversized.add(stream_id)  # and the final piece, when it comes
            return
        self._partial.setdefault(stream_id, []).append(data)
        self._partial_size[stream_id] = size

    def _reset(self, channel: Channel, now: float) -> None:
        channel.state = "closing"
        channel._local_reset = "requested"
        self.association.reset_streams([channel.stream_id], now)

    def _on_remote_reset(self, stream_id: int, now: float) -> None:
        self._partial.pop(stream_id, None)
        self._partial_size.pop(stream_id, None)
        self._oversized.discard(stream_id)
        channel = self._channels.get(stream_id)
        if channel is None:
            return
        channel._remote_reset = True
        if not channel._local_reset:
            self._reset(channel, now)  # the peer closed it: close our half too
        elif channel._local_reset == "done":
            self._closed(channel)

    def _closed(self, channel: Channel) -> None:
        channel.state = "closed"
        if self._channels.get(channel.stream_id) is channel:
            del self._channels[channel.stream_id]
        self._events.append(ChannelClosed(channel))
