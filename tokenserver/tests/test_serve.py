"""
The production command (`python serve.py`, granian): it serves, its workers run
with the allocator configuration that keeps their memory in bounds (issue 10),
the console is styled with nothing collected beforehand (issue 12), and SIGTERM
stops it promptly.
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

from tests.factories import stored_token
from tests.helpers import child_env, wait_until
from tests.helpers import production_server as serve_process
from tokens.models import StoredToken

pytestmark = pytest.mark.django_db(transaction=True)


COMMANDS = {
    "serve.py": [sys.executable, "serve.py"],
    # The README's measured alternative, with its config file.
    "gunicorn.conf.py": [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "gunicorn.conf.py",
        "tokenserver.wsgi",
    ],
}


@pytest.fixture(params=["serve.py"])
def production_server(request, tmp_path):
    with serve_process(COMMANDS[request.param], tmp_path) as server:
        yield server, server.base


def test_serve_answers_and_says_which_backends(production_server):
    server, base = production_server

    answer = requests.get(f"{base}/healthz", timeout=5)

    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    said = server.log_tail(5000)
    assert "database: " in said and "cache: " in said and "lock: " in said
    if connection.vendor == "mysql":
        assert "MySQL/MariaDB at" in said
    assert "@" not in said.split("database: ")[1].splitlines()[0]  # no user or password


# Run in a fresh interpreter: an import hook notes the allocator's configuration at
# the moment granian is first imported.
ALLOCATOR_PROBE = """
import os, sys

class Watch:
    seen = None

    def find_spec(self, name, path=None, target=None):
        if name == "granian" and Watch.seen is None:
            Watch.seen = os.environ.get("_RJEM_MALLOC_CONF", "unset")

sys.meta_path.insert(0, Watch())
import serve
print(Watch.seen)
"""


def test_serve_configures_the_allocator_before_granian_is_imported():
    # jemalloc (granian's allocator) reads _RJEM_MALLOC_CONF once, when the process
    # starts allocating: serve.py must set it before granian is imported; the workers,
    # forked from that process, keep it. `make bench` shows what it buys (issue 10).
    env = {key: value for key, value in child_env().items() if key != "_RJEM_MALLOC_CONF"}

    seen = subprocess.run(
        [sys.executable, "-c", ALLOCATOR_PROBE],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    assert "dirty_decay_ms:0" in seen and "muzzy_decay_ms:0" in seen


CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


@pytest.mark.parametrize("production_server", list(COMMANDS), indirect=True)
def test_the_console_is_styled_under_the_production_server(production_server):
    # Issue 12: under the production command with DEBUG off, the admin stylesheet was a
    # 404 (nothing collected the static files on that path).
    _, base = production_server

    page = requests.get(f"{base}/admin/login/", timeout=5)
    assets = sorted(set(re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)))

    assert page.status_code == 200
    assert "/static/admin/css/base.css" in assets
    for asset in assets:
        answer = requests.get(f"{base}{asset}", timeout=5)
        assert answer.status_code == 200, asset
        suffix = asset[asset.rindex(".") :]
        expected = CONTENT_TYPES.get(suffix)
        if expected:
            assert answer.headers["Content-Type"].startswith(expected), (asset, answer.headers)


def test_serve_stops_on_sigterm(production_server):
    server, _ = production_server

    server.process.send_signal(signal.SIGTERM)

    wait_until(lambda: server.process.poll() is not None, 35, message="serve.py did not stop")
    assert server.process.returncode == 0


# --- The refresher beside the server (issue 13: one production command) ----------------


def cmdline(pid) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def children_of(pid) -> list[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:
            pass
    return sorted(found)


def refreshers_of(pid) -> list[int]:
    return [child for child in children_of(pid) if "refresh_tokens" in cmdline(child)]


@pytest.fixture
def server_with_refresher(tmp_path):
    command = [sys.executable, "serve.py", "--refresher"]
    with serve_process(command, tmp_path, TOKENSERVER_REFRESH_INTERVAL="1") as server:
        yield server


def test_the_refresher_runs_beside_the_server_and_refreshes_unasked(
    server_with_refresher, upstream, wechat_secret
):
    # A token 10 s from expiring, well inside its realm's margin: nobody asks for it.
    upstream.reply("/cgi-bin/token", {"access_token": "REFRESHED", "expires_in": 7200})
    stored_token(wechat_secret, token="OLD", age=7190, left=10)

    wait_until(
        lambda: StoredToken.objects.get(secret=wechat_secret).token == "REFRESHED",
        30,
        message="the refresher refreshed the token",
    )
    assert len(refreshers_of(server_with_refresher.pid)) == 1


def test_a_refresher_that_dies_is_started_again(server_with_refresher):
    first = wait_until(lambda: refreshers_of(server_with_refresher.pid), 30)[0]

    os.kill(first, signal.SIGKILL)

    again = wait_until(
        lambda: [pid for pid in refreshers_of(server_with_refresher.pid) if pid != first],
        30,
        message="a new refresher",
    )
    assert again


def test_sigterm_stops_the_server_and_its_refresher(server_with_refresher):
    refresher = wait_until(lambda: refreshers_of(server_with_refresher.pid), 30)[0]

    server_with_refresher.process.send_signal(signal.SIGTERM)

    wait_until(lambda: server_with_refresher.process.poll() is not None, 40)
    assert server_with_refresher.process.returncode == 0
    wait_until(
        lambda: (
            not Path(f"/proc/{refresher}").exists() or "refresh_tokens" not in cmdline(refresher)
        ),
        10,
        message="the refresher stopped",
    )
