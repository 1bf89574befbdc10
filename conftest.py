"""
Shared fixtures: factories for the models, API clients, and `upstream`, a
real HTTP server on 127.0.0.1 that plays the token provider (the one thing
that leaves the process, so the one thing faked).
"""

from datetime import timedelta

import factory
import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from realms.models import Argument, Realm
from secret_store.models import Secret
from tokens.models import StoredToken
from tokens.testing import FakeUpstream, numbered_tokens  # noqa: F401 - re-exported for tests

# --- The fake upstream -------------------------------------------------------


@pytest.fixture
def upstream():
    fake = FakeUpstream()
    yield fake
    fake.close()


# --- Factories --------------------------------------------------------------


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


@pytest.fixture
def wechat_realm(upstream):
    """The seed's wxgzh realm, pointed at the fake upstream."""
    realm = RealmFactory(id="wxgzh", url=upstream.url("/cgi-bin/token"))
    for order, (name, value) in enumerate(
        [("appid", "$key_1"), ("secret", "$key_2"), ("grant_type", "$key_3")]
    ):
        ArgumentFactory(realm=realm, name=name, value=value, order=order)
    return realm


@pytest.fixture
def wechat_secret(wechat_realm):
    return SecretFactory(
        realm=wechat_realm,
        name="wxgzh_secret",
        key_1="wx1234567890abcdef",
        key_2="0123456789abcdef0123456789abcdef",
        key_3="client_credential",
    )


def stored_token(secret, *, token="OLD", age=600, left=6600):
    """A token stored for `secret`, fetched `age` seconds ago, with `left` seconds to live."""
    now = timezone.now()
    return StoredToken.objects.create(
        secret=secret,
        token=token,
        fetched_at=now - timedelta(seconds=age),
        expires_at=now + timedelta(seconds=left),
    )


# --- Users and API clients ----------------------------------------------------

STAFF_PASSWORD = "staff-password-for-tests"


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user("operator", password=STAFF_PASSWORD, is_staff=True)


@pytest.fixture
def api(staff_user):
    """An API client signed in as a staff user (session, as the console does)."""
    client = APIClient()
    client.force_login(staff_user)
    return client


@pytest.fixture
def console(client, staff_user):
    """The operator console (Django admin), signed in as a superuser."""
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    return client


@pytest.fixture
def anonymous_api():
    return APIClient()


# --- Isolation ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_cache():
    """Each test starts with an empty token cache (only our key prefix, on Redis)."""
    _clear_cache()
    yield
    _clear_cache()


def _clear_cache():
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def _loopback_upstreams(settings):
    """The fake upstream listens on 127.0.0.1, which production refuses by default."""
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.0/8"]


#: The same, for the server processes tests start.
CHILD_ENV = {"TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS": "127.0.0.0/8"}


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2 at full strength costs ~0.3 s per HTTP Basic request.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
