"""
Issue 14, item 2: WeChat's stable token. POST cgi-bin/stable_token hands every
caller the same valid token while force_refresh is false; true issues a new one
(and invalidates the old), 20 times a day at most. The stable presets send
`"force_refresh": $force_refresh`: false (a JSON boolean) for every plain fetch,
refresh, flush, refresher pass and console test fetch; true only for the fetch that
answers a reported rejection (rejected=, X-Rejected-Token, POST /api/token), once
per rejection however many report it.

Against tests/providers.WeChatStableFake, a real local HTTP server that speaks
stable_token's wire format, refuses a force_refresh that is not a JSON boolean, and
records what each request asked for. The threads use their own database
connections, so the data is committed (transaction=True).
"""

import json
import threading
import time
from datetime import UTC, datetime

import pytest
from rest_framework.test import APIClient

from clients.access_tokens import access_token_issue
from clients.services import client_create
from realms.services import realm_upsert
from tests.helpers import run_at_once, wait_until
from tests.providers import preset_on_fake
from tokens import cache as token_cache
from tokens.background import tokens_refresh_due, wait_for_background_refreshes
from tokens.models import StoredToken
from tokens.services import token_get, token_test_fetch
from tokens.upstream import build_request
from tokenserver.errors import TooManyFlushes

pytestmark = pytest.mark.django_db(transaction=True)

REALM = "wechat-official-account-stable"


@pytest.fixture
def stable(upstream):
    """The Official Account stable-token preset on its fake; its secret is "app"."""
    realm, fake = preset_on_fake("wechat_official_account_stable", upstream)
    return realm, fake


@pytest.fixture
def app_api(db):
    """An app's API client: a bearer token with token:read and token:flush for the realm."""
    client, _ = client_create("app", scopes=["token:read", "token:flush"], allow=[f"{REALM}/*"])
    token, _ = access_token_issue(client.client_id, client.scopes, allow=client.allow)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


def age_the_token(realm, *, left: float, age: float = 7200) -> None:
    """The stored token fetched `age` seconds ago with `left` seconds to live, out of the cache."""
    now = time.time()
    StoredToken.objects.update(
        fetched_at=datetime.fromtimestamp(now - age, tz=UTC),
        expires_at=datetime.fromtimestamp(now + left, tz=UTC),
    )
    token_cache.entries_evict([(realm.id, "app")])


def sent_bodies(fake):
    return [json.loads(request.body) for request in fake.received]


def test_a_plain_fetch_sends_force_refresh_false_as_a_json_boolean(stable):
    realm, fake = stable

    token = token_get(realm.id, "app").token

    assert token == "STABLE-1"
    assert sent_bodies(fake) == [
        {
            "grant_type": "client_credential",
            "appid": fake.values["key_1"],
            "secret": fake.values["key_2"],
            "force_refresh": False,
        }
    ]
    assert b'"force_refresh": false' in fake.received[0].body


def test_refreshes_flushes_the_refresher_and_the_test_fetch_send_false(stable, settings):
    realm, fake = stable
    realm_upsert(realm.id, {"config": {"min_flush_interval": 0}}, partial=True)
    token_get(realm.id, "app")

    token_get(realm.id, "app", flush=True)  # a flush
    tokens_refresh_due(lookahead=10 * 86400)  # the refresher, everything due
    token_test_fetch(realm.id, "app")  # the console's and the API's test fetch
    age_the_token(realm, left=-1)
    token_get(realm.id, "app")  # an expired token: the request fetches

    assert fake.forced == [False] * 5
    # The provider handed back the token it holds: every caller shares it.
    assert fake.issued == ["STABLE-1"]
    assert token_get(realm.id, "app").token == "STABLE-1"


def test_a_due_token_is_refreshed_in_the_background_with_false(stable):
    realm, fake = stable
    token_get(realm.id, "app")
    age_the_token(realm, left=100)  # inside the refresh margin

    assert token_get(realm.id, "app").token == "STABLE-1"  # served, and revalidated
    wait_for_background_refreshes()

    assert fake.forced == [False, False]


def test_a_reported_rejection_sends_true_once(stable):
    realm, fake = stable
    first = token_get(realm.id, "app").token
    age_the_token(realm, left=6000, age=1200)  # fetched past the minimum flush interval

    replaced = token_get(realm.id, "app", rejected=first).token
    again = token_get(realm.id, "app", rejected=first).token  # already replaced: no call
    plain = token_get(realm.id, "app").token

    assert (first, replaced, again, plain) == ("STABLE-1", "STABLE-2", "STABLE-2", "STABLE-2")
    assert fake.forced == [False, True]


