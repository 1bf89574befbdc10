"""
Chained realms' configuration (issue 14, item 1): `parent`, `parent_key` and
`parent_rejected_codes` through the API, the console and the presets, checked
when saved (the parent realm and secrets exist, no cycle, at most 4 realms
long) with 400s naming the field; parents are not deleted or renamed under
their children (409). What the token path does with a chain is in
tokens/tests/test_chains.py.
"""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from realms.models import Realm
from realms.presets import realm_from_preset
from realms.services import realm_upsert
from secret_store.models import Secret
from tests.factories import RealmFactory, SecretFactory, stored_token
from tokens.models import StoredToken, fingerprint

pytestmark = pytest.mark.django_db

TICKET_URL = "https://api.weixin.qq.com/cgi-bin/ticket/getticket"
ARGUMENTS = [
    {"name": "access_token", "place": "url", "value": "$parent_token"},
    {"name": "type", "place": "url", "value": "jsapi"},
]


@pytest.fixture
def wxgzh(db):
    """The parent realm and its secret `main`."""
    realm = RealmFactory(id="wxgzh", url="https://api.weixin.qq.com/cgi-bin/token")
    SecretFactory(realm=realm, name="main")
    return realm


def _ticket_config(**changes):
    return {"url": TICKET_URL, "arguments": ARGUMENTS, "token_path": "ticket", **changes}


def _error(response, field):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid"
    return " ".join(body["fields"][field])


# --- The API ------------------------------------------------------------------------


def test_the_api_round_trips_a_chained_realm(api, wxgzh):
    config = _ticket_config(parent="wxgzh", parent_key="main", parent_rejected_codes=[41001])

    created = api.post("/api/realm", {"id": "wx_jsapi", "config": config}, format="json")
    read = api.get("/api/realm/wx_jsapi").json()
    # What GET answers, sent back, is the same realm.
    again = api.put(
        "/api/realm/wx_jsapi",
        {"kind": read["kind"], "config": read["config"], "comment": read["comment"]},
        format="json",
    )

    assert created.status_code == 201
    for name in ("parent", "parent_key", "parent_rejected_codes", "arguments"):
        assert read["config"][name] == config[name]
    assert again.status_code == 200
    assert again.json()["config"] == read["config"]
    assert Realm.objects.get(pk="wx_jsapi").parent_id == "wxgzh"


def test_an_unchained_realm_answers_no_parent(api):
    realm = api.post("/api/realm", {"id": "wx", "config": {"url": TICKET_URL}}, format="json")

    config = realm.json()["data"]["config"]
    assert (config["parent"], config["parent_key"], config["parent_rejected_codes"]) == (
        None,
        "",
        [],
    )


def test_a_patch_removing_the_parent_under_a_parent_token_argument_is_a_400(api, wxgzh):
    api.post("/api/realm", {"id": "wx_jsapi", "config": _ticket_config(parent="wxgzh")}, "json")

    response = api.patch("/api/realm/wx_jsapi", {"config": {"parent": None}}, format="json")

    assert "$parent_token is the parent secret's token" in _error(
        response, "config.arguments[0].value"
    )
    assert Realm.objects.get(pk="wx_jsapi").parent_id == "wxgzh"  # nothing half-written


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        (
            _ticket_config(parent="nope"),
            "config.parent",
            "There is no realm 'nope' to take a parent token from.",
        ),
        (
            _ticket_config(parent="wxgzh", parent_key="ghost"),
            "config.parent_key",
            "Realm wxgzh has no secret 'ghost' to take the parent token from.",
        ),
        (
            _ticket_config(parent_key="main"),
            "config.parent_key",
            "A parent key needs a parent realm.",
        ),
        (
            _ticket_config(),
            "config.arguments[0].value",
            "$parent_token is the parent secret's token: give the realm a parent.",
        ),
        (
            _ticket_config(parent="wxgzh", parent_rejected_codes="40001"),
            "config.parent_rejected_codes",
            "Give a list of error codes",
        ),
    ],
    ids=[
        "unknown parent",
        "unknown parent key",
        "key without parent",
        "token without parent",
        "codes",
    ],
)
def test_a_chain_that_cannot_hold_is_a_400_naming_the_field(api, wxgzh, config, field, message):
    response = api.post("/api/realm", {"id": "wx_jsapi", "config": config}, format="json")

    assert message in _error(response, field)
    assert not Realm.objects.filter(pk="wx_jsapi").exists()


def test_only_a_config_realm_is_fetched_with_a_parent_token(api, wxgzh):
    response = api.post(
        "/api/realm",
        {"id": "fx", "kind": "fixed", "config": {"parent": "wxgzh"}},
        format="json",
    )

    assert "Only a realm of kind config" in _error(response, "config.parent")


