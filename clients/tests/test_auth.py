"""
Clients exchange credentials for access tokens, and use them with the rights
their scopes and patterns give, and no others, until the tokens expire or are
revoked.
"""

import base64
import statistics
import time

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from clients.access_tokens import access_token_issue, access_token_revoke, revocations
from clients.services import client_create, client_delete, client_save
from tests.factories import RealmFactory, SecretFactory, expired_access_token
from tests.helpers import wait_until
from tokens.services import token_get
from tokenserver.cache import local_windows

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_revocations():
    revocations.invalidate()


@pytest.fixture
def make_client():
    def make(*scopes, allow=("wxgzh/*",), name="app"):
        return client_create(name, scopes=list(scopes), allow=list(allow))

    return make


def bearer(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def exchange(client_id, secret, how="basic", **extra):
    api = APIClient()
    if how == "basic":
        encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        api.credentials(HTTP_AUTHORIZATION=f"Basic {encoded}")
        return api.post(
            "/api/auth/token", {"grant_type": "client_credentials", **extra}, format="json"
        )
    body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    body.update(extra)
    if how == "json":
        return api.post("/api/auth/token", body, format="json")
    return api.post(
        "/api/auth/token",
        "&".join(f"{k}={v}" for k, v in body.items()),
        content_type="application/x-www-form-urlencoded",
    )


# --- The client credentials grant -------------------------------------------------------


@pytest.mark.parametrize("how", ["basic", "form", "json"])
def test_exchange_credentials_for_an_access_token(make_client, how):
    client, secret = make_client("token:read", "realm:read")

    response = exchange(client.client_id, secret, how)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert 7190 <= body["expires_in"] <= 7200
    assert body["scope"] == "token:read realm:read"
    assert response["Cache-Control"] == "no-store"


def test_a_subset_of_scopes_may_be_asked_for(make_client):
    client, secret = make_client("token:read", "token:flush", "realm:read")

    narrow = exchange(client.client_id, secret, "json", scope="token:read")
    wider = exchange(client.client_id, secret, "json", scope="token:read secret:write")

    assert narrow.json()["scope"] == "token:read"
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"


def test_wrong_credentials_get_the_same_answer_whether_the_client_exists_or_not(make_client):
    client, secret = make_client("token:read")

    wrong_secret = exchange(client.client_id, "not-the-secret")
    _clear_failures()
    unknown = exchange("ts_doesnotexist", "whatever")

    assert wrong_secret.status_code == unknown.status_code == 401
    # Alike but for their own request ids (issue 13).
    assert wrong_secret.json() | {"request_id": "-"} == unknown.json() | {"request_id": "-"}
    assert wrong_secret.json()["error"] == "invalid_client"


def test_wrong_credentials_take_similar_time_whether_the_client_exists_or_not(make_client):
    client, _ = make_client("token:read")

    samples = {client.client_id: [], "ts_doesnotexist": []}
    for _ in range(9):
        # Interleaved, so that a busy moment of the machine slows both alike.
        for client_id, times in samples.items():
            started = time.perf_counter()
            exchange(client_id, "wrong-secret")
            times.append(time.perf_counter() - started)
            _clear_failures()
    existing, missing = (statistics.median(times) for times in samples.values())

    # Same work either way (one lookup, one digest comparison): no oracle.
    # The margin is relative (a loaded machine slows every request) with a
    # floor for the scheduler's noise.
    assert abs(existing - missing) < max(0.02, 0.5 * min(existing, missing))


def _clear_failures():
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("window:authfail:*")
    local_windows.clear()


def test_repeated_failures_are_throttled(make_client, settings):
    settings.TOKENSERVER_AUTH_FAILURE_RATE = "3/min"
    client, secret = make_client("token:read")

    statuses = [exchange(client.client_id, "wrong").status_code for _ in range(3)]
    throttled = exchange(client.client_id, secret)  # even the right secret, from this address

    assert statuses == [401, 401, 401]
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "too_many_failures"
    assert 0 < int(throttled["Retry-After"]) <= 60


def test_disabled_client_cannot_get_a_token(make_client):
    client, secret = make_client("token:read")
    client.enabled = False
    client.save()

    assert exchange(client.client_id, secret).status_code == 401


def test_grant_type_must_be_client_credentials(make_client):
    client, secret = make_client("token:read")

    response = exchange(client.client_id, secret, "json", grant_type="password")

    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


@pytest.mark.django_db
def test_non_ascii_basic_header_is_a_401_not_a_500(anonymous_api):
    response = anonymous_api.post(
        "/api/auth/token",
        {"grant_type": "client_credentials"},
        format="json",
        HTTP_AUTHORIZATION="Basic é",
    )

    assert response.status_code == 401


# A lone surrogate (`\ud800`) is valid JSON but no UTF-8 text: it reached the
# secret's digest (and the database lookup) and answered 500 with a traceback.
UNENCODABLE = "\\ud800"


@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [("x", UNENCODABLE), (UNENCODABLE, "x"), (UNENCODABLE, UNENCODABLE)],
)
def test_credentials_that_are_not_unicode_text_are_a_counted_401(
    settings, caplog, client_id, client_secret
):
    # Issue 11, item 2: 15 of 15 such requests were a 500, and none was counted.
    settings.TOKENSERVER_AUTH_FAILURE_RATE = "3/min"
    body = (
        '{"grant_type": "client_credentials", '
        f'"client_id": "{client_id}", "client_secret": "{client_secret}"}}'
    )

    answers = [
        APIClient().post("/api/auth/token", body, content_type="application/json") for _ in range(4)
    ]

    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert answers[0].json()["error"] == "invalid_client"  # as a wrong secret
    assert answers[0]["WWW-Authenticate"] == 'Basic realm="api"'
    assert answers[3].json()["error"] == "too_many_failures"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_scope_that_is_not_unicode_text_is_a_400(make_client, caplog):
    # Issue 11, item 2, once the credentials are right: the refusal named the scope.
    client, secret = make_client("token:read")
    body = (
        '{"grant_type": "client_credentials", "scope": "token:read \\ud800", '
        f'"client_id": "{client.client_id}", "client_secret": "{secret}"}}'
    )

    response = APIClient().post("/api/auth/token", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# Unreadable credentials in headers: bytes that are no UTF-8 (as a real
# server hands them over), and, from the test client only, text that is not
# even latin-1 (real servers decode header bytes as latin-1).
SURROGATE_UTF8 = b"\xed\xa0\x80"
ODD_AUTHORIZATIONS = [
    "Basic " + base64.b64encode(b"x:" + SURROGATE_UTF8).decode(),
    "Basic " + base64.b64encode(SURROGATE_UTF8 + b":x").decode(),
    "Basic " + base64.b64encode(b"%ED%A0%80:%ED%A0%80").decode(),
    "Basic " + SURROGATE_UTF8.decode("latin-1"),
    "Basic \ud800",
    "Bearer " + SURROGATE_UTF8.decode("latin-1"),
    "Bearer \ud800",
    "Bearer tsat1.x.\ud800",
]


@pytest.mark.parametrize("authorization", ODD_AUTHORIZATIONS)
@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/api/auth/token"), ("get", "/api/realm"), ("get", "/api/token?realm=a&key=b")],
)
def test_unreadable_authorization_headers_are_a_401(caplog, authorization, method, path):
    # Issue 11, item 2: the same lone surrogate in HTTP Basic and bearer credentials.
    response = getattr(APIClient(), method)(
        path, {"grant_type": "client_credentials"}, format="json", HTTP_AUTHORIZATION=authorization
    )

    assert response.status_code == 401, response.content
    assert set(response.json()) >= {"error", "detail"}
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# --- Using the access token: scopes and patterns --------------------------------------------