@pytest.mark.parametrize(
    "report",
    [
        lambda api, token: api.get(f"/api/token?realm={REALM}&key=app&rejected={token}"),
        lambda api, token: api.get(
            f"/api/token?realm={REALM}&key=app", HTTP_X_REJECTED_TOKEN=token
        ),
        lambda api, token: api.post(
            "/api/token", {"realm": REALM, "key": "app", "rejected": token}, format="json"
        ),
    ],
    ids=["rejected=", "X-Rejected-Token", "POST /api/token"],
)
def test_every_form_of_the_apis_rejection_sends_true_once(stable, app_api, report):
    realm, fake = stable
    first = app_api.get(f"/api/token?realm={REALM}&key=app").json()["token"]
    age_the_token(realm, left=6000, age=1200)

    answers = [report(app_api, first) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert {answer.json()["token"] for answer in answers} == {"STABLE-2"}
    assert fake.forced == [False, True]


def test_a_plain_flush_through_the_api_sends_false(stable, app_api):
    realm, fake = stable
    realm_upsert(realm.id, {"config": {"min_flush_interval": 0}}, partial=True)

    app_api.get(f"/api/token?realm={REALM}&key=app")
    flushed = app_api.get(f"/api/token?realm={REALM}&key=app&flush=true")

    assert flushed.json()["token"] == "STABLE-1"
    assert fake.forced == [False, False]


def test_fifty_concurrent_reports_of_one_rejection_send_true_once(stable):
    realm, fake = stable
    first = token_get(realm.id, "app").token
    age_the_token(realm, left=6000, age=1200)

    results = run_at_once(50, lambda: token_get(realm.id, "app", rejected=first).token)

    assert set(results) == {"STABLE-2"}, results
    assert fake.forced == [False, True]


def test_a_rejection_waiting_on_a_plain_refresh_then_sends_true(stable):
    # A plain refresh is in flight (force_refresh false: the provider answers the token
    # already held); a rejection of that very token arrives meanwhile. It waits for the
    # refresh, finds the rejected token still current, and only then sends true.
    realm, fake = stable
    first = token_get(realm.id, "app").token
    age_the_token(realm, left=-1)
    fake.delay = 0.5
    results = {}

    def plain():
        results["plain"] = token_get(realm.id, "app").token

    def rejection():
        results["rejection"] = token_get(realm.id, "app", rejected=first).token

    plain_thread = threading.Thread(target=plain)
    plain_thread.start()
    wait_until(lambda: len(fake.received) == 2, message="the plain refresh reached the provider")
    rejection_thread = threading.Thread(target=rejection)
    rejection_thread.start()
    plain_thread.join(10)
    rejection_thread.join(10)

    assert results == {"plain": "STABLE-1", "rejection": "STABLE-2"}
    assert fake.forced == [False, False, True]


def test_a_rejection_soon_after_a_forced_refresh_is_refused_without_a_call(stable):
    # force_refresh true is limited (20 a day, 30 s apart): the preset's minimum flush
    # interval keeps a reporting loop from spending it.
    realm, fake = stable
    first = token_get(realm.id, "app").token
    age_the_token(realm, left=6000, age=1200)
    second = token_get(realm.id, "app", rejected=first).token

    with pytest.raises(TooManyFlushes):
        token_get(realm.id, "app", rejected=second)
    assert fake.forced == [False, True]
    assert realm.min_flush_interval >= 30


def test_force_refresh_is_text_outside_a_json_body(stable):
    realm, _ = stable
    realm_upsert(
        realm.id,
        {
            "config": {
                "content_type": "form",
                "arguments": [
                    {"name": "force", "place": "body", "value": "$force_refresh"},
                    {"name": "force", "place": "url", "value": "$force_refresh"},
                    {"name": "X-Force", "place": "header", "value": "force=${force_refresh}"},
                ],
            }
        },
        partial=True,
    )
    realm.refresh_from_db()
    secret = realm.secrets.get()

    plain = build_request(realm, secret)
    forced = build_request(realm, secret, force_refresh=True)

    assert (plain.body, plain.params, plain.headers) == (
        {"force": "false"},
        {"force": "false"},
        {"X-Force": "force=false"},
    )
    assert (forced.body, forced.params, forced.headers) == (
        {"force": "true"},
        {"force": "true"},
        {"X-Force": "force=true"},
    )


def test_the_api_takes_force_refresh_and_refuses_unknown_names(api):
    config = {
        "url": "https://api.weixin.qq.com/cgi-bin/stable_token",
        "method": "POST",
        "content_type": "json",
        "arguments": [{"name": "force_refresh", "place": "body", "value": "$force_refresh"}],
    }
    created = api.post("/api/realm", {"id": "stable", "config": config}, format="json")
    config["arguments"][0]["value"] = "$force"
    refused = api.post("/api/realm", {"id": "stable2", "config": config}, format="json")

    assert created.status_code in (200, 201), created.json()
    assert refused.status_code == 400
    assert "key_1 … key_5, jwt, parent_token, force_refresh" in json.dumps(
        refused.json(), ensure_ascii=False
    )


def test_the_console_realm_form_takes_force_refresh(console, stable):
    realm, fake = stable

    page = console.get(f"/admin/realms/realm/{realm.id}/change/").content.decode()
    tested = console.post(f"/admin/secrets/secret/{realm.secrets.get().pk}/test-fetch/")

    assert "$force_refresh" in page
    assert tested.status_code == 302
    assert fake.forced == [False]
