"""
The token lifecycle under load and faults, with real threads, real
timeouts and a real (fake) upstream: stale-while-revalidate, flush safety,
retries, the circuit breaker, rate-limit backoff, the concurrency cap, the
lock wait bound, the refresher and the fetch log's pruning.
"""

import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from tests.factories import RealmFactory, SecretFactory, stored_token
from tests.helpers import run_at_once, wait_until
from tokens import guards
from tokens.background import wait_for_background_refreshes
from tokens.locks import lock_for
from tokens.models import FetchLog, StoredToken
from tokens.services import token_get
from tokens.testing import numbered_tokens, sequence
from tokenserver.errors import LockWaitTimeout, UpstreamError, UpstreamUnavailable

OK = (200, {"access_token": "GOOD", "expires_in": 7200})


# --- Stale-while-revalidate -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_many_requests_inside_the_margin_cause_one_refresh_and_none_waits(upstream, wechat_secret):
    # A slow upstream (1 s): a request that waited for it would show.
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=1.0))
    stored_token(wechat_secret, age=7100, left=100)  # inside the 300 s margin

    def timed():
        result = token_get("wxgzh", "wxgzh_secret")
        return result, time.monotonic()

    results = run_at_once(50, timed)
    wait_for_background_refreshes()

    assert [r for r in results if isinstance(r, Exception)] == []
    assert {result.token for result, _ in results} == {"OLD"}
    assert len(upstream.calls("/cgi-bin/token")) == 1
    # Nobody waited for the upstream: every answer came before its (1 s after the call).
    answered = upstream.calls("/cgi-bin/token")[0]["at"] + 1.0
    assert max(finished for _, finished in results) < answered
    assert token_get("wxgzh", "wxgzh_secret").token == "TOKEN-1"


@pytest.mark.django_db(transaction=True)
def test_failed_background_refresh_backs_off(upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"errcode": 40013, "errmsg": "invalid appid"})
    stored_token(wechat_secret, age=7100, left=100)

    for _ in range(5):
        assert token_get("wxgzh", "wxgzh_secret").token == "OLD"
        wait_for_background_refreshes()

    # One attempt, then a pause: requests inside the margin do not hammer the upstream.
    assert len(upstream.calls("/cgi-bin/token")) == 1


# --- Flush safety ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_reports_of_a_rejected_token_cause_one_refresh(upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.3))
    stored_token(wechat_secret, token="REJECTED-BY-WECHAT")

    results = run_at_once(
        40, lambda: token_get("wxgzh", "wxgzh_secret", rejected="REJECTED-BY-WECHAT")
    )

    assert [r for r in results if isinstance(r, Exception)] == []
    assert {r.token for r in results} == {"TOKEN-1"}
    assert len(upstream.calls("/cgi-bin/token")) == 1


# --- Retries ------------------------------------------------


@pytest.mark.django_db
def test_network_errors_and_5xx_are_retried_with_backoff(upstream, wechat_secret):
    upstream.reply_with(
        "/cgi-bin/token",
        sequence((503, {"errmsg": "busy"}), (502, b"bad gateway"), OK),
    )

    result = token_get("wxgzh", "wxgzh_secret")

    assert result.token == "GOOD"
    assert len(upstream.calls("/cgi-bin/token")) == 3
    outcomes = list(FetchLog.objects.order_by("id").values_list("outcome", "http_status"))
    assert outcomes == [("upstream_error", 503), ("upstream_error", 502), ("ok", 200)]


@pytest.mark.django_db
def test_timeouts_are_retried(upstream):
    realm = RealmFactory(url=upstream.url(), timeout=0.3, max_retries=1)
    secret = SecretFactory(realm=realm)
    upstream.reply_with("/token", sequence((200, {"access_token": "late"}, 1.0), OK))

    assert token_get(realm.id, secret.name).token == "GOOD"
    assert list(FetchLog.objects.order_by("id").values_list("outcome", flat=True)) == [
        "timeout",
        "ok",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "answer",
    [
        (401, {"error": "invalid_client"}),
        (400, {"code": "invalidClientIdOrSecret", "message": "bad"}),
        (200, {"errcode": 40013, "errmsg": "invalid appid"}),
    ],
    ids=["401", "400", "errcode-in-200"],
)
def test_4xx_and_upstream_error_codes_are_not_retried(upstream, wechat_secret, answer):
    upstream.reply_with("/cgi-bin/token", sequence(answer, OK))

    with pytest.raises(UpstreamError):
        token_get("wxgzh", "wxgzh_secret")

    assert len(upstream.calls("/cgi-bin/token")) == 1


