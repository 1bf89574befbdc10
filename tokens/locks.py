"""
Single-flight locks for the token path: whoever holds a secret's lock is the
one worker, on any host, that may call the upstream for it.

Both backends hand out short leases (TOKENSERVER_LOCK_LEASE, 5 s) that a
heartbeat thread renews every third of that while the holder lives, up to
the `max_hold` the holder asked for (a realm's call budget). A holder that
dies (SIGKILL mid-fetch) stops renewing, so it blocks the others at most one
lease; one that is alive but stuck loses the lock at `max_hold`. `held()`
tells a holder whether the lock is still its own: a renewal that finds the
lease taken over, or that could not be made before the lease ran out, ends
the holding for good. `try_acquire` never blocks: the token path decides how
to wait (it polls the cache and the database in between, so waiters get the
new token as soon as it lands).
"""

import logging
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, IntegrityError, connection, connections, transaction
from django.utils import timezone
from redis.exceptions import LockError

from tokens.models import FetchLease
from tokenserver.cache import CACHE_ERRORS, cache_available, health

logger = logging.getLogger(__name__)


class Lease:
    """
    A lock held through a renewed lease. Subclasses take, renew and drop the
    lease in their backend (`_take`, `_renew`, `_drop`); this class runs the
    heartbeat and keeps the holder's view of whether it still holds the lock.
    One object is one holder: create one per acquisition.
    """

    def __init__(self, name: str, max_hold: float):
        self.name = name
        self.max_hold = max_hold
        self._until = 0.0  # monotonic: when the lease runs out unless renewed
        self._hold_until = 0.0  # monotonic: no renewal past this (max_hold)
        self._lost = False
        self._released = threading.Event()
        self._heartbeat = None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never blocks."""
        started = time.monotonic()
        # A lease taken inside a transaction (tests run in one; the token path
        # never does) is invisible to other connections until the commit, so
        # no heartbeat could renew it, and nobody else can take it meanwhile:
        # it gets its whole max_hold at once, as every lease did before.
        renewed = not connection.in_atomic_block
        seconds = min(settings.TOKENSERVER_LOCK_LEASE, self.max_hold) if renewed else self.max_hold
        if not self._take(seconds):
            return False
        self._until, self._hold_until = started + seconds, started + self.max_hold
        self._lost = False
        self._released.clear()
        if renewed and self._until < self._hold_until:
            self._heartbeat = threading.Thread(
                target=self._beat, name=f"lease {self.name}", daemon=True
            )
            self._heartbeat.start()
        return True

    def held(self) -> bool:
        """Whether the lock is still this holder's (renewed in time, not taken over)."""
        return not self._lost and not self._released.is_set() and time.monotonic() < self._until

    def release(self) -> None:
        """Stop the heartbeat (after a renewal in flight), then drop the lease if still ours."""
        self._released.set()
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.join(timeout=settings.TOKENSERVER_LOCK_LEASE)
        self._drop()

    def _beat(self) -> None:
        """The heartbeat: renew every third of a lease until released, lost or at max_hold."""
        lease = settings.TOKENSERVER_LOCK_LEASE
        try:
            while not self._released.wait(lease / 3):
                now = time.monotonic()
                if now >= self._until:
                    # Renewals failed (the database unreachable) for a whole
                    # lease, or this process stalled: another worker may hold it.
                    self._lose("its lease ran out before it could be renewed")
                    return
                seconds = min(lease, self._hold_until - now)
                try:
                    renewed = self._renew(seconds)
                except DatabaseError:
                    logger.warning("lease %s could not be renewed; trying again", self.name)
                    continue
                if not renewed:
                    self._lose("another worker took it over")
                    return
                self._until = now + seconds
                if self._until >= self._hold_until:
                    logger.warning(
                        "lock %s held for its limit of %g s: it lapses now",
                        self.name,
                        self.max_hold,
                    )
                    return
        finally:
            connections.close_all()  # this thread's connections

    def _lose(self, why: str) -> None:
        self._lost = True
        logger.warning("lock %s lost: %s", self.name, why)

    # The backend: take a lease of `seconds` if free (True) or not (False);
    # renew ours for `seconds` from now (False: it is no longer ours; raises
    # DatabaseError when it cannot tell); drop it if still ours.
    def _take(self, seconds: float) -> bool:
        raise NotImplementedError

    def _renew(self, seconds: float) -> bool:
        raise NotImplementedError

    def _drop(self) -> None:
        raise NotImplementedError


