"""`GET /api/token`: the seed's request and answer, and every error path as JSON."""

import pytest

from tests.factories import STAFF_PASSWORD, RealmFactory, SecretFactory, stored_token
from tokens.testing import numbered_tokens

pytestmark = pytest.mark.django_db

SEED_URL = "/api/token?realm=wxgzh&key=wxgzh_secret&flush=false"


def test_seed_request_returns_token_expires_in_ms_and_source(api, upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS_TOKEN", "expires_in": 7200})

    first = api.get(SEED_URL)
    second = api.get(SEED_URL)

    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"token", "expires_in", "source"}
    assert (body["token"], body["source"]) == ("ACCESS_TOKEN", "upstream")
    assert 7_190_000 < body["expires_in"] <= 7_200_000
    assert second.json()["source"] == "cache"
    assert first["Cache-Control"] == "no-store"


def test_flush_true_fetches_anew(api, upstream, wechat_secret):
    wechat_secret.realm.min_flush_interval = 0
    wechat_secret.realm.save()
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    api.get(SEED_URL)

    flushed = api.get("/api/token?realm=wxgzh&key=wxgzh_secret&flush=true")

    assert flushed.json()["token"] == "TOKEN-2"
    assert flushed.json()["source"] == "upstream"


@pytest.mark.django_db
def test_a_rejected_token_inside_the_interval_is_a_429_over_the_api(api, wechat_secret):
    stored_token(wechat_secret, token="T1", age=0, left=7200)

    response = api.get("/api/token?realm=wxgzh&key=wxgzh_secret&flush=true&rejected=T1")

    assert response.status_code == 429
    assert response.json()["error"] == "too_many_flushes"
    assert int(response["Retry-After"]) >= 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("key=wxgzh_secret", "realm"),
        ("realm=wxgzh", "key"),
        ("realm=wxgzh&key=wxgzh_secret&flush=maybe", "flush"),
        ("realm=" + "x" * 51 + "&key=k", "realm"),
    ],
)
def test_missing_or_malformed_parameters_are_a_400(api, wechat_secret, query, field):
    response = api.get(f"/api/token?{query}")

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid"
    assert field in body["fields"]
    assert body["detail"].startswith(field)


def test_unknown_realm_or_key_is_a_404(api, wechat_secret):
    realm = api.get("/api/token?realm=nope&key=wxgzh_secret")
    key = api.get("/api/token?realm=wxgzh&key=nope")

    assert (realm.status_code, realm.json()["error"]) == (404, "not_found")
    assert (key.status_code, key.json()["error"]) == (404, "not_found")
    assert "nope" in key.json()["detail"]


def test_disabled_secret_is_a_403(api, wechat_secret):
    wechat_secret.enabled = False
    wechat_secret.save()

    response = api.get(SEED_URL)

    assert (response.status_code, response.json()["error"]) == (403, "secret_disabled")


def test_upstream_refusal_is_a_502_naming_status_and_code_but_no_secret(
    api, upstream, wechat_secret
):
    upstream.reply("/cgi-bin/token", {"errcode": 40013, "errmsg": "invalid appid"})

    response = api.get(SEED_URL)

    assert response.status_code == 502
    assert response.json() == {
        "error": "upstream_error",
        "detail": "upstream answered HTTP 200 with errcode 40013: invalid appid",
        "request_id": response["X-Request-ID"],  # issue 13: every error body names it
    }
    for value in (wechat_secret.key_1, wechat_secret.key_2):
        assert value not in response.content.decode()


def test_upstream_timeout_is_a_503_with_retry_after(api, upstream):
    realm = RealmFactory(url=upstream.url(), timeout=0.2)
    secret = SecretFactory(realm=realm)
    upstream.reply("/token", {"access_token": "late", "expires_in": 60}, delay=1.0)

    response = api.get(f"/api/token?realm={realm.id}&key={secret.name}")

    assert response.status_code == 503
    assert response.json()["error"] == "upstream_unavailable"
    assert "did not answer within 0.2 s" in response.json()["detail"]
    assert response["Retry-After"]


def test_unreachable_upstream_is_a_503(api):
    # Nothing listens on port 9 (discard) of the loopback here.
    secret = SecretFactory(realm=RealmFactory(url="http://127.0.0.1:9/token"))

    response = api.get(f"/api/token?realm={secret.realm_id}&key={secret.name}")

    assert response.status_code == 503
    assert response.json()["error"] == "upstream_unavailable"


# --- Authentication: staff only until the clients issue lands ---------------------


def test_anonymous_is_refused(anonymous_api, wechat_secret):
    response = anonymous_api.get(SEED_URL)

    assert response.status_code in (401, 403)
    assert response.json()["error"] == "not_authenticated"


def test_non_staff_user_is_refused(anonymous_api, wechat_secret, django_user_model):
    django_user_model.objects.create_user("app", password="app-password-123")
    anonymous_api.login(username="app", password="app-password-123")

    response = anonymous_api.get(SEED_URL)

    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"


def test_staff_user_with_http_basic(anonymous_api, upstream, wechat_secret, staff_user):
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS", "expires_in": 7200})
    anonymous_api.credentials(HTTP_AUTHORIZATION=_basic("operator", STAFF_PASSWORD))

    response = anonymous_api.get(SEED_URL)

    assert response.status_code == 200
    assert response.json()["token"] == "ACCESS"


def test_wrong_basic_password_is_a_401(anonymous_api, wechat_secret, staff_user):
    anonymous_api.credentials(HTTP_AUTHORIZATION=_basic("operator", "wrong"))

    response = anonymous_api.get(SEED_URL)

    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"
    assert response["WWW-Authenticate"]  # a 401 says how to authenticate


@pytest.mark.django_db
def test_staff_basic_failures_are_throttled(anonymous_api, staff_user, settings):
    import base64

    settings.TOKENSERVER_AUTH_FAILURE_RATE = "3/min"
    wrong = "Basic " + base64.b64encode(b"operator:wrong").decode()
    right = "Basic " + base64.b64encode(f"operator:{STAFF_PASSWORD}".encode()).decode()

    statuses = [
        anonymous_api.get("/api/realm", HTTP_AUTHORIZATION=wrong).status_code for _ in range(3)
    ]
    throttled = anonymous_api.get("/api/realm", HTTP_AUTHORIZATION=right)

    assert statuses == [401, 401, 401]
    assert throttled.status_code == 429


@pytest.mark.parametrize("path", ["/api/realm", "/api/secret", "/api/realm/x", "/api/secret/x/y"])
def test_every_api_endpoint_needs_credentials(anonymous_api, path):
    assert anonymous_api.get(path).status_code in (401, 403)


def test_unknown_api_path_is_a_json_404(api):
    response = api.get("/api/nothing-here")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_wrong_method_is_a_json_405(api):
    response = api.delete("/api/token?realm=a&key=b")

    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def _basic(user, password):
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
