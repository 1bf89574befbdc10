"""
Regressions found in the review of issues 2–4 (each test names the finding).
"""

import logging
import threading
import time

import pytest
from django.conf import settings

from secret_store.models import Secret
from tests.factories import STAFF_PASSWORD, RealmFactory, SecretFactory, stored_token
from tests.helpers import wait_until
from tokens import cache as token_cache
from tokens.locks import RedisLock
from tokens.models import CachedToken
from tokens.services import token_get
from tokens.testing import numbered_tokens
from tokens.upstream import UpstreamFailure, fetch
from tokenserver.errors import NotFound, SecretDisabled, TooManyFlushes
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

    def refused():
        try:
            token_get("wxgzh", "wxgzh_secret")
        except SecretDisabled:
            return True
        return False

    wait_until(refused, message="the 1 s local cache entry expired and the change was seen")


@pytest.mark.django_db(transaction=True)
def test_a_fetch_in_flight_when_the_secret_is_disabled_keeps_nothing(upstream, wechat_secret):
    # Finding: a fetch that ended after the secret changed cached and stored
    # its token again, and a disabled secret was served from the cache.
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.5))
    results = []
    fetcher = threading.Thread(target=lambda: results.append(token_get("wxgzh", "wxgzh_secret")))
    fetcher.start()
    wait_until(lambda: upstream.calls("/cgi-bin/token"), message="the fetch reached the upstream")

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
    wait_until(lambda: upstream.calls("/cgi-bin/token"), message="the fetch reached the upstream")

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
    stored_token(wechat_secret, token="JUST-FETCHED", age=5, left=7195)

    with pytest.raises(TooManyFlushes) as raised:
        token_get("wxgzh", "wxgzh_secret", rejected="JUST-FETCHED")

    assert 20 <= raised.value.retry_after <= 25
    assert upstream.calls("/cgi-bin/token") == []


@pytest.mark.django_db
def test_a_rejected_token_inside_the_interval_is_a_429_over_the_api(api, wechat_secret):
    stored_token(wechat_secret, token="T1", age=0, left=7200)

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


@pytest.fixture
def dripping_upstream():
    """
    start(chunks, pause): a server on 127.0.0.1 that answers one request with
    `chunks`, `pause` seconds apart; returns its URL. Stopped after the test.
    """
    import socket

    stop = threading.Event()
    started = []

    def start(chunks, pause):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.05)  # to notice `stop` while nobody connects

        def drip():
            with listener:
                while not stop.is_set():
                    try:
                        conn, _ = listener.accept()
                        break
                    except TimeoutError:
                        continue
                else:
                    return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    for chunk in chunks:
                        conn.sendall(chunk)
                        if stop.wait(pause):
                            return
                except OSError:
                    pass

        thread = threading.Thread(target=drip, daemon=True)
        thread.start()
        started.append(thread)
        return f"http://127.0.0.1:{listener.getsockname()[1]}/token"

    yield start
    stop.set()
    for thread in started:
        thread.join(5)
        assert not thread.is_alive(), "the dripping upstream did not stop"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("chunks", "pause"),
    [
        # Review of issues 2-4: a body dripping in (each read is quick enough).
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"] + [b"x" * 10] * 40, 0.1),
        # Review of issue 5: headers sent a byte at a time.
        ([bytes([b]) for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 200], 0.2),
    ],
    ids=["body", "headers"],
)
def test_an_answer_dripping_past_the_deadline_times_out(dripping_upstream, chunks, pause):
    # requests' read timeout bounds each read, not the whole answer: the
    # call has one deadline, so it cannot hold the secret's lock past its lease.
    realm = RealmFactory(url=dripping_upstream(chunks, pause), timeout=0.5)
    started = time.monotonic()

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "timeout"
    assert time.monotonic() - started < 2.0


