"""
The offline demo (`make demo`, `manage.py demo`): a token provider on loopback
that speaks WeChat's wire format, and a realm, a secret and an app client set
up for it, so the README's walkthrough runs without the internet.

The provider knows one app: the README's example credentials (DEMO_APPID,
DEMO_APPSECRET). Like WeChat's `GET /cgi-bin/token`, it answers a new token
on each call, and an `errcode` in an HTTP 200 for what it refuses.
"""

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from django.db import transaction

from clients.models import Client
from clients.scopes import TOKEN_FLUSH, TOKEN_READ
from clients.services import client_create, client_delete
from realms.presets import preset_get
from realms.services import realm_upsert
from secret_store.services import secret_upsert

DEMO_APPID = "wx1234567890abcdef"
DEMO_APPSECRET = "0123456789abcdef0123456789abcdef"  # noqa: S105 - the README's example
DEMO_REALM = "demo"
DEMO_KEY = "demo_app"
DEMO_CLIENT = "demo-app"
TOKEN_PATH = "/cgi-bin/token"
LIFETIME = 7200


def wechat_answer(query: dict) -> dict:
    """What WeChat's /cgi-bin/token answers for these query parameters."""
    if query.get("grant_type") != "client_credential":
        return {"errcode": 40002, "errmsg": "invalid grant_type"}
    if query.get("appid") != DEMO_APPID:
        return {"errcode": 40013, "errmsg": "invalid appid"}
    if query.get("secret") != DEMO_APPSECRET:
        return {"errcode": 40125, "errmsg": "invalid appsecret"}
    return {"access_token": "DEMO-" + secrets.token_urlsafe(24), "expires_in": LIFETIME}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        parts = urlsplit(self.path)
        if parts.path != TOKEN_PATH:
            status, payload = 404, {"errcode": 404, "errmsg": "not found"}
        else:
            query = {name: values[0] for name, values in parse_qs(parts.query).items()}
            status, payload = 200, wechat_answer(query)
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        # The query string holds the app secret: the demo logs no requests.
        pass


class DemoProvider:
    """The WeChat-format provider on 127.0.0.1:`port` (0: any free port), in a thread."""

    def __init__(self, port: int = 0):
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}{TOKEN_PATH}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


@transaction.atomic
def demo_setup(provider_url: str) -> tuple[Client, str]:
    """
    The realm DEMO_REALM (WeChat's preset, pointed at the demo provider), its
    secret DEMO_KEY with the demo app's credentials, and a fresh client
    DEMO_CLIENT that may read and flush its tokens (an earlier demo client is
    deleted, its tokens revoked). Returns the client and its secret.
    """
    realm = dict(preset_get("wechat_official_account")["realm"])
    realm["config"] = dict(realm["config"], url=provider_url)
    realm["comment"] = "The offline demo's WeChat-format provider (manage.py demo)."
    realm_upsert(DEMO_REALM, realm)
    secret_upsert(
        DEMO_REALM, DEMO_KEY, {"key_1": DEMO_APPID, "key_2": DEMO_APPSECRET}, replace=True
    )
    for earlier in Client.objects.filter(name=DEMO_CLIENT):
        client_delete(earlier)
    return client_create(
        DEMO_CLIENT,
        scopes=[TOKEN_READ, TOKEN_FLUSH],
        allow=[f"{DEMO_REALM}/*"],
        comment="Created by manage.py demo.",
    )
