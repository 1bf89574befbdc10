"""
Dependencies failing for real. A Redis server of the test's own
that is killed mid-run and started again; a database that stops answering
(every query refused through Django's execute_wrapper hook); a worker
process killed with SIGKILL while it holds a secret's lock.
"""

import shutil
import socket
import sys
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import OperationalError, connection
from django.test import override_settings
from django.utils import timezone

from tests.factories import RealmFactory, SecretFactory
from tests.helpers import ChildProcess, child_env, free_port, wait_until
from tokens.models import FetchLog, StoredToken
from tokens.services import token_get
from tokens.testing import numbered_tokens
from tokenserver import cache as shared_cache
from tokenserver.errors import LockWaitTimeout, UpstreamUnavailable
from tokenserver.outbox import outbox

pytestmark = pytest.mark.slow


class RedisServer(ChildProcess):
    """A redis-server of the test's own, on a spare port, that can be killed and restarted."""

    def __init__(self, tmp_path):
        self.port = free_port()
        super().__init__(
            [
                "redis-server",
                "--port",
                self.port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp_path,
            ],
            ready=lambda: socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close(),
            log=tmp_path / "redis.log",
            start_timeout=10,
        )

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def own_redis(tmp_path, monkeypatch, request):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    request.addfinalizer(server.stop)  # whatever happens below
    caches = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": server.url,
            "KEY_PREFIX": "fault-test",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    # Retry a failed cache after 0.2 s instead of 5 s, to keep the test short.
    monkeypatch.setattr(shared_cache, "RETRY_INTERVAL", 0.2)
    shared_cache.health.reset()
    with override_settings(CACHES=caches, TOKENSERVER_LOCK_BACKEND="redis", REDIS_URL=server.url):
        yield server
    shared_cache.health.reset()


@pytest.mark.django_db(transaction=True)
def test_redis_stopped_mid_run_then_back(own_redis, upstream, wechat_secret, caplog):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    assert token_get("wxgzh", "wxgzh_secret").source == "upstream"
    assert token_get("wxgzh", "wxgzh_secret").source == "cache"

    own_redis.kill()
    with caplog.at_level("WARNING", logger="tokenserver.cache"):
        during = [token_get("wxgzh", "wxgzh_secret") for _ in range(20)]

    # Served from the database, no error, and a single warning for the interval.
    assert {r.source for r in during} == {"database"}
    assert {r.token for r in during} == {"TOKEN-1"}
    warnings = [r for r in caplog.records if "cache unavailable" in r.getMessage()]
    assert len(warnings) == 1
    # Flushes still single-flight, on the database lock.
    wechat_secret.realm.min_flush_interval = 0
    wechat_secret.realm.save()
    assert token_get("wxgzh", "wxgzh_secret", flush=True).token == "TOKEN-2"

    own_redis.start()
    wait_until(shared_cache.health.available, message="past the retry interval")
    assert token_get("wxgzh", "wxgzh_secret").source == "database"  # re-cached ...
    assert token_get("wxgzh", "wxgzh_secret").source == "cache"  # ... and used again
    assert len(upstream.calls("/cgi-bin/token")) == 2


@pytest.mark.django_db(transaction=True)
def test_api_answers_without_500_while_redis_is_down(own_redis, api, upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    own_redis.kill()

    response = api.get("/api/token?realm=wxgzh&key=wxgzh_secret")

    assert response.status_code == 200
    assert response.json()["token"] == "TOKEN-1"
    ready = api.get("/readyz").json()
    assert ready["checks"]["cache"] == "unavailable"
    # Issue 13: named, with the kind of error.
    assert ready["failed"] == [
        {"check": "cache", "reason": "cache (Redis) unreachable (ConnectionError)"}
    ]


# --- The database going away -------------------------------------------------------


@contextmanager
def database_down(*, writes_to=None):
    """
    Every query on this thread's connection fails as if the server were gone;
    with `writes_to`, only writes to those tables do.
    """

    def refuse(execute, sql, params, many, context):
        statement = sql.lstrip().upper()
        if writes_to is None or (
            not statement.startswith("SELECT")
            and any(table.upper() in statement for table in writes_to)
        ):
            raise OperationalError("(2006, 'Server has gone away')")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse):
        yield


@pytest.mark.django_db(transaction=True)
def test_tokens_in_the_cache_are_served_while_the_database_is_down(api, upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"access_token": "CACHED", "expires_in": 7200})
    token_get("wxgzh", "wxgzh_secret")

    with database_down():
        served = token_get("wxgzh", "wxgzh_secret")
        with pytest.raises(UpstreamUnavailable):
            token_get("wxgzh", "not-cached")
        ready = api.get("/readyz")

    assert (served.token, served.source) == ("CACHED", "cache")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "unavailable"
    assert api.get("/readyz").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_writes_that_fail_are_retried_not_lost(upstream, wechat_secret, caplog):
    upstream.reply("/cgi-bin/token", {"access_token": "NEW", "expires_in": 7200})

    # The database goes away between the upstream's answer and the writes.
    with database_down(writes_to=["tokens_storedtoken", "tokens_fetchlog"]):
        result = token_get("wxgzh", "wxgzh_secret")
    # The writes were deferred. (Not `len(outbox)`: the outbox retries from
    # a thread of its own, whose connection database_down does not reach, so
    # it may land them before this line runs.)
    assert "database write deferred" in caplog.text

    # The token was handed out (and cached) all the same ...
    assert result.token == "NEW"
    assert token_get("wxgzh", "wxgzh_secret").source == "cache"

    # ... and once the database is back the pending writes land.
    def flushed():
        outbox.flush()
        return len(outbox) == 0

    wait_until(flushed, timeout=10, message="the pending writes landed")
    assert StoredToken.objects.get(secret=wechat_secret).token == "NEW"
    assert FetchLog.objects.filter(outcome="ok").count() == 1


