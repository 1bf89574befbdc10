"""
The secret API tells how each secret's token stands (issue 12): a secret whose
fetched token is cached used to answer `"token": null, "token_expires_at": null`
(the fixed-token fields), which reads as "no token".
"""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from tests.factories import RealmFactory, SecretFactory, stored_token
from tests.helpers import queries_of
from tokens.models import FetchLog
from tokens.services import token_get
from tokens.testing import numbered_tokens

pytestmark = pytest.mark.django_db


def _parse(moment):
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def test_a_fetched_token_is_reported_by_its_state_never_by_itself(api, upstream, wechat_secret):
    """Issue 12: the fetched token's state, not the fixed-token fields that read as "none"."""
    upstream.reply_with("/cgi-bin/token", numbered_tokens(lifetime=7200))
    token_get("wxgzh", "wxgzh_secret")  # TOKEN-1, cached and stored

    listed = api.get("/api/secret?realm=wxgzh")
    detail = api.get("/api/secret/wxgzh/wxgzh_secret")

    for response, item in [
        (listed, listed.json()["data"]["list"][0]),
        (detail, detail.json()),
    ]:
        assert response.status_code == 200
        assert "token" not in item and "token_expires_at" not in item
        state = item["token_state"]
        assert (state["state"], state["last_fetch_outcome"]) == ("valid", "ok")
        expires_in = _parse(state["expires_at"]) - timezone.now()
        assert timedelta(seconds=7100) < expires_in <= timedelta(seconds=7200)
        assert _parse(state["last_fetch_at"]) <= timezone.now()
        assert "TOKEN-1" not in response.content.decode()


def test_never_fetched_expired_and_failed(api, upstream, wechat_secret):
    upstream.reply("/cgi-bin/token", {"errcode": 40013, "errmsg": "invalid appid"})
    expired = SecretFactory(realm=wechat_secret.realm, name="old")
    stored_token(expired, token="OLD-TOKEN", age=7300, left=-100)

    before = api.get("/api/secret/wxgzh/wxgzh_secret").json()["token_state"]
    api.post("/api/realm/wxgzh/test", {"key": "wxgzh_secret"}, format="json")
    after = api.get("/api/secret/wxgzh/wxgzh_secret").json()["token_state"]
    old = api.get("/api/secret/wxgzh/old")

    assert before == {
        "state": "never_fetched",
        "expires_at": None,
        "last_fetch_outcome": None,
        "last_fetch_at": None,
    }
    assert (after["state"], after["last_fetch_outcome"]) == ("never_fetched", "upstream_error")
    assert old.json()["token_state"]["state"] == "expired"
    assert "OLD-TOKEN" not in old.content.decode()


def test_fixed_token_fields_only_for_fixed_realms(api):
    RealmFactory(id="static", kind="fixed", url="")
    RealmFactory(id="wxgzh")

    fixed = api.post(
        "/api/secret",
        {"realm": "static", "key": "app", "token": "FIXED-VALUE", "token_expires_at": None},
        format="json",
    ).json()["data"]
    fetched = api.post("/api/secret", {"realm": "wxgzh", "key": "app"}, format="json").json()[
        "data"
    ]

    assert (fixed["token"], fixed["token_expires_at"]) == ("******", None)
    assert fixed["token_state"]["state"] == "fixed"
    assert "token" not in fetched and "token_expires_at" not in fetched
    assert fetched["token_state"]["state"] == "never_fetched"
    # The seed's fields are all still there.
    for name in ("realm", "key", "key_1", "key_2", "key_3", "key_4", "key_5", "enabled"):
        assert name in fetched


def test_the_list_costs_the_same_queries_for_3_and_30_secrets(api):
    realm = RealmFactory(id="wxgzh")

    def list_of(n):
        for _ in range(n - realm.secrets.count()):
            secret = SecretFactory(realm=realm)
            stored_token(secret)
            FetchLog.objects.create(realm="wxgzh", key=secret.name, trigger="request", outcome="ok")
        response, queries = queries_of(lambda: api.get("/api/secret?pageSize=100"))
        assert len(response.json()["data"]["list"]) == n
        return queries

    assert list_of(3) == list_of(30)