# --- Circuit breaker ------------------------------------------------


@pytest.mark.django_db
def test_circuit_breaker_opens_serves_valid_tokens_and_closes(upstream):
    realm = RealmFactory(url=upstream.url(), max_retries=0, breaker_threshold=3, breaker_cooldown=1)
    healthy = SecretFactory(realm=realm, name="healthy")
    stored_token(healthy, token="STILL-VALID")
    others = [SecretFactory(realm=realm, name=f"s{n}") for n in range(5)]
    upstream.reply("/token", {"errmsg": "internal error"}, status=500)

    # Three failures in a row open the breaker ...
    for secret in others[:3]:
        with pytest.raises(UpstreamError):
            token_get(realm.id, secret.name)
    assert guards.breaker_state(realm) == "open"

    # ... then a request needing a new token is refused without a call,
    with pytest.raises(UpstreamUnavailable) as refused:
        token_get(realm.id, others[3].name)
    assert refused.value.retry_after >= 1
    assert len(upstream.calls()) == 3
    assert FetchLog.objects.filter(outcome="rejected", error_code="circuit_open").count() == 1
    # ... while a still-valid token is served.
    assert token_get(realm.id, "healthy").token == "STILL-VALID"

    # After the cool-down the upstream is tried again; a success closes the breaker.
    upstream.reply("/token", {"access_token": "BACK", "expires_in": 7200})
    wait_until(lambda: guards.breaker_state(realm) == "closed", message="the 1 s cool-down")
    assert token_get(realm.id, others[4].name).token == "BACK"
    assert guards.breaker_state(realm) == "closed"


@pytest.mark.django_db
def test_wrong_credentials_do_not_open_the_breaker(upstream):
    realm = RealmFactory(url=upstream.url(), breaker_threshold=2)
    secret = SecretFactory(realm=realm)
    upstream.reply("/token", {"errcode": 40013, "errmsg": "invalid appid"})

    for _ in range(4):
        with pytest.raises(UpstreamError):
            token_get(realm.id, secret.name, flush=True)

    assert guards.breaker_state(realm) == "closed"


# --- Rate limits ------------------------------------------------


@pytest.mark.django_db
def test_wechat_quota_error_backs_the_realm_off(upstream):
    realm = RealmFactory(url=upstream.url(), rate_limit_codes=[45009, 45011])
    first, second = SecretFactory(realm=realm), SecretFactory(realm=realm)
    upstream.reply("/token", {"errcode": 45009, "errmsg": "reach max api daily quota limit"})

    with pytest.raises(UpstreamError):
        token_get(realm.id, first.name)
    with pytest.raises(UpstreamUnavailable) as refused:
        token_get(realm.id, second.name)

    assert len(upstream.calls()) == 1
    assert 50 <= refused.value.retry_after <= 60
    assert "asked to slow down" in refused.value.detail


@pytest.mark.django_db
def test_http_429_backs_off_for_its_retry_after(upstream):
    realm = RealmFactory(url=upstream.url())
    secret = SecretFactory(realm=realm)
    upstream.reply("/token", {"error": "slow down"}, status=429, headers={"Retry-After": "1"})

    with pytest.raises(UpstreamError):
        token_get(realm.id, secret.name)
    with pytest.raises(UpstreamUnavailable):
        token_get(realm.id, secret.name)
    wait_until(lambda: not _refused(realm), message="the Retry-After of 1 s")
    upstream.reply("/token", {"access_token": "AFTER", "expires_in": 60})

    assert token_get(realm.id, secret.name).token == "AFTER"


def _refused(realm):
    try:
        guards.check(realm)
    except guards.Refused:
        return True
    return False


# --- Concurrency cap ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_upstream_calls_in_flight_never_exceed_max_concurrency(upstream):
    realm = RealmFactory(url=upstream.url(), max_concurrency=2, timeout=3)
    secrets = [SecretFactory(realm=realm) for _ in range(6)]
    upstream.reply_with("/token", numbered_tokens(delay=0.3))

    results = run_at_once(6, lambda: None)  # warm the pool
    results = run_at_once(6, _next_secret_getter(realm.id, [secret.name for secret in secrets]))

    assert [r for r in results if isinstance(r, Exception)] == []
    assert len(upstream.calls()) == 6
    assert upstream.max_in_flight == 2


def _next_secret_getter(realm_id, keys):
    import threading

    lock, queue = threading.Lock(), list(keys)

    def get():
        with lock:
            key = queue.pop()
        return token_get(realm_id, key)

    return get


