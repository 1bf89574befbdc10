"""
Issue 14: a realm's `jwt` settings (RFC 7523 assertions) are checked when saved,
through the API and the console alike, and round-trip unchanged.
"""

import subprocess
import sys

import pytest
from django.conf import settings

from realms.models import Realm
from realms.presets import realm_from_preset
from realms.tests.test_url_checks import _realm_form
from tests.factories import RealmFactory
from tests.helpers import child_env

pytestmark = pytest.mark.django_db

GOOD_JWT = {
    "alg": "ES256",
    "key": "$key_2",
    "iss": "$key_1",
    "sub": "$key_1",
    "aud": "https://auth.example.com/",
    "scope": "$key_3",
    "kid": "key-${key_4}",
    "lifetime": 900,
}


def realm_body(jwt, arguments=None):
    return {
        "id": "idp",
        "config": {
            "url": "https://8.8.8.8/token",
            "method": "POST",
            "content_type": "form",
            "jwt": jwt,
            "arguments": arguments
            if arguments is not None
            else [
                {
                    "name": "grant_type",
                    "place": "body",
                    "value": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                },
                {"name": "assertion", "place": "body", "value": "$jwt"},
            ],
        },
    }


def test_jwt_settings_round_trip_through_the_api(api):
    created = api.post("/api/realm", realm_body(GOOD_JWT), format="json")

    assert created.status_code == 201
    assert created.json()["data"]["config"]["jwt"] == GOOD_JWT
    assert api.get("/api/realm/idp").json()["config"]["jwt"] == GOOD_JWT
    assert Realm.objects.get(pk="idp").jwt == GOOD_JWT


def test_a_realm_without_jwt_settings_reads_null_and_an_empty_object_clears_them(api):
    api.post("/api/realm", realm_body(GOOD_JWT), format="json")

    cleared = api.patch("/api/realm/idp", {"config": {"jwt": {}, "arguments": []}}, format="json")

    assert cleared.status_code == 200
    assert cleared.json()["config"]["jwt"] is None
    assert Realm.objects.get(pk="idp").jwt is None


@pytest.mark.parametrize(
    ("jwt", "message"),
    [
        ({**GOOD_JWT, "alg": "HS256"}, "jwt.alg: 'HS256' is not supported"),
        ({**GOOD_JWT, "alg": "none"}, "jwt.alg: 'none' is not supported"),
        ({**GOOD_JWT, "lifetime": 7200}, "jwt.lifetime: give whole seconds from 1 to 3600"),
        ({**GOOD_JWT, "lifetime": 0}, "jwt.lifetime"),
        ({**GOOD_JWT, "lifetime": "3600"}, "jwt.lifetime"),
        ({**GOOD_JWT, "key": "$key_9"}, "jwt.key: Template references $key_9"),
        ({**GOOD_JWT, "key": "-----BEGIN PRIVATE KEY-----"}, "jwt.key: reference the secret"),
        ({**GOOD_JWT, "iss": "${key_1"}, "jwt.iss"),
        ({**GOOD_JWT, "scope": ["a"]}, "jwt.scope: give text"),
        ({"alg": "RS256", "key": "$key_2"}, "jwt.iss: this setting is required"),
        ({**GOOD_JWT, "exp": 1}, "unknown setting(s) exp"),
        ("RS256", "Give an object"),
    ],
)
def test_the_api_refuses_bad_jwt_settings_on_their_field(api, jwt, message):
    response = api.post("/api/realm", realm_body(jwt), format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert message in " ".join(response.json()["fields"]["config.jwt"])
    assert not Realm.objects.exists()


def test_an_argument_sending_jwt_needs_the_settings(api):
    response = api.post("/api/realm", realm_body(None), format="json")

    assert response.status_code == 400
    assert "give the realm jwt settings first" in " ".join(
        response.json()["fields"]["config.arguments[1].value"]
    )


def test_jwt_is_not_an_assertion_template_name(api):
    response = api.post("/api/realm", realm_body({**GOOD_JWT, "sub": "$jwt"}), format="json")

    assert response.status_code == 400
    assert "only key_1 … key_5 exist" in " ".join(response.json()["fields"]["config.jwt"])


def test_only_a_config_realm_signs_assertions(api):
    body = {"id": "idp", "kind": "fixed", "config": {"jwt": GOOD_JWT}}

    response = api.post("/api/realm", body, format="json")

    assert response.status_code == 400
    assert "Only a realm of kind config" in " ".join(response.json()["fields"]["config.jwt"])


# --- The console ----------------------------------------------------------------


def _console_form(jwt_text, argument_value="$jwt"):
    return _realm_form(
        url="https://8.8.8.8/token",
        method="POST",
        content_type="form",
        jwt=jwt_text,
        **{
            "arguments-TOTAL_FORMS": "1",
            "arguments-0-order": "0",
            "arguments-0-place": "body",
            "arguments-0-name": "assertion",
            "arguments-0-value": argument_value,
        },
    )


def test_the_console_saves_and_shows_jwt_settings(console):
    page = console.post(
        "/admin/realms/realm/add/",
        _console_form('{"alg": "RS256", "key": "$key_2", "iss": "$key_1"}'),
    )

    assert page.status_code == 302
    assert Realm.objects.get(pk="wx").jwt == {"alg": "RS256", "key": "$key_2", "iss": "$key_1"}
    change = console.get("/admin/realms/realm/wx/change/").content.decode()
    assert "JWT assertion (RFC 7523" in change
    assert "&quot;alg&quot;: &quot;RS256&quot;" in change


def test_the_console_refuses_bad_jwt_settings_on_the_field(console):
    page = console.post(
        "/admin/realms/realm/add/",
        _console_form('{"alg": "HS256", "key": "$key_2", "iss": "$key_1", "lifetime": 86400}'),
    )

    assert page.status_code == 200  # the form again
    html = page.content.decode()
    row = html[html.index("field-jwt") :]
    assert "jwt.alg: &#x27;HS256&#x27; is not supported" in row
    assert "jwt.lifetime: give whole seconds from 1 to 3600" in row
    assert not Realm.objects.filter(pk="wx").exists()


def test_the_console_refuses_a_jwt_argument_without_settings(console):
    page = console.post("/admin/realms/realm/add/", _console_form(""))

    assert page.status_code == 200
    assert "give the realm jwt settings first" in page.content.decode()
    assert not Realm.objects.filter(pk="wx").exists()


def test_presets_with_jwt_settings_are_valid():
    for name in ("google_service_account", "oauth2_jwt_bearer", "oauth2_private_key_jwt"):
        realm = realm_from_preset(name)
        realm.full_clean()
        assert realm.jwt["lifetime"] <= 3600
        assert realm.arguments.filter(value="$jwt").exists()
    RealmFactory(id="plain")
    assert Realm.objects.get(pk="plain").jwt is None


def test_a_worker_imports_pyjwt_only_when_it_signs():
    # Issue 10's memory target: PyJWT brings cryptography's other algorithms along
    # (about 1 MiB more per worker); only a realm with JWT settings needs it.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tokenserver.wsgi import application; import tokenserver.urls; "
            "print('jwt' in sys.modules)",
        ],
        cwd=settings.BASE_DIR,
        env=child_env(DEBUG="off", LOG_LEVEL="WARNING"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.split()[-1] == "False"
