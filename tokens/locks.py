"""
Single-flight locks for the token path: whoever holds a secret's lock is the
one worker, on any host, that may call the upstream for it.

Both backends hand out leases with an expiry, so a holder that dies (SIGKILL
mid-fetch) blocks the others only until the lease runs out. `try_acquire`
never blocks: the token path decides how to wait (it polls the cache and the
database in between, so waiters get the new token as soon as it lands).
"""

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from redis.exceptions import LockError

from tokens.models import FetchLease
from tokenserver.cache import CACHE_ERRORS, cache_available, health

logger = logging.getLogger(__name__)


class DatabaseLock:
    """A lease row in FetchLease; works across processes on SQLite and MySQL."""

    def __init__(self, name: str, ttl: float):
        self.name = name
        self.ttl = ttl
        self.holder = uuid.uuid4().hex

    def try_acquire(self) -> bool:
        now = timezone.now()
        expires_at = now + timedelta(seconds=self.ttl)
        try:
            # A cheap read first: waiters poll, and on SQLite every write
            # attempt would queue for the one write lock.
            if FetchLease.objects.filter(name=self.name, expires_at__gt=now).exists():
                return False
            # Take over a lease whose holder died (its expiry has passed) ...
            if FetchLease.objects.filter(name=self.name, expires_at__lte=now).update(
                holder=self.holder, expires_at=expires_at
            ):
                return True
            # ... or create it; the primary key lets exactly one creator win.
            with transaction.atomic():
                FetchLease.objects.create(name=self.name, holder=self.holder, expires_at=expires_at)
            return True
        except IntegrityError:
            return False
        except DatabaseError:
            # Lock contention (MySQL deadlock victim, SQLite busy): not ours
            # this time, the caller tries again.
            logger.debug("lease %s: contention, will retry", self.name)
            return False

    def release(self) -> None:
        try:
            FetchLease.objects.filter(name=self.name, holder=self.holder).delete()
        except DatabaseError:
            # The database went away: the lease expires by itself.
            logger.warning("lease %s could not be released; it will expire", self.name)


class RedisLock:
    """
    A redis-py lock through django-redis (`SET NX PX`, released by token) in
    front of a database lease, which is the authority.

    Waiters poll the Redis lock, which costs no database query; only its
    winner then takes the database lease. A worker that finds Redis down
    (tokenserver.cache marks it) takes the database lease alone, so workers that
    disagree about whether Redis is up still never both hold the lock.
    Refreshes are rare, so the lease's few queries cost little.
    """

    def __init__(self, name: str, ttl: float):
        self.name = name
        self.ttl = ttl
        self._redis = None
        self._lease = None

    def try_acquire(self) -> bool:
        redis_lock = None
        if cache_available():
            try:
                candidate = cache.lock(f"lock:{self.name}", timeout=self.ttl, thread_local=False)
                if not candidate.acquire(blocking=False):
                    return False
                redis_lock = candidate
            except CACHE_ERRORS as error:
                health.failed(error)
        lease = DatabaseLock(self.name, self.ttl)
        if not lease.try_acquire():
            if redis_lock is not None:
                self._release_redis(redis_lock)
            return False
        self._redis, self._lease = redis_lock, lease
        return True

    def release(self) -> None:
        redis_lock, lease = self._redis, self._lease
        self._redis = self._lease = None
        if lease is not None:
            lease.release()
        if redis_lock is not None:
            self._release_redis(redis_lock)

    def _release_redis(self, redis_lock) -> None:
        try:
            redis_lock.release()
        except LockError:
            # The lease expired while we held it (a very slow upstream) and
            # someone else may hold it now: nothing of ours to release.
            logger.warning("lock %s expired before it was released", self.name)
        except CACHE_ERRORS as error:
            # Redis went away while we held the lock: it expires by itself.
            health.failed(error)


def lock_for(name: str, ttl: float):
    """The configured lock backend's lock for `name`, held at most `ttl` seconds."""
    if settings.TOKENSERVER_LOCK_BACKEND == "redis":
        return RedisLock(name, ttl)
    return DatabaseLock(name, ttl)
