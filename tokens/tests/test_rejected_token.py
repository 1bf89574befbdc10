"""
Issue 13, keep tokens out of URLs: `rejected=<token>` in the query string lands in
every access log in front of tokenserver, so the rejected token may also come in
the `X-Rejected-Token` header or in a POST to the token endpoint (form or JSON,
the GET's parameters). Every form gives the same compare-and-refresh answer, and
the header's value is never logged.
"""

import logging

import pytest
from rest_framework.test import APIClient

from clients.access_tokens import access_token_issue
from clients.services import client_create
from tests.factories import stored_token
from tokens.testing import numbered_tokens

pytestmark = pytest.mark.django_db

REJECTED = "T1-REJECTED-0123456789abcdef"


@pytest.fixture
def app(db):
    """An app's API client: bearer token with token:read and token:flush, on wxgzh/*."""
    client_app, _ = client_create("app", scopes=["token:read", "token:flush"], allow=["wxgzh/*"])
    token, _ = access_token_issue(client_app.client_id, client_app.scopes, allow=client_app.allow)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


def query_form(api, rejected):
    return api.get(f"/api/token?realm=wxgzh&key=wxgzh_secret&rejected={rejected}")


def header_form(api, rejected):
    # Through the fast path's door: a GET with a bearer token and a plain query string.
    return api.get("/api/token?realm=wxgzh&key=wxgzh_secret", HTTP_X_REJECTED_TOKEN=rejected)


def post_urlencoded(api, rejected):
    body = f"realm=wxgzh&key=wxgzh_secret&rejected={rejected}"
    return api.post("/api/token", body, content_type="application/x-www-form-urlencoded")


def post_json(api, rejected):
    data = {"realm": "wxgzh", "key": "wxgzh_secret", "rejected": rejected}
    return api.post("/api/token", data, format="json")


def post_with_header(api, rejected):
    data = {"realm": "wxgzh", "key": "wxgzh_secret"}
    return api.post("/api/token", data, format="json", HTTP_X_REJECTED_TOKEN=rejected)


FORMS = [query_form, header_form, post_urlencoded, post_json, post_with_header]


@pytest.fixture
def current(wechat_secret, upstream):
    """REJECTED is the secret's current token, fetched long enough ago to be replaced."""
    wechat_secret.realm.min_flush_interval = 30
    wechat_secret.realm.save()
    stored_token(wechat_secret, token=REJECTED, age=600, left=6600)
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    return wechat_secret


@pytest.mark.parametrize("send", FORMS)
def test_a_current_rejected_token_is_replaced_in_every_form(app, current, upstream, send):
    response = send(app, REJECTED)

    assert response.status_code == 200, response.content
    assert response.json()["token"] == "TOKEN-1"
    assert response.json()["source"] == "upstream"
    assert len(upstream.calls("/cgi-bin/token")) == 1
    assert response["Cache-Control"] == "no-store"


@pytest.mark.parametrize("send", FORMS)
def test_a_token_already_replaced_costs_no_upstream_call_in_every_form(
    app, current, upstream, send
):
    send(app, REJECTED)  # replaced by TOKEN-1

    again = send(app, REJECTED)

    assert again.status_code == 200
    assert again.json()["token"] == "TOKEN-1"
    assert len(upstream.calls("/cgi-bin/token")) == 1


@pytest.mark.parametrize("send", FORMS)
def test_a_token_rejected_within_the_interval_is_a_429_in_every_form(
    app, wechat_secret, upstream, send
):
    stored_token(wechat_secret, token=REJECTED, age=0, left=7200)

    response = send(app, REJECTED)

    assert response.status_code == 429
    assert response.json()["error"] == "too_many_flushes"
    assert int(response["Retry-After"]) >= 1
    assert upstream.calls("/cgi-bin/token") == []


@pytest.mark.parametrize("send", [header_form, post_json])
def test_reporting_needs_the_flush_scope_in_every_form(current, upstream, send):
    reader, _ = client_create("reader", scopes=["token:read"], allow=["wxgzh/*"])
    token, _ = access_token_issue(reader.client_id, reader.scopes, allow=reader.allow)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    response = send(api, REJECTED)

    assert response.status_code == 403
    assert "token:flush" in response.json()["detail"]
    assert upstream.calls("/cgi-bin/token") == []


def test_a_header_and_a_parameter_that_differ_are_a_400(app, current, upstream):
    response = app.get(
        "/api/token?realm=wxgzh&key=wxgzh_secret&rejected=OTHER", HTTP_X_REJECTED_TOKEN=REJECTED
    )

    assert response.status_code == 400
    assert "rejected" in response.json()["fields"]
    assert REJECTED not in response.content.decode()
    assert upstream.calls("/cgi-bin/token") == []


def test_post_takes_the_gets_parameters_and_answers_a_plain_token(app, current):
    response = app.post("/api/token", {"realm": "wxgzh", "key": "wxgzh_secret"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert (body["token"], body["source"]) == (REJECTED, "database")
    assert 6_500_000 < body["expires_in"] <= 6_600_000


def test_the_header_value_is_never_logged(app, current, upstream, caplog):
    caplog.set_level(logging.DEBUG)

    replaced = header_form(app, REJECTED)
    refused = header_form(app, "x" * 16385)  # too long: a 400
    posted = post_with_header(app, REJECTED)

    assert (replaced.status_code, refused.status_code, posted.status_code) == (200, 400, 200)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert REJECTED not in logged
    assert "x" * 100 not in logged
    assert "x" * 100 not in refused.content.decode()
