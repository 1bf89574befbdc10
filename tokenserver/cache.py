"""
The guarded cache: Django's cache (Redis in production, local memory
embedded) behind a breaker, for every layer that keeps shared state there
(token entries, revocations, rate limits, circuit breakers, backoffs).

The cache is allowed to fail. When Redis is down or unreachable every call
here answers "nothing cached" (reads) or does nothing (writes), a warning is
logged once per `RETRY_INTERVAL`, and Redis is not tried again until that
interval has passed, so requests do not each wait for a connect timeout.
"""

import logging
import threading
import time

from django.conf import settings
from django.core.cache import cache
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

#: Seconds between attempts to use a cache that failed.
RETRY_INTERVAL = 5.0

#: What a cache call raises when the cache, not the caller, is at fault.
CACHE_ERRORS = (ConnectionError, TimeoutError, OSError, ConnectionInterrupted, RedisError)


class _Health:
    """Whether the cache answered lately; shared by the threads of a process."""

    def __init__(self):
        self._lock = threading.Lock()
        self.down_until = 0.0

    def available(self) -> bool:
        return time.monotonic() >= self.down_until

    def failed(self, error: Exception) -> None:
        with self._lock:
            if not self.available():
                return  # already reported for this interval
            self.down_until = time.monotonic() + RETRY_INTERVAL
        logger.warning(
            "cache unavailable (%s); serving from the database, next try in %.0f s",
            type(error).__name__,
            RETRY_INTERVAL,
        )

    def reset(self) -> None:
        self.down_until = 0.0


health = _Health()


def guarded(operation, default=None):
    """Run `operation()` against the cache; `default` while the cache is down or failing."""
    if not health.available():
        return default
    try:
        return operation()
    except CACHE_ERRORS as error:
        health.failed(error)
        return default


def cache_available() -> bool:
    """False while the cache is known to be down (see RETRY_INTERVAL)."""
    return health.available()


def redis_connection():
    """The raw Redis connection behind the cache, or None without Redis (or while it is down)."""
    if not settings.REDIS_URL or not cache_available():
        return None
    return get_redis_connection("default")


def flag_set(name: str, value, seconds: float) -> None:
    """A short-lived marker (backoff, breaker state), shared through the cache."""
    guarded(lambda: cache.set(f"flag:{name}", value, timeout=max(1, int(seconds + 0.999))))


def flag_get(name: str, default=None):
    return guarded(lambda: cache.get(f"flag:{name}", default), default)


def flag_delete(name: str) -> None:
    guarded(lambda: cache.delete(f"flag:{name}"))


def counter_incr(name: str, seconds: float) -> int:
    """Add one to a counter that expires `seconds` after it was started; 0 if the cache is down."""

    full, timeout = f"flag:{name}", max(1, int(seconds))

    def incr():
        cache.add(full, 0, timeout=timeout)
        try:
            return cache.incr(full)
        except ValueError:  # expired between add and incr
            cache.set(full, 1, timeout=timeout)
            return 1

    return guarded(incr, 0)
