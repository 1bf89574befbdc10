"""
The token path of tokens.services.token_get: cache, database, lock +
upstream; flushes and rejected tokens; secret changes, even mid-fetch.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from secret_store.models import Secret
from tests.factories import RealmFactory, SecretFactory, stored_token
from tests.helpers import wait_until
from tokens.background import wait_for_background_refreshes
from tokens.models import FetchLog, StoredToken
from tokens.services import token_get
from tokens.testing import numbered_tokens
from tokenserver.errors import NotFound, SecretDisabled, TooManyFlushes, UpstreamError

pytestmark = pytest.mark.django_db


def test_cold_token_comes_from_upstream_then_cache(upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS", "expires_in": 7200})

    first = token_get("wxgzh", "wxgzh_secret")
    second = token_get("wxgzh", "wxgzh_secret")

    assert (first.token, first.source) == ("ACCESS", "upstream")
    assert (second.token, second.source) == ("ACCESS", "cache")
    assert len(upstream.calls("/cgi-bin/token")) == 1
    # The seed's arguments went into the query string.
    assert upstream.calls("/cgi-bin/token")[0]["query"] == {
        "appid": "wx1234567890abcdef",
        "secret": "0123456789abcdef0123456789abcdef",
        "grant_type": "client_credential",
    }
    assert 7_190_000 < first.expires_in_ms() <= 7_200_000


def test_database_answers_when_cache_is_empty(upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS", "expires_in": 7200})
    token_get("wxgzh", "wxgzh_secret")
    from django.core.cache import cache

    cache.clear() if not hasattr(cache, "delete_pattern") else cache.delete_pattern("*")

    again = token_get("wxgzh", "wxgzh_secret")
    cached = token_get("wxgzh", "wxgzh_secret")

    assert (again.token, again.source) == ("ACCESS", "database")
    assert cached.source == "cache"  # put back in the cache
    assert len(upstream.calls("/cgi-bin/token")) == 1


@pytest.mark.django_db(transaction=True)
def test_token_inside_refresh_margin_is_served_and_refreshed_in_the_background(
    upstream, wechat_secret
):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    # A stored token with 100 s left, under the realm's 300 s margin.
    stored_token(wechat_secret, token="OLD", age=7100, left=100)

    result = token_get("wxgzh", "wxgzh_secret")
    wait_for_background_refreshes()

    # Returned at once (stale-while-revalidate); the refresh happened behind it.
    assert (result.token, result.source) == ("OLD", "database")
    assert StoredToken.objects.get(secret=wechat_secret).token == "TOKEN-1"
    assert token_get("wxgzh", "wxgzh_secret").token == "TOKEN-1"
    assert len(upstream.calls("/cgi-bin/token")) == 1


def test_expired_token_waits_for_the_refresh(upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    stored_token(wechat_secret, token="EXPIRED", age=7300, left=-1)

    result = token_get("wxgzh", "wxgzh_secret")

    assert (result.token, result.source) == ("TOKEN-1", "upstream")


def test_flush_inside_the_minimum_interval_returns_the_token_just_fetched(upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    token_get("wxgzh", "wxgzh_secret")  # TOKEN-1, fetched just now

    flushed = token_get("wxgzh", "wxgzh_secret", flush=True)

    assert (flushed.token, flushed.source) == ("TOKEN-1", "cache")
    assert len(upstream.calls("/cgi-bin/token")) == 1


def test_flush_after_the_minimum_interval_fetches(upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    stored_token(wechat_secret, token="OLD", age=31, left=7000)

    flushed = token_get("wxgzh", "wxgzh_secret", flush=True)

    assert (flushed.token, flushed.source) == ("TOKEN-1", "upstream")


def test_rejected_token_that_is_still_current_is_replaced(upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    stored_token(wechat_secret, token="CURRENT", age=600, left=6600)

    result = token_get("wxgzh", "wxgzh_secret", rejected="CURRENT")

    assert (result.token, result.source) == ("TOKEN-1", "upstream")
    assert FetchLog.objects.get().trigger == "flush"


def test_rejected_token_already_replaced_costs_no_upstream_call(upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    stored_token(wechat_secret, token="NEWER", age=600, left=6600)

    result = token_get("wxgzh", "wxgzh_secret", rejected="OLDER")

    assert (result.token, result.source) == ("NEWER", "database")
    assert upstream.calls("/cgi-bin/token") == []


@pytest.mark.django_db
def test_a_rejected_token_is_never_handed_back(upstream, wechat_secret):
    # Finding: inside the minimum interval, rejected=T returned T itself.
    stored_token(wechat_secret, token="JUST-FETCHED", age=5, left=7195)

    with pytest.raises(TooManyFlushes) as raised:
        token_get("wxgzh", "wxgzh_secret", rejected="JUST-FETCHED")

    assert 20 <= raised.value.retry_after <= 25
    assert upstream.calls("/cgi-bin/token") == []


def test_margin_larger_than_lifetime_does_not_refresh_every_request(upstream):
    # A provider granting 60 s under a 300 s margin: refresh at half-life
    # instead of sending every request upstream.
    realm = RealmFactory(url=upstream.url(), refresh_margin=300)
    secret = SecretFactory(realm=realm)
    upstream.reply_with("/token", numbered_tokens(lifetime=60))

    results = [token_get(realm.id, secret.name) for _ in range(5)]

    assert [r.source for r in results] == ["upstream"] + ["cache"] * 4
    assert len(upstream.calls()) == 1


def test_flush_fetches_a_new_token(upstream, wechat_secret):
    wechat_secret.realm.min_flush_interval = 0
    wechat_secret.realm.save()
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    token_get("wxgzh", "wxgzh_secret")

    flushed = token_get("wxgzh", "wxgzh_secret", flush=True)

    assert (flushed.token, flushed.source) == ("TOKEN-2", "upstream")
    assert token_get("wxgzh", "wxgzh_secret").token == "TOKEN-2"
    assert list(FetchLog.objects.order_by("id").values_list("trigger", flat=True)) == [
        "request",
        "flush",
    ]


def test_every_upstream_attempt_writes_one_fetchlog_row(upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS", "expires_in": 7200}, delay=0.05)

    token_get("wxgzh", "wxgzh_secret", client="operator")
    token_get("wxgzh", "wxgzh_secret")

    log = FetchLog.objects.get()
    assert (log.realm, log.key, log.trigger, log.outcome) == (
        "wxgzh",
        "wxgzh_secret",
        "request",
        "ok",
    )
    assert (log.http_status, log.lifetime, log.client) == (200, 7200, "operator")
    assert 50 <= log.duration_ms < 5000  # the upstream took 50 ms to answer


def test_failed_fetch_is_logged_and_raises_upstream_error(upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"errcode": 40013, "errmsg": "invalid appid"})

    with pytest.raises(UpstreamError) as raised:
        token_get("wxgzh", "wxgzh_secret")

    assert raised.value.detail == "upstream answered HTTP 200 with errcode 40013: invalid appid"
    log = FetchLog.objects.get()
    assert (log.outcome, log.http_status, log.error_code, log.error_message) == (
        "upstream_error",
        200,
        "40013",
        "invalid appid",
    )
    assert not StoredToken.objects.exists()


def test_unknown_realm_and_key_are_not_found(wechat_secret):
    with pytest.raises(NotFound, match="Unknown realm 'nope'"):
        token_get("nope", "wxgzh_secret")
    with pytest.raises(NotFound, match="has no secret 'nope'"):
        token_get("wxgzh", "nope")


@pytest.mark.django_db
def test_names_are_exact_even_where_the_database_ignores_case(upstream, wechat_secret):
    # Review of issue 5: MySQL's collation matched "WXGZH_SECRET" to "wxgzh_secret",
    # so a client's case-sensitive patterns could be sidestepped.
    upstream.reply("/cgi-bin/token", {"access_token": "T", "expires_in": 7200})

    with pytest.raises(NotFound):
        token_get("wxgzh", "WXGZH_SECRET")


def test_disabled_secret_is_refused_even_when_cached(upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS", "expires_in": 7200})
    token_get("wxgzh", "wxgzh_secret")

    wechat_secret.enabled = False
    wechat_secret.save()  # evicts the cache entry (tokens.signals)

    with pytest.raises(SecretDisabled):
        token_get("wxgzh", "wxgzh_secret")


def test_new_credentials_drop_the_stored_token(upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    token_get("wxgzh", "wxgzh_secret")

    wechat_secret.key_2 = "a-new-app-secret-value"
    wechat_secret.save()

    assert token_get("wxgzh", "wxgzh_secret").token == "TOKEN-2"


def test_comment_change_keeps_the_stored_token(upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    token_get("wxgzh", "wxgzh_secret")

    wechat_secret.comment = "billing app"
    wechat_secret.save()

    assert token_get("wxgzh", "wxgzh_secret").source == "database"


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
    assert not StoredToken.objects.filter(secret=wechat_secret).exists()
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

    assert not StoredToken.objects.filter(secret=wechat_secret).exists()
    again = token_get("wxgzh", "wxgzh_secret")
    assert again.token == "TOKEN-2"
    assert upstream.calls("/cgi-bin/token")[-1]["query"]["secret"] == "a-new-app-secret"


def test_fixed_realm_returns_the_stored_token_without_upstream():
    realm = RealmFactory(kind="fixed", url="")
    expires = timezone.now() + timedelta(hours=1)
    SecretFactory(realm=realm, name="app", token="FIXED-TOKEN", token_expires_at=expires)

    first = token_get(realm.id, "app")
    second = token_get(realm.id, "app")

    assert (first.token, first.source) == ("FIXED-TOKEN", "fixed")
    assert (second.token, second.source) == ("FIXED-TOKEN", "fixed")
    assert 3_590_000 < first.expires_in_ms() <= 3_600_000
    assert not FetchLog.objects.exists()


def test_fixed_token_without_expiry_has_no_expires_in():
    realm = RealmFactory(kind="fixed", url="")
    SecretFactory(realm=realm, name="app", token="FIXED-TOKEN")

    assert token_get(realm.id, "app").expires_in_ms() is None


def test_expired_fixed_token_is_not_served():
    realm = RealmFactory(kind="fixed", url="")
    SecretFactory(
        realm=realm, name="app", token="OLD", token_expires_at=timezone.now() - timedelta(seconds=1)
    )

    with pytest.raises(NotFound, match="expired"):
        token_get(realm.id, "app")


def test_expires_in_never_exceeds_what_is_left(upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS", "expires_in": 7200})
    token_get("wxgzh", "wxgzh_secret")
    time.sleep(0.05)

    assert token_get("wxgzh", "wxgzh_secret").expires_in_ms() <= 7_200_000 - 50


@pytest.mark.django_db(transaction=True)
def test_upstream_call_runs_outside_any_transaction(upstream, wechat_secret, monkeypatch):
    from tokens import upstream as upstream_module

    seen = []
    real_fetch = upstream_module.fetch

    def spy(realm, secret, **options):
        seen.append(connection.in_atomic_block)
        return real_fetch(realm, secret, **options)

    monkeypatch.setattr(upstream_module, "fetch", spy)
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS", "expires_in": 7200})

    token_get("wxgzh", "wxgzh_secret")

    assert seen == [False]
