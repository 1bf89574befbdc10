"""
The single-flight lock's lease (issue 11, item 10): short, renewed by a
heartbeat while its holder lives, never past the holder's `max_hold`, and
known to be lost when another worker took it over. On whichever backend the
suite runs (the database lease; with Redis, the Redis lock in front of it).

The tests commit (transaction=True): the heartbeat renews the lease from a
thread of its own, with its own database connection. Their lease is short
(TOKENSERVER_LOCK_LEASE) so that several leases pass quickly.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connections
from django.utils import timezone

from tests.factories import RealmFactory, SecretFactory, stored_token
from tests.helpers import wait_until
from tokens import cache as token_cache
from tokens.locks import lock_for
from tokens.models import FetchLease, StoredToken
from tokens.services import token_get

pytestmark = pytest.mark.django_db(transaction=True)

LEASE = 0.6


@pytest.fixture(autouse=True)
def short_lease(settings):
    settings.TOKENSERVER_LOCK_LEASE = LEASE


def lease_row(name):
    return FetchLease.objects.get(name=name)


def test_a_live_holder_keeps_its_lock_past_the_lease(settings):
    threads_before = threading.active_count()
    holder = lock_for("secret:r:k", max_hold=30)
    assert holder.try_acquire()
    first_expiry = lease_row("secret:r:k").expires_at

    # Two leases later the first expiry is long past, yet the lock is still held.
    wait_until(lambda: timezone.now() > first_expiry + timedelta(seconds=LEASE), timeout=5)

    assert lease_row("secret:r:k").expires_at > timezone.now()
    assert not lock_for("secret:r:k", max_hold=30).try_acquire()
    if settings.TOKENSERVER_LOCK_BACKEND == "redis":
        assert cache.has_key("lock:secret:r:k")  # renewed too: waiters still poll Redis only
    assert holder.held()
    holder.release()
    # The heartbeat ended with the release; the lock is free.
    assert threading.active_count() == threads_before
    assert not holder.held()
    assert not FetchLease.objects.exists()


def test_a_stuck_holder_loses_its_lock_at_max_hold():
    holder = lock_for("secret:r:k", max_hold=1.5)
    acquired = time.monotonic()
    assert holder.try_acquire()
    other = lock_for("secret:r:k", max_hold=30)

    wait_until(other.try_acquire, timeout=1.5 + LEASE + 2, message="the stuck holder's lock lapsed")

    # Renewed past its first lease (0.6 s), but not past max_hold.
    assert time.monotonic() - acquired > 1.4
    assert not holder.held()
    holder.release()  # drops nothing of the new holder's
    assert FetchLease.objects.filter(name="secret:r:k").exists()
    assert other.held()
    other.release()


def test_a_holder_whose_lease_was_taken_over_knows_it_and_leaves_it_alone():
    threads_before = threading.active_count()
    holder = lock_for("secret:r:k", max_hold=30)
    assert holder.try_acquire()

    # Another worker took the lease over (as after this one stalled past it).
    FetchLease.objects.filter(name="secret:r:k").update(holder="another-worker")

    wait_until(lambda: not holder.held(), timeout=LEASE, message="the holder saw it lost the lock")
    wait_until(lambda: threading.active_count() == threads_before, message="the heartbeat ended")
    holder.release()
    assert lease_row("secret:r:k").holder == "another-worker"


def test_a_refresh_that_lost_its_lock_hands_out_its_token_but_caches_nothing_over_a_newer_one(
    upstream, caplog
):
    realm = RealmFactory(url=upstream.url())
    secret = SecretFactory(realm=realm)
    answer = threading.Event()

    def held_answer(number):
        answer.wait(10)
        return 200, {"access_token": f"TOKEN-{number}", "expires_in": 7200}, 0

    upstream.reply_with("/token", held_answer)

    def request():
        try:
            return token_get(realm.id, secret.name)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(request)
        wait_until(upstream.calls, message="the holder reached the upstream")
        # Meanwhile another worker took the lock over and stored a newer token.
        FetchLease.objects.filter(name=f"secret:{realm.id}:{secret.name}").update(
            holder="another-worker"
        )
        stored_token(secret, token="NEWER", age=0, left=7200)
        wait_until(lambda: "lost" in caplog.text, timeout=LEASE, message="the holder saw it")
        answer.set()
        result = pending.result(timeout=10)

    # The request that asked first gets the token it fetched (it is valid) ...
    assert result.token == "TOKEN-1"
    # ... but neither the database nor the cache replaces the newer one with it.
    assert StoredToken.objects.get(secret=secret).token == "NEWER"
    assert token_cache.entry_read(realm.id, secret.name) is None
    assert token_get(realm.id, secret.name).token == "NEWER"
    assert len(upstream.calls()) == 1