@pytest.mark.django_db
def test_slow_name_resolution_times_out(monkeypatch, request):
    import socket

    real = socket.getaddrinfo
    answer_now = threading.Event()
    request.addfinalizer(answer_now.set)  # the lookup thread ends with the test

    def slow(host, *args, **kwargs):
        if host == "slow-dns.example.test":
            answer_now.wait(3)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    realm = RealmFactory(url="http://slow-dns.example.test/token", timeout=0.3)
    started = time.monotonic()

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "timeout"
    assert time.monotonic() - started < 1.5


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
    token_cache.cache_write(
        "wxgzh",
        "wxgzh_secret",
        token="T",
        expires_at=time.time() + 60,
        fetched_at=time.time(),
        refresh_at=time.time() + 30,
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


@pytest.mark.django_db
def test_names_are_exact_even_where_the_database_ignores_case(upstream, wechat_secret):
    # Review of issue 5: MySQL's collation matched "WXGZH_SECRET" to "wxgzh_secret",
    # so a client's case-sensitive patterns could be sidestepped.
    upstream.reply("/cgi-bin/token", {"access_token": "T", "expires_in": 7200})

    with pytest.raises(NotFound):
        token_get("wxgzh", "WXGZH_SECRET")


@pytest.mark.django_db
def test_deleting_a_client_revokes_its_tokens():
    from clients.access_tokens import (
        InvalidAccessToken,
        access_token_issue,
        access_token_verify,
    )
    from clients.access_tokens import revocations as client_revocations
    from clients.services import client_create

    app, _ = client_create("app", scopes=["token:read"])
    token, _ = access_token_issue(app.client_id, app.scopes)

    app.delete()
    client_revocations.invalidate()

    with pytest.raises(InvalidAccessToken, match="revoked"):
        access_token_verify(token)


@pytest.mark.django_db
def test_a_token_issued_right_after_a_revocation_is_valid():
    from clients.access_tokens import access_token_issue, access_token_verify, client_revoke_tokens
    from clients.services import client_create

    app, _ = client_create("app", scopes=["token:read"])
    client_revoke_tokens(app.client_id)
    # Issue times are rounded to the millisecond: one that rounds down to the
    # revocation's time counts as revoked. "Right after" is the next millisecond.
    revoked = time.time()
    wait_until(lambda: round(time.time(), 3) > revoked)
    token, _ = access_token_issue(app.client_id, app.scopes)

    assert access_token_verify(token).client_id == app.client_id


@pytest.mark.django_db
def test_revocations_survive_a_lost_redis_mirror():
    # Review of issue 5: the database is the truth; a flushed Redis un-revokes nothing.
    from django.core.cache import cache

    from clients.access_tokens import (
        InvalidAccessToken,
        access_token_issue,
        access_token_revoke,
        access_token_verify,
    )
    from clients.access_tokens import (
        revocations as client_revocations,
    )
    from clients.services import client_create

    app, _ = client_create("app", scopes=["token:read"])
    token, _ = access_token_issue(app.client_id, app.scopes)
    access_token_revoke(token)
    cache.delete("revocations")  # the mirror is gone (a Redis restart, a flush)
    client_revocations.invalidate()

    with pytest.raises(InvalidAccessToken, match="revoked"):
        access_token_verify(token)


@pytest.mark.django_db
def test_non_ascii_basic_header_is_a_401_not_a_500(anonymous_api):
    response = anonymous_api.post(
        "/api/auth/token",
        {"grant_type": "client_credentials"},
        format="json",
        HTTP_AUTHORIZATION="Basic é",
    )

    assert response.status_code == 401


@pytest.mark.django_db
def test_staff_basic_failures_are_throttled(anonymous_api, staff_user, settings):
    import base64

    settings.TOKENSERVER_AUTH_FAILURES_PER_MINUTE = 3
    wrong = "Basic " + base64.b64encode(b"operator:wrong").decode()
    right = "Basic " + base64.b64encode(f"operator:{STAFF_PASSWORD}".encode()).decode()

    statuses = [
        anonymous_api.get("/api/realm", HTTP_AUTHORIZATION=wrong).status_code for _ in range(3)
    ]
    throttled = anonymous_api.get("/api/realm", HTTP_AUTHORIZATION=right)

    assert statuses == [401, 401, 401]
    assert throttled.status_code == 429
