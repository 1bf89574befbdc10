"""
What the token path counts for /metrics (issue 13), read back from a real
scrape of this process: token requests by realm and source, cache hits and
misses, upstream attempts by outcome and their latency, lock waits, and the
facts computed when scraped (token states, refresher lag, breakers per realm).
Counters are this process's since it started, so the tests compare before and
after.
"""

import pytest
from django.utils import timezone

from tests.factories import RealmFactory, stored_token
from tests.helpers import run_at_once
from tests.metrics import value
from tokens import guards
from tokens.background import wait_for_background_refreshes
from tokens.refresh_health import refresh_failed, refresh_succeeded
from tokens.services import token_get
from tokens.testing import numbered_tokens
from tokens.upstream import UpstreamFailure
from tokenserver.errors import NotFound


@pytest.fixture
def scrape(anonymous_api):
    """The scrape's text (from 127.0.0.1, which may scrape when nothing is configured)."""

    def get():
        response = anonymous_api.get("/metrics")
        assert response.status_code == 200, response.content
        return response.content.decode()

    return get


def requests_of(text, realm, source):
    return value(text, "tokenserver_token_requests_total", realm=realm, source=source)


@pytest.mark.django_db
def test_token_requests_are_counted_by_realm_and_source(scrape, upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    before = scrape()

    token_get("wxgzh", "wxgzh_secret")  # fetched
    token_get("wxgzh", "wxgzh_secret")  # from the cache
    token_get("wxgzh", "wxgzh_secret")
    after = scrape()

    assert requests_of(after, "wxgzh", "upstream") - requests_of(before, "wxgzh", "upstream") == 1
    assert requests_of(after, "wxgzh", "cache") - requests_of(before, "wxgzh", "cache") == 2
    hits = value(after, "tokenserver_token_cache_lookups_total", result="hit") - value(
        before, "tokenserver_token_cache_lookups_total", result="hit"
    )
    misses = value(after, "tokenserver_token_cache_lookups_total", result="miss") - value(
        before, "tokenserver_token_cache_lookups_total", result="miss"
    )
    assert (hits, misses) == (2, 1)


@pytest.mark.django_db(transaction=True)  # the background refresh has its own connection
def test_a_token_served_inside_its_margin_counts_as_stale(scrape, upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    stored_token(wechat_secret, token="OLD", age=7190, left=10)  # due: refreshed behind
    before = scrape()

    served = token_get("wxgzh", "wxgzh_secret")
    wait_for_background_refreshes()
    after = scrape()

    assert served.token == "OLD"
    assert requests_of(after, "wxgzh", "stale") - requests_of(before, "wxgzh", "stale") == 1


@pytest.mark.django_db
def test_a_realm_named_by_a_request_is_no_label_until_it_is_known(scrape, wechat_secret):
    # Issue 13: label values stay bounded by configuration, whatever requests ask for.
    before = scrape()

    with pytest.raises(NotFound):
        token_get("made-up-realm", "made-up-key")
    after = scrape()

    assert "made-up" not in after
    unknown = requests_of(after, "_unknown", "error") - requests_of(before, "_unknown", "error")
    assert unknown == 1


@pytest.mark.django_db
def test_upstream_attempts_are_counted_by_outcome_with_their_latency(
    scrape, upstream, wechat_secret
):
    upstream.reply("/cgi-bin/token", {"errcode": 40013, "errmsg": "invalid appid"})
    before = scrape()

    with pytest.raises(Exception):  # noqa: B017 - UpstreamError, counted below
        token_get("wxgzh", "wxgzh_secret")
    upstream.reply("/cgi-bin/token", {"access_token": "T", "expires_in": 7200}, delay=0.05)
    token_get("wxgzh", "wxgzh_secret", flush=True)
    after = scrape()

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    fetches = "tokenserver_upstream_fetches_total"
    assert delta(fetches, realm="wxgzh", outcome="upstream_error") == 1
    assert delta(fetches, realm="wxgzh", outcome="ok") == 1
    assert delta("tokenserver_upstream_fetch_seconds_count", realm="wxgzh") == 2
    # The 50 ms answer lands above the 25 ms bucket.
    assert delta("tokenserver_upstream_fetch_seconds_bucket", realm="wxgzh", le="0.025") <= 1
    assert delta("tokenserver_token_requests_total", realm="wxgzh", source="error") == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_requests_waiting_for_another_refresh_are_counted_as_lock_waits(
    scrape, upstream, wechat_secret
):
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.3))
    before = scrape()

    results = run_at_once(5, lambda: token_get("wxgzh", "wxgzh_secret"))
    after = scrape()

    assert {result.token for result in results} == {"TOKEN-1"}
    waits = sum(
        value(after, "tokenserver_lock_wait_seconds_count", realm="wxgzh", outcome=outcome)
        - value(before, "tokenserver_lock_wait_seconds_count", realm="wxgzh", outcome=outcome)
        for outcome in ("token", "acquired", "still_valid", "timeout")
    )
    # Every thread but the holder waited (one may have come after the token landed).
    assert 3 <= waits <= 4


@pytest.mark.django_db
def test_token_states_and_refresher_lag_are_read_from_the_database(scrape, wechat_secret):
    # The seed's realm refreshes in the last 300 s (its margin); this token has 10 s left,
    # so it is inside its margin and past its refresh time (drawn between 300 and 150 s
    # before expiry): the refresher is at least 140 s late.
    stored_token(wechat_secret, token="OLD", age=7190, left=10)

    text = scrape()

    assert value(text, "tokenserver_database_facts_up") == 1
    assert value(text, "tokenserver_tokens", state="in_margin") == 1
    assert value(text, "tokenserver_tokens", state="valid") == 0
    assert 140 <= value(text, "tokenserver_refresher_lag_seconds") <= 300


@pytest.mark.django_db
def test_a_fresh_token_means_no_refresher_lag(scrape, wechat_secret):
    stored_token(wechat_secret, token="NEW", age=10, left=7190)

    text = scrape()

    assert value(text, "tokenserver_tokens", state="valid") == 1
    assert value(text, "tokenserver_refresher_lag_seconds") == 0


@pytest.mark.django_db
def test_breaker_state_is_reported_per_realm(scrape):
    flaky = RealmFactory(id="flaky", breaker_threshold=1)
    RealmFactory(id="calm")

    guards.record_failure(flaky, UpstreamFailure("timeout", "timed out"))
    text = scrape()

    assert value(text, "tokenserver_breaker_open", realm="flaky") == 1
    assert 'tokenserver_breaker_open{realm="calm"} 0.0' in text


@pytest.mark.django_db
def test_secrets_whose_refresh_fails_are_a_gauge_per_realm(scrape, wechat_secret):
    # The failure notifications' state, as an alert rule sees it (issue 13).
    RealmFactory(id="quiet")
    refresh_failed(wechat_secret.pk, "wxgzh", "wxgzh_secret", "timeout", "", "", 1, timezone.now())

    failing = scrape()
    refresh_succeeded(wechat_secret.pk, "wxgzh", "wxgzh_secret", timezone.now())
    recovered = scrape()

    assert value(failing, "tokenserver_secrets_failing", realm="wxgzh") == 1
    assert value(failing, "tokenserver_secrets_failing", realm="quiet") == 0
    assert value(recovered, "tokenserver_secrets_failing", realm="wxgzh") == 0
