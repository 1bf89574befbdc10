"""
Issue 11: a secret value that could never be sent (a control character, often a
newline pasted with it; a lone surrogate) is refused when it is saved, with a field
error, through the API and the console alike. Nothing is stripped silently.
"""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secret_store.models import Secret
from tests.factories import RealmFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def realm():
    return RealmFactory(id="wxgzh")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc\n", "line break (U+000A) at the end"),
        ("ab\x00cd", "Null characters are not allowed"),  # DRF's own check comes first
        ("tab\there", "control character (U+0009)"),
    ],
)
def test_the_api_refuses_a_value_with_a_control_character(api, realm, value, message):
    response = api.post(
        "/api/secret", {"realm": "wxgzh", "key": "app", "key_1": value}, format="json"
    )

    assert response.status_code == 400
    body = response.json()
    assert message in " ".join(body["fields"]["key_1"])
    assert value not in response.content.decode()
    assert not Secret.objects.exists()


def test_the_api_refuses_a_fixed_token_over_the_maximum_size(api, realm, settings):
    settings.TOKENSERVER_MAX_TOKEN_BYTES = 100

    response = api.post(
        "/api/secret", {"realm": "wxgzh", "key": "app", "token": "t" * 101}, format="json"
    )

    assert response.status_code == 400
    assert "TOKENSERVER_MAX_TOKEN_BYTES" in " ".join(response.json()["fields"]["token"])


def console_form(key_1):
    return {
        "realm": "wxgzh",
        "name": "app",
        "key_1": key_1,
        "key_2": "",
        "key_3": "",
        "key_4": "",
        "key_5": "",
        "token": "",
        "token_expires_at_0": "",
        "token_expires_at_1": "",
        "enabled": "on",
        "comment": "",
    }


def test_the_console_trims_a_pasted_value_and_stores_it_exactly(console, realm):
    # The console's form trims what surrounds a pasted value (Django's CharField).
    response = console.post("/admin/secrets/secret/add/", console_form("wx1234567890abcdef\r\n"))

    assert response.status_code == 302
    assert Secret.objects.get(name="app").key_1 == "wx1234567890abcdef"


def test_the_console_refuses_a_control_character_inside_a_value(console, realm):
    page = console.post("/admin/secrets/secret/add/", console_form("wx1234\x07567890"))

    assert page.status_code == 200  # the form again, with the error
    assert "holds a control character (U+0007) at position 7" in page.content.decode()
    assert not Secret.objects.exists()


# --- Issue 14: a PEM private key (JWT assertions) keeps its line breaks ------------

PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\n"
    "OF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n"
    "-----END PRIVATE KEY-----\n"
)


@pytest.mark.parametrize("value", [PEM, PEM.replace("\n", "\r\n"), PEM.rstrip("\n")])
def test_the_api_stores_a_pem_key_with_its_line_breaks(api, realm, value):
    response = api.post(
        "/api/secret", {"realm": "wxgzh", "key": "app", "key_2": value}, format="json"
    )

    assert response.status_code == 201
    assert Secret.objects.get(name="app").key_2 == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (PEM.replace("MIGH", "MI\x07GH"), "control character (U+0007)"),
        (PEM.replace("\n", "\t", 1), "control character (U+0009)"),
        # Line breaks only in a whole PEM block: text around one is refused as before.
        ("appsecret\n" + PEM, "line break (U+000A) at position 10"),
        ("-----BEGIN PRIVATE KEY-----\nMIGH", "line break (U+000A) at position 28"),
    ],
)
def test_other_control_characters_and_stray_line_breaks_are_still_refused(
    api, realm, value, message
):
    response = api.post(
        "/api/secret", {"realm": "wxgzh", "key": "app", "key_2": value}, format="json"
    )

    assert response.status_code == 400
    assert message in " ".join(response.json()["fields"]["key_2"])
    assert not Secret.objects.exists()


@pytest.fixture
def jwt_realm():
    return RealmFactory(
        id="idp", method="POST", jwt={"alg": "ES256", "key": "$key_2", "iss": "$key_1"}
    )


def ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_a_secret_of_a_jwt_realm_is_saved_with_a_key_that_signs(api, jwt_realm):
    response = api.post(
        "/api/secret",
        {"realm": "idp", "key": "app", "key_1": "svc", "key_2": ec_pem()},
        format="json",
    )

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (PEM.replace("MIGH", "AAAA"), "the private key in key_2 cannot be read"),
        ("appsecret0123", "the private key in key_2 is not PEM or base64"),
        (
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----",
            "the private key in key_2 is encrypted",
        ),
    ],
)
def test_a_key_that_cannot_sign_is_refused_on_its_field_without_being_shown(
    api, jwt_realm, value, message
):
    response = api.post(
        "/api/secret",
        {"realm": "idp", "key": "app", "key_1": "svc", "key_2": value},
        format="json",
    )

    assert response.status_code == 400
    assert message in " ".join(response.json()["fields"]["key_2"])
    # The key's body (or the whole value) is nowhere in the answer.
    shown = value.splitlines()[1] if value.startswith("-----") else value
    assert shown not in response.content.decode()
    assert not Secret.objects.exists()