def test_a_cycle_is_a_400(api, wxgzh):
    api.post("/api/realm", {"id": "wx_jsapi", "config": _ticket_config(parent="wxgzh")}, "json")

    to_itself = api.patch("/api/realm/wx_jsapi", {"config": {"parent": "wx_jsapi"}}, "json")
    round_two = api.patch("/api/realm/wxgzh", {"config": {"parent": "wx_jsapi"}}, "json")

    assert "This makes a cycle: wx_jsapi → wx_jsapi." in _error(to_itself, "config.parent")
    assert "This makes a cycle: wxgzh → wx_jsapi → wxgzh." in _error(round_two, "config.parent")
    assert Realm.objects.get(pk="wxgzh").parent_id is None


def test_a_chain_longer_than_4_is_a_400_from_above_and_below(api):
    for number in range(1, 5):  # r1 ← r2 ← r3 ← r4
        parent = {"parent": f"r{number - 1}"} if number > 1 else {}
        realm_upsert(
            f"r{number}",
            {"config": _ticket_config(**parent)} if parent else {"config": {"url": TICKET_URL}},
        )
    RealmFactory(id="r0")

    below = api.post("/api/realm", {"id": "r5", "config": _ticket_config(parent="r4")}, "json")
    above = api.patch("/api/realm/r1", {"config": {"parent": "r0"}}, format="json")

    assert "A chain of realms is at most 4 long; this one would be 5: r1 → r2 → r3 → r4 → r5." in (
        _error(below, "config.parent")
    )
    assert "at most 4 long; this one would be 5" in _error(above, "config.parent")


def test_a_realm_whose_secrets_lack_their_parents_is_a_400(api, wxgzh):
    realm_upsert("wx_jsapi", {"config": {"url": TICKET_URL}})
    SecretFactory(realm_id="wx_jsapi", name="main")
    SecretFactory(realm_id="wx_jsapi", name="other")

    response = api.patch("/api/realm/wx_jsapi", {"config": _ticket_config(parent="wxgzh")}, "json")

    assert "wxgzh has no secret other" in _error(response, "config.parent")


def test_a_parent_realm_is_not_deleted_under_its_children(api, wxgzh):
    Secret.objects.filter(realm=wxgzh).delete()
    realm_upsert("wx_jsapi", {"config": _ticket_config(parent="wxgzh")})

    response = api.delete("/api/realm/wxgzh")

    assert response.status_code == 409
    assert "is the parent of wx_jsapi" in response.json()["detail"]
    assert Realm.objects.filter(pk="wxgzh").exists()


# --- Secrets -------------------------------------------------------------------------


def test_a_chained_secret_needs_its_parent_secret(api, wxgzh):
    realm_upsert("wx_jsapi", {"config": _ticket_config(parent="wxgzh")})

    orphan = api.post("/api/secret", {"realm": "wx_jsapi", "key": "ghost"}, format="json")
    child = api.post("/api/secret", {"realm": "wx_jsapi", "key": "main"}, format="json")

    assert "wxgzh has no secret 'ghost': create it first." in _error(orphan, "key")
    assert child.status_code == 201


def test_a_parent_secret_is_not_deleted_under_its_children(api, wxgzh):
    realm_upsert("wx_jsapi", {"config": _ticket_config(parent="wxgzh")})
    SecretFactory(realm_id="wx_jsapi", name="main")

    refused = api.delete("/api/secret/wxgzh/main")
    api.delete("/api/secret/wx_jsapi/main")
    deleted = api.delete("/api/secret/wxgzh/main")

    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "Secret wxgzh/main is the parent of wx_jsapi/main: their tokens are fetched with its "
        "token; delete them first."
    )
    assert deleted.status_code == 204


# --- The console ---------------------------------------------------------------------


def _realm_form(**changes):
    data = {
        "id": "wx_jsapi",
        "kind": "config",
        "url": "https://8.8.8.8/cgi-bin/ticket/getticket",
        "method": "GET",
        "content_type": "json",
        "token_path": "ticket",
        "expires_in_path": "expires_in",
        "expires_in_unit": "s",
        "success_conditions": "[]",
        "rate_limit_codes": "[]",
        "permanent_error_codes": "[]",
        "parent_rejected_codes": "[]",
        "permanent_error_ttl": "600",
        "timeout": "5",
        "max_concurrency": "4",
        "min_flush_interval": "30",
        "max_retries": "2",
        "breaker_threshold": "5",
        "breaker_cooldown": "30",
        "refresh_margin": "300",
        "default_ttl": "7200",
        "budget_alert_percent": "80",
        "budget_day_starts": "UTC",
        "arguments-TOTAL_FORMS": "1",
        "arguments-INITIAL_FORMS": "0",
        "arguments-0-order": "0",
        "arguments-0-place": "url",
        "arguments-0-name": "access_token",
        "arguments-0-value": "$parent_token",
    }
    return data | changes


