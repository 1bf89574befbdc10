"""
Single-flight under real concurrency: many threads, and several server
processes, ask at once for a token nobody has yet; the upstream sees one call.

These tests commit their data (transaction=True) because the threads and the
gunicorn workers use their own database connections. They run on whichever
configuration the suite runs on: SQLite + local-memory cache + database lock,
or MariaDB + Redis + Redis lock.
"""

import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection, connections
from rest_framework.test import APIClient

from conftest import CHILD_ENV, numbered_tokens, stored_token
from tokens.models import FetchLog, StoredToken
from tokens.services import token_get
from tokens.testing import gunicorn_command

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BASE_DIR = Path(settings.BASE_DIR)


def run_at_once(count, function):
    """Run `function` in `count` threads released together; return results or exceptions."""
    barrier = threading.Barrier(count)

    def worker(_):
        barrier.wait()
        try:
            return function()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return exc
        finally:
            connections.close_all()  # this thread's connections

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(worker, range(count)))


def test_50_threads_on_a_cold_token_cause_one_upstream_call(upstream, wechat_secret):
    # A slow upstream keeps the window open: every thread arrives while the
    # first one is still fetching.
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.3))

    results = run_at_once(50, lambda: token_get("wxgzh", "wxgzh_secret"))

    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert {r.token for r in results} == {"TOKEN-1"}
    assert len(upstream.calls("/cgi-bin/token")) == 1
    assert FetchLog.objects.count() == 1
    # One request went upstream; the others got the token it brought.
    assert [r.source for r in results].count("upstream") == 1


def test_50_concurrent_flushes_share_one_upstream_call(upstream, wechat_secret):
    # No minimum interval: the flushes are coalesced by the single flight alone.
    wechat_secret.realm.min_flush_interval = 0
    wechat_secret.realm.save()
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.3))
    token_get("wxgzh", "wxgzh_secret")  # TOKEN-1, now cached

    results = run_at_once(50, lambda: token_get("wxgzh", "wxgzh_secret", flush=True))

    assert [r for r in results if isinstance(r, Exception)] == []
    assert {r.token for r in results} == {"TOKEN-2"}
    assert len(upstream.calls("/cgi-bin/token")) == 2


# --- Several processes: gunicorn -------------------------------------------------


def _database_url() -> str:
    """The test database, as a DATABASE_URL a child process can use."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}"
    return f"mysql://{db['USER']}{password}@{host}/{db['NAME']}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gunicorn_server(tmp_path):
    """tokenserver in gunicorn: 4 worker processes × 25 threads, on the test database."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "SECRET_KEY": settings.SECRET_KEY,
        "TOKENSERVER_ENCRYPTION_KEYS": ",".join(settings.TOKENSERVER_ENCRYPTION_KEYS),
        "CACHE_KEY_PREFIX": settings.CACHE_KEY_PREFIX,
        "TOKENSERVER_LOCK_BACKEND": settings.TOKENSERVER_LOCK_BACKEND,
        "ALLOWED_HOSTS": "127.0.0.1",
        "TOKENSERVER_ENV_FILE": "",
        "LOG_LEVEL": "WARNING",
        **CHILD_ENV,
    }
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    log = (tmp_path / "gunicorn.log").open("w+")
    process = subprocess.Popen(
        gunicorn_command(port, workers=4, threads=25),
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{base}/api/token", timeout=1)
            break
        except requests.RequestException:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"gunicorn exited: {log.read()[-2000:]}")
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("gunicorn did not start within 30 s")
    yield base
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture
def http_get(staff_user, gunicorn_server):
    """GET a path of the gunicorn server as the staff user (session cookie): (status, body)."""
    client = APIClient()
    client.force_login(staff_user)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    # Warm every worker's connections first, so the races below are about
    # tokens and not about start-up.
    for _ in range(8):
        requests.get(f"{gunicorn_server}/api/realm/wxgzh", cookies=cookies, timeout=10)

    def get(path):
        response = requests.get(f"{gunicorn_server}{path}", cookies=cookies, timeout=30)
        return response.status_code, response.json()

    return get


def test_4_processes_x_25_threads_cause_one_upstream_call(upstream, wechat_secret, http_get):
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.5))

    results = run_at_once(100, lambda: http_get("/api/token?realm=wxgzh&key=wxgzh_secret"))

    failures = [r for r in results if isinstance(r, Exception) or r[0] != 200]
    assert failures == []
    assert {body["token"] for _, body in results} == {"TOKEN-1"}
    assert len(upstream.calls("/cgi-bin/token")) == 1
    assert FetchLog.objects.filter(outcome="ok").count() == 1


def test_4_processes_stale_token_one_background_refresh_none_waits(
    upstream, wechat_secret, http_get
):
    # Issue 4: a token inside its margin is served at once by every worker;
    # exactly one request, in one process, starts the refresh.
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=1.0))
    stored_token(wechat_secret, token="STALE", age=7100, left=100)

    def timed():
        started = time.monotonic()
        status, body = http_get("/api/token?realm=wxgzh&key=wxgzh_secret")
        return status, body, time.monotonic() - started

    results = run_at_once(100, timed)

    assert [r for r in results if isinstance(r, Exception) or r[0] != 200] == []
    assert {body["token"] for _, body, _ in results} == {"STALE"}
    assert max(seconds for _, _, seconds in results) < 0.9  # the upstream takes 1 s
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and StoredToken.objects.get(secret=wechat_secret).token == "STALE"
    ):
        time.sleep(0.1)
    assert StoredToken.objects.get(secret=wechat_secret).token == "TOKEN-1"
    assert len(upstream.calls("/cgi-bin/token")) == 1


def test_300_flushes_across_4_processes_cause_one_upstream_call(upstream, wechat_secret, http_get):
    # Issue 4: a flush storm (a misbehaving app) burns one fetch, not 300.
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.5))
    stored_token(wechat_secret, token="OLD", age=600, left=6600)

    results = run_at_once(
        300, lambda: http_get("/api/token?realm=wxgzh&key=wxgzh_secret&flush=true")
    )

    assert [r for r in results if isinstance(r, Exception) or r[0] != 200] == []
    assert {body["token"] for _, body in results} == {"TOKEN-1"}
    assert len(upstream.calls("/cgi-bin/token")) == 1
    assert FetchLog.objects.filter(trigger="flush", outcome="ok").count() == 1
