"""Per-principal rate limits: a token bucket per key, in memory, thread-safe.

Each key (a principal id, or a client address for anonymous requests) may make ``burst``
requests at once and ``rate`` a second on average; past that :meth:`RateLimiter.hit`
returns the seconds to wait (the API answers 429 with ``Retry-After``). Buckets of keys idle
long enough to be full again are dropped, so memory stays bounded by the active keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets: ``rate`` tokens a second, at most ``burst`` stored, one per request."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if allowed, else the seconds until one is free."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > self._max_keys:
                    self._prune(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate
        stale = [k for k, (_, at) in self._buckets.items() if now - at >= full_after]
        for key in stale:
            del self._buckets[key]
        if len(self._buckets) > self._max_keys:
            # Still too many active keys (a flood of distinct ones): start over rather than grow.
            self._buckets.clear()