def test_the_console_saves_a_chained_realm_and_shows_its_parent(console, wxgzh):
    saved = console.post("/admin/realms/realm/add/", _realm_form(parent="wxgzh"))
    child_page = console.get("/admin/realms/realm/wx_jsapi/change/").content.decode()
    parent_page = console.get("/admin/realms/realm/wxgzh/change/").content.decode()

    assert saved.status_code == 302
    assert Realm.objects.get(pk="wx_jsapi").parent_id == "wxgzh"
    assert '<option value="wxgzh" selected>wxgzh</option>' in child_page
    assert "$parent_token" in child_page
    assert "Realms fetched with its tokens" in parent_page and "wx_jsapi" in parent_page


def test_the_console_refuses_a_cycle_on_the_parent_field(console, wxgzh):
    realm_upsert("wx_jsapi", {"config": _ticket_config(parent="wxgzh")})
    form = _realm_form(
        id="wxgzh",
        url="https://8.8.8.8/cgi-bin/token",
        parent="wx_jsapi",
        **{"arguments-TOTAL_FORMS": "0"},
    )

    page = console.post("/admin/realms/realm/wxgzh/change/", form)

    assert page.status_code == 200
    html = page.content.decode()
    row = html[html.index("field-parent") : html.index("field-parent_key")]
    assert "This makes a cycle: wxgzh → wx_jsapi → wxgzh." in row
    assert Realm.objects.get(pk="wxgzh").parent_id is None


def test_the_secret_page_shows_the_parent_secret_and_the_token_it_was_fetched_with(console, wxgzh):
    realm_upsert("wx_jsapi", {"config": _ticket_config(parent="wxgzh")})
    parent = Secret.objects.get(realm=wxgzh, name="main")
    child = SecretFactory(realm_id="wx_jsapi", name="main")
    stored_token(parent, token="ACCESS-2")
    made = stored_token(child, token="TICKET-1")
    StoredToken.objects.filter(pk=made.pk).update(parent_fingerprint=fingerprint("ACCESS-1"))

    child_page = console.get(f"/admin/secrets/secret/{child.pk}/change/").content.decode()
    parent_page = console.get(f"/admin/secrets/secret/{parent.pk}/change/").content.decode()

    link = f'<a href="/admin/secrets/secret/{parent.pk}/change/">wxgzh/main</a>'
    assert f"Fetched with the token of {link} (its token: {fingerprint('ACCESS-2')}" in child_page
    assert f"fetched with {fingerprint('ACCESS-1')}: the parent has another token" in child_page
    assert "Its token fetches the tokens of" in parent_page and "wx_jsapi/main" in parent_page
    for page in (child_page, parent_page):
        assert "ACCESS-" not in page and "TICKET-" not in page


def test_the_console_does_not_delete_or_rename_a_parent_secret(console, wxgzh):
    realm_upsert("wx_jsapi", {"config": _ticket_config(parent="wxgzh")})
    SecretFactory(realm_id="wx_jsapi", name="main")
    parent = Secret.objects.get(realm=wxgzh, name="main")

    delete = console.post(f"/admin/secrets/secret/{parent.pk}/delete/", {"post": "yes"})
    rename = console.post(
        f"/admin/secrets/secret/{parent.pk}/change/",
        {"realm": "wxgzh", "name": "renamed", "enabled": "on", "comment": ""},
    )

    assert "wx_jsapi/main (fetched with the token of wxgzh/main)" in delete.content.decode()
    assert rename.status_code == 200  # the form again, with the error
    assert "are fetched with this secret" in rename.content.decode()
    assert Secret.objects.filter(realm=wxgzh, name="main").exists()


def test_the_console_adds_a_ticket_realm_from_its_preset_with_a_parent(console, wxgzh):
    page = console.post(
        "/admin/realms/realm/add-from-preset/",
        {"preset": "wechat_jsapi_ticket", "realm_id": "wx_jsapi", "parent": "wxgzh"},
    )

    assert page.status_code == 302
    assert Realm.objects.get(pk="wx_jsapi").parent_id == "wxgzh"


# --- Presets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parent"),
    [
        ("wechat_jsapi_ticket", "wechat_official_account"),
        ("wechat_card_ticket", "wechat_official_account"),
        ("wecom_jsapi_ticket", "wecom"),
        ("wecom_agent_ticket", "wecom"),
    ],
)
def test_a_ticket_preset_takes_its_parent_presets_realm_by_default(name, parent):
    with pytest.raises(CommandError, match="Create the parent realm first"):
        call_command("loadpreset", name)

    realm_from_preset(parent)
    call_command("loadpreset", name)

    assert Realm.objects.get(pk=name).parent_id == parent


def test_loadpreset_names_another_parent_and_lists_the_chained_presets(wxgzh, capsys):
    call_command("loadpreset", "wechat_card_ticket", "--id", "wx_card", "--parent", "wxgzh")
    call_command("loadpreset", "--list")

    out = capsys.readouterr().out
    assert "fetched with the tokens of wxgzh's secrets" in out
    assert "parent: wechat_official_account" in out
    assert Realm.objects.get(pk="wx_card").parent_id == "wxgzh"
    with pytest.raises(CommandError, match="not a chained realm"):
        call_command("loadpreset", "wecom", "--parent", "wxgzh")
