"""
Issue 11: JSONPaths that compute, and malformed ones.

Tokens and lifetimes are read from the answer, never computed: arithmetic
(`$.access_token * 400000` once made an 18 MB token), `split`, `sub`, `str` and sorting
are refused when a realm is saved, with the field at fault; a malformed path is a 400,
never a 500. A path that slipped in before (saved by an older version) fails at fetch
time as an invalid answer (502), not as a server error.
"""

import copy
import json

import pytest

from realms.models import Realm
from tests.factories import ArgumentFactory, RealmFactory, SecretFactory
from tokens.models import FetchLog, StoredToken

pytestmark = pytest.mark.django_db

REALM = {
    "id": "wxgzh",
    "config": {
        "url": "https://api.weixin.qq.com/cgi-bin/token",
        "method": "GET",
        "arguments": [
            {"name": "appid", "place": "url", "value": "$key_1"},
            {"name": "secret", "place": "url", "value": "$key_2"},
        ],
        "token_path": "access_token",
        "content_type": "json",
        "expires_in_path": "expires_in",
    },
}

PATH_FIELDS = [
    "token_path",
    "expires_in_path",
    "expires_at_path",
    "error_code_path",
    "error_message_path",
]

COMPUTING = [
    "$.access_token * 400000",
    "$.expires_in + 1",
    "$.access_token.`split(,, 0, -1)`",
    "$.access_token.`sub(/a/, b)`",
    "$.access_token.`str()`",
    "$.data[/expires_in].token",
    "$.data.`len`",
    "$.data[?(@.n * 2 > 1)].token",
]

MALFORMED = ["`split(", "$.a.`sub(", "$.a.`str(", "$[", "$..", "$.a[?(@.b ==", "\ud800"]


def post_realm(api, payload):
    # json.dumps escapes a lone surrogate as \\ud800, as a hostile client would send it.
    return api.post("/api/realm", json.dumps(payload), content_type="application/json")


def realm_with(field, path):
    payload = copy.deepcopy(REALM)
    if field == "success_conditions":
        payload["config"]["success_conditions"] = [[path, 0]]
    else:
        payload["config"][field] = path
    return payload


@pytest.mark.parametrize("path", COMPUTING)
@pytest.mark.parametrize("field", [*PATH_FIELDS, "success_conditions"])
def test_a_path_that_computes_is_refused_at_save(api, field, path):
    response = post_realm(api, realm_with(field, path))

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid"
    assert "computes a value" in str(body["fields"])
    assert field in str(body["fields"])
    assert not Realm.objects.exists()


@pytest.mark.parametrize("path", MALFORMED)
@pytest.mark.parametrize("field", [*PATH_FIELDS, "success_conditions"])
def test_a_malformed_path_is_a_400(api, field, path):
    response = post_realm(api, realm_with(field, path))

    assert response.status_code == 400
    assert response.json()["error"] in ("invalid", "malformed_request")
    assert not Realm.objects.exists()


def test_reading_paths_with_filters_are_allowed(api):
    payload = realm_with("token_path", "$.data[?(@.type == 'app')].token")

    response = api.post("/api/realm", payload, format="json")

    assert response.status_code == 201


def test_a_computing_path_saved_earlier_fails_the_fetch_not_the_server(api, upstream):
    # Saved without validation, as by an older version.
    realm = RealmFactory(url=upstream.url(), token_path="$.data[/expires_in].token")
    ArgumentFactory(realm=realm, place="url", name="appid", value="$key_1")
    secret = SecretFactory(realm=realm, key_1="app-id")
    upstream.reply("/token", {"data": [{"expires_in": "x"}, {"expires_in": 3}]})

    response = api.get("/api/token", {"realm": realm.id, "key": secret.name})

    assert response.status_code == 502
    assert FetchLog.objects.get().outcome == FetchLog.Outcome.INVALID_RESPONSE
    assert not StoredToken.objects.exists()
