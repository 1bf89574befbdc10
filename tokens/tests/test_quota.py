"""
The provider's quota guarded (issue 14, item 3): a realm's daily budget of
upstream calls per secret, counted before each attempt across threads,
processes and hosts (Redis with REDIS_URL, the database without); flushes and
rejected tokens stop where the calls the refresher needs to keep the token
alive begin (429 quota_exhausted, Retry-After until the provider's day turns);
a valid token is always served; past the alert threshold and at the budget,
operators are told once a day.

Against a real local fake speaking WeChat's wire format, which answers errcode
45009 past its own daily quota: the target is that it never has to. The
concurrent tests commit their data (transaction=True): the threads, the child
processes and the gunicorn workers use their own database connections; they
run on whichever configuration the suite runs on (SQLite + local memory, or
MariaDB + Redis).
"""

import logging
import math
import sys
import time
from datetime import timedelta

import pytest
import redis
import requests
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from clients.access_tokens import access_token_issue
from clients.services import client_create
from tests.factories import WEBHOOK_SECRET, SecretFactory, stored_token
from tests.helpers import ChildProcess, child_env, queries_of, run_at_once, wait_until
from tokens import quota
from tokens.background import tokens_refresh_due
from tokens.cache import entries_evict
from tokens.collectors import TokenFacts
from tokens.models import FetchLog, Notification, QuotaUsage, StoredToken
from tokens.services import token_get, token_test_fetch
from tokens.testing import sequence
from tokenserver.errors import QuotaExhausted

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/cgi-bin/token"
OVER_QUOTA = {"errcode": 45009, "errmsg": "reach max api daily quota limit"}


def wechat(daily_quota: int):
    """
    WeChat's cgi-bin/token: a new token per call, errcode 45009 (in an HTTP 200,
    as WeChat answers) past `daily_quota` calls.
    """

    def route(number):
        if number > daily_quota:
            return 200, OVER_QUOTA, 0.0
        return 200, {"access_token": f"ACCESS-{number}", "expires_in": 7200}, 0.0

    return route


def over_quota_answers(upstream) -> int:
    return max(0, len(upstream.calls(PATH)) - BUDGET)


BUDGET = 20


def day_started_an_hour_ago() -> str:
    """
    A UTC offset whose midnight was about an hour ago: the provider's day then
    has 23 hours to run whenever the test runs, so the refresher's reserve is
    never cut short by the day's end (WeChat's +08:00 is in realms' tests).
    """
    now = timezone.now()
    minutes = (60 - (now.hour * 60 + now.minute)) % (24 * 60)
    if minutes > 14 * 60:
        minutes -= 24 * 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@pytest.fixture
def realm(wechat_realm):
    """The seed's WeChat realm, its day begun an hour ago, a budget of 20, no coalescing."""
    wechat_realm.daily_budget = BUDGET
    wechat_realm.budget_day_starts = day_started_an_hour_ago()
    wechat_realm.rate_limit_codes = [45009, 45011]
    wechat_realm.min_flush_interval = 0
    wechat_realm.max_retries = 0
    wechat_realm.timeout = 10
    wechat_realm.save()
    return wechat_realm


@pytest.fixture
def secret(realm, wechat_secret):
    wechat_secret.refresh_from_db()
    return wechat_secret


def _get(**kwargs):
    return token_get("wxgzh", "wxgzh_secret", **kwargs)


def _fresh(secret):
    """The secret as the token path loads it (its realm and stored token with it)."""
    return type(secret).objects.select_related("realm", "stored_token").get(pk=secret.pk)


def _reserve(secret, calls: int):
    """Arrange: `calls` upstream calls already made today (as the refresher would)."""
    for _ in range(calls):
        quota.reserve(_fresh(secret), forced=False)


def _seconds_to_day_end(realm) -> float:
    now = time.time()
    return realm.provider_day(now).seconds_left(now)


def _refusal(call) -> QuotaExhausted:
    with pytest.raises(QuotaExhausted) as raised:
        call()
    return raised.value


def _flush_until_refused() -> int:
    """Flush until the budget says no; how many flushes got a token."""
    got = 0
    while True:
        try:
            _get(flush=True)
        except QuotaExhausted:
            return got
        got += 1


# --- Counting --------------------------------------------------------------------------


