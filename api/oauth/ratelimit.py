"""A light, in-memory limit on failed logins per (username, client address).

Per process and forgotten on restart: it slows down guessing at one account from one
place, nothing more. Unknown usernames are limited exactly like known ones, so the limit
does not tell who exists.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class LoginLimiter:
    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._clock = clock
        self._max_entries = max_entries
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(username: str, address: str) -> tuple[str, str]:
        return username.strip().casefold(), address

    def _recent(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until this username may be tried again from this address (0: now)."""
        now = self._clock()
        with self._lock:
            times = self._recent(self._key(username, address), now)
            if times is None or len(times) < self.max_failures:
                return 0.0
            return max(0.0, times[-self.max_failures] + self.window - now)

    def failed(self, username: str, address: str) -> None:
        now = self._clock()
        key = self._key(username, address)
        with self._lock:
            times = self._recent(key, now) or deque(maxlen=self.max_failures)
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
            while len(self._failures) > self._max_entries:
                self._failures.popitem(last=False)

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._failures.pop(self._key(username, address), None)
