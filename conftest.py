"""
Shared fixtures: API clients, the seed's realm and secret, `upstream` (a real
HTTP server on 127.0.0.1 that plays the token provider: the one thing that
leaves the process, so the one thing faked) and `gunicorn_server`.

Factories are in tests/factories.py, other helpers in tests/helpers.py.
"""

import ipaddress
import socket

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.factories import (
    STAFF_PASSWORD,
    WEBHOOK_SECRET,
    ArgumentFactory,
    RealmFactory,
    SecretFactory,
)
from tests.helpers import ChildProcess, child_env, free_port
from tokens.notifications import sender as notification_sender
from tokens.testing import FakeUpstream, gunicorn_command
from tokenserver.cache import local_windows

# --- The fake upstream -------------------------------------------------------


@pytest.fixture
def upstream():
    with FakeUpstream() as fake:
        yield fake


# --- Failure notifications -----------------------------------------------------


@pytest.fixture
def webhook_receiver():
    """A webhook receiver on a real socket (127.0.0.1, a free port): answers /hook 200."""
    with FakeUpstream() as receiver:
        receiver.reply("/hook", {"ok": True})
        yield receiver


@pytest.fixture
def webhook(settings, webhook_receiver):
    """
    Failure notifications on, to `webhook_receiver`, with fast retries (3 tries,
    0.05 s then 0.1 s apart) and a short timeout; the sender thread is stopped
    after the test (before its database goes). Yields the receiver.
    """
    settings.TOKENSERVER_WEBHOOK_URL = webhook_receiver.url("/hook")
    settings.TOKENSERVER_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.TOKENSERVER_WEBHOOK_RETRY_BASE = 0.05
    settings.TOKENSERVER_WEBHOOK_MAX_TRIES = 3
    settings.TOKENSERVER_WEBHOOK_TIMEOUT = 1.0
    yield webhook_receiver
    notification_sender.stop()


# --- Server processes -----------------------------------------------------------


@pytest.fixture
def gunicorn_env():
    """Extra environment for gunicorn_server (a test module may override this fixture)."""
    return {}


@pytest.fixture
def gunicorn_server(tmp_path, gunicorn_env):
    """tokenserver in gunicorn: 4 worker processes × 25 threads, on the test database."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = ChildProcess(
        gunicorn_command(port, workers=4, threads=25),
        env=child_env(ALLOWED_HOSTS="127.0.0.1", LOG_LEVEL="WARNING", **gunicorn_env),
        cwd=settings.BASE_DIR,
        log=tmp_path / "gunicorn.log",
        # Any answer will do (401 without credentials): the workers are up.
        ready=lambda: requests.get(f"{base}/api/token", timeout=1),
        start_timeout=30,
    )
    with server:
        yield base


# --- Realms and secrets --------------------------------------------------------


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


# --- Users and API clients ----------------------------------------------------


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user("operator", password=STAFF_PASSWORD, is_staff=True)


@pytest.fixture
def other_staff_user(db):
    """A second operator (same password as `staff_user`), e.g. behind the same address."""
    return get_user_model().objects.create_user("auditor", password=STAFF_PASSWORD, is_staff=True)


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
    """Each test starts with an empty cache (only our key prefix, on Redis)."""
    _clear_cache()
    yield
    _clear_cache()


def _clear_cache():
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")
    else:
        cache.clear()
    local_windows.clear()  # window counters without Redis (rate limits, failed sign-ins)


@pytest.fixture(autouse=True)
def _no_name_resolution(monkeypatch):
    """
    Names do not resolve (as on a machine without a network), except localhost:
    a real lookup leaves the process, and an unanswered one costs seconds.
    Tests that need an answer give it (see the `dns` fixture of test_netguard).
    """
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or name == "localhost" or _is_address(name):
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _is_address(name):
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True


@pytest.fixture(autouse=True)
def _loopback_upstreams(settings):
    """The fake upstream listens on 127.0.0.1, which production refuses by default."""
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.0/8"]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2 at full strength costs ~0.3 s per HTTP Basic request.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
