"""
No input produces a 500, and nothing secret reaches a response or a log line.

Odd bodies and query strings against every endpoint: each answer is a 4xx
with the JSON error shape (or a success), never a server error.
"""

import logging

import pytest
from django.conf import settings

from tests.factories import ArgumentFactory, RealmFactory, SecretFactory
from tokens.testing import numbered_tokens
from tokenserver.logging import RedactQueryStrings

pytestmark = pytest.mark.django_db

ODD_BODIES = [
    None,
    [],
    "",
    "null",
    "[1, 2]",
    '"a string"',
    "{not json",
    '{"id": null}',
    '{"id": 5, "config": "a string"}',
    '{"id": "x", "config": {"arguments": "nope"}}',
    '{"id": "x", "config": {"arguments": [null]}}',
    '{"id": "x", "config": {"arguments": [{"place": ["url"]}]}}',
    '{"id": "x", "config": {"url": "https://e.com", "timeout": 1e999}}',
    '{"id": "x", "config": {"url": "https://e.com", "refresh_margin": 99999999999999999999}}',
    '{"id": "x", "config": {"url": "https://e.com", "max_concurrency": -3}}',
    '{"id": "x", "config": {"url": "https://e.com", "success_conditions": [["$", {"a": [1]}], 3]}}',
    '{"id": "\\u00e9t\\u00e9", "config": {"url": "https://e.com"}}',
    '{"id": "x\\u0000y"}',
    '{"realm": {"a": 1}, "key": ["k"]}',
    '{"realm": "r0", "key": "k", "enabled": "perhaps"}',
    '{"realm": "r0", "key": "k", "token_expires_at": "yesterday"}',
    '{"realm": "r0", "key": "' + "k" * 500 + '"}',
]

ODD_QUERIES = [
    "",
    "realm=&key=",
    "realm=r0&key=k&flush=",
    "realm=r0&key=k&flush=2",
    "realm=%00&key=%00",
    "realm=%F0%9F%94%91&key=%F0%9F%94%91",
    "realm[]=a&key=b",
    "page=1e3",
    "page=99999999999999999999999",
    "pageSize=0",
    "keyword=" + "%25" * 300,
]


def assert_json_error_or_success(response):
    # 502/503 are fine: an odd but valid request may reach the (absent) upstream.
    assert response.status_code != 500, response.content[:300]
    if response.status_code >= 400:
        body = response.json()
        assert set(body) >= {"error", "detail"}


LIST_ROUTES = ["/api/realm", "/api/secret"]
DETAIL_ROUTES = ["/api/realm/x", "/api/secret/r0/k"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", path) for path in LIST_ROUTES]
    + [(method, path) for method in ("put", "patch") for path in LIST_ROUTES + DETAIL_ROUTES],
)
@pytest.mark.parametrize("body", ODD_BODIES)
def test_odd_bodies_never_cause_a_500(api, path, body, method):
    SecretFactory(realm__id="r0", name="k")

    response = getattr(api, method)(path, body, content_type="application/json")

    assert_json_error_or_success(response)


@pytest.mark.parametrize("path", DETAIL_ROUTES)
@pytest.mark.parametrize("body", ODD_BODIES)
def test_post_on_a_detail_route_is_a_json_405_whatever_the_body(api, path, body):
    SecretFactory(realm__id="r0", name="k")

    response = api.post(path, body, content_type="application/json")

    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert set(response.json()) >= {"error", "detail"}


@pytest.mark.parametrize("path", ["/api/realm", "/api/secret", "/api/token"])
@pytest.mark.parametrize("query", ODD_QUERIES)
def test_odd_queries_never_cause_a_500(api, path, query):
    SecretFactory(realm__id="r0", name="k")

    assert_json_error_or_success(api.get(f"{path}?{query}"))


