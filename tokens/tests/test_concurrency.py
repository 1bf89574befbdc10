"""
Single-flight under real concurrency: many threads, and several server
processes, ask at once for a token nobody has yet; the upstream sees one call.

These tests commit their data (transaction=True) because the threads and the
gunicorn workers use their own database connections. They run on whichever
configuration the suite runs on: SQLite + local-memory cache + database lock,
or MariaDB + Redis + Redis lock.
"""

import sys
import time

import pytest
import requests
from rest_framework.test import APIClient

from tests.factories import RealmFactory, SecretFactory, stored_token
from tests.helpers import ChildProcess, child_env, run_at_once, wait_until
from tokens.models import FetchLog, StoredToken
from tokens.services import token_get
from tokens.testing import numbered_tokens

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_50_threads_on_a_cold_token_cause_one_upstream_call(upstream, wechat_secret):
    # A slow upstream keeps the window open: every thread arrives while the
    # first one is still fetching.
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.3))

    results = run_at_once(50, lambda: token_get("wxgzh", "wxgzh_secret"))

    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert {r.token for r in results} == {"TOKEN-1"}
    assert len(upstream.calls("/cgi-bin/token")) == 1
    assert FetchLog.objects.count() == 1
    # One request went upstream; the others got the token it brought.
    assert [r.source for r in results].count("upstream") == 1


def test_50_concurrent_flushes_share_one_upstream_call(upstream, wechat_secret):
    # No minimum interval: the flushes are coalesced by the single flight alone.
    wechat_secret.realm.min_flush_interval = 0
    wechat_secret.realm.save()
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.3))
    token_get("wxgzh", "wxgzh_secret")  # TOKEN-1, now cached

    results = run_at_once(50, lambda: token_get("wxgzh", "wxgzh_secret", flush=True))

    assert [r for r in results if isinstance(r, Exception)] == []
    assert {r.token for r in results} == {"TOKEN-2"}
    assert len(upstream.calls("/cgi-bin/token")) == 2


# --- Several processes: gunicorn -------------------------------------------------


@pytest.fixture
def http_get(staff_user, gunicorn_server):
    """GET a path of the gunicorn server as the staff user (session cookie): (status, body)."""
    client = APIClient()
    client.force_login(staff_user)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    # Warm every worker's connections first, so the races below are about
    # tokens and not about start-up.
    for _ in range(8):
        requests.get(f"{gunicorn_server}/api/realm/wxgzh", cookies=cookies, timeout=10)

    def get(path):
        response = requests.get(f"{gunicorn_server}{path}", cookies=cookies, timeout=30)
        return response.status_code, response.json()

    return get


def test_4_processes_x_25_threads_cause_one_upstream_call(upstream, wechat_secret, http_get):
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.5))

    results = run_at_once(100, lambda: http_get("/api/token?realm=wxgzh&key=wxgzh_secret"))

    failures = [r for r in results if isinstance(r, Exception) or r[0] != 200]
    assert failures == []
    assert {body["token"] for _, body in results} == {"TOKEN-1"}
    assert len(upstream.calls("/cgi-bin/token")) == 1
    assert FetchLog.objects.filter(outcome="ok").count() == 1


def test_4_processes_stale_token_one_background_refresh_none_waits(
    upstream, wechat_secret, http_get
):
    # Issue 4: a token inside its margin is served at once by every worker;
    # exactly one request, in one process, starts the refresh.
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=1.0))
    stored_token(wechat_secret, token="STALE", age=7100, left=100)

    def timed():
        status, body = http_get("/api/token?realm=wxgzh&key=wxgzh_secret")
        return status, body, time.monotonic()

    results = run_at_once(100, timed)

    assert [r for r in results if isinstance(r, Exception) or r[0] != 200] == []
    assert {body["token"] for _, body, _ in results} == {"STALE"}
    # Every answer came before the upstream's (it answers 1 s after the call):
    # nobody waited for the refresh, however busy the machine.
    refresh = wait_until(lambda: upstream.calls("/cgi-bin/token"))[0]
    answered = refresh["at"] + 1.0
    assert max(finished for _, _, finished in results) < answered
    wait_until(
        lambda: StoredToken.objects.get(secret=wechat_secret).token == "TOKEN-1",
        timeout=10,
        message="the background refresh stored TOKEN-1",
    )
    assert len(upstream.calls("/cgi-bin/token")) == 1


def test_300_flushes_across_4_processes_cause_one_upstream_call(upstream, wechat_secret, http_get):
    # Issue 4: a flush storm (a misbehaving app) burns one fetch, not 300.
    # A timeout far above the upstream's 0.5 s: on a busy 2-core machine 300
    # requests in 4 processes must not time the call (or the waiters) out,
    # which would legitimately retry or fall back to the old token.
    wechat_secret.realm.timeout = 10
    wechat_secret.realm.save()
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.5))
    stored_token(wechat_secret, token="OLD", age=600, left=6600)

    results = run_at_once(
        300, lambda: http_get("/api/token?realm=wxgzh&key=wxgzh_secret&flush=true")
    )

    assert [r for r in results if isinstance(r, Exception) or r[0] != 200] == []
    assert {body["token"] for _, body in results} == {"TOKEN-1"}
    assert len(upstream.calls("/cgi-bin/token")) == 1
    assert FetchLog.objects.filter(trigger="flush", outcome="ok").count() == 1


# --- Several refreshers (issue 13: the refresher on more than one host) -------------


def test_two_refreshers_at_once_fetch_each_due_token_once(upstream, tmp_path):
    # Two `refresh_tokens` processes (two hosts' refreshers) start a pass together and
    # both find the same 5 tokens due: each refresh goes through the secret's single
    # flight (its lock, then a second look), so every token is fetched once in all.
    realm = RealmFactory(url=upstream.url(), refresh_margin=300, timeout=10)
    secrets = [SecretFactory(realm=realm) for _ in range(5)]
    for secret in secrets:
        stored_token(secret, age=7100, left=100)
    # A slow upstream: the second refresher's pass starts before the first's ends.
    upstream.reply_with("/token", numbered_tokens(delay=2.0))
    command = [sys.executable, "manage.py", "refresh_tokens", "--interval", "30"]

    refreshers = [
        ChildProcess(command, env=child_env(LOG_LEVEL="INFO"), log=tmp_path / f"r{n}.log")
        for n in (1, 2)
    ]
    try:
        for refresher in refreshers:
            refresher.start()
        for refresher in refreshers:
            assert refresher.process.wait(timeout=60) == 0, refresher.log_tail()
    finally:
        for refresher in refreshers:
            refresher.stop()

    said = [refresher.log_tail() for refresher in refreshers]
    assert all("5 due" in line for line in said), said  # they did race for the same 5
    assert len(upstream.calls()) == 5
    assert FetchLog.objects.filter(trigger="refresher", outcome="ok").count() == 5
    assert len({StoredToken.objects.get(secret=s).token for s in secrets}) == 5
