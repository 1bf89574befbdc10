"""
A realm's permanent errors (issue 14): `permanent_error_codes` and
`permanent_error_ttl` in the API, the console and the presets; what the token
path does with them is in tokens/tests/test_permanent_errors.py.
"""

import pytest

from realms.models import Realm
from realms.presets import presets, realm_from_preset
from realms.services import realm_upsert
from tests.factories import SecretFactory
from tokens.models import RememberedError
from tokens.services import token_get
from tokenserver.errors import UpstreamError

pytestmark = pytest.mark.django_db

CONFIG = {"url": "https://api.weixin.qq.com/cgi-bin/token"}


def test_the_api_round_trips_the_fields(api):
    config = {**CONFIG, "permanent_error_codes": [40125, "40164"], "permanent_error_ttl": 120}

    created = api.post("/api/realm", {"id": "wx", "config": config}, format="json")
    patched = api.patch(
        "/api/realm/wx", {"config": {"permanent_error_ttl": 0}}, format="json"
    ).json()
    read = api.get("/api/realm/wx").json()

    assert created.status_code == 201
    assert created.json()["data"]["config"]["permanent_error_codes"] == [40125, "40164"]
    assert created.json()["data"]["config"]["permanent_error_ttl"] == 120
    assert patched["config"]["permanent_error_ttl"] == 0
    assert read["config"]["permanent_error_codes"] == [40125, "40164"]


def test_the_defaults_are_no_codes_and_ten_minutes(api):
    realm = api.post("/api/realm", {"id": "wx", "config": CONFIG}, format="json").json()["data"]

    assert realm["config"]["permanent_error_codes"] == []
    assert realm["config"]["permanent_error_ttl"] == 600


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"permanent_error_codes": "40125"}, "config.permanent_error_codes"),
        ({"permanent_error_codes": [40125, [1]]}, "config.permanent_error_codes"),
        ({"permanent_error_codes": [True]}, "config.permanent_error_codes"),
        ({"permanent_error_ttl": -1}, "config.permanent_error_ttl"),
        ({"permanent_error_ttl": 86401}, "config.permanent_error_ttl"),
        ({"permanent_error_ttl": "ten minutes"}, "config.permanent_error_ttl"),
    ],
)
def test_bad_values_are_a_400_naming_the_field(api, config, field):
    response = api.post("/api/realm", {"id": "bad", "config": {**CONFIG, **config}}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid"
    assert field in body["fields"], body
    assert not Realm.objects.filter(pk="bad").exists()


def test_the_console_form_has_the_fields(console):
    page = console.get("/admin/realms/realm/add/").content.decode()

    assert 'name="permanent_error_codes"' in page
    assert 'name="permanent_error_ttl"' in page


def test_the_presets_name_their_providers_credential_errors():
    assert {40013, 40125, 40164} <= set(
        presets()["wechat_official_account"]["realm"]["config"]["permanent_error_codes"]
    )
    assert {40001, 40013, 60020} <= set(
        presets()["wecom"]["realm"]["config"]["permanent_error_codes"]
    )
    assert presets()["oauth2_client_credentials"]["realm"]["config"]["permanent_error_codes"] == [
        "invalid_client",
        "unauthorized_client",
    ]


@pytest.mark.django_db(transaction=True)
def test_the_oauth2_preset_remembers_invalid_client(upstream):
    # RFC 6749: a wrong client secret is HTTP 401 {"error": "invalid_client"}.
    realm = realm_from_preset("oauth2_client_credentials", "idp")
    realm_upsert("idp", {"config": {"url": upstream.url("/oauth2/token")}}, partial=True)
    secret = SecretFactory(realm=Realm.objects.get(pk="idp"), name="app")
    upstream.reply(
        "/oauth2/token",
        {"error": "invalid_client", "error_description": "Client authentication failed"},
        status=401,
    )

    for _ in range(3):
        with pytest.raises(UpstreamError) as raised:
            token_get(realm.id, secret.name)

    assert raised.value.detail == (
        "upstream answered HTTP 401 with error invalid_client: Client authentication failed"
    )
    assert len(upstream.calls("/oauth2/token")) == 1
    assert RememberedError.objects.get(secret=secret).error_code == "invalid_client"
