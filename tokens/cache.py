"""
The token cache: one entry per secret, keyed by (realm, key) so the hot path
answers without a database query. The entry holds the token encrypted (as in
the database) and the times the token path needs:

    {"t": ciphertext, "exp": expires_at, "at": fetched_at, "ref": refresh_at,
     "lt": lock lease in seconds, "src": "fixed" | absent}

all epoch seconds but `lt`: how long a refresh of this secret may hold its
lock, for the background refresh that starts from this entry. `ref` is
computed when the entry is written, from the realm's refresh margin; saving a
realm or a secret evicts its entries, so a changed margin, a disabled secret
or new credentials take effect at once.

The cache is allowed to fail. When Redis is down or unreachable every call
here answers "nothing cached" (reads) or does nothing (writes), a warning is
logged once per `RETRY_INTERVAL`, and Redis is not tried again until that
interval has passed, so requests do not each wait for a connect timeout. The
token path then runs on the database alone (and the database lock).
"""

import logging
import threading
import time
from collections.abc import Iterable

from django.conf import settings
from django.core.cache import cache

from tokenserver import crypto

logger = logging.getLogger(__name__)

#: Seconds between attempts to use a cache that failed.
RETRY_INTERVAL = 5.0


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


def _cache_errors() -> tuple:
    errors = [ConnectionError, TimeoutError, OSError]
    try:
        from django_redis.exceptions import ConnectionInterrupted
        from redis.exceptions import RedisError

        errors += [ConnectionInterrupted, RedisError]
    except ImportError:  # pragma: no cover - django-redis is a requirement
        pass
    return tuple(errors)


CACHE_ERRORS = _cache_errors()


def _guarded(operation, default=None):
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


def token_cache_key(realm_id: str, key: str) -> str:
    return f"token:{realm_id}:{key}"


def cache_read(realm_id: str, key: str) -> dict | None:
    return _guarded(lambda: cache.get(token_cache_key(realm_id, key)))


def cache_write(
    realm_id: str,
    key: str,
    *,
    token: str,
    expires_at: float | None,
    fetched_at: float,
    refresh_at: float,
    now: float,
    lock_ttl: float = 60.0,
    source: str | None = None,
) -> None:
    """Write an entry, if the cache is up."""

    def write():
        entry = {
            "t": crypto.encrypt(token),
            "exp": expires_at,
            "at": fetched_at,
            "ref": refresh_at,
            "lt": lock_ttl,
        }
        if source:
            entry["src"] = source
        # Keep the entry no longer than the token lives (a fixed token without
        # expiry is re-read from the database daily); a per-process cache keeps
        # it only briefly (settings.TOKENSERVER_LOCAL_CACHE_TTL).
        ttl = (expires_at - now) if expires_at is not None else 86400
        if not settings.REDIS_URL:
            ttl = min(ttl, settings.TOKENSERVER_LOCAL_CACHE_TTL)
        cache.set(token_cache_key(realm_id, key), entry, timeout=max(1, int(ttl)))

    _guarded(write)


def cache_evict(pairs: Iterable[tuple[str, str]]) -> None:
    keys = [token_cache_key(realm_id, key) for realm_id, key in pairs]
    if keys:
        _guarded(lambda: cache.delete_many(keys))


def entry_token(entry: dict) -> str:
    return crypto.decrypt(entry["t"])


def flag_set(name: str, value, seconds: float) -> None:
    """A short-lived marker (backoff, breaker state), shared through the cache."""
    _guarded(lambda: cache.set(f"flag:{name}", value, timeout=max(1, int(seconds + 0.999))))


def flag_get(name: str, default=None):
    return _guarded(lambda: cache.get(f"flag:{name}", default), default)


def flag_delete(name: str) -> None:
    _guarded(lambda: cache.delete(f"flag:{name}"))


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

    return _guarded(incr, 0)


def cache_clear_tokens() -> None:
    """Drop every token entry (after a key rotation)."""

    def clear():
        if hasattr(cache, "delete_pattern"):
            cache.delete_pattern("token:*")
        else:
            cache.clear()  # the local-memory cache of this process

    _guarded(clear)