@pytest.fixture
def stored_token(upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"access_token": "WX-TOKEN", "expires_in": 7200})
    token_get("wxgzh", "wxgzh_secret")
    return "WX-TOKEN"


def test_client_reads_a_token_its_pattern_allows(make_client, stored_token):
    client, secret = make_client("token:read", allow=("wxgzh/*",))
    token = exchange(client.client_id, secret).json()["access_token"]

    response = bearer(token).get("/api/token?realm=wxgzh&key=wxgzh_secret")

    assert response.status_code == 200
    assert response.json()["token"] == "WX-TOKEN"


def test_hot_path_verifies_the_access_token_without_a_database_query(
    make_client, stored_token, django_assert_num_queries
):
    client, _ = make_client("token:read")
    token, _ = access_token_issue(client.client_id, ["token:read"], allow=["wxgzh/*"])
    api = bearer(token)
    api.get("/api/token?realm=wxgzh&key=wxgzh_secret")  # loads the revocation snapshot

    with django_assert_num_queries(0):
        response = api.get("/api/token?realm=wxgzh&key=wxgzh_secret")

    assert response.json()["source"] == "cache"


@pytest.mark.parametrize("allow", [("other/*",), ("*/billing-*",), ("wxgzh/other",)])
def test_client_outside_its_patterns_gets_403(make_client, stored_token, allow):
    client, secret = make_client("token:read", allow=allow)
    token = exchange(client.client_id, secret).json()["access_token"]

    response = bearer(token).get("/api/token?realm=wxgzh&key=wxgzh_secret")

    assert response.status_code == 403
    assert "WX-TOKEN" not in response.content.decode()
    # Issue 13: the refusal names what it refused.
    assert response.json()["detail"] == (
        "This client's allowed patterns do not cover realm 'wxgzh', key 'wxgzh_secret'."
    )
    assert "patterns" in response.json()["detail"]


