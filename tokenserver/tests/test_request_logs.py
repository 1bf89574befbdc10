"""
Request ids and JSON logs (issue 13): every answer names its request in
`X-Request-ID` (an incoming sane one is kept), the same id is on the FetchLog
rows the request caused and in every JSON error body; with LOG_FORMAT=json one
JSON line per request and per upstream attempt, each carrying the id, and no
token or secret value in any line.
"""

import io
import json
import logging
import sys

import pytest
import requests
from django.conf import settings as django_settings

from clients.access_tokens import access_token_issue
from clients.services import client_create
from tests.factories import stored_token
from tests.helpers import production_server, wait_until
from tokens.background import wait_for_background_refreshes
from tokens.models import FetchLog
from tokens.testing import numbered_tokens
from tokenserver.logging import AddRequestId, JsonFormatter, RedactQueryStrings

TOKEN_URL = "/api/token?realm=wxgzh&key=wxgzh_secret"


@pytest.fixture
def json_log(settings):
    """
    Every log line, as LOG_FORMAT=json writes it (the settings' own formatter and
    filters on a handler of the root logger); request lines on. Returns a function
    giving the parsed lines and the raw text.
    """
    settings.TOKENSERVER_LOG_REQUESTS = True
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactQueryStrings())
    handler.addFilter(AddRequestId())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def lines():
        text = stream.getvalue()
        return [json.loads(line) for line in text.splitlines()], text

    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def app_api(client):
    """A Django test client with an app's bearer token (token:read and flush on wxgzh/*)."""
    app, _ = client_create("app", scopes=["token:read", "token:flush"], allow=["wxgzh/*"])
    token, _ = access_token_issue(app.client_id, app.scopes, allow=app.allow)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


# --- The id -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_answer_names_its_request(anonymous_api):
    first = anonymous_api.get("/healthz")
    second = anonymous_api.get("/healthz")

    assert first["X-Request-ID"] and second["X-Request-ID"]
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("3f2b8c1e-5d4a-4c2b-9f1e-0a1b2c3d4e5f", True),
        ("lb:frontend.42_a", True),
        ("x" * 64, True),
        ("x" * 65, False),  # too long
        ("has space", False),
        ("new\nline", False),  # a forged log line
        ('quote"', False),
        ("", False),
    ],
)
def test_an_incoming_request_id_is_kept_only_when_sane(anonymous_api, incoming, kept):
    response = anonymous_api.get("/healthz", HTTP_X_REQUEST_ID=incoming)

    assert (response["X-Request-ID"] == incoming) is kept
    assert 1 <= len(response["X-Request-ID"]) <= 64


@pytest.mark.django_db
def test_the_id_is_on_the_fetch_log_row_of_the_request_that_fetched(api, upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())

    response = api.get(TOKEN_URL, HTTP_X_REQUEST_ID="trace-fetch-1")

    assert response.status_code == 200
    assert response["X-Request-ID"] == "trace-fetch-1"
    assert list(FetchLog.objects.values_list("request_id", flat=True)) == ["trace-fetch-1"]


@pytest.mark.django_db
def test_an_operator_finds_the_rows_of_a_request_by_its_id(api, console, upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    api.get(TOKEN_URL, HTTP_X_REQUEST_ID="trace-find-1")

    listed = api.get("/api/fetchlog")
    found = console.get("/admin/tokens/fetchlog/", {"q": "trace-find-1"})
    missed = console.get("/admin/tokens/fetchlog/", {"q": "trace-other"})

    assert listed.json()["data"]["list"][0]["request_id"] == "trace-find-1"
    assert found.context["cl"].result_count == 1
    assert missed.context["cl"].result_count == 0


@pytest.mark.django_db(transaction=True)
def test_a_background_refresh_carries_the_id_of_the_request_that_started_it(
    app_api, upstream, wechat_secret
):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    stored_token(wechat_secret, token="OLD", age=7190, left=10)  # inside its margin

    served = app_api.get(TOKEN_URL, HTTP_X_REQUEST_ID="trace-behind-1")
    wait_for_background_refreshes()

    assert served.json()["token"] == "OLD"
    row = wait_until(lambda: FetchLog.objects.first(), message="the background fetch's row")
    assert (row.outcome, row.request_id) == ("ok", "trace-behind-1")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "path"),
    [
        ("app", TOKEN_URL),  # the fast path's 404 (no such secret yet: see below)
        ("app", "/api/token?realm=wxgzh"),  # DRF's validation error (key missing)
        ("anonymous", "/api/realm"),  # not authenticated
        ("anonymous", "/api/no-such-endpoint"),  # Django's 404 handler under /api/
        ("anonymous", "/metrics?from=elsewhere"),  # the scrape refused (below)
    ],
)
def test_every_error_body_carries_the_request_id(app_api, anonymous_api, who, path):
    caller = app_api if who == "app" else anonymous_api
    extra = {"REMOTE_ADDR": "192.0.2.1"} if path.startswith("/metrics") else {}

    response = caller.get(path, HTTP_X_REQUEST_ID="trace-error-1", **extra)

    assert response.status_code >= 400
    assert response["X-Request-ID"] == "trace-error-1"
    assert response.json()["request_id"] == "trace-error-1"


