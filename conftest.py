"""
Shared fixtures: factories for the models, API clients, and `upstream`, a
real HTTP server on 127.0.0.1 that plays the token provider (the one thing
that leaves the process, so the one thing faked).
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import factory
import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from realms.models import Argument, Realm
from secret_store.models import Secret

# --- The fake upstream --------------------------------------------------------


class FakeUpstream:
    """
    A token provider on a real socket. Each path answers with a programmable
    (status, body) after an optional delay; every request is recorded, so
    tests count upstream calls exactly.

        upstream.reply("/token", {"access_token": "T", "expires_in": 7200})
        upstream.url("/token")  # → http://127.0.0.1:PORT/token
    """

    def __init__(self):
        self.requests = []
        self._routes = {}
        self._lock = threading.Lock()
        self._counter = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                with fake._lock:
                    fake._counter += 1
                    number = fake._counter
                    fake.requests.append(
                        {
                            "method": self.command,
                            "path": parts.path,
                            "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                            "headers": dict(self.headers),
                            "body": body,
                        }
                    )
                    route = fake._routes.get(parts.path)
                if route is None:
                    status, payload, delay = 404, {"error": "no route"}, 0
                else:
                    status, payload, delay = route(number) if callable(route) else route
                if delay:
                    time.sleep(delay)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *args):  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path="/token"):
        return f"http://127.0.0.1:{self.port}{path}"

    def reply(self, path, payload, *, status=200, delay=0.0):
        """Answer `path` with `payload` (a dict, or raw bytes)."""
        self._routes[path] = (status, payload, delay)

    def reply_with(self, path, function):
        """Answer `path` with function(call_number) → (status, payload, delay)."""
        self._routes[path] = function

    def calls(self, path="/token"):
        return [request for request in self.requests if request["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    fake = FakeUpstream()
    yield fake
    fake.close()


def numbered_tokens(lifetime=7200, delay=0.0):
    """A route answering TOKEN-1, TOKEN-2, … (one new token per call)."""

    def route(number):
        return 200, {"access_token": f"TOKEN-{number}", "expires_in": lifetime}, delay

    return route


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
    key = factory.Sequence(lambda n: f"secret{n}")
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
        key="wxgzh_secret",
        key_1="wx1234567890abcdef",
        key_2="0123456789abcdef0123456789abcdef",
        key_3="client_credential",
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
def _fast_password_hashing(settings):
    # PBKDF2 at full strength costs ~0.3 s per HTTP Basic request.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