class DatabaseLock(Lease):
    """A lease row in FetchLease; works across processes on SQLite and MySQL."""

    def __init__(self, name: str, max_hold: float):
        super().__init__(name, max_hold)
        self.holder = uuid.uuid4().hex

    def _take(self, seconds: float) -> bool:
        now = timezone.now()
        expires_at = now + timedelta(seconds=seconds)
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

    def _renew(self, seconds: float) -> bool:
        # Compare-and-extend: only while the row is still ours (a holder
        # that stalled past its lease may have been taken over).
        return bool(
            FetchLease.objects.filter(name=self.name, holder=self.holder).update(
                expires_at=timezone.now() + timedelta(seconds=seconds)
            )
        )

    def _drop(self) -> None:
        try:
            FetchLease.objects.filter(name=self.name, holder=self.holder).delete()
        except DatabaseError:
            # The database went away: the lease expires by itself.
            logger.warning("lease %s could not be released; it will expire", self.name)


class RedisLock(Lease):
    """
    A redis-py lock through django-redis (`SET NX PX`, released and extended
    by token) in front of a database lease, which is the authority.

    Waiters poll the Redis lock, which costs no database query; only its
    winner then takes the database lease. A worker that finds Redis down
    (tokenserver.cache marks it) takes the database lease alone, so workers that
    disagree about whether Redis is up still never both hold the lock.
    Refreshes are rare, so the lease's few queries cost little. The heartbeat
    renews both; whether the lock is held is the database lease's answer.
    """

    def __init__(self, name: str, max_hold: float):
        super().__init__(name, max_hold)
        self._redis = None
        self._lease = None

    def _take(self, seconds: float) -> bool:
        redis_lock = None
        if cache_available():
            try:
                candidate = cache.lock(f"lock:{self.name}", timeout=seconds, thread_local=False)
                if not candidate.acquire(blocking=False):
                    return False
                redis_lock = candidate
            except CACHE_ERRORS as error:
                health.failed(error)
        lease = DatabaseLock(self.name, self.max_hold)
        if not lease._take(seconds):
            if redis_lock is not None:
                self._release_redis(redis_lock)
            return False
        self._redis, self._lease = redis_lock, lease
        return True

    def _renew(self, seconds: float) -> bool:
        if self._redis is not None:
            try:
                self._redis.extend(seconds, replace_ttl=True)
            except LockError:
                # Not ours any more (it ran out): waiters may take it, and
                # then fail on the database lease, which is still ours.
                logger.warning("lock %s: its Redis lock ran out", self.name)
                self._redis = None
            except CACHE_ERRORS as error:
                health.failed(error)
        return self._lease._renew(seconds)

    def _drop(self) -> None:
        redis_lock, lease = self._redis, self._lease
        self._redis = self._lease = None
        if lease is not None:
            lease._drop()
        if redis_lock is not None:
            self._release_redis(redis_lock)

    def _release_redis(self, redis_lock) -> None:
        try:
            redis_lock.release()
        except LockError:
            # The lease expired while we held it (a holder stuck past its
            # max_hold) and someone else may hold it now: nothing to release.
            logger.warning("lock %s expired before it was released", self.name)
        except CACHE_ERRORS as error:
            # Redis went away while we held the lock: it expires by itself.
            health.failed(error)


def lock_for(name: str, max_hold: float) -> Lease:
    """
    The configured lock backend's lock for `name`: a short lease, renewed
    while its holder lives, for at most `max_hold` seconds in all.
    """
    if settings.TOKENSERVER_LOCK_BACKEND == "redis":
        return RedisLock(name, max_hold)
    return DatabaseLock(name, max_hold)
