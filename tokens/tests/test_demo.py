"""
The offline demo (issue 13, "a newcomer's first hour"): `make demo` serves a
WeChat-format provider on loopback and sets up a realm, a secret and a client
for it, so the README's walkthrough, apps section included, runs offline.
"""

import re
import sys

import pytest
import requests
from django.core.management import CommandError, call_command

from clients.models import Client
from clients.scopes import pattern_allows
from tests.helpers import ChildProcess, child_env, free_port, wait_until
from tokens.demo import DEMO_APPID, DEMO_APPSECRET, DemoProvider, demo_setup
from tokens.models import FetchLog
from tokens.services import token_get


@pytest.fixture
def provider():
    with DemoProvider() as demo:
        yield demo


def test_the_provider_speaks_wechat(provider):
    asked = {"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_APPSECRET}

    first = requests.get(provider.url, params=asked, timeout=5).json()
    second = requests.get(provider.url, params=asked, timeout=5).json()
    wrong = requests.get(provider.url, params={**asked, "secret": "nope"}, timeout=5)

    assert first["expires_in"] == 7200 and first["access_token"] != second["access_token"]
    # WeChat refuses inside an HTTP 200, with an errcode.
    assert wrong.status_code == 200
    assert wrong.json() == {"errcode": 40125, "errmsg": "invalid appsecret"}


@pytest.mark.django_db
def test_demo_setup_gives_a_working_realm_secret_and_client(provider):
    client, secret = demo_setup(provider.url)

    result = token_get("demo", "demo_app")

    assert result.source == "upstream" and result.token.startswith("DEMO-")
    assert pattern_allows(client.allow, "demo", "demo_app") and secret
    # Run again: still one demo client (the earlier one deleted, its tokens revoked).
    demo_setup(provider.url)
    assert Client.objects.filter(name="demo-app").count() == 1


def test_demo_refuses_a_server_that_may_not_fetch_from_loopback(settings):
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = []

    with pytest.raises(CommandError, match="TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS=127.0.0.1/32"):
        call_command("demo", "--provider-port", "0")


@pytest.mark.django_db(transaction=True)
def test_make_demo_runs_the_apps_walkthrough_offline(tmp_path):
    # Arrange: the command `make demo` runs, on the test database.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    demo = ChildProcess(
        [
            sys.executable,
            "manage.py",
            "demo",
            "--provider-port",
            "0",
            "--serve",
            f"127.0.0.1:{port}",
        ],
        env=child_env(
            TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS="127.0.0.1/32",
            ALLOWED_HOSTS="127.0.0.1",
            DEBUG="off",
            PYTHONUNBUFFERED="1",
        ),
        log=tmp_path / "demo.log",
        ready=lambda: requests.get(f"{base}/healthz", timeout=1).status_code == 200,
        start_timeout=60,
    )
    with demo:
        printed = wait_until(
            lambda: "client_secret:" in demo.log_tail(10_000) and demo.log_tail(10_000)
        )
        client_id = re.search(r"client_id:\s+(\S+)", printed).group(1)
        client_secret = re.search(r"client_secret:\s+(\S+)", printed).group(1)

        # Act: what the printed walkthrough tells an app to do.
        exchanged = requests.post(
            f"{base}/api/auth/token",
            auth=(client_id, client_secret),
            data={"grant_type": "client_credentials"},
            timeout=10,
        )
        access_token = exchanged.json()["access_token"]
        answer = requests.get(
            f"{base}/api/token",
            params={"realm": "demo", "key": "demo_app"},
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=10,
        )

    # Assert: a token from the demo provider, fetched once, and no secret in the log.
    assert answer.status_code == 200, answer.text
    assert answer.json()["token"].startswith("DEMO-")
    assert answer.json()["source"] == "upstream"
    assert FetchLog.objects.filter(realm="demo", key="demo_app").count() == 1
    assert DEMO_APPSECRET not in (tmp_path / "demo.log").read_text()
