"""
Issue 11: answers and secret values that used to break the token path.

- An upstream answering text that is not valid Unicode (a lone surrogate, which JSON
  can spell as `\\ud800`) in its token or in its error fields: a 502
  `invalid_response`, logged and counted like any bad answer, never a 500 and never a
  token that is served or stored.
- A token larger than TOKENSERVER_MAX_TOKEN_BYTES: refused before anything is stored.
- A secret value that cannot go into a header (a trailing newline): that secret's own
  error, not retried, not counted toward the realm's breaker.
- An upstream echoing what it was sent, encoded: every form the request carried is
  scrubbed from the detail, the fetch log and the database.
"""

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from tests.factories import ArgumentFactory, RealmFactory, SecretFactory
from tokens.models import FetchLog, StoredToken
from tokens.services import token_get
from tokenserver.errors import UpstreamError

pytestmark = pytest.mark.django_db(transaction=True)

SURROGATE = "\ud800"


def realm_with(upstream, arguments, **fields):
    realm = RealmFactory(url=upstream.url(), **fields)
    for order, (place, name, value) in enumerate(arguments):
        ArgumentFactory(realm=realm, place=place, name=name, value=value, order=order)
    return realm


@pytest.fixture
def plain_realm(upstream):
    return realm_with(upstream, [("url", "appid", "$key_1"), ("url", "secret", "$key_2")])


def token_api(api, secret):
    return api.get("/api/token", {"realm": secret.realm_id, "key": secret.name})


# --- Text that is not valid Unicode ------------------------------------------------


