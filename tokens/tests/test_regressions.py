"""
Regressions found in the review of issues 2–4 (each test names the finding).
"""

import logging
import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from conftest import RealmFactory, SecretFactory, numbered_tokens
from secret_store.models import Secret
from tokens import cache as token_cache
from tokens.locks import RedisLock
from tokens.models import CachedToken
from tokens.services import token_get
from tokens.upstream import UpstreamFailure, fetch
from tokenserver.errors import SecretDisabled, TooManyFlushes
from tokenserver.logging import RedactQueryStrings

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
    time.sleep(1.1)

    with pytest.raises(SecretDisabled):
        token_get("wxgzh", "wxgzh_secret")


@pytest.mark.django_db(transaction=True)
def test_a_fetch_in_flight_when_the_secret_is_disabled_keeps_nothing(upstream, wechat_secret):
    # Finding: a fetch that ended after the secret changed cached and stored
    # its token again, and a disabled secret was served from the cache.
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.5))
    results = []
    fetcher = threading.Thread(target=lambda: results.append(token_get("wxgzh", "wxgzh_secret")))
    fetcher.start()
    while not upstream.calls("/cgi-bin/token"):
        time.sleep(0.01)

    secret = Secret.objects.get(pk=wechat_secret.pk)
    secret.enabled = False
    secret.save()
    fetcher.join()

    assert results[0].token == "TOKEN-1"  # asked before the change: answered
    assert not CachedToken.objects.filter(secret=wechat_secret).exists()
    with pytest.raises(SecretDisabled):
        token_get("wxgzh", "wxgzh_secret")


@pytest.mark.django_db(transaction=True)
def test_a_fetch_in_flight_when_credentials_change_keeps_nothing(upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.5))
    fetcher = threading.Thread(target=lambda: token_get("wxgzh", "wxgzh_secret"))
    fetcher.start()
    while not upstream.calls("/cgi-bin/token"):
        time.sleep(0.01)

    secret = Secret.objects.get(pk=wechat_secret.pk)
    secret.key_2 = "a-new-app-secret"
    secret.save()
    fetcher.join()

    assert not CachedToken.objects.filter(secret=wechat_secret).exists()
    again = token_get("wxgzh", "wxgzh_secret")
    assert again.token == "TOKEN-2"
    assert upstream.calls("/cgi-bin/token")[-1]["query"]["secret"] == "a-new-app-secret"


@needs_redis
@pytest.mark.django_db(transaction=True)
def test_a_worker_that_thinks_redis_is_down_cannot_take_a_held_lock():
    # Finding: a worker falling back to the database lease while another held
    # the Redis lock made two holders. The database lease is the authority.
    first = RedisLock("secret:r:k", ttl=30)
    assert first.try_acquire()
    token_cache.health.failed(ConnectionError("simulated"))
    try:
        second = RedisLock("secret:r:k", ttl=30)
        assert not second.try_acquire()
    finally:
        token_cache.health.reset()
        first.release()
    assert RedisLock("secret:r:k", ttl=30).try_acquire()


def test_query_strings_are_redacted_from_log_lines():
    # Finding: urllib3 logs "Failed to parse headers (url=…?appid=…&secret=…)" at WARNING.
    record = logging.LogRecord(
        "urllib3.connection",
        logging.WARNING,
        __file__,
        1,
        "Failed to parse headers (url=%s): %s",
        ("https://api.weixin.qq.com/cgi-bin/token?appid=wx1&secret=s3cr3t-value", "bad"),
        None,
    )

    RedactQueryStrings().filter(record)

    assert "s3cr3t-value" not in record.getMessage()
    assert "appid=***&secret=***" in record.getMessage()
    assert "redact_query_strings" in settings.LOGGING["handlers"]["console"]["filters"]


@pytest.mark.django_db
def test_a_rejected_token_is_never_handed_back(upstream, wechat_secret):
    # Finding: inside the minimum interval, rejected=T returned T itself.
    now = timezone.now()
    CachedToken.objects.create(
        secret=wechat_secret,
        token="JUST-FETCHED",
        fetched_at=now - timedelta(seconds=5),
        expires_at=now + timedelta(seconds=7195),
    )

    with pytest.raises(TooManyFlushes) as raised:
        token_get("wxgzh", "wxgzh_secret", rejected="JUST-FETCHED")

    assert 20 <= raised.value.retry_after <= 25
    assert upstream.calls("/cgi-bin/token") == []


@pytest.mark.django_db
def test_a_rejected_token_inside_the_interval_is_a_429_over_the_api(api, wechat_secret):
    now = timezone.now()
    CachedToken.objects.create(
        secret=wechat_secret, token="T1", fetched_at=now, expires_at=now + timedelta(hours=2)
    )

    response = api.get("/api/token?realm=wxgzh&key=wxgzh_secret&flush=true&rejected=T1")

    assert response.status_code == 429
    assert response.json()["error"] == "too_many_flushes"
    assert int(response["Retry-After"]) >= 1


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/realm", "/api/secret", "/api/realm/x/test"])
def test_deeply_nested_json_is_a_400(api, path):
    # Finding: RecursionError in the JSON parser was a 500.
    body = "[" * 50000 + "]" * 50000

    response = api.post(path, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_request"


@pytest.mark.django_db
@pytest.mark.parametrize("lifetime", [b"NaN", b"Infinity", b"1e999", b'"nan"'])
def test_a_lifetime_that_is_not_finite_is_refused(upstream, lifetime):
    # Finding: NaN or infinite lifetimes crashed after a successful fetch.
    realm = RealmFactory(url=upstream.url())
    upstream.reply("/token", b'{"access_token": "T", "expires_in": ' + lifetime + b"}")

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "invalid_response"


@pytest.mark.django_db
def test_a_huge_lifetime_is_capped_at_a_year(upstream):
    realm = RealmFactory(url=upstream.url())
    upstream.reply("/token", {"access_token": "T", "expires_in": 1e300})

    assert fetch(realm, SecretFactory(realm=realm)).lifetime == 365 * 86400


@pytest.mark.django_db
def test_an_answer_dripping_past_the_deadline_times_out(upstream):
    # Finding: requests' read timeout bounds each read, not the whole answer.
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def drip():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        try:
            for _ in range(40):
                conn.sendall(b"x" * 10)
                time.sleep(0.1)
        except OSError:
            pass
        conn.close()

    threading.Thread(target=drip, daemon=True).start()
    realm = RealmFactory(url=f"http://127.0.0.1:{port}/token", timeout=0.5)
    started = time.monotonic()

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "timeout"
    assert time.monotonic() - started < 2.0
    listener.close()
