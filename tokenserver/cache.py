"""
The guarded cache: Django's cache (Redis in production, local memory
embedded) behind a breaker, for every layer that keeps shared state there
(token entries, revocations, rate limits, failed sign-ins, circuit breakers,
backoffs).

The cache is allowed to fail. When Redis is down or unreachable every call
here answers "nothing cached" (reads) or does nothing (writes), a warning is
logged once per `RETRY_INTERVAL`, and Redis is not tried again until that
interval has passed, so requests do not each wait for a connect timeout.
"""

import logging
import threading
import time
from dataclasses import dataclass

from django.core.cache import cache
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
    """The redis-py client behind the cache, or None without Redis (or while it is down)."""
    if not cache_available():
        return None
    return _redis_client()


def flag_set(name: str, value, seconds: float) -> None:
    """A short-lived marker (backoff, breaker state), shared through the cache."""
    guarded(lambda: cache.set(f"flag:{name}", value, timeout=max(1, int(seconds + 0.999))))


def flag_get(name: str, default=None):
    return guarded(lambda: cache.get(f"flag:{name}", default), default)


def flag_get_many(names) -> dict | None:
    """
    Several flags in one round trip (Redis MGET): {name: value} for those set;
    None while the cache is down, so a caller can say "unknown" rather than "none".
    """
    names = list(names)
    if not names:
        return {}
    found = guarded(lambda: cache.get_many([f"flag:{name}" for name in names]))
    if found is None:
        return None
    return {name: found[f"flag:{name}"] for name in names if f"flag:{name}" in found}


def flag_delete(name: str) -> None:
    guarded(lambda: cache.delete(f"flag:{name}"))


def flag_delete_many(names) -> None:
    """Drop several flags in one round trip."""
    keys = [f"flag:{name}" for name in names]
    if keys:
        guarded(lambda: cache.delete_many(keys))


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


# --- Window counters: count a call and read an entry in one round trip ----------------

#: INCR a window counter (starting its window on the first call), and read one
#: entry, atomically and in one round trip: the hot path's rate limit and its
#: token read cost one Redis call between them.
_COUNT_AND_GET = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
local value = false
if KEYS[2] ~= '' then value = redis.call('GET', KEYS[2]) end
return {count, ttl, value}
"""


@dataclass(frozen=True)
class WindowCount:
    """A counter's value in its current window, and how long that window still runs."""

    count: int
    remaining: float  # seconds


class _LocalWindows:
    """Window counters of one process (no Redis): exact within the process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._windows: dict[str, list] = {}  # name → [ends at (monotonic), count]

    def incr(self, name: str, window: float) -> WindowCount:
        now = time.monotonic()
        with self._lock:
            current = self._windows.get(name)
            if current is None or current[0] <= now:
                if len(self._windows) > 10_000:  # drop ended windows now and then
                    self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
                current = self._windows[name] = [now + window, 0]
            current[1] += 1
            return WindowCount(current[1], current[0] - now)

    def read(self, name: str) -> WindowCount | None:
        now = time.monotonic()
        with self._lock:
            current = self._windows.get(name)
            if current is None or current[0] <= now:
                return None
            return WindowCount(current[1], current[0] - now)

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()


local_windows = _LocalWindows()


def _redis_client():
    """The redis-py client behind a django-redis cache, or None for another backend."""
    client = getattr(cache, "client", None)
    get_client = getattr(client, "get_client", None)
    return get_client(write=True) if get_client else None


def window_incr_and_get(
    name: str, window: float, key: str | None = None
) -> tuple[WindowCount | None, object]:
    """
    Count one call in the window counter `name` (a window starts with its
    first call and lasts `window` seconds), and read the cache entry `key`,
    in one round trip. Returns (count, value); count is None while the cache
    is down (limits then fail open: apps keep getting tokens) and value is
    None when missing.
    """
    if not health.available():
        return None, None
    redis = _redis_client()
    if redis is None:
        value = cache.get(key) if key else None
        return local_windows.incr(name, window), value
    try:
        count, ttl, raw = _script(redis)(
            keys=[cache.make_key(f"window:{name}"), cache.make_key(key) if key else ""],
            args=[max(1, int(window * 1000))],
            client=redis,
        )
        value = cache.client.decode(raw) if raw else None
        return WindowCount(int(count), int(ttl) / 1000), value
    except CACHE_ERRORS as error:
        health.failed(error)
        return None, None


def window_read(*names: str) -> list[WindowCount | None]:
    """
    The window counters `names` as they stand, without counting a call (one
    round trip): None for a counter whose window has ended or never started,
    and for every counter while the cache is down.
    """
    if not health.available():
        return [None] * len(names)
    redis = _redis_client()
    if redis is None:
        return [local_windows.read(name) for name in names]
    pipe = redis.pipeline(transaction=False)
    for name in names:
        key = cache.make_key(f"window:{name}")
        pipe.get(key)
        pipe.pttl(key)
    try:
        answers = pipe.execute()
    except CACHE_ERRORS as error:
        health.failed(error)
        return [None] * len(names)
    counts = []
    for count, ttl in zip(answers[::2], answers[1::2], strict=True):
        alive = count is not None and ttl is not None and ttl > 0
        counts.append(WindowCount(int(count), ttl / 1000) if alive else None)
    return counts


_registered = []


def _script(redis):
    """The count-and-get script (EVALSHA, loaded again by redis-py on a server that lacks it)."""
    if not _registered:
        _registered.append(redis.register_script(_COUNT_AND_GET))
    return _registered[0]