# --- The lock wait bound ------------------------------------------------


@pytest.mark.django_db
def test_waiting_on_a_stuck_holder_returns_the_still_valid_token(upstream):
    realm = RealmFactory(url=upstream.url(), timeout=0.3, min_flush_interval=0)
    secret = SecretFactory(realm=realm)
    stored_token(secret, token="STILL-VALID")
    holder = lock_for(f"secret:{realm.id}:{secret.name}", max_hold=30)
    assert holder.try_acquire()  # a worker stuck mid-fetch

    started = time.monotonic()
    result = token_get(realm.id, secret.name, flush=True)
    waited = time.monotonic() - started

    holder.release()
    assert result.token == "STILL-VALID"
    assert 1.0 < waited < 3.0  # the bound: timeout + 1 s
    assert upstream.calls() == []


@pytest.mark.django_db
def test_waiting_on_a_stuck_holder_without_a_valid_token_is_a_503(upstream):
    realm = RealmFactory(url=upstream.url(), timeout=0.3)
    secret = SecretFactory(realm=realm)
    holder = lock_for(f"secret:{realm.id}:{secret.name}", max_hold=30)
    assert holder.try_acquire()

    with pytest.raises(LockWaitTimeout) as raised:
        token_get(realm.id, secret.name)

    holder.release()
    assert raised.value.retry_after == 1


# --- The refresher ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_refresh_tokens_refreshes_what_comes_due_and_logs_one_line(upstream, caplog):
    realm = RealmFactory(url=upstream.url(), refresh_margin=300)
    due = [SecretFactory(realm=realm) for _ in range(4)]
    fresh = [SecretFactory(realm=realm) for _ in range(3)]
    disabled = SecretFactory(realm=realm, enabled=False)
    for secret in [*due, disabled]:
        stored_token(secret, age=7100, left=100)
    for secret in fresh:
        stored_token(secret, age=60, left=7140)
    upstream.reply_with("/token", numbered_tokens())

    with caplog.at_level("INFO", logger="tokens.refresher"):
        call_command("refresh_tokens", "--interval", "30")

    assert len(upstream.calls()) == 4
    assert {StoredToken.objects.get(secret=s).token for s in due} == {
        f"TOKEN-{n}" for n in range(1, 5)
    }
    assert {StoredToken.objects.get(secret=s).token for s in fresh} == {"OLD"}
    assert StoredToken.objects.get(secret=disabled).token == "OLD"
    assert FetchLog.objects.filter(trigger="refresher", outcome="ok").count() == 4
    lines = [r.getMessage() for r in caplog.records if r.name == "tokens.refresher"]
    assert len(lines) == 1
    assert "7 tokens checked, 4 due, 4 refreshed, 0 failed" in lines[0]


@pytest.mark.django_db
def test_tokens_fetched_together_come_due_at_spread_out_times():
    # 200 tokens fetched in the same second (a restart, an import).
    realm = RealmFactory(refresh_margin=300)
    fetched = timezone.now()
    refresh_times = []
    for _ in range(200):
        secret = SecretFactory(realm=realm)
        stored = StoredToken(
            secret=secret, token="T", fetched_at=fetched, expires_at=fetched + timedelta(hours=2)
        )
        refresh_times.append((stored.expires_at - stored.refresh_at(300)).total_seconds())

    # All inside the margin, spread over half of it, not one moment.
    assert all(150 <= before <= 300 for before in refresh_times)
    assert max(refresh_times) - min(refresh_times) > 120
    assert len({round(before) for before in refresh_times}) > 100


def test_refresh_tokens_rejects_bad_options():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("refresh_tokens", "--interval", "0")


# --- Pruning the fetch log ------------------------------------------------


@pytest.mark.django_db
def test_prune_fetchlog_deletes_old_rows_in_batches(capsys):
    now = timezone.now()
    for days in (1, 30, 89, 91, 200, 365):
        FetchLog.objects.create(
            realm="r",
            key="k",
            trigger="request",
            outcome="ok",
            created_at=now - timedelta(days=days),
        )

    call_command("prune_fetchlog", "--older-than", "90d", "--batch-size", "1")

    assert sorted(
        (now - created).days for created in FetchLog.objects.values_list("created_at", flat=True)
    ) == [1, 30, 89]
    assert "deleted 3 rows" in capsys.readouterr().out


def test_prune_fetchlog_rejects_a_bad_age():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="90d"):
        call_command("prune_fetchlog", "--older-than", "ninety days")
