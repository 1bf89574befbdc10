"""
The token cache in front of the database: a per-process cache's entries
expire, so other processes' changes are seen; an entry sealed under a
dropped key is a miss, not an error; and a worker that believes Redis is
down cannot take a lock held there (the database lease is the authority).
"""

import time

import pytest
from django.conf import settings

from secret_store.models import Secret
from tests.helpers import wait_until
from tokens import cache as token_cache
from tokens.locks import RedisLock
from tokens.results import Snapshot
from tokens.services import token_get
from tokenserver import cache as shared_cache
from tokenserver.errors import SecretDisabled

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="runs with REDIS_URL")
needs_local_cache = pytest.mark.skipif(bool(settings.REDIS_URL), reason="runs without Redis")


@needs_local_cache
@pytest.mark.django_db
def test_per_process_cache_entries_expire_so_other_processes_see_changes(
    upstream, wechat_secret, settings
):
    # Finding: without Redis, a change made through another process (which
    # evicts only its own cache) was not seen here for up to the token's life.
    settings.TOKENSERVER_LOCAL_CACHE_TTL = 1
    upstream.reply("/cgi-bin/token", {"access_token": "T", "expires_in": 7200})
    assert token_get("wxgzh", "wxgzh_secret").source == "upstream"

    # Another process disables the secret: no signal reaches this one.
    Secret.objects.filter(pk=wechat_secret.pk).update(enabled=False)

    def refused():
        try:
            token_get("wxgzh", "wxgzh_secret")
        except SecretDisabled:
            return True
        return False

    wait_until(refused, message="the 1 s local cache entry expired and the change was seen")


@pytest.mark.django_db
def test_cache_entry_sealed_under_a_dropped_key_is_a_miss(upstream, wechat_secret, settings):
    # Review of issue 5: after rotatekeys and dropping the old key, cache
    # entries sealed under it made every hit a 500.
    from cryptography.fernet import Fernet

    upstream.reply("/cgi-bin/token", {"access_token": "T", "expires_in": 7200})
    token_get("wxgzh", "wxgzh_secret")
    from django.core.management import call_command

    new_key = Fernet.generate_key().decode()
    settings.TOKENSERVER_ENCRYPTION_KEYS = [new_key, *settings.TOKENSERVER_ENCRYPTION_KEYS]
    call_command("rotatekeys", stdout=__import__("io").StringIO())
    # An entry another process cached under the old key, still in the cache:
    token_cache.entry_write(
        "wxgzh",
        "wxgzh_secret",
        Snapshot("T", time.time(), time.time() + 60, time.time() + 30),
        now=time.time(),
    )
    settings.TOKENSERVER_ENCRYPTION_KEYS = [new_key]
    # (the entry above was sealed under the new key; seal one under a dropped key)
    from django.core.cache import cache

    entry = cache.get("token:wxgzh:wxgzh_secret")
    entry["t"] = Fernet(Fernet.generate_key()).encrypt(b"T").decode()
    cache.set("token:wxgzh:wxgzh_secret", entry, 60)

    result = token_get("wxgzh", "wxgzh_secret")

    assert (result.token, result.source) == ("T", "database")


@needs_redis
@pytest.mark.django_db(transaction=True)
def test_a_worker_that_thinks_redis_is_down_cannot_take_a_held_lock():
    # Finding: a worker falling back to the database lease while another held
    # the Redis lock made two holders. The database lease is the authority.
    first = RedisLock("secret:r:k", max_hold=30)
    assert first.try_acquire()
    shared_cache.health.failed(ConnectionError("simulated"))
    try:
        second = RedisLock("secret:r:k", max_hold=30)
        assert not second.try_acquire()
    finally:
        shared_cache.health.reset()
        first.release()
    third = RedisLock("secret:r:k", max_hold=30)
    assert third.try_acquire()
    third.release()
