"""
Permanent errors remembered (issue 14): an upstream answer only an operator
can change (WeChat 40125 invalid AppSecret …) is answered again, the same 502
with the same detail and a Retry-After, without an upstream call, until the
realm's permanent_error_ttl passes or the secret or realm is saved.

Against the real local fake upstream speaking WeChat's format (errors in an
HTTP 200). The concurrent tests commit their data (transaction=True): the
threads and the gunicorn workers use their own database connections; they run
on whichever configuration the suite runs on (SQLite + local memory, or
MariaDB + Redis).
"""

import threading
import time

import pytest
import requests
from django.db import connection
from rest_framework.test import APIClient

from realms.services import realm_upsert
from secret_store.services import secret_upsert
from tests.factories import stored_token
from tests.helpers import run_at_once, wait_until
from tokens.background import tokens_refresh_due
from tokens.models import FetchLog, RefreshHealth, RememberedError
from tokens.services import token_get, token_test_fetch
from tokens.testing import numbered_tokens
from tokenserver.errors import UpstreamError, UpstreamUnavailable

pytestmark = pytest.mark.django_db(transaction=True)

WRONG_SECRET = {"errcode": 40125, "errmsg": "invalid appsecret"}
DETAIL = "upstream answered HTTP 200 with errcode 40125: invalid appsecret"
PATH = "/cgi-bin/token"


@pytest.fixture
def realm(wechat_realm):
    """The seed's WeChat realm with the WeChat preset's permanent codes, no retries."""
    wechat_realm.permanent_error_codes = [40013, 40125, 40164]
    wechat_realm.max_retries = 0
    wechat_realm.save()
    return wechat_realm


@pytest.fixture
def secret(realm, wechat_secret):
    wechat_secret.refresh_from_db()
    return wechat_secret


def _get(**kwargs):
    return token_get("wxgzh", "wxgzh_secret", **kwargs)


def _error_of(call):
    with pytest.raises(UpstreamError) as raised:
        call()
    return raised.value


#: The lock's lease while 300 requests run at once: on 2 shared cores they can
#: starve the holder's heartbeat past the 5 s lease, and a lock taken over means
#: a second holder and call (DESIGN.md: "at worst two fetches"), which is the
#: lock's property, not the one measured here.
LONG_LEASE = 30


@pytest.fixture
def gunicorn_env():
    return {"TOKENSERVER_LOCK_LEASE": str(LONG_LEASE)}