def test_each_attempt_is_counted_retries_included(upstream, secret, realm):
    # The provider counts every call it receives, the failed ones too.
    realm.max_retries = 2
    realm.save()
    upstream.reply_with(
        PATH,
        sequence(
            (503, {"errcode": -1, "errmsg": "system busy"}),
            (503, {"errcode": -1, "errmsg": "system busy"}),
            (200, {"access_token": "ACCESS", "expires_in": 7200}),
        ),
    )

    assert _get().token == "ACCESS"

    assert len(upstream.calls(PATH)) == 3
    assert quota.usage(_fresh(secret)).calls == 3


def test_an_attempt_that_was_not_sent_is_given_back(upstream, secret, realm):
    # A value that cannot go in a header: refused before anything is sent.
    realm.arguments.filter(name="appid").update(place="header", name="X-Appid")
    secret.key_1 = "wx123\r\nX-Injected: 1"
    secret.save()

    with pytest.raises(Exception, match="cannot be sent|line break"):
        _get()

    assert upstream.calls(PATH) == []
    assert quota.usage(_fresh(secret)).calls == 0


def test_a_realm_without_a_budget_is_counted_and_never_refused(upstream, secret, realm):
    realm.daily_budget = None
    realm.save()
    upstream.reply_with(PATH, wechat(100))

    for _ in range(25):
        _get(flush=True)

    usage = quota.usage(_fresh(secret))
    assert (usage.calls, usage.budget, usage.label()) == (25, None, "25")


def test_the_count_is_per_provider_day(secret):
    now = time.time()
    _reserve(secret, 3)

    tomorrow = quota.usage(_fresh(secret), now + 86400)
    today = quota.usage(_fresh(secret), now)

    assert (today.calls, tomorrow.calls) == (3, 0)
    assert tomorrow.day.starts_at == today.day.ends_at


# --- Flushes stop at the reserve ----------------------------------------------------------


