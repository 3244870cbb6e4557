"""Rate limiting of a connection's frames (DRF's throttles are per request and cache-backed;
a socket needs a cheap in-memory bucket per connection)."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Frames allowed per second, with a burst; a flood gets ``rate_limited`` errors."""

    __slots__ = ("burst", "clock", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.tokens, self.clock = rate, burst, burst, clock
        self.updated = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class ConnectionCounter:
    """Open connections per key (a user, a client address) in this process, under a cap."""

    def __init__(self) -> None:
        self._counts: dict[object, int] = {}

    def acquire(self, key: object, limit: int | None) -> bool:
        """Count one more connection for ``key``; False (and nothing counted) past ``limit``."""
        count = self._counts.get(key, 0)
        if limit is not None and count >= limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: object) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def count(self, key: object) -> int:
        return self._counts.get(key, 0)