def test_300_concurrent_requests_with_a_wrong_secret_make_one_upstream_call(
    upstream, secret, realm, settings
):
    # Issue 14: today 300 apps asking with a wrong secret cost 300 upstream calls.
    # A slow answer keeps them all waiting on the one call in flight; a long
    # timeout lets 300 threads on 2 cores (and SQLite) wait as long as it takes
    # (they wait timeout + 1 s, then answer 503 lock_timeout).
    realm.timeout = 30
    realm.save()
    settings.TOKENSERVER_LOCK_LEASE = LONG_LEASE
    upstream.reply(PATH, WRONG_SECRET, delay=0.3)
    # Each thread holds a database connection: MariaDB allows 151 by default, so
    # there the 300 requests come in waves of 100 (still within the window).
    at_once = 300 if connection.vendor == "sqlite" else 100
    started = time.monotonic()

    results = []
    for _ in range(300 // at_once):
        results += run_at_once(at_once, _get)

    elapsed = time.monotonic() - started
    kinds = {type(r).__name__: 0 for r in results}
    for r in results:
        kinds[type(r).__name__] += 1
    assert all(isinstance(r, UpstreamError) for r in results), kinds
    assert {r.detail for r in results} == {DETAIL}
    assert {r.code for r in results} == {"upstream_error"}
    # The time left in the window: 600 s from the one call.
    assert all(600 - elapsed - 1 <= r.retry_after <= 600 for r in results), (
        elapsed,
        sorted({r.retry_after for r in results}),
    )
    assert len(upstream.calls(PATH)) == 1
    # The fetch log records the real attempt only; the failing state counts it once.
    assert FetchLog.objects.count() == 1
    assert RefreshHealth.objects.get(secret=secret).attempts == 1

    # Later requests in the window: the same answer, still no call.
    again = _error_of(_get)
    assert again.detail == DETAIL and again.context["remembered"]
    assert len(upstream.calls(PATH)) == 1
    assert FetchLog.objects.count() == 1


def test_the_api_answers_the_same_502_and_a_retry_after(upstream, secret, api):
    upstream.reply(PATH, WRONG_SECRET)

    first = api.get("/api/token", {"realm": "wxgzh", "key": "wxgzh_secret"})
    second = api.get("/api/token", {"realm": "wxgzh", "key": "wxgzh_secret"})

    assert first.status_code == second.status_code == 502
    bodies = [first.json(), second.json()]
    for body in bodies:
        body.pop("request_id", None)
    assert bodies[0] == bodies[1] == {"error": "upstream_error", "detail": DETAIL}
    assert first["Retry-After"] == "600"
    assert 590 <= int(second["Retry-After"]) <= 600
    assert len(upstream.calls(PATH)) == 1


def test_after_the_ttl_the_upstream_is_asked_once_again(upstream, secret, realm):
    realm.permanent_error_ttl = 1
    realm.save()
    upstream.reply(PATH, WRONG_SECRET)
    first = _error_of(_get)
    assert first.retry_after == 1
    _error_of(_get)
    assert len(upstream.calls(PATH)) == 1

    def asked_again():
        _error_of(_get)
        return len(upstream.calls(PATH)) == 2

    wait_until(asked_again, timeout=5, message="a second upstream call after the TTL")
    _error_of(_get)  # remembered again, for another second
    assert len(upstream.calls(PATH)) == 2


def test_saving_the_secret_forgets_the_error_at_once(upstream, secret):
    upstream.reply(PATH, WRONG_SECRET)
    _error_of(_get)
    upstream.reply_with(PATH, numbered_tokens())

    secret_upsert("wxgzh", "wxgzh_secret", {"key_2": "the-right-secret"})

    assert _get().token == "TOKEN-2"  # the fake numbers every call
    assert len(upstream.calls(PATH)) == 2
    assert not RememberedError.objects.exists()


def test_saving_the_secret_without_new_values_forgets_it_too(upstream, secret):
    # The operator fixed the provider's IP whitelist and pressed save: try again.
    upstream.reply(PATH, {"errcode": 40164, "errmsg": "invalid ip 1.2.3.4, not in whitelist"})
    _error_of(_get)
    upstream.reply_with(PATH, numbered_tokens())

    secret_upsert("wxgzh", "wxgzh_secret", {"comment": "whitelist fixed"})

    assert _get().token == "TOKEN-2"


def test_saving_the_realm_forgets_the_error_at_once(upstream, secret, realm):
    upstream.reply(PATH, WRONG_SECRET)
    _error_of(_get)
    upstream.reply_with(PATH, numbered_tokens())

    realm_upsert("wxgzh", {"comment": "secret rotated at the provider"}, partial=True)

    assert _get().token == "TOKEN-2"
    assert len(upstream.calls(PATH)) == 2


def test_an_answer_to_credentials_replaced_during_the_call_is_not_applied_to_the_new_ones(
    upstream, secret
):
    # The operator saves the right secret while a fetch with the wrong one is in flight.
    upstream.reply(PATH, WRONG_SECRET, delay=0.5)
    failed = []
    thread = threading.Thread(target=lambda: failed.append(_error_of(_get)))
    thread.start()
    wait_until(lambda: upstream.calls(PATH), message="the fetch with the old secret was sent")
    secret_upsert("wxgzh", "wxgzh_secret", {"key_2": "the-right-secret"})
    upstream.reply_with(PATH, numbered_tokens())
    thread.join(10)

    assert failed and failed[0].detail == DETAIL  # the request that asked first
    assert _get().token == "TOKEN-2"  # the new secret is asked about, not refused


@pytest.mark.parametrize(
    "status, answer, error",
    [
        (200, {"errcode": -1, "errmsg": "system error"}, UpstreamError),
        (200, {"errcode": 40001, "errmsg": "invalid credential"}, UpstreamError),  # not listed
        (500, {"errcode": 40125, "errmsg": "invalid appsecret"}, UpstreamError),
    ],
)
def test_other_errors_are_not_remembered(upstream, secret, status, answer, error):
    upstream.reply(PATH, answer, status=status)

    for _ in range(3):
        with pytest.raises(error):
            _get()

    assert len(upstream.calls(PATH)) == 3
    assert not RememberedError.objects.exists()


def test_a_timeout_is_not_remembered(upstream, secret, realm):
    realm.timeout = 0.2
    realm.save()
    upstream.reply(PATH, WRONG_SECRET, delay=1.0)

    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            _get()

    assert len(upstream.calls(PATH)) == 2
    assert not RememberedError.objects.exists()


def test_a_rate_limit_answer_is_not_remembered(upstream, secret, realm):
    realm.rate_limit_codes = [45009]
    realm.save()
    upstream.reply(PATH, {"errcode": 45009, "errmsg": "reach max api daily quota limit"})

    _error_of(_get)
    # The realm backs off (503 rate_limited), it does not answer the quota error again.
    with pytest.raises(UpstreamUnavailable):
        _get()
    assert not RememberedError.objects.exists()


def test_a_ttl_of_0_turns_it_off(upstream, secret, realm):
    realm.permanent_error_ttl = 0
    realm.save()
    upstream.reply(PATH, WRONG_SECRET)

    assert _error_of(_get).retry_after is None
    _error_of(_get)

    assert len(upstream.calls(PATH)) == 2


def test_a_valid_stored_token_is_still_served(upstream, secret):
    # The refresher meets the wrong secret on a token that is due but still valid.
    stored_token(secret, token="OLD", age=7100, left=100)
    upstream.reply(PATH, WRONG_SECRET)

    first = tokens_refresh_due(lookahead=300, workers=1)
    second = tokens_refresh_due(lookahead=300, workers=1)

    assert (first.failed, second.failed) == (1, 1)
    assert len(upstream.calls(PATH)) == 1  # the second pass was answered from memory
    assert _get().token == "OLD"
    assert len(upstream.calls(PATH)) == 1


def test_flushes_and_rejections_are_answered_from_memory(upstream, secret):
    stored_token(secret, token="OLD", age=3600, left=3600)
    upstream.reply(PATH, WRONG_SECRET)
    assert _error_of(lambda: _get(flush=True)).detail == DETAIL

    flushed = _error_of(lambda: _get(flush=True))
    rejected = _error_of(lambda: _get(rejected="OLD"))

    assert flushed.detail == rejected.detail == DETAIL
    assert flushed.retry_after and rejected.retry_after
    assert len(upstream.calls(PATH)) == 1
    assert _get().token == "OLD"  # a plain request still gets the valid token


def test_the_test_fetch_always_calls_and_its_token_forgets_the_error(upstream, secret):
    # The operator fixed the provider's whitelist and tests: a real call, not the memory.
    upstream.reply(PATH, WRONG_SECRET)
    _error_of(_get)
    assert token_test_fetch("wxgzh", "wxgzh_secret")["ok"] is False  # called, still wrong
    assert len(upstream.calls(PATH)) == 2
    upstream.reply_with(PATH, numbered_tokens())
    _error_of(_get)  # still remembered for apps
    assert len(upstream.calls(PATH)) == 2

    result = token_test_fetch("wxgzh", "wxgzh_secret")

    assert result["ok"] is True
    assert len(upstream.calls(PATH)) == 3
    assert not RememberedError.objects.exists()
    assert _get(flush=True).token == "TOKEN-3"  # the test fetch's token, within the interval


# --- Several processes: gunicorn -------------------------------------------------


def test_300_requests_across_4_processes_make_one_upstream_call(
    upstream, secret, staff_user, gunicorn_server
):
    # Issue 14, across workers: the database row (and with Redis its copy) is shared.
    client = APIClient()
    client.force_login(staff_user)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    for _ in range(8):  # warm every worker's connections first
        requests.get(f"{gunicorn_server}/api/realm/wxgzh", cookies=cookies, timeout=10)
    upstream.reply(PATH, WRONG_SECRET, delay=0.5)

    def get():
        response = requests.get(
            f"{gunicorn_server}/api/token?realm=wxgzh&key=wxgzh_secret",
            cookies=cookies,
            timeout=30,
        )
        return response.status_code, response.json()["detail"], response.headers["Retry-After"]

    started = time.monotonic()

    results = run_at_once(300, get)

    elapsed = time.monotonic() - started
    assert [r for r in results if isinstance(r, Exception)] == []
    assert {(status, detail) for status, detail, _ in results} == {(502, DETAIL)}
    assert all(600 - elapsed - 1 <= int(retry_after) <= 600 for _, _, retry_after in results), (
        elapsed,
        sorted({int(r) for _, _, r in results}),
    )
    assert len(upstream.calls(PATH)) == 1
    assert FetchLog.objects.count() == 1


def test_the_secret_page_says_the_error_is_answered_from_memory(upstream, secret, console):
    upstream.reply(PATH, WRONG_SECRET)
    _error_of(_get)

    page = console.get(f"/admin/secrets/secret/{secret.pk}/change/").content.decode()

    assert "invalid appsecret" in page
    assert "Answered from memory until" in page