@pytest.mark.django_db
def test_the_credentials_exchange_error_carries_the_request_id(anonymous_api):
    response = anonymous_api.post(
        "/api/auth/token",
        {"grant_type": "client_credentials", "client_id": "ts_nobody", "client_secret": "x"},
        format="json",
        HTTP_X_REQUEST_ID="trace-oauth-1",
    )

    assert response.status_code == 401
    assert response.json()["request_id"] == "trace-oauth-1"


# --- JSON lines -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_json_lines_per_request_and_per_fetch_carry_the_id_and_no_secret(
    json_log, app_api, upstream, wechat_secret
):
    upstream.reply("/cgi-bin/token", {"access_token": "TOKEN-VALUE-SEEKRIT", "expires_in": 7200})
    rejected = "TOKEN-VALUE-SEEKRIT"

    fetched = app_api.get(TOKEN_URL, HTTP_X_REQUEST_ID="trace-json-1")
    app_api.get(f"{TOKEN_URL}&rejected={rejected}", HTTP_X_REQUEST_ID="trace-json-2")
    lines, text = json_log()

    assert fetched.json()["token"] == "TOKEN-VALUE-SEEKRIT"
    requests_ = [line for line in lines if line.get("event") == "request"]
    fetches = [line for line in lines if line.get("event") == "fetch"]
    assert [(r["request_id"], r["method"], r["path"], r["status"]) for r in requests_] == [
        ("trace-json-1", "GET", "/api/token", 200),
        ("trace-json-2", "GET", "/api/token", 429),  # rejected again at once: too soon
    ]
    assert fetches[0]["request_id"] == "trace-json-1"
    assert (fetches[0]["realm"], fetches[0]["key"], fetches[0]["outcome"]) == (
        "wxgzh",
        "wxgzh_secret",
        "ok",
    )
    assert fetches[0]["http_status"] == 200 and fetches[0]["lifetime"] == 7200
    assert all(line["request_id"] for line in requests_ + fetches)
    # Neither the token (served, then reported rejected in a query string) nor a
    # secret value appears in any line.
    for value in (rejected, wechat_secret.key_1, wechat_secret.key_2):
        assert value not in text


@pytest.mark.django_db
def test_an_upstream_error_line_names_the_code_but_no_secret(
    json_log, api, upstream, wechat_secret
):
    # The upstream echoes the secret back in its message: cut out, as in the FetchLog row.
    upstream.reply(
        "/cgi-bin/token",
        {"errcode": 40125, "errmsg": f"invalid appsecret {wechat_secret.key_2}"},
    )

    response = api.get(TOKEN_URL, HTTP_X_REQUEST_ID="trace-json-3")
    lines, text = json_log()

    assert response.status_code == 502
    fetch = next(line for line in lines if line.get("event") == "fetch")
    assert (fetch["level"], fetch["outcome"], fetch["error_code"]) == (
        "WARNING",
        "upstream_error",
        "40125",
    )
    assert fetch["request_id"] == "trace-json-3"
    assert wechat_secret.key_2 not in text


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_production_server_writes_json_lines_with_log_format_json(
    tmp_path, upstream, wechat_secret
):
    upstream.reply("/cgi-bin/token", {"access_token": "PROD-TOKEN-XYZ", "expires_in": 7200})
    app, _ = client_create("app", scopes=["token:read"], allow=["wxgzh/*"])
    bearer, _ = access_token_issue(app.client_id, app.scopes, allow=app.allow)
    command = [sys.executable, "serve.py"]

    with production_server(command, tmp_path, LOG_FORMAT="json", LOG_LEVEL="INFO") as server:
        answer = requests.get(
            f"{server.base}{TOKEN_URL}",
            headers={"Authorization": f"Bearer {bearer}", "X-Request-ID": "trace-prod-1"},
            timeout=10,
        )

        def our_lines():
            lines = [
                json.loads(line)
                for line in server.log_tail(200_000).splitlines()
                if line.startswith('{"time"')
            ]
            return [line for line in lines if line["request_id"] == "trace-prod-1"]

        lines = wait_until(lambda: len(our_lines()) >= 2 and our_lines(), 10)
        log = server.log_tail(200_000)

    assert answer.json()["token"] == "PROD-TOKEN-XYZ"
    assert answer.headers["X-Request-ID"] == "trace-prod-1"
    assert {line.get("event") for line in lines} >= {"request", "fetch"}
    assert "PROD-TOKEN-XYZ" not in log and bearer not in log
    assert wechat_secret.key_2 not in log
    assert django_settings.LOG_FORMAT == "plain"  # the default stays human-readable
