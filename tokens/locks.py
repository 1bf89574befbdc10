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

from tokens.models import FetchLease

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
        FetchLease.objects.filter(name=self.name, holder=self.holder).delete()


class RedisLock:
    """A redis-py lock through django-redis (`SET NX PX`, released by token)."""

    def __init__(self, name: str, ttl: float):
        self.name = name
        self._lock = cache.lock(f"lock:{name}", timeout=ttl, thread_local=False)

    def try_acquire(self) -> bool:
        return bool(self._lock.acquire(blocking=False))

    def release(self) -> None:
        from redis.exceptions import LockError

        try:
            self._lock.release()
        except LockError:
            # The lease expired while we held it (a very slow upstream) and
            # someone else may hold it now: nothing of ours to release.
            logger.warning("lock %s expired before it was released", self.name)


def lock_for(name: str, ttl: float):
    """The configured lock backend's lock for `name`, held at most `ttl` seconds."""
    if settings.TOKENSERVER_LOCK_BACKEND == "redis":
        return RedisLock(name, ttl)
    return DatabaseLock(name, ttl)