def test_patterns_with_wildcards_on_both_sides(make_client, upstream):
    realm = RealmFactory(id="shop", url=upstream.url())
    SecretFactory(realm=realm, name="billing-eu")
    upstream.reply("/token", {"access_token": "T", "expires_in": 60})
    client, secret = make_client("token:read", allow=("*/billing-*",))
    token = exchange(client.client_id, secret).json()["access_token"]

    assert bearer(token).get("/api/token?realm=shop&key=billing-eu").status_code == 200


@pytest.mark.parametrize(
    ("scopes", "method", "path", "body", "missing"),
    [
        (
            ("token:read",),
            "get",
            "/api/token?realm=wxgzh&key=wxgzh_secret&flush=true",
            None,
            "token:flush",
        ),
        (
            ("token:read",),
            "get",
            "/api/token?realm=wxgzh&key=wxgzh_secret&rejected=WX-TOKEN",
            None,
            "token:flush",
        ),
        (
            ("token:flush",),
            "get",
            "/api/token?realm=wxgzh&key=wxgzh_secret&flush=true",
            None,
            "token:read",
        ),
        (("token:read",), "get", "/api/realm", None, "realm:read"),
        (("realm:read",), "post", "/api/realm", {"id": "x"}, "realm:write"),
        (("realm:read",), "delete", "/api/realm/wxgzh", None, "realm:write"),
        (("realm:read",), "post", "/api/secret", {"realm": "wxgzh", "key": "k"}, "secret:write"),
        (("token:read",), "get", "/api/fetchlog", None, "log:read"),
        (("token:read",), "post", "/api/realm/wxgzh/test", {"key": "wxgzh_secret"}, "realm:write"),
    ],
)
def test_each_call_needs_its_scope(make_client, stored_token, scopes, method, path, body, missing):
    client, secret = make_client(*scopes)
    token = exchange(client.client_id, secret).json()["access_token"]

    response = getattr(bearer(token), method)(path, body, format="json")

    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"
    assert missing in response.json()["detail"]


@pytest.mark.parametrize(
    ("scopes", "method", "path", "body"),
    [
        (
            ("token:read", "token:flush"),
            "get",
            "/api/token?realm=wxgzh&key=wxgzh_secret&flush=true",
            None,
        ),
        (("realm:read",), "get", "/api/realm", None),
        (("realm:read",), "get", "/api/secret", None),
        (("realm:write",), "post", "/api/realm", {"id": "new-realm"}),
        (("secret:write",), "post", "/api/secret", {"realm": "wxgzh", "key": "k2"}),
        (("log:read",), "get", "/api/fetchlog", None),
    ],
)
def test_the_scope_opens_the_call(make_client, stored_token, scopes, method, path, body):
    client, secret = make_client(*scopes)
    token = exchange(client.client_id, secret).json()["access_token"]

    response = getattr(bearer(token), method)(path, body, format="json")

    assert response.status_code in (200, 201), response.content


