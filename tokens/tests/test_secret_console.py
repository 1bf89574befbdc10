"""
Secrets in the console (issue 12): each token's state and last fetch in the
list, refreshing, clearing, enabling from it; the secret's page with its
token's state, fingerprint and recent fetches; the realm's page with how its
secrets' tokens stand. No secret value and no token on any page.
"""

import pytest
from django.contrib.messages import get_messages

from secret_store.models import Secret
from tests.factories import RealmFactory, SecretFactory, stored_token
from tests.helpers import queries_of
from tokens.models import FetchLog, StoredToken
from tokens.services import token_get

pytestmark = pytest.mark.django_db

LIST = "/admin/secrets/secret/"
VALUES = ("wx1234567890abcdef", "0123456789abcdef0123456789abcdef", "client_credential")


def change_page(secret):
    return f"/admin/secrets/secret/{secret.pk}/change/"


def assert_nothing_secret(response, *tokens):
    html = response.content.decode()
    for text in (*VALUES, *tokens):
        assert text not in html


def messages_of(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def fetched(upstream, wechat_secret):
    """The seed's secret with a token fetched through the token path."""
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS-TOKEN-1", "expires_in": 7200})
    token_get("wxgzh", "wxgzh_secret")
    return wechat_secret


def test_list_shows_state_and_last_fetch(console, fetched):
    never = SecretFactory(realm=fetched.realm, name="never")
    expired = SecretFactory(realm=fetched.realm, name="expired")
    stored_token(expired, token="EXPIRED-TOKEN", age=7300, left=-100)

    page = console.get(LIST)

    assert page.status_code == 200
    html = page.content.decode()
    assert "valid, 119 min left" in html
    assert "never fetched" in html and "expired" in html
    assert "ok, 20" in html  # the last fetch's outcome and time
    assert never.name in html
    assert_nothing_secret(page, "ACCESS-TOKEN-1", "EXPIRED-TOKEN")


def test_list_filters_and_search(console, fetched):
    SecretFactory(realm=fetched.realm, name="never")
    failed = SecretFactory(realm=RealmFactory(id="other"), name="failed")
    FetchLog.objects.create(realm="other", key="failed", trigger="request", outcome="timeout")

    def names(query):
        response = console.get(LIST + query)
        assert response.status_code == 200
        return {secret.name for secret in response.context["cl"].result_list}

    assert names("?token_state=valid") == {"wxgzh_secret"}
    assert names("?token_state=never_fetched") == {"never", "failed"}
    assert names("?last_fetch=timeout") == {failed.name}
    assert names("?last_fetch=none") == {"never"}
    assert names("?realm__id__exact=other") == {"failed"}
    assert names("?q=never") == {"never"}
    assert names("?token_state=never_fetched&realm__id__exact=wxgzh") == {"never"}


def test_list_costs_the_same_queries_for_3_and_30_secrets(console):
    realm = RealmFactory(id="wxgzh")

    def list_of(n):
        for _ in range(n - realm.secrets.count()):
            secret = SecretFactory(realm=realm)
            stored_token(secret)
            FetchLog.objects.create(realm="wxgzh", key=secret.name, trigger="request", outcome="ok")
        page, queries = queries_of(lambda: console.get(LIST))
        assert page.context["cl"].result_count == n
        return queries

    assert list_of(3) == list_of(30)


def test_refresh_now_action_reports_the_lifetime(console, fetched, upstream):
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS-TOKEN-2", "expires_in": 7300})

    response = console.post(
        LIST, {"action": "test_fetch", "_selected_action": [fetched.pk]}, follow=True
    )

    assert any("ok (HTTP 200), lifetime 7300 s granted" in m for m in messages_of(response))
    assert StoredToken.objects.get(secret=fetched).token == "ACCESS-TOKEN-2"
    assert FetchLog.objects.order_by("-id").first().trigger == "admin"
    assert_nothing_secret(response, "ACCESS-TOKEN-1", "ACCESS-TOKEN-2", "ACCESS")


def test_refresh_now_action_reports_the_upstream_error(console, wechat_secret, upstream):
    upstream.reply("/cgi-bin/token", {"errcode": 40013, "errmsg": "invalid appid"})

    response = console.post(
        LIST, {"action": "test_fetch", "_selected_action": [wechat_secret.pk]}, follow=True
    )

    assert messages_of(response) == [
        "wxgzh/wxgzh_secret: upstream answered HTTP 200 with errcode 40013: invalid appid"
    ]
    assert_nothing_secret(response)


def test_clear_token_action(console, fetched, upstream):
    response = console.post(
        LIST, {"action": "clear_token", "_selected_action": [fetched.pk]}, follow=True
    )

    assert messages_of(response) == ["wxgzh/wxgzh_secret: token cleared."]
    assert not StoredToken.objects.filter(secret=fetched).exists()
    # The cache entry went too: the next request fetches a new token.
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS-TOKEN-2", "expires_in": 7200})
    assert token_get("wxgzh", "wxgzh_secret").token == "ACCESS-TOKEN-2"


def test_disable_and_enable_actions(console, api, fetched):
    console.post(LIST, {"action": "disable", "_selected_action": [fetched.pk]})

    assert not Secret.objects.get(pk=fetched.pk).enabled
    # Apps get a 403 at once, cached token or not.
    assert api.get("/api/token?realm=wxgzh&key=wxgzh_secret").status_code == 403

    console.post(LIST, {"action": "enable", "_selected_action": [fetched.pk]})

    assert Secret.objects.get(pk=fetched.pk).enabled
    assert api.get("/api/token?realm=wxgzh&key=wxgzh_secret").status_code == 200


def test_change_page_shows_state_fingerprint_and_recent_fetches(console, fetched):
    for number in range(25):
        FetchLog.objects.create(
            realm="wxgzh", key="wxgzh_secret", trigger="refresher", outcome="ok", lifetime=number
        )
    fingerprint = StoredToken.objects.get(secret=fetched).fingerprint()

    page = console.get(change_page(fetched))

    assert page.status_code == 200
    html = page.content.decode()
    assert "valid, 119 min left" in html
    assert fingerprint in html
    assert html.count("<td>refresher</td>") == 20  # the last 20 rows, newest first
    assert "<td>24</td>" in html and "<td>4</td>" not in html
    assert "Test fetch" in html and f"/admin/secrets/secret/{fetched.pk}/test-fetch/" in html
    assert 'type="password"' in html  # values stay write-only inputs
    assert_nothing_secret(page, "ACCESS-TOKEN-1", "ACCESS")


def test_change_page_test_fetch_button(console, fetched, upstream):
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS-TOKEN-2", "expires_in": 7200})

    response = console.post(f"/admin/secrets/secret/{fetched.pk}/test-fetch/", follow=True)

    assert response.redirect_chain[-1][0] == change_page(fetched)
    assert any("ok (HTTP 200), lifetime 7200 s granted" in m for m in messages_of(response))
    assert StoredToken.objects.get(secret=fetched).token == "ACCESS-TOKEN-2"
    assert "<td>admin</td>" in response.content.decode()
    assert_nothing_secret(response, "ACCESS-TOKEN-1", "ACCESS-TOKEN-2", "ACCESS")
    # A GET fetches nothing.
    console.get(f"/admin/secrets/secret/{fetched.pk}/test-fetch/")
    assert FetchLog.objects.filter(trigger="admin").count() == 1


def test_fixed_secret_page_shows_its_state_and_fingerprint_only(console):
    secret = SecretFactory(realm=RealmFactory(kind="fixed", url=""), token="FIXED-TOKEN-VALUE")

    page = console.get(change_page(secret))

    html = page.content.decode()
    assert "fixed" in html
    assert StoredToken(token="FIXED-TOKEN-VALUE").fingerprint() in html
    assert_nothing_secret(page, "FIXED-TOKEN-VALUE")


def test_realm_page_counts_its_secrets_by_token_state(console, fetched):
    SecretFactory(realm=fetched.realm, name="never")
    stored_token(SecretFactory(realm=fetched.realm), token="EXPIRED-TOKEN", left=-5)

    page = console.get(f"/admin/realms/realm/{fetched.realm.pk}/change/")

    assert page.status_code == 200
    assert "3 secret(s): 1 valid, 1 expired, 1 never fetched" in page.content.decode()
    assert_nothing_secret(page, "ACCESS-TOKEN-1", "EXPIRED-TOKEN")
