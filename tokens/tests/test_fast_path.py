"""
The token endpoint's fast path (tokens/middleware.py): an app's plain call
for a cached token costs no database query and one cache round trip, and
every answer is the one the DRF view gives (the seed's shapes, the same
errors), whichever path served it.
"""

import pytest
import redis
from django.conf import settings

from clients.access_tokens import access_token_issue
from clients.services import client_create
from tokens.services import token_get

pytestmark = pytest.mark.django_db

TOKEN_PATH = "/api/token?realm=wxgzh&key=wxgzh_secret"

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="runs with REDIS_URL")


@pytest.fixture
def cached_token(upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"access_token": "WX-TOKEN", "expires_in": 7200})
    token_get("wxgzh", "wxgzh_secret")
    return "WX-TOKEN"


@pytest.fixture
def app_api(client):
    """A Django test client with an app's bearer token (token:read on wxgzh/*)."""
    app, _ = client_create("app", scopes=["token:read"], allow=["wxgzh/*"])
    token, _ = access_token_issue(app.client_id, app.scopes, allow=app.allow)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@needs_redis
def test_a_cached_token_costs_one_redis_round_trip_and_no_query(
    cached_token, app_api, monkeypatch, django_assert_num_queries
):
    app_api.get(TOKEN_PATH)  # loads the revocation snapshot
    commands = []
    real = redis.Redis.execute_command

    def counted(self, *args, **options):
        commands.append(args[0])
        return real(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", counted)

    with django_assert_num_queries(0):
        response = app_api.get(TOKEN_PATH)

    assert response.json() == {
        "token": "WX-TOKEN",
        "expires_in": response.json()["expires_in"],
        "source": "cache",
    }
    assert commands == ["EVALSHA"]


def test_the_answer_has_the_seeds_shape_and_is_not_cached(cached_token, app_api):
    response = app_api.get(TOKEN_PATH + "&flush=false")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"token", "expires_in", "source"}
    assert body["token"] == "WX-TOKEN"
    assert 7_100_000 < body["expires_in"] <= 7_200_000


@pytest.mark.parametrize(
    "path, status, error",
    [
        ("/api/token?realm=wxgzh&key=nobody", 404, "not_found"),
        ("/api/token?realm=nowhere&key=wxgzh_secret", 403, "permission_denied"),
        ("/api/token?realm=wxgzh", 400, "invalid"),
        ("/api/token?realm=wxgzh&key=" + "k" * 101, 400, "invalid"),
        ("/api/token?realm=wxgzh&key=wxgzh_secret&flush=maybe", 400, "invalid"),
        ("/api/token?realm=wxgzh&key=wxgzh_secret&flush=true", 403, "permission_denied"),
    ],
)
def test_errors_are_the_drf_views_errors(cached_token, app_api, path, status, error):
    response = app_api.get(path)

    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["detail"]


def test_names_are_trimmed_as_the_drf_view_trims_them(cached_token, app_api):
    response = app_api.get("/api/token?realm=wxgzh&key=%20wxgzh_secret%20")

    assert response.status_code == 200
    assert response.json()["token"] == "WX-TOKEN"


def test_an_invalid_access_token_is_the_same_401(cached_token, client):
    client.defaults["HTTP_AUTHORIZATION"] = "Bearer tsat1.nope.nope"

    response = client.get(TOKEN_PATH)

    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
