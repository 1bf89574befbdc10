"""The realm API, with the seed's requests verbatim (SEED-API.md)."""

import pytest

from realms.models import Argument, Realm
from tests.factories import ArgumentFactory, RealmFactory, SecretFactory

pytestmark = pytest.mark.django_db

# The seed's own examples, byte for byte.
SEED_WECOM = {
    "id": "qywx_qynbkf",
    "config": {
        "url": "https://qyapi.weixin.qq.com/cgi-bin/gettoken",
        "method": "GET",
        "arguments": [
            {"name": "corpid", "place": "url", "value": "$key_1"},
            {"name": "corpsecret", "place": "url", "value": "$key_2"},
        ],
        "token_path": "access_token",
        "content_type": "json",
        "expires_in_path": "expires_in",
    },
}

SEED_WXGZH = {
    "id": "wxgzh",
    "config": {
        "url": "https://api.weixin.qq.com/cgi-bin/token",
        "method": "GET",
        "arguments": [
            {"name": "appid", "place": "url", "value": "$key_1"},
            {"name": "secret", "place": "url", "value": "$key_2"},
            {"name": "grant_type", "place": "url", "value": "$key_3"},
        ],
        "token_path": "access_token",
        "content_type": "json",
        "expires_in_path": "expires_in",
    },
}


