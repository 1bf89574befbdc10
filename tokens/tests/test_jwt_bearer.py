"""
Issue 14: JWT-bearer grants (RFC 7523 §2.1) and private_key_jwt client
authentication (§2.2). A realm's `jwt` settings sign an assertion with the
secret's private key for each fetch; arguments send it as `$jwt`.

The provider is a real local HTTP fake that does what a provider does: it verifies
the assertion's signature with the matching public key, its claims and the grant,
and answers invalid_grant otherwise.
"""

import json
import logging
import time
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from realms.models import Realm
from realms.presets import realm_from_preset
from realms.services import realm_upsert
from tests.factories import SecretFactory
from tokens.models import FetchLog
from tokens.services import token_get
from tokenserver.errors import UnsendableRequest, UpstreamError

pytestmark = pytest.mark.django_db

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
EMAIL = "robot@project-1234.iam.gserviceaccount.com"


def pem(key, fmt=serialization.PrivateFormat.PKCS8) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


class JwtProvider:
    """
    A token endpoint on the `upstream` fake that checks what an RFC 7523 provider
    checks: the grant (or client assertion type), the signature with `public_key`,
    `aud`, `iss`, `sub`, `scope`, `exp - iat` ≤ 3600, `iat` near now, a fresh `jti`.
    Anything wrong: 400 {"error": "invalid_grant"}; its description echoes the
    assertion, as a careless provider might (tokenserver must cut it out).
    """

    def __init__(self, upstream, public_key, alg, *, iss, sub=None, scope=None, client=False):
        self.upstream, self.public_key, self.alg = upstream, public_key, alg
        self.iss, self.sub, self.scope, self.client = iss, sub, scope, client
        self.aud = upstream.url("/token")
        self.verified = []  # (header, claims) of each accepted assertion
        self.assertions = []  # every assertion received
        self.jtis = set()
        upstream.reply_with("/token", self.answer)

    def answer(self, number):
        request = self.upstream.requests[number - 1]
        form = {k: v[0] for k, v in parse_qs(request["body"].decode()).items()}
        field = "client_assertion" if self.client else "assertion"
        assertion = form.get(field, "")
        self.assertions.append(assertion)
        try:
            self.check_grant(form, request)
            claims = jwt.decode(
                assertion,
                self.public_key,
                algorithms=[self.alg],
                audience=self.aud,
                issuer=self.iss,
                options={"require": ["iss", "aud", "iat", "exp", "jti"]},
            )
            self.check_claims(claims)
        except (jwt.InvalidTokenError, AssertionError) as error:
            description = f"{type(error).__name__}: {error}; got {assertion}"
            return 400, {"error": "invalid_grant", "error_description": description}, 0
        self.verified.append((jwt.get_unverified_header(assertion), claims))
        return (
            200,
            {"access_token": f"ya29.TOKEN-{number}", "expires_in": 3599, "token_type": "Bearer"},
            0,
        )

    def check_grant(self, form, request):
        assert request["headers"].get("Content-Type") == "application/x-www-form-urlencoded"
        if self.client:
            assert form.get("grant_type") == "client_credentials"
            assert form.get("client_assertion_type") == CLIENT_ASSERTION
            assert "client_secret" not in form and "Authorization" not in request["headers"]
        else:
            assert form.get("grant_type") == JWT_BEARER

    def check_claims(self, claims):
        assert claims.get("sub") == self.sub
        assert claims.get("scope") == self.scope
        assert 0 < claims["exp"] - claims["iat"] <= 3600
        assert abs(claims["iat"] - time.time()) < 60
        assert claims["jti"] not in self.jtis, "jti replayed"
        self.jtis.add(claims["jti"])


def jwt_realm(upstream, alg="RS256", **jwt_settings):
    realm, _ = realm_upsert(
        "idp",
        {
            "kind": "config",
            "config": {
                "url": upstream.url("/token"),
                "method": "POST",
                "content_type": "form",
                "jwt": {"alg": alg, "key": "$key_2", "iss": "$key_1", **jwt_settings},
                "arguments": [
                    {"name": "grant_type", "place": "body", "value": JWT_BEARER},
                    {"name": "assertion", "place": "body", "value": "$jwt"},
                ],
                "error_code_path": "error",
                "error_message_path": "error_description",
            },
        },
    )
    return realm


def preset_realm(name, upstream):
    realm = realm_from_preset(name)
    realm_upsert(realm.id, {"config": {"url": upstream.url("/token")}}, partial=True)
    return Realm.objects.get(pk=realm.id)


