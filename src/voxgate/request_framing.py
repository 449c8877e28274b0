"""Where HTTP/1.1 requests begin and end in a client's byte stream: enough to time them, nothing more.

uvicorn bounds how long a connection may sit idle after a response (`timeout_keep_alive`) but not how
long a request may take to arrive: a client that trickles its headers a byte at a time (slowloris), or
connects and sends nothing, holds its connection and file descriptor forever. The listener's guard feeds
every byte a client sends to a `RequestFraming` and closes the connection when a request has been
arriving for longer than the limit. This core only frames (request line and headers up to the empty
line, then a `Content-Length` body or `chunked` chunks and trailers); uvicorn's parser still validates
and serves every request. A framing it cannot follow (a malformed length, an oversized head) leaves the
request "arriving" so the deadline still applies; a WebSocket upgrade ends framing (`watching` false).

    framing = RequestFraming()
    completed = framing.receive(data)   # requests that finished arriving in `data`
    framing.reading                     # a request has begun and has not fully arrived
"""

from __future__ import annotations

import enum
import re

__all__ = ["MAX_HEAD_BYTES", "RequestFraming"]

MAX_HEAD_BYTES = 64 * 1024  # beyond any head uvicorn accepts; a longer one is not followed
_HEAD_END = re.compile(rb"\n\r?\n")  # the empty line after the headers (CRLF, or bare LF as parsers allow)
_FRAMING_HEADER = re.compile(rb"^(content-length|transfer-encoding|upgrade)[ \t]*:(.*?)\r?$",
                             re.IGNORECASE | re.MULTILINE)


class _State(enum.Enum):
    IDLE = enum.auto()  # between requests: nothing of the next one yet
    HEAD = enum.auto()  # request line and headers
    BODY = enum.auto()  # Content-Length bytes
    CHUNK_SIZE = enum.auto()
    CHUNK_DATA = enum.auto()
    CHUNK_END = enum.auto()  # the CRLF after a chunk's data
    TRAILERS = enum.auto()
    UPGRADED = enum.auto()  # the connection became a WebSocket: no more HTTP requests
    LOST = enum.auto()  # a framing this core cannot follow: the request never counts as arrived


class RequestFraming:
    """Counts requests as they finish arriving on one connection (sans-IO: bytes in, counts out)."""

    def __init__(self) -> None:
        self._state = _State.IDLE
        self._head = bytearray()  # the request head so far
        self._line = bytearray()  # a chunk-size or trailer line not yet ended by LF
        self._trailer_bytes = 0
        self._remaining = 0  # body or chunk bytes still to come
        self.completed = 0  # requests that have fully arrived on this connection

    @property
    def reading(self) -> bool:
        """A request has begun to arrive and has not finished."""
        return self._state not in (_State.IDLE, _State.UPGRADED)

    @property
    def watching(self) -> bool:
        """False once the stream is no longer HTTP requests (a WebSocket upgrade)."""
        return self._state is not _State.UPGRADED

    def receive(self, data: bytes) -> int:
        """Take the next bytes the client sent; returns how many requests finished arriving in them."""
        before = self.completed
        pos, end = 0, len(data)
        while pos < end and self._state not in (_State.UPGRADED, _State.LOST):
            if self._state is _State.IDLE:
                self._state = _State.HEAD
            if self._state is _State.HEAD:
                pos = self._take_head(data, pos)
                continue
            if self._state in (_State.BODY, _State.CHUNK_DATA):
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    if self._state is _State.BODY:
                        self._finish()
                    else:
                        self._state = _State.CHUNK_END
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._line += data[pos:]
                if len(self._line) > MAX_HEAD_BYTES:
                    self._state = _State.LOST
                return self.completed - before
            self._line += data[pos:newline]
            pos = newline + 1
            line = bytes(self._line).rstrip(b"\r")
            self._line.clear()
            self._on_line(line)
        return self.completed - before

    def _take_head(self, data: bytes, pos: int) -> int:
        """Add head bytes from `data[pos:]`; returns where the head ended in `data` (or its end)."""
        if not self._head:  # empty lines before the request line are allowed (RFC 9112 §2.2)
            while pos < len(data) and data[pos] in b"\r\n":
                pos += 1
            if pos == len(data):
                return pos
        carried = bytes(self._head[-2:])  # the terminator may straddle two reads
        found = _HEAD_END.search(carried + data[pos:pos + MAX_HEAD_BYTES + 4])
        if found is None:
            self._head += data[pos:]
            if len(self._head) > MAX_HEAD_BYTES:
                self._state = _State.LOST
            return len(data)
        head_end = pos + found.end() - len(carried)
        self._head += data[pos:head_end]
        head, self._head = bytes(self._head), bytearray()
        if len(head) > MAX_HEAD_BYTES:
            self._state = _State.LOST
        else:
            self._end_of_head(head)
        return head_end

    def _finish(self) -> None:
        self.completed += 1
        self._state = _State.IDLE

    def _on_line(self, line: bytes) -> None:
        state = self._state
        if state is _State.CHUNK_SIZE:
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._state = _State.LOST
                return
            if size < 0:
                self._state = _State.LOST
            elif size == 0:
                self._state = _State.TRAILERS
            else:
                self._remaining = size
                self._state = _State.CHUNK_DATA
        elif state is _State.CHUNK_END:
            self._state = _State.CHUNK_SIZE if not line else _State.LOST
        elif state is _State.TRAILERS:
            self._trailer_bytes += len(line) + 2
            if not line:
                self._trailer_bytes = 0
                self._finish()
            elif self._trailer_bytes > MAX_HEAD_BYTES:
                self._state = _State.LOST

    def _end_of_head(self, head: bytes) -> None:
        """How the body after this head is framed: only three headers matter (uvicorn validates the rest)."""
        length: int | None = None
        chunked = upgrade = False
        for name, raw in _FRAMING_HEADER.findall(head):
            name, value = name.lower(), raw.strip().lower()
            if name == b"content-length":
                if not value.isdigit() or (length is not None and length != int(value)):
                    self._state = _State.LOST
                    return
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.rsplit(b",", 1)[-1].strip() == b"chunked"
                if not chunked:
                    self._state = _State.LOST  # a body framed by closing the connection: not for a request
                    return
            else:
                upgrade = b"websocket" in value
        if upgrade:
            self._state = _State.UPGRADED
        elif chunked:
            self._state = _State.CHUNK_SIZE
        elif length:
            self._remaining = length
            self._state = _State.BODY
        else:
            self._finish()