@pytest.mark.parametrize("payload", [SEED_WECOM, SEED_WXGZH], ids=["wecom", "wxgzh"])
def test_seed_post_creates_the_realm(api, payload):
    response = api.post("/api/realm", payload, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["success"] == "ok"
    realm = body["data"]
    assert realm["id"] == payload["id"]
    assert realm["kind"] == "config"
    # Every field the seed sent comes back as it was sent.
    for name, value in payload["config"].items():
        assert realm["config"][name] == value
    stored = Realm.objects.get(pk=payload["id"])
    assert [a.name for a in stored.arguments.all()] == [
        a["name"] for a in payload["config"]["arguments"]
    ]


def test_seed_post_again_updates_the_realm(api):
    api.post("/api/realm", SEED_WXGZH, format="json")
    changed = {**SEED_WXGZH, "comment": "official account"}
    changed["config"] = {**SEED_WXGZH["config"], "arguments": SEED_WXGZH["config"]["arguments"][:2]}

    response = api.post("/api/realm", changed, format="json")

    assert response.status_code == 200
    assert response.json()["data"]["comment"] == "official account"
    assert Argument.objects.filter(realm_id="wxgzh").count() == 2
    assert Realm.objects.count() == 1


def test_seed_list_shape_newest_first_with_paging(api):
    api.post("/api/realm", SEED_WECOM, format="json")
    api.post("/api/realm", SEED_WXGZH, format="json")

    response = api.get("/api/realm?page=1&pageSize=10")

    assert response.status_code == 200
    body = response.json()
    assert body["success"] == "ok"
    assert body["data"]["total"] == 2
    assert [r["id"] for r in body["data"]["list"]] == ["wxgzh", "qywx_qynbkf"]
    assert set(body["data"]["list"][0]) >= {"id", "config", "comment", "created_at", "updated_at"}

    second_page = api.get("/api/realm?page=2&pageSize=1").json()
    assert [r["id"] for r in second_page["data"]["list"]] == ["qywx_qynbkf"]
    assert second_page["data"]["total"] == 2


def test_list_keyword_matches_the_comment(api):
    RealmFactory(id="a", comment="Official account of the shop")
    RealmFactory(id="b", comment="internal")

    body = api.get("/api/realm?page=1&pageSize=10&keyword=shop").json()

    assert [r["id"] for r in body["data"]["list"]] == ["a"]
    assert body["data"]["total"] == 1


@pytest.mark.parametrize("query", ["page=0", "page=abc", "pageSize=-1", "pageSize=x"])
def test_bad_paging_is_a_400(api, query):
    response = api.get(f"/api/realm?{query}")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


def test_page_size_is_capped(api):
    for n in range(3):
        RealmFactory(id=f"r{n}")

    body = api.get("/api/realm?pageSize=100000").json()

    assert body["data"]["total"] == 3
    assert len(body["data"]["list"]) == 3


def test_get_one_realm_and_unknown_is_404(api):
    api.post("/api/realm", SEED_WXGZH, format="json")

    found = api.get("/api/realm/wxgzh")
    missing = api.get("/api/realm/nope")

    assert found.status_code == 200
    assert found.json()["id"] == "wxgzh"
    assert found.json()["config"]["arguments"][2] == {
        "name": "grant_type",
        "place": "url",
        "value": "$key_3",
    }
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


def test_put_replaces_and_patch_updates_in_part(api):
    api.post("/api/realm", SEED_WXGZH, format="json")

    patched = api.patch(
        "/api/realm/wxgzh", {"config": {"refresh_margin": 600}, "comment": "x"}, format="json"
    )
    assert patched.status_code == 200
    assert patched.json()["config"]["refresh_margin"] == 600
    assert patched.json()["config"]["url"] == SEED_WXGZH["config"]["url"]
    assert len(patched.json()["config"]["arguments"]) == 3  # untouched

    put = api.put(
        "/api/realm/wxgzh",
        {"config": {"url": "https://example.com/token", "token_path": "$.data.token"}},
        format="json",
    )
    assert put.status_code == 200
    realm = put.json()
    assert realm["config"]["url"] == "https://example.com/token"
    assert realm["config"]["refresh_margin"] == 300  # back to the default
    assert realm["config"]["arguments"] == []
    assert realm["comment"] == ""


def test_put_creates_when_missing(api):
    response = api.put(
        "/api/realm/new", {"config": {"url": "https://example.com/t"}}, format="json"
    )

    assert response.status_code == 201
    assert Realm.objects.filter(pk="new").exists()


def test_patch_unknown_realm_is_404(api):
    assert api.patch("/api/realm/nope", {"comment": "x"}, format="json").status_code == 404


def test_delete_realm(api):
    RealmFactory(id="gone")

    response = api.delete("/api/realm/gone")

    assert response.status_code == 204
    assert not Realm.objects.filter(pk="gone").exists()
    assert api.delete("/api/realm/gone").status_code == 404


def test_delete_realm_with_secrets_is_a_409(api):
    secret = SecretFactory()

    response = api.delete(f"/api/realm/{secret.realm_id}")

    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert Realm.objects.filter(pk=secret.realm_id).exists()


def test_seed_realm_without_config_is_fixed(api):
    response = api.post("/api/realm", {"id": "static", "comment": "fixed"}, format="json")

    assert response.status_code == 201
    assert response.json()["data"]["kind"] == "fixed"


def test_seed_logic_code_makes_a_code_realm(api):
    response = api.post(
        "/api/realm", {"id": "mine", "logic_code": "https://fn.example.com/token"}, format="json"
    )

    assert response.status_code == 201
    realm = response.json()["data"]
    assert realm["kind"] == "code"
    assert realm["config"]["code_url"] == "https://fn.example.com/token"


def test_method_is_case_insensitive(api):
    payload = {"id": "lower", "config": {**SEED_WXGZH["config"], "method": "post"}}

    assert (
        api.post("/api/realm", payload, format="json").json()["data"]["config"]["method"] == "POST"
    )


# --- Bad input: 400 with the field at fault, nothing written ---------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"url": "ftp://example.com/token"}, "config.url"),
        ({"url": "not a url"}, "config.url"),
        ({"url": "https://example.com", "token_path": "a["}, "config.token_path"),
        ({"url": "https://example.com", "expires_in_path": "$..["}, "config.expires_in_path"),
        ({"url": "https://example.com", "method": "DELETE"}, "config.method"),
        ({"url": "https://example.com", "timeout": "soon"}, "config.timeout"),
        ({"url": "https://example.com", "timeout": 0}, "config.timeout"),
        (
            {"url": "https://example.com", "success_conditions": "errcode"},
            "config.success_conditions",
        ),
        (
            {
                "url": "https://example.com",
                "arguments": [{"name": "a", "place": "url", "value": "$key_6"}],
            },
            "config.arguments[0].value",
        ),
        (
            {
                "url": "https://example.com",
                "arguments": [{"name": "a", "place": "url", "value": "$secret"}],
            },
            "config.arguments[0].value",
        ),
        (
            {
                "url": "https://example.com",
                "arguments": [{"name": "a", "place": "cookie", "value": "x"}],
            },
            "config.arguments[0].place",
        ),
        (
            {
                "url": "https://example.com",
                "arguments": [{"name": "", "place": "url", "value": "x"}],
            },
            "config.arguments[0].name",
        ),
        (
            {"url": "https://example.com", "arguments": [{"place": "basic", "value": "$key_1"}]},
            "config.arguments[0].value",
        ),
    ],
)
def test_invalid_config_is_a_400_naming_the_field(api, config, field):
    response = api.post("/api/realm", {"id": "bad", "config": config}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid"
    assert field in body["fields"], body
    assert body["detail"].startswith(field)
    assert not Realm.objects.filter(pk="bad").exists()


def test_invalid_update_leaves_the_realm_as_it_was(api):
    api.post("/api/realm", SEED_WXGZH, format="json")
    bad = {
        "id": "wxgzh",
        "config": {**SEED_WXGZH["config"], "arguments": [{"name": "a", "value": "${nope}"}]},
    }

    response = api.post("/api/realm", bad, format="json")

    assert response.status_code == 400
    assert Argument.objects.filter(realm_id="wxgzh").count() == 3


@pytest.mark.parametrize("realm_id", ["has space", "x" * 51, "", "slash/id"])
def test_invalid_id_is_a_400(api, realm_id):
    response = api.post(
        "/api/realm", {"id": realm_id, "config": SEED_WXGZH["config"]}, format="json"
    )

    assert response.status_code == 400
    assert "id" in response.json()["fields"]


def test_malformed_json_is_a_400(api):
    response = api.post("/api/realm", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_request"


def test_json_array_body_is_a_400(api):
    response = api.post("/api/realm", [1, 2], format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


def test_put_with_another_id_in_the_body_is_a_400(api):
    response = api.put(
        "/api/realm/one", {"id": "two", "config": SEED_WXGZH["config"]}, format="json"
    )

    assert response.status_code == 400
    assert "id" in response.json()["fields"]


def test_realm_arguments_keep_their_order(api):
    realm = RealmFactory(id="ordered")
    ArgumentFactory(realm=realm, name="second", order=2)
    ArgumentFactory(realm=realm, name="first", order=1)

    arguments = api.get("/api/realm/ordered").json()["config"]["arguments"]

    assert [a["name"] for a in arguments] == ["first", "second"]