# --- The JWT-bearer grant -------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_signed_assertion_is_exchanged_for_a_token(upstream, rsa_key, ec_key, alg):
    key = rsa_key if alg == "RS256" else ec_key
    provider = JwtProvider(upstream, key.public_key(), alg, iss="svc", sub="me", scope="read")
    realm = jwt_realm(upstream, alg, sub="$key_3", scope="read", lifetime=600)
    secret = SecretFactory(realm=realm, name="app", key_1="svc", key_2=pem(key), key_3="me")

    result = token_get(realm.id, secret.name)

    assert result.token == "ya29.TOKEN-1"
    assert 3500 < result.expires_at - time.time() <= 3599
    header, claims = provider.verified[0]
    assert header["alg"] == alg and "kid" not in header
    assert claims["aud"] == upstream.url("/token")  # aud left blank: the realm's url
    assert claims["exp"] - claims["iat"] == 600


def test_each_fetch_signs_a_fresh_assertion(upstream, rsa_key):
    provider = JwtProvider(upstream, rsa_key.public_key(), "RS256", iss="svc")
    realm = jwt_realm(upstream)
    realm.min_flush_interval = 0
    realm.save()
    secret = SecretFactory(realm=realm, name="app", key_1="svc", key_2=pem(rsa_key))

    token_get(realm.id, secret.name)
    token_get(realm.id, secret.name, flush=True)

    assert len(provider.verified) == 2  # the provider refuses a replayed jti
    assert provider.assertions[0] != provider.assertions[1]


@pytest.mark.parametrize(
    "form",
    ["pkcs1", "escaped newlines", "line breaks lost", "base64 der", "crlf"],
)
def test_the_key_is_read_in_the_forms_it_is_pasted_in(upstream, rsa_key, form):
    text = pem(
        rsa_key,
        serialization.PrivateFormat.TraditionalOpenSSL
        if form == "pkcs1"
        else serialization.PrivateFormat.PKCS8,
    )
    if form == "escaped newlines":  # copied out of a service-account JSON file as text
        text = text.replace("\n", "\\n")
    elif form == "line breaks lost":  # a browser's password input drops them
        text = text.replace("\n", "")
    elif form == "base64 der":
        text = "".join(text.splitlines()[1:-1])
    elif form == "crlf":
        text = text.replace("\n", "\r\n")
    provider = JwtProvider(upstream, rsa_key.public_key(), "RS256", iss="svc")
    realm = jwt_realm(upstream)
    secret = SecretFactory(realm=realm, name="app", key_1="svc", key_2=text)

    assert token_get(realm.id, secret.name).token == "ya29.TOKEN-1"
    assert len(provider.verified) == 1


# --- Google service accounts -------------------------------------------------------


def test_the_google_preset_signs_what_google_checks(upstream, rsa_key):
    provider = JwtProvider(upstream, rsa_key.public_key(), "RS256", iss=EMAIL, scope=SCOPE)
    realm = preset_realm("google_service_account", upstream)
    account = {  # the service-account JSON file's fields
        "client_email": EMAIL,
        "private_key": pem(rsa_key),
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "token_uri": upstream.url("/token"),
    }
    secret = SecretFactory(
        realm=realm,
        name="robot",
        key_1=account["client_email"],
        key_2=account["private_key"],
        key_3=SCOPE,
        key_4=account["private_key_id"],
        key_5="",
    )

    result = token_get(realm.id, secret.name)

    assert result.token == "ya29.TOKEN-1"
    header, claims = provider.verified[0]
    assert header == {"alg": "RS256", "typ": "JWT", "kid": account["private_key_id"]}
    assert claims["aud"] == account["token_uri"]
    assert claims["exp"] == claims["iat"] + 3600
    assert "sub" not in claims  # no user impersonated


# --- private_key_jwt client authentication ---------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_private_key_jwt_authenticates_a_client_credentials_grant(upstream, rsa_key, ec_key, alg):
    key = rsa_key if alg == "RS256" else ec_key
    provider = JwtProvider(
        upstream,
        key.public_key(),
        alg,
        iss="client-42",
        sub="client-42",
        scope=None,  # sent as a parameter, not a claim
        client=True,
    )
    realm = preset_realm("oauth2_private_key_jwt", upstream)
    if alg == "ES256":
        realm_upsert(realm.id, {"config": {"jwt": {**realm.jwt, "alg": "ES256"}}}, partial=True)
    secret = SecretFactory(
        realm=realm, name="app", key_1="client-42", key_2=pem(key), key_3="api.read", key_4="k1"
    )

    result = token_get(realm.id, secret.name)

    assert result.token == "ya29.TOKEN-1"
    header, claims = provider.verified[0]
    assert header["kid"] == "k1"
    assert (claims["iss"], claims["sub"], claims["aud"]) == (
        "client-42",
        "client-42",
        upstream.url("/token"),
    )
    form = parse_qs(upstream.requests[0]["body"].decode())
    assert form["client_id"] == ["client-42"] and form["scope"] == ["api.read"]


