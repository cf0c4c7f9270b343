"""Per-caller rate limits by the policy's rate class (standard, sensitive, bulk).

A sliding window of request times per (caller, rate class), in process: with several API
nodes each enforces its own share, so set the limits per node. A refusal says when the
next request would be let through (Retry-After).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, limits: Mapping[str, tuple[int, float]]) -> None:
        """`limits`: rate class -> (requests, window in seconds)."""
        self.limits = dict(limits)
        self._seen: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, caller: str, rate_class: str, now: float | None = None) -> float | None:
        """Count one request; None if allowed, else the seconds until one would be."""
        limit = self.limits.get(rate_class)
        if limit is None:
            return None
        count, window = limit
        moment = time.monotonic() if now is None else now
        with self._lock:
            seen = self._seen.setdefault((caller, rate_class), deque())
            while seen and seen[0] <= moment - window:
                seen.popleft()
            if len(seen) >= count:
                return max(0.001, seen[0] + window - moment)
            seen.append(moment)
            return None
