"""The command line for clients, access tokens and encryption keys."""

import json

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from clients.access_tokens import access_token_issue, revocations
from clients.models import Client
from secret_store.models import Secret
from tests.factories import SecretFactory, expired_access_token
from tokens.models import StoredToken

pytestmark = pytest.mark.django_db


def run(*args):
    from io import StringIO

    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _fresh_revocations():
    revocations.invalidate()


def test_createclient_prints_the_secret_once_and_keeps_a_digest():
    out, _ = run("createclient", "billing", "--scope", "token:read", "--allow", "wxgzh/*", "--json")

    created = json.loads(out)
    client = Client.objects.get(client_id=created["client_id"])
    assert client.name == "billing"
    assert client.scopes == ["token:read"]
    assert client.allow == ["wxgzh/*"]
    assert created["client_secret"] not in client.secret_digest
    assert client.check_secret(created["client_secret"])


def test_createclient_plain_output_and_bad_input():
    out, _ = run("createclient", "ops", "--scope", "realm:read,log:read")
    assert "client_secret:" in out
    assert Client.objects.get(name="ops").scopes == ["realm:read", "log:read"]

    with pytest.raises(CommandError, match="Unknown scope"):
        run("createclient", "x", "--scope", "everything")
    with pytest.raises(CommandError, match="at least one --scope"):
        run("createclient", "x")
    with pytest.raises(CommandError, match="REALM/KEY"):
        run("createclient", "x", "--scope", "token:read", "--allow", "no-slash")


@pytest.fixture
def client_id():
    out, _ = run("createclient", "app", "--scope", "token:read", "--scope", "token:flush", "--json")
    return json.loads(out)["client_id"]


def test_issuetoken_then_verifytoken(client_id):
    token, err = run("issuetoken", client_id, "--ttl", "60", "--scope", "token:read")

    out, _ = run("verifytoken", token.strip())

    assert "expires in" in err
    assert out.startswith(f"valid: client {client_id}, scopes token:read,")
    assert "(in 60 s)" in out or "(in 59 s)" in out


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda cid: expired_access_token(cid), "expired"),
        (lambda cid: "tsat1.nope", "malformed"),
        (lambda cid: access_token_issue(cid, [])[0][:-4] + "AAAA", "bad signature"),
    ],
)
def test_verifytoken_says_why_not(client_id, make, reason):
    token = make(client_id)

    with pytest.raises(CommandError, match=f"invalid: {reason}"):
        run("verifytoken", token)


def test_verifytoken_wrong_key(client_id, settings):
    token, _ = access_token_issue(client_id, [])
    settings.TOKENSERVER_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(CommandError, match="invalid: wrong key"):
        run("verifytoken", token)


def test_revoketoken(client_id):
    token, _ = access_token_issue(client_id, ["token:read"])

    out, _ = run("revoketoken", token)

    assert "revoked token" in out
    with pytest.raises(CommandError, match="invalid: revoked"):
        run("verifytoken", token)


def test_revokeclient_revokes_every_token_it_holds(client_id):
    first, _ = access_token_issue(client_id, ["token:read"])
    second, _ = access_token_issue(client_id, ["token:flush"])

    out, _ = run("revokeclient", client_id, "--disable")

    assert "disabled" in out
    for token in (first, second):
        with pytest.raises(CommandError, match="invalid: revoked"):
            run("verifytoken", token)
    assert not Client.objects.get(client_id=client_id).enabled
    with pytest.raises(CommandError, match="No client"):
        run("revokeclient", "ts_nobody")


def test_issuetoken_refuses_scopes_the_client_lacks(client_id):
    with pytest.raises(CommandError, match="does not have scope"):
        run("issuetoken", client_id, "--scope", "realm:write")


def test_generatekey_prints_a_fernet_key():
    out, _ = run("generatekey")

    Fernet(out.strip())  # valid, or this raises


def raw(table, column, pk_column, pk):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE {pk_column} = %s", [pk])  # noqa: S608
        return cursor.fetchone()[0]


def test_rotatekeys_reencrypts_every_value_under_the_newest_key(settings):
    secret = SecretFactory(key_1="value-one", key_2="value-two")
    now = timezone.now()
    StoredToken.objects.create(secret=secret, token="CACHED", expires_at=now, fetched_at=now)
    before = raw("secrets_secret", "key_1", "id", secret.pk)
    token_before = raw("tokens_storedtoken", "token", "secret_id", secret.pk)
    old_keys = list(settings.TOKENSERVER_ENCRYPTION_KEYS)
    new_key = Fernet.generate_key().decode()
    settings.TOKENSERVER_ENCRYPTION_KEYS = [new_key, *old_keys]

    out, _ = run("rotatekeys")

    assert "re-encrypted 1 secrets, 1 stored tokens" in out
    assert raw("secrets_secret", "key_1", "id", secret.pk) != before
    assert raw("tokens_storedtoken", "token", "secret_id", secret.pk) != token_before
    # The old key can go now: everything reads under the new one alone.
    settings.TOKENSERVER_ENCRYPTION_KEYS = [new_key]
    reloaded = Secret.objects.get(pk=secret.pk)
    assert (reloaded.key_1, reloaded.key_2) == ("value-one", "value-two")
    assert StoredToken.objects.get(secret=secret).token == "CACHED"
    assert Fernet(new_key).decrypt(raw("secrets_secret", "key_1", "id", secret.pk).encode())
