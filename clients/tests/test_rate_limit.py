"""
The per-client rate limit of the token endpoint (TOKENSERVER_TOKEN_RATE):
every call of a client counts once, whichever way it is answered; past the
limit the answer is 429 with Retry-After until the window ends; the count is
exact under concurrency (threads in one process; processes with Redis);
staff are not limited; "off" or "0" disables it. Regression tests for issue
10: DRF's throttle let a client limited to 6,000/min make 11,000 calls in
15 s under concurrency.
"""

from collections import Counter

import pytest
import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIClient

from clients.access_tokens import access_token_issue
from clients.services import client_create
from tests.helpers import run_at_once
from tokens.services import token_get
from tokenserver.cache import local_windows
from tokenserver.rates import Rate, parse_rate

TOKEN_PATH = "/api/token?realm=wxgzh&key=wxgzh_secret"

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="runs with REDIS_URL")


@pytest.fixture(autouse=True)
def _fresh_windows():
    local_windows.clear()  # per-process counters (the Redis ones go with the cache)
    yield
    local_windows.clear()


@pytest.fixture
def cached_token(upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"access_token": "WX-TOKEN", "expires_in": 7200})
    token_get("wxgzh", "wxgzh_secret")
    return "WX-TOKEN"


def app_token(name="app", scopes=("token:read",)):
    client, _ = client_create(name, scopes=list(scopes), allow=["wxgzh/*"])
    token, _ = access_token_issue(client.client_id, client.scopes, allow=client.allow)
    return token


def bearer(token):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


@pytest.mark.parametrize(
    "text, rate",
    [
        ("60000/min", Rate(60000, 60)),
        ("1000/s", Rate(1000, 1)),
        ("5/10s", Rate(5, 10)),
        ("100/hour", Rate(100, 3600)),
        ("off", None),
        ("0", None),
        ("", None),
    ],
)
def test_rates_are_read_from_the_setting(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["lots", "5/fortnight", "-1/min", "1.5/s"])
def test_a_bad_rate_is_a_configuration_error(text):
    with pytest.raises(ImproperlyConfigured, match="TOKENSERVER_TOKEN_RATE"):
        parse_rate(text)


@pytest.mark.django_db
def test_past_the_limit_a_client_gets_429_with_retry_after(cached_token, settings):
    settings.TOKENSERVER_TOKEN_RATE = "3/min"
    api = bearer(app_token())

    responses = [api.get(TOKEN_PATH) for _ in range(4)]

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    refused = responses[-1]
    assert refused.json()["error"] == "throttled"
    assert "Expected available in" in refused.json()["detail"]
    assert 1 <= int(refused["Retry-After"]) <= 60


@pytest.mark.django_db
def test_each_client_has_its_own_count(cached_token, settings):
    settings.TOKENSERVER_TOKEN_RATE = "2/min"
    first, second = bearer(app_token("first")), bearer(app_token("second"))

    first_statuses = [first.get(TOKEN_PATH).status_code for _ in range(3)]
    second_statuses = [second.get(TOKEN_PATH).status_code for _ in range(2)]

    assert first_statuses == [200, 200, 429]
    assert second_statuses == [200, 200]


@pytest.mark.django_db
def test_every_kind_of_call_counts_once(cached_token, settings):
    # A plain call (the fast path), a flush and a malformed call (the DRF
    # view) each count once: the fourth call is refused.
    settings.TOKENSERVER_TOKEN_RATE = "3/min"
    api = bearer(app_token(scopes=("token:read", "token:flush")))

    statuses = [
        api.get(TOKEN_PATH).status_code,
        api.get(TOKEN_PATH + "&flush=true").status_code,
        api.get("/api/token?realm=wxgzh").status_code,
        api.get(TOKEN_PATH).status_code,
    ]

    assert statuses == [200, 200, 400, 429]


@pytest.mark.django_db
@pytest.mark.parametrize("off", ["off", "0"])
def test_off_means_no_limit(cached_token, settings, off):
    settings.TOKENSERVER_TOKEN_RATE = off
    api = bearer(app_token())

    statuses = {api.get(TOKEN_PATH).status_code for _ in range(30)}

    assert statuses == {200}


@pytest.mark.django_db
def test_staff_are_not_limited(cached_token, api, settings):
    settings.TOKENSERVER_TOKEN_RATE = "2/min"

    statuses = {api.get(TOKEN_PATH).status_code for _ in range(5)}

    assert statuses == {200}


@pytest.mark.django_db(transaction=True)
def test_the_count_is_exact_under_concurrent_threads(cached_token, settings):
    settings.TOKENSERVER_TOKEN_RATE = "40/min"
    token = app_token()

    def call():
        return bearer(token).get(TOKEN_PATH).status_code

    statuses = Counter(run_at_once(120, call))

    assert statuses == {200: 40, 429: 80}


# --- Several processes ------------------------------------------------------------------


@pytest.fixture
def gunicorn_env():
    return {"TOKENSERVER_TOKEN_RATE": "100/min"}


@needs_redis
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_count_is_exact_across_worker_processes(cached_token, gunicorn_server):
    # 4 gunicorn processes × 25 threads, 400 calls at once from one client:
    # exactly the allowed 100 get a token.
    token = app_token()
    session_headers = {"Authorization": f"Bearer {token}"}

    def call():
        response = requests.get(
            f"{gunicorn_server}{TOKEN_PATH}", headers=session_headers, timeout=30
        )
        return response.status_code, response.headers.get("Retry-After")

    results = run_at_once(400, call)

    assert [r for r in results if isinstance(r, Exception)] == []
    assert Counter(status for status, _ in results) == {200: 100, 429: 300}
    assert all(1 <= int(wait) <= 60 for status, wait in results if status == 429)