def test_a_lone_surrogate_in_the_token_is_an_invalid_response(api, upstream, plain_realm):
    secret = SecretFactory(realm=plain_realm, key_1="app", key_2="s3cret-value")
    upstream.reply("/token", {"access_token": "t" + SURROGATE, "expires_in": 7200})

    answers = [token_api(api, secret) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [502, 502, 502]
    assert answers[0].json()["error"] == "upstream_error"
    assert "not valid text" in answers[0].json()["detail"]
    logged = list(FetchLog.objects.values_list("outcome", flat=True))
    assert logged == [FetchLog.Outcome.INVALID_RESPONSE] * 3
    assert not StoredToken.objects.exists()


@pytest.mark.parametrize("field", ["errmsg", "errcode"])
def test_a_lone_surrogate_in_the_error_fields_is_logged_and_answered(
    api, upstream, plain_realm, field
):
    secret = SecretFactory(realm=plain_realm, key_1="app", key_2="s3cret-value")
    answer = {"errcode": 40013, "errmsg": "invalid appid"}
    answer[field] = "bad" + SURROGATE
    upstream.reply("/token", answer)

    response = token_api(api, secret)

    assert response.status_code == 502
    body = response.json()
    assert SURROGATE not in json.dumps(body, ensure_ascii=False)
    row = FetchLog.objects.get()
    assert row.outcome in (FetchLog.Outcome.UPSTREAM_ERROR, FetchLog.Outcome.INVALID_RESPONSE)
    assert SURROGATE not in row.error_code + row.error_message


def test_control_characters_in_a_token_are_an_invalid_response(api, upstream, plain_realm):
    secret = SecretFactory(realm=plain_realm, key_1="app", key_2="s3cret-value")
    upstream.reply("/token", {"access_token": "line\r\nbreak", "expires_in": 7200})

    response = token_api(api, secret)

    assert response.status_code == 502
    assert FetchLog.objects.get().outcome == FetchLog.Outcome.INVALID_RESPONSE


# --- Size ------------------------------------------------------------------------


def test_a_token_over_the_maximum_size_is_refused_before_it_is_stored(
    api, upstream, plain_realm, settings
):
    settings.TOKENSERVER_MAX_TOKEN_BYTES = 1024
    secret = SecretFactory(realm=plain_realm, key_1="app", key_2="s3cret-value")
    upstream.reply("/token", {"access_token": "x" * 1025, "expires_in": 7200})

    response = token_api(api, secret)

    assert response.status_code == 502
    assert "1024" in response.json()["detail"]
    assert FetchLog.objects.get().outcome == FetchLog.Outcome.INVALID_RESPONSE
    assert not StoredToken.objects.exists()


def test_a_token_at_the_maximum_size_is_served(api, upstream, plain_realm, settings):
    settings.TOKENSERVER_MAX_TOKEN_BYTES = 1024
    secret = SecretFactory(realm=plain_realm, key_1="app", key_2="s3cret-value")
    upstream.reply("/token", {"access_token": "x" * 1024, "expires_in": 7200})

    response = token_api(api, secret)

    assert response.status_code == 200
    assert StoredToken.objects.get().token == "x" * 1024


# --- A secret value that cannot be sent --------------------------------------------


@pytest.fixture
def header_realm(upstream):
    # breaker_threshold 3: the old behaviour opened the breaker with one bad secret
    # (3 attempts, each counted).
    return realm_with(
        upstream,
        [("header", "Authorization", "Bearer ${key_1}")],
        breaker_threshold=3,
        max_retries=2,
    )


def test_a_value_that_cannot_go_in_a_header_is_that_secrets_error_only(api, upstream, header_realm):
    upstream.reply("/token", {"access_token": "T-good", "expires_in": 7200})
    bad = SecretFactory(realm=header_realm, name="bad", key_1="abc\n")
    good = SecretFactory(realm=header_realm, name="good", key_1="fine-value")

    refused = [token_api(api, bad) for _ in range(3)]
    served = token_api(api, good)

    assert [answer.status_code for answer in refused] == [502, 502, 502]
    assert refused[0].json()["error"] == "invalid_request"
    assert "key_1 cannot be sent in a header" in refused[0].json()["detail"]
    # Nothing was sent for the bad secret, nothing retried, and the realm still serves.
    assert len(upstream.calls()) == 1
    assert served.status_code == 200
    assert served.json()["token"] == "T-good"
    outcomes = list(FetchLog.objects.filter(key="bad").values_list("outcome", flat=True))
    assert outcomes == [FetchLog.Outcome.REJECTED] * 3


# --- Encoded echoes of secret values ---------------------------------------------


SECRET = "Sup3rS3cret+/=Val_x9K2"


def echo_answer(text):
    return {"errcode": 40001, "errmsg": f"invalid credential, you sent: {text}"}


def forms_of(value, user="app-id"):
    basic = base64.b64encode(f"{user}:{value}".encode()).decode()
    return {
        "plain": value,
        "quote": quote(value, safe=""),
        "quote_plus": quote_plus(value),
        "json": json.dumps(value)[1:-1],
        "basic": basic,
    }


@pytest.mark.parametrize("form", ["plain", "quote", "quote_plus", "json", "basic"])
def test_every_form_of_a_secret_the_request_carried_is_scrubbed(api, upstream, form):
    realm = realm_with(upstream, [("basic", "", "${key_1}:${key_2}"), ("url", "s", "$key_2")])
    secret = SecretFactory(realm=realm, key_1="app-id", key_2=SECRET)
    leaked = forms_of(SECRET)[form]
    upstream.reply("/token", echo_answer(leaked))

    response = token_api(api, secret)

    assert response.status_code == 502
    assert leaked not in response.content.decode()
    row = FetchLog.objects.get()
    assert leaked not in row.error_message
    assert "***" in row.error_message


def test_a_json_escaped_secret_with_quotes_is_scrubbed(api, upstream):
    realm = realm_with(upstream, [("body", "secret", "$key_2")], method="POST")
    value = 'quote"and\\backslash-secret'
    secret = SecretFactory(realm=realm, key_1="app-id", key_2=value)
    upstream.reply("/token", echo_answer(json.dumps(value)))

    response = token_api(api, secret)

    assert response.status_code == 502
    assert json.dumps(value)[1:-1] not in response.content.decode()
    assert "backslash-secret" not in FetchLog.objects.get().error_message


def test_token_get_raises_upstream_error_for_a_surrogate_token(upstream, plain_realm):
    # The service, not only the API: the refresher and the console call it too.
    secret = SecretFactory(realm=plain_realm, key_1="app", key_2="s3cret-value")
    upstream.reply("/token", {"access_token": SURROGATE, "expires_in": 7200})

    with pytest.raises(UpstreamError):
        token_get(secret.realm_id, secret.name)