def test_fetch_log_api_lists_attempts_for_auditors(make_client, stored_token):
    client, secret = make_client("log:read")
    token = exchange(client.client_id, secret).json()["access_token"]

    body = bearer(token).get("/api/fetchlog?realm=wxgzh&outcome=ok").json()

    assert body["data"]["total"] == 1
    row = body["data"]["list"][0]
    assert (row["realm"], row["key"], row["outcome"], row["trigger"]) == (
        "wxgzh",
        "wxgzh_secret",
        "ok",
        "request",
    )
    assert "WX-TOKEN" not in str(body)


def test_staff_keep_working_by_session_and_basic(api, stored_token):
    assert api.get("/api/token?realm=wxgzh&key=wxgzh_secret").status_code == 200


# --- Access tokens: expiry, tampering, keys, revocation -------------------------------------


def test_expired_access_token_is_refused(make_client, stored_token):
    client, _ = make_client("token:read")
    token = expired_access_token(client.client_id, ["token:read"], allow=["wxgzh/*"])

    response = bearer(token).get("/api/token?realm=wxgzh&key=wxgzh_secret")

    assert response.status_code == 401
    assert response.json()["detail"] == "Access token expired."


def test_tampered_access_token_is_refused(make_client, stored_token):
    client, _ = make_client("token:read")
    token, _ = access_token_issue(client.client_id, ["token:read"], allow=["*/*"])
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]

    response = bearer(tampered).get("/api/token?realm=wxgzh&key=wxgzh_secret")

    assert response.status_code == 401
    assert response.json()["detail"] == "Access token bad signature."


def test_revoked_access_token_is_refused_at_once(make_client, stored_token):
    client, _ = make_client("token:read")
    token, _ = access_token_issue(client.client_id, ["token:read"], allow=["wxgzh/*"])
    api = bearer(token)
    assert api.get("/api/token?realm=wxgzh&key=wxgzh_secret").status_code == 200

    access_token_revoke(token)

    assert api.get("/api/token?realm=wxgzh&key=wxgzh_secret").status_code == 401


def test_narrowing_a_clients_rights_revokes_its_tokens(
    make_client, stored_token, django_capture_on_commit_callbacks
):
    client, _ = make_client("token:read", "realm:read")
    token, _ = access_token_issue(client.client_id, client.scopes, allow=client.allow)
    api = bearer(token)
    assert api.get("/api/realm").status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        client.scopes = ["token:read"]
        client_save(client)

    assert api.get("/api/realm").status_code == 401


@pytest.mark.django_db
def test_deleting_a_client_revokes_its_tokens():
    from clients.access_tokens import (
        InvalidAccessToken,
        access_token_issue,
        access_token_verify,
    )
    from clients.access_tokens import revocations as client_revocations

    app, _ = client_create("app", scopes=["token:read"])
    token, _ = access_token_issue(app.client_id, app.scopes)

    client_delete(app)
    client_revocations.invalidate()

    with pytest.raises(InvalidAccessToken, match="revoked"):
        access_token_verify(token)


@pytest.mark.django_db
def test_a_token_issued_right_after_a_revocation_is_valid():
    from clients.access_tokens import access_token_issue, access_token_verify, client_revoke_tokens
    from clients.services import client_create

    app, _ = client_create("app", scopes=["token:read"])
    client_revoke_tokens(app.client_id)
    # Issue times are rounded to the millisecond: one that rounds down to the
    # revocation's time counts as revoked. "Right after" is the next millisecond.
    revoked = time.time()
    wait_until(lambda: round(time.time(), 3) > revoked)
    token, _ = access_token_issue(app.client_id, app.scopes)

    assert access_token_verify(token).client_id == app.client_id


@pytest.mark.django_db
def test_revocations_survive_a_lost_redis_mirror():
    # Review of issue 5: the database is the truth; a flushed Redis un-revokes nothing.
    from django.core.cache import cache

    from clients.access_tokens import (
        InvalidAccessToken,
        access_token_issue,
        access_token_revoke,
        access_token_verify,
    )
    from clients.access_tokens import (
        revocations as client_revocations,
    )
    from clients.services import client_create

    app, _ = client_create("app", scopes=["token:read"])
    token, _ = access_token_issue(app.client_id, app.scopes)
    access_token_revoke(token)
    cache.delete("revocations")  # the mirror is gone (a Redis restart, a flush)
    client_revocations.invalidate()

    with pytest.raises(InvalidAccessToken, match="revoked"):
        access_token_verify(token)
