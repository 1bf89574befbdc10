"""Factories for the models, and ready-made rows the tests arrange often."""

import time
from datetime import timedelta

import factory
from django.utils import timezone

from clients.access_tokens import access_token_issue
from realms.models import Argument, Realm
from secret_store.models import Secret
from tests.helpers import wait_until
from tokens.models import FetchLog, StoredToken

#: The password of the `staff_user` fixture (HTTP Basic tests send it).
STAFF_PASSWORD = "staff-password-for-tests"
#: The failure notifications' signing secret (conftest's `webhook` fixture).
WEBHOOK_SECRET = "whsec-test-0123456789abcdef"  # noqa: S105 - a test value


class RealmFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Realm

    id = factory.Sequence(lambda n: f"realm{n}")
    kind = Realm.Kind.CONFIG
    url = "http://127.0.0.1:9/token"
    method = Realm.Method.GET
    token_path = "access_token"
    expires_in_path = "expires_in"
    timeout = 2.0


class ArgumentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Argument

    realm = factory.SubFactory(RealmFactory)
    name = factory.Sequence(lambda n: f"arg{n}")
    place = Argument.Place.URL
    value = "$key_1"


class SecretFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Secret

    realm = factory.SubFactory(RealmFactory)
    name = factory.Sequence(lambda n: f"secret{n}")
    key_1 = "wx1234567890abcdef"
    key_2 = "0123456789abcdef0123456789abcdef"


class StoredTokenFactory(factory.django.DjangoModelFactory):
    """A stored token; give `fetched_at` and `expires_at` (around a frozen "now")."""

    class Meta:
        model = StoredToken

    secret = factory.SubFactory(SecretFactory)
    token = "STORED-TOKEN-VALUE"


class FetchLogFactory(factory.django.DjangoModelFactory):
    """A fetch-log row (an ok request by default); give `created_at` to place it in time."""

    class Meta:
        model = FetchLog

    realm = "wxgzh"
    key = factory.Sequence(lambda n: f"app{n}")
    trigger = FetchLog.Trigger.REQUEST
    outcome = FetchLog.Outcome.OK
    http_status = 200
    duration_ms = 42
    lifetime = 7200


def stored_token(secret, *, token="OLD", age=600, left=6600):
    """A token stored for `secret`, fetched `age` seconds ago, with `left` seconds to live."""
    now = timezone.now()
    return StoredToken.objects.create(
        secret=secret,
        token=token,
        fetched_at=now - timedelta(seconds=age),
        expires_at=now + timedelta(seconds=left),
    )


def expired_access_token(client_id, scopes=(), **kwargs):
    """An access token for `client_id` that has just expired (it lived 1 s; waits for that)."""
    token, claims = access_token_issue(client_id, list(scopes), ttl=1, **kwargs)
    wait_until(lambda: time.time() > claims.expires_at, message="the access token expired")
    return token
