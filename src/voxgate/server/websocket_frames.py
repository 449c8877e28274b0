"""RFC 6455 frames, the common case by hand: what a WebSocket's hot path needs, and nothing else. Pure.

A carrier sends 50 whole, masked text frames a second on each call, a Realtime client about as many.
websockets' sans-IO parser handles every frame correctly, at about 4.5 µs each; `FrameSplitter` cuts the
client's stream at frame boundaries itself and unmasks the common frame (final, masked, text or binary,
no reserved bits, within the size limit, outside a fragmented message) in about 1.5 µs. Any other frame
(ping, pong, close, fragments, reserved bits, an unmasked frame) goes whole and in order to websockets,
which therefore never holds part of a frame: nobody has to look inside it. From an oversized frame's
header on, every byte is websockets' (it refuses the frame with 1009). Frames to the client are
unmasked, so writing one is a header and the payload.
"""

from __future__ import annotations

__all__ = ["FRAME", "MESSAGE_BINARY", "MESSAGE_TEXT", "FrameSplitter", "binary_frame", "text_frame", "unmask"]

# What `FrameSplitter.feed` returns each piece as: a data message's payload, or a whole frame for websockets.
FRAME, MESSAGE_TEXT, MESSAGE_BINARY = 0, 1, 2
_FINAL_TEXT, _FINAL_BINARY = 0x81, 0x82  # first byte: FIN, no reserved bits, opcode


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte masking key (RFC 6455 §5.3), as one big-integer XOR: a few C-speed passes
    instead of a Python loop per byte."""
    n = len(payload)
    return (int.from_bytes(payload, "big") ^ int.from_bytes((key * ((n + 3) >> 2))[:n], "big")).to_bytes(n, "big")


def _header(opcode: int, length: int) -> bytes:
    """A final, unmasked frame's header (a server never masks)."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 1 << 16:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big")


def text_frame(text: str) -> bytes:
    payload = text.encode()
    return _header(0x1, len(payload)) + payload


def binary_frame(data: bytes) -> bytes:
    return _header(0x2, len(data)) + data


class FrameSplitter:
    """A client's byte stream, cut into the common frame's payloads and other whole frames, in order."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.delegated = False  # every byte from here on is websockets' (an oversized frame, or the close)
        # The start of a frame whose end has not arrived, in the pieces it came in (joined once it is all
        # there, so a large message costs one copy, not one per read), and how many bytes it needs.
        self._unparsed: list[bytes] = []
        self._unparsed_bytes = 0
        self._needed = 0
        self._fragmented = False  # a fragmented message is open: its frames, and any other, go whole

    def delegate(self) -> None:
        """Hand every later byte, from the next frame boundary, to websockets as it comes."""
        self.delegated = True

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """(MESSAGE_TEXT | MESSAGE_BINARY, unmasked payload) or (FRAME, whole frame or, once delegated, raw
        bytes) for each piece `data` completes."""
        if self._unparsed:
            self._unparsed.append(data)
            self._unparsed_bytes += len(data)
            if self._unparsed_bytes < self._needed and not self.delegated:
                return []
            buffer = b"".join(self._unparsed)
            self._unparsed, self._unparsed_bytes = [], 0
        else:
            buffer = data
        if self.delegated:
            return [(FRAME, buffer)] if buffer else []
        pieces: list[tuple[int, bytes]] = []
        end, limit, position = len(buffer), self.max_size, 0
        needed = 2
        while end - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if end - position < 4:
                    needed = 4
                    break
                length, header = int.from_bytes(buffer[position + 2:position + 4], "big"), 4
            elif length == 127:
                if end - position < 10:
                    needed = 10
                    break
                length, header = int.from_bytes(buffer[position + 2:position + 10], "big"), 10
            if length > limit:  # websockets refuses it and closes: the rest of the stream is its own
                self.delegated = True
                pieces.append((FRAME, buffer[position:]))
                position = end
                break
            masked = second & 0x80
            size = header + (4 if masked else 0) + length
            if end - position < size:
                needed = size
                break
            if masked and (first == _FINAL_TEXT or first == _FINAL_BINARY) and not self._fragmented:
                key_at = position + header
                payload = unmask(buffer[key_at + 4:key_at + 4 + length], buffer[key_at:key_at + 4])
                pieces.append((MESSAGE_TEXT if first == _FINAL_TEXT else MESSAGE_BINARY, payload))
            else:
                opcode, final = first & 0x0F, first & 0x80
                if opcode in (0x1, 0x2):  # a data frame without FIN opens a fragmented message
                    self._fragmented = not final
                elif opcode == 0x0 and final:  # the last fragment closes it
                    self._fragmented = False
                pieces.append((FRAME, buffer[position:position + size]))
            position += size
            needed = 2
        if position < end:
            self._unparsed, self._unparsed_bytes, self._needed = [buffer[position:]], end - position, needed
        return pieces