# --- A worker killed while it holds the lock --------------------------------------------

HOLDER = """
import django, sys
django.setup()
from tokens.services import token_get
token_get(sys.argv[1], sys.argv[2])
"""


@pytest.mark.django_db(transaction=True)
def test_lock_holder_killed_with_sigkill(upstream, tmp_path):
    realm = RealmFactory(url=upstream.url(), timeout=0.5, max_retries=0)
    secret = SecretFactory(realm=realm)
    # The first call hangs (the holder will be killed in it); later calls answer.
    upstream.reply_with(
        "/token",
        lambda n: (200, {"access_token": f"TOKEN-{n}", "expires_in": 7200}, 0.45 if n == 1 else 0),
    )
    holder = ChildProcess(
        [sys.executable, "-c", HOLDER, realm.id, secret.name],
        env=child_env(),
        log=tmp_path / "holder.log",
    )
    with holder:
        # Wait until the holder is inside the upstream call (it holds the lock) ...
        wait_until(upstream.calls, timeout=20, message="the holder reached the upstream")
        # ... and kill it there.
        holder.kill()

    # Nothing half-written: no token row, no log row from the dead worker.
    assert not StoredToken.objects.filter(secret=secret).exists()
    assert not FetchLog.objects.exists()
    # Until its lease expires others wait (bounded: 503), then one refreshes.
    refused = []

    def after_the_lease():
        try:
            return token_get(realm.id, secret.name)
        except LockWaitTimeout as error:
            refused.append(error)
            return None

    result = wait_until(after_the_lease, timeout=30, message="the dead holder's lease expired")
    assert refused  # the lease outlives one bounded wait
    assert result.token == "TOKEN-2"
    assert result.source == "upstream"
    assert len(upstream.calls()) == 2
    assert StoredToken.objects.get(secret=secret).token == "TOKEN-2"
    stored = StoredToken.objects.get(secret=secret)
    assert stored.expires_at > timezone.now() + timedelta(hours=1)


@pytest.mark.django_db(transaction=True)
def test_a_killed_holder_blocks_its_secret_only_for_the_short_lease(upstream, tmp_path):
    """
    Issue 11 (item 10): after `kill -9` of the worker refreshing a cold secret,
    the secret answered 503 for 56 s, until the lease (the whole call budget,
    54 s with the default timeout and retries) expired. The lease is now
    short and renewed while its holder lives, so it lapses within
    TOKENSERVER_LOCK_LEASE of the holder's death.
    """
    realm = RealmFactory(url=upstream.url(), timeout=5, max_retries=2)  # the defaults
    secret = SecretFactory(realm=realm)
    # The dead holder's call never answers; the next one answers at once.
    upstream.reply_with(
        "/token",
        lambda n: (200, {"access_token": f"TOKEN-{n}", "expires_in": 7200}, 120 if n == 1 else 0),
    )
    holder = ChildProcess(
        [sys.executable, "-c", HOLDER, realm.id, secret.name],
        env=child_env(),
        log=tmp_path / "holder.log",
    )
    with holder:
        wait_until(upstream.calls, timeout=20, message="the holder reached the upstream")
        holder.kill()
    killed_at = time.monotonic()

    def a_request_succeeds():
        try:
            return token_get(realm.id, secret.name)
        except LockWaitTimeout:  # each try waits up to timeout + 1 s
            return None

    bound = settings.TOKENSERVER_LOCK_LEASE + 3
    result = wait_until(a_request_succeeds, timeout=bound, message="the dead holder's lease lapsed")
    assert time.monotonic() - killed_at < bound
    assert (result.token, result.source) == ("TOKEN-2", "upstream")
    assert len(upstream.calls()) == 2


@pytest.mark.django_db(transaction=True)
def test_apps_get_stored_tokens_over_the_api_while_the_database_is_down(upstream, wechat_secret):
    # Bearer tokens verify without the database, so the whole request does.
    from rest_framework.test import APIClient

    from clients.access_tokens import access_token_issue, revocations
    from clients.services import client_create

    upstream.reply("/cgi-bin/token", {"access_token": "CACHED", "expires_in": 7200})
    app, _ = client_create("app", scopes=["token:read"], allow=["wxgzh/*"])
    access_token, _ = access_token_issue(app.client_id, app.scopes, allow=app.allow)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token}")
    assert api.get("/api/token?realm=wxgzh&key=wxgzh_secret").json()["source"] == "upstream"
    revocations.invalidate()  # the next check must reload, with the database gone

    with database_down():
        response = api.get("/api/token?realm=wxgzh&key=wxgzh_secret")

    assert response.status_code == 200
    assert (response.json()["token"], response.json()["source"]) == ("CACHED", "cache")