def test_the_reserve_is_what_the_refresher_needs_until_the_day_turns(secret, realm):
    # A 2 h token refreshed 5 min before expiry: one refresh per 6,900 s.
    stored = stored_token(secret, token="OLD", age=0, left=7200)
    now = stored.fetched_at.timestamp()
    day = realm.provider_day(now)
    first = stored.expires_at.timestamp() - 300

    kept = quota.keepalive_calls(_fresh(secret), now, day)

    expected = 0 if first >= day.ends_at else int((day.ends_at - first) // 6900) + 1
    assert kept == expected
    assert kept <= math.ceil(86400 / 6900)


def test_flushes_are_refused_once_only_the_reserve_is_left(upstream, secret, realm):
    upstream.reply_with(PATH, wechat(BUDGET))
    _get()  # the first token

    flushed = _flush_until_refused()
    kept = quota.keepalive_calls(_fresh(secret), time.time(), realm.provider_day(time.time()))
    refusal = _refusal(lambda: _get(flush=True))
    rejected = _refusal(lambda: _get(rejected=StoredToken.objects.get().token))

    assert len(upstream.calls(PATH)) == 1 + flushed == BUDGET - kept
    assert over_quota_answers(upstream) == 0
    for error in (refusal, rejected):
        assert error.code == "quota_exhausted" and error.status_code == 429
        assert abs(error.retry_after - _seconds_to_day_end(realm)) <= 2
        assert f"the last {kept} are kept for the refreshes that keep its token alive" in (
            error.detail
        )
        assert realm.budget_day_starts in error.detail
    # A plain request still gets the valid token, without a call.
    assert _get().source == "cache"
    assert len(upstream.calls(PATH)) == BUDGET - kept
    # A refused flush is no attempt: nothing in the fetch log, nothing counted.
    assert FetchLog.objects.count() == BUDGET - kept
    assert quota.usage(_fresh(secret)).calls == BUDGET - kept


def test_a_budget_below_the_reserve_refuses_every_flush_and_keeps_every_refresh(
    upstream, secret, realm
):
    # 5 calls cannot keep a 2-hour token alive for 23 hours: they are all the refresher's.
    realm.daily_budget = 5
    realm.save()
    upstream.reply_with(PATH, wechat(5))
    _get()

    refusal = _refusal(lambda: _get(flush=True))

    assert "the last 5 are kept for the refreshes that keep its token alive" in refusal.detail
    assert len(upstream.calls(PATH)) == 1
    _make_due(secret)
    assert tokens_refresh_due(lookahead=45, workers=1).refreshed == 1


def test_the_api_answers_429_quota_exhausted_with_retry_after(upstream, secret, realm, api):
    upstream.reply_with(PATH, wechat(BUDGET))
    _get()
    _flush_until_refused()

    flushed = api.get("/api/token", {"realm": "wxgzh", "key": "wxgzh_secret", "flush": "true"})
    plain = api.get("/api/token", {"realm": "wxgzh", "key": "wxgzh_secret"})

    assert flushed.status_code == 429
    assert flushed.json()["error"] == "quota_exhausted"
    assert abs(int(flushed["Retry-After"]) - _seconds_to_day_end(realm)) <= 2
    assert plain.status_code == 200 and plain.json()["source"] == "cache"


def test_the_test_fetch_is_a_forced_refresh_too(upstream, secret, realm):
    upstream.reply_with(PATH, wechat(BUDGET))
    _get()
    _flush_until_refused()

    with pytest.raises(QuotaExhausted):
        token_test_fetch("wxgzh", "wxgzh_secret")


# --- The refresher uses the reserve, and stops at the budget ---------------------------------


def _make_due(secret):
    """The stored token enters its refresh margin (100 s left), and leaves the cache."""
    now = timezone.now()
    StoredToken.objects.filter(secret=secret).update(
        fetched_at=now - timedelta(seconds=7100),
        issued_at=now - timedelta(seconds=7100),
        expires_at=now + timedelta(seconds=100),
    )
    entries_evict([(secret.realm_id, secret.name)])


def test_the_refresher_may_use_the_reserve_and_stops_at_the_budget(
    upstream, secret, realm, webhook, caplog
):
    upstream.reply_with(PATH, wechat(BUDGET))
    stored_token(secret, token="OLD", age=7100, left=100)
    _reserve(secret, BUDGET - 1)  # flushes were refused long ago

    first = tokens_refresh_due(lookahead=45, workers=1)  # the last call of the day
    _make_due(secret)
    second = tokens_refresh_due(lookahead=45, workers=1)  # none left

    assert (first.refreshed, second.failed) == (1, 1)
    assert len(upstream.calls(PATH)) == 1
    assert over_quota_answers(upstream) == 0
    assert _get().token == "ACCESS-1"  # still valid: served
    # Told once: the budget is used up (the alert was told on the way).
    wait_until(lambda: Notification.objects.filter(done=True).count() == 2)
    told = dict(Notification.objects.values_list("error_code", "calls"))
    assert told == {"quota_alert": BUDGET * 8 // 10, "quota_exhausted": BUDGET}


def test_no_valid_token_and_no_budget_left_is_a_429_saying_so(upstream, secret, realm, api):
    upstream.reply_with(PATH, wechat(BUDGET))
    stored_token(secret, token="OLD", age=7300, left=-100)  # expired
    _reserve(secret, BUDGET)

    error = _refusal(_get)
    answer = api.get("/api/token", {"realm": "wxgzh", "key": "wxgzh_secret"})

    assert upstream.calls(PATH) == []
    assert error.detail.startswith(
        f"wxgzh/wxgzh_secret has used all {BUDGET} upstream calls of its daily budget; "
        "no new token can be fetched until the provider's day turns at "
    )
    assert answer.status_code == 429
    assert answer.json()["error"] == "quota_exhausted"
    assert abs(int(answer["Retry-After"]) - _seconds_to_day_end(realm)) <= 2


def test_a_valid_token_is_served_at_the_budget_without_a_query(
    upstream, secret, realm, django_assert_num_queries
):
    upstream.reply_with(PATH, wechat(BUDGET))
    _get()
    _reserve(secret, BUDGET - 1)  # the first fetch was one

    with django_assert_num_queries(0):
        result = _get()

    assert result.token == "ACCESS-1" and result.source == "cache"


@pytest.mark.skipif(not settings.REDIS_URL, reason="runs with REDIS_URL")
def test_the_hot_path_still_costs_one_redis_round_trip(
    upstream, secret, realm, client, monkeypatch, django_assert_num_queries
):
    # Issue 14: the budget adds nothing to a cached token's answer.
    upstream.reply_with(PATH, wechat(BUDGET))
    _get()
    app, _ = client_create("app", scopes=["token:read"], allow=["wxgzh/*"])
    token, _ = access_token_issue(app.client_id, app.scopes, allow=app.allow)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    client.get("/api/token?realm=wxgzh&key=wxgzh_secret")  # loads the revocation snapshot
    commands = []
    real = redis.Redis.execute_command

    def counted(self, *args, **options):
        commands.append(args[0])
        return real(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", counted)

    with django_assert_num_queries(0):
        response = client.get("/api/token?realm=wxgzh&key=wxgzh_secret")

    assert response.json()["source"] == "cache"
    assert commands == ["EVALSHA"]


# --- Concurrency: calls past the budget are 0 ------------------------------------------------

#: Threads at once. Each holds a database connection: MariaDB allows 151 in all, and
#: other test runs may share the server.
THREADS = 40


def test_40_threads_flushing_never_pass_the_budget(upstream, secret, realm):
    upstream.reply_with(PATH, wechat(BUDGET))
    _get()

    results = run_at_once(THREADS, _flush_until_refused)

    assert [r for r in results if isinstance(r, Exception)] == []
    kept = quota.keepalive_calls(_fresh(secret), time.time(), realm.provider_day(time.time()))
    assert len(upstream.calls(PATH)) == BUDGET - kept
    assert over_quota_answers(upstream) == 0
    assert quota.usage(_fresh(secret)).calls == BUDGET - kept


def _backends():
    backends = [pytest.param(quota.DatabaseCounter, id="database")]
    if settings.REDIS_URL:
        backends.append(pytest.param(quota.RedisCounter, id="redis"))
    return backends


@pytest.mark.parametrize("backend", _backends())
def test_the_counter_grants_exactly_the_budget_to_40_threads(secret, realm, backend, monkeypatch):
    # Every caller reserves at once, again and again: the counter alone decides.
    monkeypatch.setattr(quota, "counter", backend)
    realm.daily_budget = 500
    realm.save()

    def reserve_until_refused():
        mine, loaded = 0, _fresh(secret)
        while True:
            try:
                quota.reserve(loaded, forced=False)
            except QuotaExhausted:
                return mine
            mine += 1

    granted = run_at_once(THREADS, reserve_until_refused)

    assert [g for g in granted if isinstance(g, Exception)] == []
    assert sum(granted) == 500
    assert quota.usage(_fresh(secret)).calls == 500


#: A child process: loads the secret, waits for the go file, reserves until refused,
#: prints how many calls it was granted.
CHILD = """
import sys, time
from pathlib import Path
import django
django.setup()
from secret_store.models import Secret
from tokens import quota
from tokenserver.errors import QuotaExhausted
secret = Secret.objects.select_related("realm", "stored_token").get(pk=int(sys.argv[1]))
ready, go = Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.001)
granted = 0
while True:
    try:
        quota.reserve(secret, forced=False)
    except QuotaExhausted:
        break
    granted += 1
print("granted", granted, flush=True)
"""


@pytest.mark.slow
def test_the_counter_grants_exactly_the_budget_to_4_processes(secret, realm, tmp_path, webhook):
    realm.daily_budget = 400
    realm.save()
    env = child_env(
        TOKENSERVER_WEBHOOK_URL=settings.TOKENSERVER_WEBHOOK_URL,
        TOKENSERVER_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    go = tmp_path / "go"
    children = [
        ChildProcess(
            [sys.executable, "-c", CHILD, secret.pk, tmp_path / f"ready{n}", go],
            env=env,
            log=tmp_path / f"child{n}.log",
        )
        for n in range(4)
    ]
    try:
        for child in children:
            child.start()
        wait_until(
            lambda: all((tmp_path / f"ready{n}").exists() for n in range(4)),
            timeout=60,
            message="the children loaded the secret",
        )
        go.touch()
        for child in children:
            child.process.wait(timeout=120)
    finally:
        for child in children:
            child.stop()

    granted = [int(child.log_tail().split("granted")[-1]) for child in children]
    assert sum(granted) == 400, granted
    assert all(child.process.returncode == 0 for child in children)
    assert quota.usage(_fresh(secret)).calls == 400
    # Told once each across the processes: the alert (at 320) and the exhaustion.
    told = sorted(Notification.objects.filter(outcome="quota").values_list("error_code", flat=True))
    assert told == ["quota_alert", "quota_exhausted"]


@pytest.mark.slow
def test_flushes_through_4_gunicorn_workers_never_pass_the_budget(
    upstream, secret, realm, staff_user, gunicorn_server
):
    upstream.reply_with(PATH, wechat(BUDGET))
    client = APIClient()
    client.force_login(staff_user)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    url = f"{gunicorn_server}/api/token?realm=wxgzh&key=wxgzh_secret"
    assert requests.get(url, cookies=cookies, timeout=30).status_code == 200  # the first token

    def flush_until_refused():
        answers = []
        while True:
            response = requests.get(f"{url}&flush=true", cookies=cookies, timeout=30)
            answers.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["error"] == "quota_exhausted"
                return answers

    results = run_at_once(THREADS, flush_until_refused)

    assert [r for r in results if isinstance(r, Exception)] == []
    assert {status for answers in results for status in answers} == {200, 429}
    kept = quota.keepalive_calls(_fresh(secret), time.time(), realm.provider_day(time.time()))
    assert len(upstream.calls(PATH)) in (BUDGET - kept, BUDGET - kept - 1)  # kept may drop by 1
    assert over_quota_answers(upstream) == 0


# --- Telling operators -------------------------------------------------------------------


def test_the_alert_and_the_exhaustion_are_told_once_a_day(secret, realm, webhook, caplog):
    caplog.set_level(logging.WARNING, logger="tokens.quota")
    realm.daily_budget = 10
    realm.save()

    granted = run_at_once(20, lambda: quota.reserve(_fresh(secret), forced=False))

    assert sum(1 for g in granted if not isinstance(g, Exception)) == 10
    assert all(isinstance(g, QuotaExhausted) for g in granted if isinstance(g, Exception))
    lines = [r.getMessage() for r in caplog.records if r.name == "tokens.quota"]
    assert len(lines) == 2, lines
    # Whoever crossed the threshold first tells it (8, 9 or 10 calls by then).
    assert any("past the alert threshold (80 %)" in line for line in lines), lines
    assert any("all 10 upstream calls of today used" in line for line in lines), lines
    for line in lines:  # no secret value in a log line
        assert secret.key_2 not in line and secret.key_1 not in line
    wait_until(lambda: len(webhook.calls("/hook")) == 2)
    bodies = sorted(
        (n.payload() for n in Notification.objects.all()), key=lambda b: b["error_code"]
    )
    assert [b["error_code"] for b in bodies] == ["quota_alert", "quota_exhausted"]
    assert {b["outcome"] for b in bodies} == {"quota"}
    assert bodies[1]["calls"] == bodies[1]["budget"] == 10

    # The next provider day counts afresh, and tells again.
    tomorrow = time.time() + 86400
    for _ in range(8):
        quota.reserve(_fresh(secret), forced=False, now=tomorrow)
    assert Notification.objects.filter(error_code="quota_alert").count() == 2


# --- What operators see --------------------------------------------------------------------


def test_the_console_shows_calls_today_and_warns_past_the_threshold(secret, realm, console):
    _reserve(secret, 17)

    listing = console.get("/admin/secrets/secret/").content.decode()
    page = console.get(f"/admin/secrets/secret/{secret.pk}/change/")
    index = console.get("/admin/").content.decode()

    assert "Calls today / budget" in listing
    assert "17 / 20 (past 80 %)" in listing
    warnings = [str(m) for m in page.context["messages"]]
    assert any("17 upstream calls today of a daily budget of 20" in w for w in warnings)
    assert "past the alert threshold (16 calls)" in page.content.decode()
    assert "Secrets past their daily budget's alert threshold (1)" in index
    assert "17 / 20 (past 80 %)" in index


def test_the_secret_list_reads_every_rows_count_at_once(secret, realm, console):
    # One more query (or Redis round trip) for the page, not one per secret.
    def page_queries():
        response, count = queries_of(lambda: console.get("/admin/secrets/secret/"))
        assert response.status_code == 200
        return count

    few = page_queries()
    for number in range(10):
        SecretFactory(realm=realm, name=f"app{number}")
    assert page_queries() == few


def test_the_api_secret_detail_has_its_calls_today(secret, realm, api):
    _reserve(secret, 3)

    body = api.get("/api/secret/wxgzh/wxgzh_secret").json()

    assert body["quota"]["calls_today"] == 3
    assert body["quota"]["daily_budget"] == BUDGET
    assert body["quota"]["alert_at"] == 16
    day = realm.provider_day(time.time())
    assert body["quota"]["day"] == day.date.isoformat()


def test_the_metrics_show_the_share_used_per_realm(secret, realm):
    _reserve(secret, 17)

    families = {family.name: family for family in TokenFacts().collect()}

    [used] = families["tokenserver_quota_used_ratio"].samples
    [past] = families["tokenserver_quota_secrets_past_alert"].samples
    assert (used.labels, used.value) == ({"realm": "wxgzh"}, 17 / 20)
    assert (past.labels, past.value) == ({"realm": "wxgzh"}, 1)


def test_the_refresher_deletes_the_counts_of_days_long_gone(secret):
    old = timezone.now().date() - timedelta(days=quota.KEEP_DAYS + 1)
    QuotaUsage.objects.create(secret=secret, day=old, calls=5)
    QuotaUsage.objects.create(secret=secret, day=timezone.now().date(), calls=5)

    assert quota.prune() == 1
    assert QuotaUsage.objects.count() == 1
