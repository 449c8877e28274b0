"""Keys seen recently, so a request that was already acted on is not acted on again (webhook replays).

Sans-IO: the caller passes the time. Memory is bounded twice: by the window (an entry is forgotten once
it is older) and by a count (past it, the oldest entry is forgotten first). Keys are kept as short
digests, so a caller-chosen key of any length costs the same few bytes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

__all__ = ["ReplayCache"]


class ReplayCache:
    """`seen(key, now)` answers whether `key` came before within `window_s`, and remembers it if not."""

    def __init__(self, window_s: float, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.window_s = window_s
        self.max_keys = max_keys
        self._expiry: OrderedDict[bytes, float] = OrderedDict()  # oldest first: expiry order

    def __len__(self) -> int:
        return len(self._expiry)

    def seen(self, key: str, now: float, until: float | None = None) -> bool:
        """True when `key` was already seen within the window; otherwise remember it from `now` (until
        `until` when given: a key whose own lifetime is known, as a webhook's timestamp sets it)."""
        self._forget_expired(now)
        digest = _digest(key)
        expires_at = self._expiry.get(digest)
        if expires_at is not None and expires_at >= now:
            return True
        self._expiry.pop(digest, None)
        if len(self._expiry) >= self.max_keys:
            self._expiry.popitem(last=False)
        self._expiry[digest] = now + self.window_s if until is None else until
        return False

    def forget(self, key: str) -> None:
        """Take `key` back (what it stood for was not acted on after all)."""
        self._expiry.pop(_digest(key), None)

    def _forget_expired(self, now: float) -> None:
        expiry = self._expiry
        while expiry:
            oldest, expires_at = next(iter(expiry.items()))
            if expires_at >= now:
                return
            del expiry[oldest]


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