# --- Failures: the provider's word, an unusable key, nothing leaked ---------------------


def test_a_wrong_key_gets_the_providers_invalid_grant_as_a_502(
    api, upstream, rsa_key, other_rsa_key, caplog
):
    provider = JwtProvider(upstream, rsa_key.public_key(), "RS256", iss="svc")
    realm = jwt_realm(upstream)
    key_text = pem(other_rsa_key)
    SecretFactory(realm=realm, name="app", key_1="svc", key_2=key_text)

    with caplog.at_level(logging.DEBUG):
        response = api.get("/api/token?realm=idp&key=app")

    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "upstream_error"
    assert "invalid_grant" in body["detail"]
    assert "InvalidSignatureError" in body["detail"]
    row = FetchLog.objects.get()
    assert (row.outcome, row.http_status, row.error_code) == (
        "upstream_error",
        400,
        "invalid_grant",
    )
    # The provider echoed the assertion: it was cut out everywhere.
    assertion = provider.assertions[0]
    assert_nowhere(
        [assertion, assertion.rpartition(".")[2], key_text, _key_line(key_text)], response, caplog
    )
    assert "***" in body["detail"]


@pytest.mark.parametrize(
    ("key_text", "message"),
    [
        (
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            "the private key in key_2 cannot be read",
        ),
        ("not a key: at all", "the private key in key_2 is not PEM or base64"),
        ("", "the private key (key_2) is not set"),
    ],
)
def test_an_unusable_key_is_a_clear_502_without_a_call(api, upstream, key_text, message, caplog):
    JwtProvider(upstream, None, "RS256", iss="svc")
    realm = jwt_realm(upstream)
    SecretFactory(realm=realm, name="app", key_1="svc", key_2=key_text)

    with caplog.at_level(logging.DEBUG):
        response = api.get("/api/token?realm=idp&key=app")

    assert response.status_code == 502
    assert response.json()["error"] == "invalid_request"
    assert message in response.json()["detail"]
    assert upstream.requests == []
    assert FetchLog.objects.get().outcome == "rejected"
    if key_text:
        assert_nowhere([key_text.strip(), "bm90IGEga2V5"], response, caplog)


def test_a_key_of_the_wrong_kind_for_the_algorithm_is_named(upstream, ec_key):
    realm = jwt_realm(upstream, "RS256")
    secret = SecretFactory(realm=realm, name="app", key_1="svc", key_2=pem(ec_key))

    with pytest.raises(UnsendableRequest) as raised:
        token_get(realm.id, secret.name)

    assert "RS256 needs an RSA private key; key_2 holds another kind" in raised.value.detail
    assert upstream.requests == []


def test_a_jwt_argument_left_without_settings_is_a_clear_502(upstream, rsa_key):
    realm = jwt_realm(upstream)
    Realm.objects.filter(pk=realm.pk).update(jwt=None)  # as if changed behind the API's back
    secret = SecretFactory(realm=realm, name="app", key_1="svc", key_2=pem(rsa_key))

    with pytest.raises(UpstreamError) as raised:
        token_get(realm.id, secret.name)

    assert "sends $jwt but the realm has no jwt settings" in raised.value.detail
    assert upstream.requests == []


def test_a_successful_fetch_logs_no_key_and_no_assertion(upstream, rsa_key, caplog):
    provider = JwtProvider(upstream, rsa_key.public_key(), "RS256", iss="svc")
    realm = jwt_realm(upstream)
    key_text = pem(rsa_key)
    secret = SecretFactory(realm=realm, name="app", key_1="svc", key_2=key_text)

    with caplog.at_level(logging.DEBUG):
        token_get(realm.id, secret.name)

    assertion = provider.assertions[0]
    for row in FetchLog.objects.values():
        assert assertion not in json.dumps(row, default=str)
        assert _key_line(key_text) not in json.dumps(row, default=str)
    assert assertion not in caplog.text and _key_line(key_text) not in caplog.text


def _key_line(key_text: str) -> str:
    """A line from the middle of a PEM key (what a partial leak would show)."""
    lines = key_text.strip().splitlines()
    return lines[len(lines) // 2]


def assert_nowhere(values, response, caplog):
    """None of `values` is in the answer, a FetchLog row or a log record."""
    rows = json.dumps(list(FetchLog.objects.values()), default=str)
    logged = caplog.text + " ".join(str(record.__dict__) for record in caplog.records)
    for value in values:
        assert value not in response.content.decode()
        assert value not in rows
        assert value not in logged
