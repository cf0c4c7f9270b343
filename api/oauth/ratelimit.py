"""Light, in-memory limits on failed logins and failed client authentications.

Per process and forgotten on restart, as the architecture has the login and API rate
limits (docs/architecture.md: an API node keeps nothing between requests but caches and
these limits); with N nodes behind a balancer an attacker gets up to N times each limit.
They slow guessing down and stop floods from one place; they are no lockout of an account.

* Logins (the form): per (username, address), and per address across usernames, so one
  place cannot try one password on many accounts (spraying).
* Client authentication (token, revocation and introspection endpoints): per presented
  client id from any address, and per address across client ids.

Unknown usernames and client ids are limited exactly like known ones, so a limit does not
tell who exists. A blocked attempt is refused before any password or secret is checked,
even a right one: otherwise the guessing would go on behind the 429.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

# Longer keys are cut: a username or client id is far shorter, and a flood of huge made-up
# ones must not grow memory by their length.
MAX_KEY_LENGTH = 256

Key = tuple[str, ...]


class FailureWindow:
    """Failures per key in a sliding window; at most `max_entries` keys (oldest forgotten)."""

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
        self._failures: OrderedDict[Key, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(parts: Key) -> Key:
        return tuple(part[:MAX_KEY_LENGTH] for part in parts)

    def _recent(self, key: Key, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, *parts: str) -> float:
        """Seconds until this key may fail again (0: now)."""
        now = self._clock()
        with self._lock:
            times = self._recent(self._key(parts), now)
            if times is None or len(times) < self.max_failures:
                return 0.0
            return max(0.0, times[-self.max_failures] + self.window - now)

    def failed(self, *parts: str) -> None:
        now = self._clock()
        key = self._key(parts)
        with self._lock:
            times = self._recent(key, now) or deque(maxlen=self.max_failures)
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
            while len(self._failures) > self._max_entries:
                self._failures.popitem(last=False)

    def forget(self, *parts: str) -> None:
        with self._lock:
            self._failures.pop(self._key(parts), None)


def _username(username: str) -> str:
    return username.strip().casefold()


class LoginLimiter:
    """Failed logins at the form: per (username, address) and per address."""

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        *,
        address_max_failures: int,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self.per_account = FailureWindow(
            max_failures, window_seconds, clock=clock, max_entries=max_entries
        )
        self.per_address = FailureWindow(
            address_max_failures, window_seconds, clock=clock, max_entries=max_entries
        )

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until this username may be tried again from this address (0: now)."""
        return max(
            self.per_account.retry_after(_username(username), address),
            self.per_address.retry_after(address),
        )

    def blocked_by_address(self, address: str) -> bool:
        return self.per_address.retry_after(address) > 0

    def failed(self, username: str, address: str) -> None:
        self.per_account.failed(_username(username), address)
        self.per_address.failed(address)

    def succeeded(self, username: str, address: str) -> None:
        # The address keeps its count: a sprayer who also holds one good account must not
        # wash its failures away by logging in with it now and then.
        self.per_account.forget(_username(username), address)


class ClientAuthLimiter:
    """Failed client authentications: per presented client id and per address."""

    def __init__(
        self,
        max_failures: int,
        address_max_failures: int,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self.per_client = FailureWindow(
            max_failures, window_seconds, clock=clock, max_entries=max_entries
        )
        self.per_address = FailureWindow(
            address_max_failures, window_seconds, clock=clock, max_entries=max_entries
        )

    def retry_after(self, client_id: str | None, address: str) -> float:
        """Seconds until this client id may authenticate from this address (0: now)."""
        by_client = self.per_client.retry_after(client_id) if client_id else 0.0
        return max(by_client, self.per_address.retry_after(address))

    def failed(self, client_id: str | None, address: str) -> None:
        if client_id:
            self.per_client.failed(client_id)
        self.per_address.failed(address)

    def succeeded(self, client_id: str) -> None:
        # Only the client's own count: the address's stays, as for logins.
        self.per_client.forget(client_id)