def test_form_encoded_post_works_like_json(api):
    response = api.post(
        "/api/realm",
        "id=form-realm&comment=from+a+form",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 201


def test_unsupported_media_type_is_a_415(api):
    response = api.post("/api/realm", b"<x/>", content_type="application/xml")

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/realm", "/api/secret", "/api/realm/x/test"])
def test_deeply_nested_json_is_a_400(api, path):
    # Finding: RecursionError in the JSON parser was a 500.
    body = "[" * 50000 + "]" * 50000

    response = api.post(path, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_request"


def test_no_secret_or_token_in_logs_or_answers(api, upstream, caplog):
    """Every flow, with DEBUG logging: the values and tokens appear nowhere."""
    caplog.set_level(logging.DEBUG)
    secret_values = ["wx-app-id-0001", "app-secret-value-0002", "client_credential"]
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    realm = {
        "id": "wxgzh",
        "config": {
            "url": upstream.url("/cgi-bin/token"),
            "min_flush_interval": 0,
            "arguments": [
                {"name": "appid", "place": "url", "value": "$key_1"},
                {"name": "secret", "place": "url", "value": "$key_2"},
                {"name": "grant_type", "place": "url", "value": "$key_3"},
            ],
        },
    }
    answers = [
        api.post("/api/realm", realm, format="json"),
        api.post(
            "/api/secret",
            {
                "realm": "wxgzh",
                "key": "s",
                **dict(zip(["key_1", "key_2", "key_3"], secret_values, strict=True)),
            },
            format="json",
        ),
        api.get("/api/secret"),
        api.get("/api/secret/wxgzh/s"),
    ]
    token = api.get("/api/token?realm=wxgzh&key=s").json()["token"]
    api.get("/api/token?realm=wxgzh&key=s&flush=true")
    upstream.reply("/cgi-bin/token", {"errcode": 40125, "errmsg": "invalid appsecret"})
    answers.append(api.get("/api/token?realm=wxgzh&key=s&flush=true"))

    logged = caplog.text + " ".join(str(record.__dict__) for record in caplog.records)
    for value in [*secret_values[:2], token, "TOKEN-2"]:
        assert value not in logged
        for answer in answers:
            assert value not in answer.content.decode()


def test_no_client_secret_access_token_or_upstream_token_leaks(upstream, caplog, client):
    """Issue 5: every client flow with DEBUG logging; the sensitive values appear nowhere."""
    from clients.access_tokens import access_token_revoke
    from clients.services import client_create

    caplog.set_level(logging.DEBUG)
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    app, client_secret = client_create(
        "app", scopes=["token:read", "token:flush", "log:read"], allow=["wxgzh/*"]
    )
    realm = RealmFactory(id="wxgzh", url=upstream.url("/cgi-bin/token"), min_flush_interval=0)
    ArgumentFactory(realm=realm, name="secret", value="$key_2")
    SecretFactory(realm=realm, name="s", key_2="upstream-app-secret-42")

    from rest_framework.test import APIClient

    api = APIClient()
    answers = []
    answers.append(
        api.post(
            "/api/auth/token",
            {
                "grant_type": "client_credentials",
                "client_id": app.client_id,
                "client_secret": client_secret,
            },
            format="json",
        )
    )
    answers.append(
        api.post(
            "/api/auth/token",
            {
                "grant_type": "client_credentials",
                "client_id": app.client_id,
                "client_secret": client_secret + "x",
            },
            format="json",
        )
    )
    access_token = answers[0].json()["access_token"]
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token}")
    upstream_token = api.get("/api/token?realm=wxgzh&key=s").json()["token"]
    answers.append(api.get("/api/token?realm=wxgzh&key=s&flush=true"))
    answers.append(api.get(f"/api/token?realm=wxgzh&key=s&rejected={upstream_token}"))
    answers.append(api.get("/api/fetchlog"))
    answers.append(api.get("/api/realm"))  # 403: no realm:read
    access_token_revoke(access_token)
    answers.append(api.get("/api/token?realm=wxgzh&key=s"))  # 401 revoked

    logged = caplog.text + " ".join(str(record.__dict__) for record in caplog.records)
    # Never logged, never in an answer (answers[0] hands out the access token, by design).
    for value in (client_secret, access_token, "upstream-app-secret-42"):
        assert value not in logged
        for answer in answers[1:]:
            assert value not in answer.content.decode()
    # Upstream tokens go to the app that asked, and nowhere else.
    for value in (upstream_token, "TOKEN-2", "TOKEN-3"):
        assert value not in logged


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
