"""The operator's test fetch: API and console action, through the token path."""

import pytest
from django.contrib.messages import get_messages

from tests.factories import RealmFactory, SecretFactory
from tokens.models import FetchLog, StoredToken
from tokens.services import token_get
from tokens.testing import numbered_tokens

pytestmark = pytest.mark.django_db


def test_test_fetch_stores_the_token_and_masks_it(api, upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens(lifetime=7200))
    token_get("wxgzh", "wxgzh_secret")  # TOKEN-1

    response = api.post("/api/realm/wxgzh/test", {"key": "wxgzh_secret"}, format="json")

    assert response.status_code == 200
    body = response.json()
    expires_in = body.pop("expires_in")
    assert body == {
        "ok": True,
        "source": "upstream",
        "http_status": 200,
        "lifetime": 7200,
        "token": "TOKEN-…",
    }
    # Milliseconds left of the 7200 s just granted (a few seconds of slack).
    assert 7_190_000 < expires_in <= 7_200_000
    assert "TOKEN-2" not in response.content.decode()
    # Stored, not thrown away: apps now get the new token.
    assert StoredToken.objects.get(secret=wechat_secret).token == "TOKEN-2"
    assert token_get("wxgzh", "wxgzh_secret").token == "TOKEN-2"
    assert FetchLog.objects.order_by("-id").first().trigger == "admin"


def test_test_fetch_reports_the_upstream_error(api, upstream, wechat_secret):
    upstream.reply(
        "/cgi-bin/token", {"errcode": 40164, "errmsg": "invalid ip 1.2.3.4, not in whitelist"}
    )

    body = api.post("/api/realm/wxgzh/test", {"key": "wxgzh_secret"}, format="json").json()

    assert body == {
        "ok": False,
        "error": "upstream_error",
        "detail": "upstream answered HTTP 200 with errcode 40164: "
        "invalid ip 1.2.3.4, not in whitelist",
        "outcome": "upstream_error",
        "http_status": 200,
        "error_code": "40164",
        "error_message": "invalid ip 1.2.3.4, not in whitelist",
    }
    log = FetchLog.objects.get()
    assert (log.trigger, log.outcome) == ("admin", "upstream_error")


def test_test_fetch_bad_input(api, wechat_secret):
    assert api.post("/api/realm/wxgzh/test", {}, format="json").status_code == 400
    assert api.post("/api/realm/wxgzh/test", {"key": "nope"}, format="json").status_code == 404
    assert api.post("/api/realm/nope/test", {"key": "x"}, format="json").status_code == 404


def test_test_fetch_of_a_fixed_secret(api):
    realm = RealmFactory(kind="fixed", url="")
    SecretFactory(realm=realm, name="app", token="FIXED-TOKEN")

    body = api.post(f"/api/realm/{realm.id}/test", {"key": "app"}, format="json").json()

    assert (body["ok"], body["source"], body["token"]) == (True, "fixed", "FIXED-…")
    assert not FetchLog.objects.exists()


def test_console_action_test_fetch(client, staff_user, upstream, wechat_secret):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS-TOKEN-123", "expires_in": 7200})

    response = client.post(
        "/admin/secrets/secret/",
        {"action": "test_fetch", "_selected_action": [wechat_secret.pk]},
        follow=True,
    )

    messages = [str(m) for m in get_messages(response.wsgi_request)] or [
        m.message for m in response.context["messages"]
    ]
    assert any("ok (HTTP 200), lifetime 7200 s granted" in m for m in messages), messages
    # Issue 12: not even the token's first characters (its fingerprint is on the secret's page).
    assert "ACCESS" not in response.content.decode()
    assert FetchLog.objects.get().trigger == "admin"
