"""The secret API, with the seed's request verbatim; values never come back."""

import json

import pytest

from secret_store.models import Secret
from tests.factories import RealmFactory, SecretFactory

pytestmark = pytest.mark.django_db

SEED_SECRET = {
    "realm": "wxgzh",
    "key": "wxgzh_secret",
    "key_1": "wx1234567890abcdef",
    "key_2": "0123456789abcdef0123456789abcdef",
    "key_3": "client_credential",
}
VALUES = [SEED_SECRET[name] for name in ("key_1", "key_2", "key_3")]


@pytest.fixture
def realm():
    return RealmFactory(id="wxgzh")


def assert_no_values(response):
    text = response.content.decode()
    for value in VALUES:
        assert value not in text


def test_seed_post_creates_the_secret_and_masks_the_values(api, realm):
    response = api.post("/api/secret", SEED_SECRET, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["success"] == "ok"
    data = body["data"]
    assert (data["realm"], data["key"]) == ("wxgzh", "wxgzh_secret")
    assert (data["key_1"], data["key_2"], data["key_3"]) == ("******",) * 3
    assert (data["key_4"], data["key_5"]) == (None, None)
    assert_no_values(response)
    secret = Secret.objects.get(realm_id="wxgzh", name="wxgzh_secret")
    assert [secret.key_1, secret.key_2, secret.key_3] == VALUES


def test_seed_post_again_updates_and_keeps_what_is_left_out(api, realm):
    api.post("/api/secret", SEED_SECRET, format="json")

    response = api.post(
        "/api/secret",
        {"realm": "wxgzh", "key": "wxgzh_secret", "key_2": "new-secret-value"},
        format="json",
    )

    assert response.status_code == 200
    secret = Secret.objects.get()
    assert (secret.key_1, secret.key_2, secret.key_3) == (VALUES[0], "new-secret-value", VALUES[2])


def test_seed_list_shape_masks_values(api, realm):
    api.post("/api/secret", SEED_SECRET, format="json")
    SecretFactory(realm=RealmFactory(id="other"), name="x")

    response = api.get("/api/secret?page=1&pageSize=10&realm=wxgzh")

    assert response.status_code == 200
    body = response.json()
    assert body["success"] == "ok"
    assert body["data"]["total"] == 1
    assert body["data"]["list"][0]["key"] == "wxgzh_secret"
    assert body["data"]["list"][0]["key_1"] == "******"
    assert_no_values(response)
    assert api.get("/api/secret").json()["data"]["total"] == 2


def test_unknown_realm_is_a_400(api):
    response = api.post("/api/secret", SEED_SECRET, format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert "realm" in response.json()["fields"]
    assert not Secret.objects.exists()
    assert_no_values(response)


@pytest.mark.parametrize("missing", ["realm", "key"])
def test_realm_and_key_are_required(api, realm, missing):
    payload = {k: v for k, v in SEED_SECRET.items() if k != missing}

    response = api.post("/api/secret", payload, format="json")

    assert response.status_code == 400
    assert missing in response.json()["fields"]


def test_invalid_key_name_is_a_400(api, realm):
    response = api.post("/api/secret", {**SEED_SECRET, "key": "has space"}, format="json")

    assert response.status_code == 400
    assert "key" in response.json()["fields"]


def test_values_must_be_strings(api, realm):
    response = api.post("/api/secret", {**SEED_SECRET, "key_1": {"a": 1}}, format="json")

    assert response.status_code == 400
    assert "key_1" in response.json()["fields"]


def test_detail_put_patch_delete(api, realm):
    api.post("/api/secret", SEED_SECRET, format="json")
    url = "/api/secret/wxgzh/wxgzh_secret"

    got = api.get(url)
    assert got.status_code == 200
    assert got.json()["key_2"] == "******"
    assert_no_values(got)

    patched = api.patch(url, {"comment": "billing", "key_5": "five"}, format="json")
    assert patched.status_code == 200
    secret = Secret.objects.get()
    assert (secret.comment, secret.key_1, secret.key_5) == ("billing", VALUES[0], "five")

    # PUT replaces: what it leaves out is cleared.
    put = api.put(url, {"key_1": "only-one"}, format="json")
    assert put.status_code == 200
    secret.refresh_from_db()
    assert (secret.key_1, secret.key_2, secret.comment) == ("only-one", "", "")

    cleared = api.patch(url, {"key_1": None}, format="json")
    assert cleared.json()["key_1"] is None

    assert api.delete(url).status_code == 204
    assert not Secret.objects.exists()
    assert api.delete(url).status_code == 404
    assert api.get(url).status_code == 404
    assert api.patch(url, {"comment": "x"}, format="json").status_code == 404


def test_put_creates_a_missing_secret(api, realm):
    response = api.put("/api/secret/wxgzh/new", {"key_1": "v"}, format="json")

    assert response.status_code == 201
    assert Secret.objects.get().name == "new"


def test_put_with_another_key_in_the_body_is_a_400(api, realm):
    response = api.put("/api/secret/wxgzh/one", {"key": "two"}, format="json")

    assert response.status_code == 400
    assert "key" in response.json()["fields"]


def test_fixed_token_can_be_stored_and_is_masked(api):
    RealmFactory(id="static", kind="fixed", url="")

    response = api.post(
        "/api/secret",
        {
            "realm": "static",
            "key": "app",
            "token": "FIXED-TOKEN-VALUE",
            "token_expires_at": "2030-01-01T00:00:00Z",
        },
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["data"]["token"] == "******"
    assert "FIXED-TOKEN-VALUE" not in response.content.decode()
    token = api.get("/api/token?realm=static&key=app").json()
    assert (token["token"], token["source"]) == ("FIXED-TOKEN-VALUE", "fixed")


def test_malformed_json_is_a_400(api, realm):
    response = api.post("/api/secret", "{", content_type="application/json")

    assert response.status_code == 400
    assert json.loads(response.content)["error"] == "malformed_request"


def test_fixed_token_expiry_in_the_past_is_a_400(api):
    RealmFactory(id="static", kind="fixed", url="")

    response = api.post(
        "/api/secret",
        {"realm": "static", "key": "app", "token": "T", "token_expires_at": "2001-01-01T00:00:00Z"},
        format="json",
    )

    assert response.status_code == 400
    assert "token_expires_at" in response.json()["fields"]
    assert not Secret.objects.exists()
