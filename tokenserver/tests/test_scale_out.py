"""
Several hosts on real engines (issue 13): the production server (serve.py) on
MariaDB and Redis, twice side by side, and on Redis behind Sentinel while its
primary is killed under traffic.

These run only in CI's MariaDB + Redis pass (REDIS_URL set, MySQL/MariaDB as the
database): that is the configuration several hosts share. The Sentinel test
starts its own Redis primary, replica and three Sentinels (tests/redis_servers.py).
"""

import itertools
import sys
import threading
import time
from dataclasses import dataclass

import pytest
import requests
from django.conf import settings
from django.core.cache import cache

from clients.access_tokens import access_token_issue
from clients.services import client_create
from clients.throttles import rate_counter
from tests.helpers import production_server, run_at_once, wait_until
from tests.redis_servers import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SentinelSet, redis_available
from tokens.models import FetchLog
from tokens.testing import numbered_tokens

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(
        not settings.REDIS_URL or not settings.DATABASES["default"]["ENGINE"].endswith("mysql"),
        reason="runs in the MariaDB + Redis pass (REDIS_URL set, MySQL/MariaDB)",
    ),
]

SERVE = [sys.executable, "serve.py"]
TOKEN_PATH = "/api/token?realm=wxgzh&key=wxgzh_secret"


def number(token: str) -> int:
    """TOKEN-7 → 7 (numbered_tokens hands out one new number per upstream call)."""
    return int(token.rsplit("-", 1)[1])


@pytest.fixture
def app(db):
    """An app's client (it may read and flush wxgzh's tokens): (client_id, its headers)."""
    client, _ = client_create("app", scopes=["token:read", "token:flush"], allow=["wxgzh/*"])
    token, _ = access_token_issue(client.client_id, client.scopes, allow=client.allow)
    return client.client_id, {"Authorization": f"Bearer {token}"}


@dataclass
class Answer:
    started: float  # monotonic
    finished: float
    status: int
    token: str | None


def ask(session, base, headers, query="") -> Answer:
    """One GET /api/token (plus `query`), timed."""
    started = time.monotonic()
    try:
        response = session.get(f"{base}{TOKEN_PATH}{query}", headers=headers, timeout=30)
        status, body = response.status_code, response.json()
    except (requests.RequestException, ValueError):
        status, body = 0, {}
    return Answer(started, time.monotonic(), status, body.get("token"))


class Traffic:
    """App traffic in the background: `threads` loops of GET /api/token, every answer kept."""

    def __init__(self, base, headers, threads=4):
        self.base, self.headers = base, headers
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self):
        with requests.Session() as session:
            while not self._stop.is_set():
                self.answers.append(ask(session, self.base, self.headers))
                self._stop.wait(0.01)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join(35)


def replace_round(base, headers, current: int, callers=10) -> tuple[float, int]:
    """
    `callers` apps report TOKEN-`current` rejected at once (compare-and-refresh):
    they must all get the one token that replaced it. Returns (when the last
    answered, the new token's number).
    """

    def report():
        with requests.Session() as session:
            return ask(session, base, headers, f"&rejected=TOKEN-{current}")

    answers = run_at_once(callers, report)
    assert [a.status for a in answers] == [200] * callers, answers
    tokens = {a.token for a in answers}
    assert len(tokens) == 1, tokens
    replaced_by = number(tokens.pop())
    assert replaced_by > current
    return max(a.finished for a in answers), replaced_by


def test_redis_primary_killed_under_traffic_fails_over_without_stale_tokens_or_extra_fetches(
    tmp_path, upstream, wechat_secret, app
):
    # Issue 13: tokenserver on Redis behind Sentinel (a primary, a replica, three
    # Sentinels), the primary killed while apps ask for tokens and report them
    # rejected.
    if not redis_available():
        pytest.skip("redis-server and redis-sentinel are not installed")
    client_id, headers = app
    realm = wechat_secret.realm
    realm.min_flush_interval = 0  # every rejected report refreshes: many refreshes to count
    realm.timeout = 5
    realm.save()
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.2))
    failover_time = (DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS) / 1000

    with (
        SentinelSet(tmp_path / "redis") as redis_set,
        production_server(SERVE, tmp_path, REDIS_URL=redis_set.url, WEB_THREADS="8") as server,
    ):
        base = server.base
        assert "through Sentinel" in server.log_tail(5000)
        with requests.Session() as session:
            assert ask(session, base, headers).token == "TOKEN-1"  # cold: the first fetch
        rounds = []  # (when it ended, the token that replaced the old one)
        current = 1
        with Traffic(base, headers) as traffic:
            for _ in range(2):
                ended, current = replace_round(base, headers, current)
                rounds.append((ended, current))

            # Act: the primary dies (SIGKILL, as a crash), apps keep asking and reporting.
            killed_at = time.monotonic()
            redis_set.primary.kill()
            while redis_set.primary_port() != redis_set.replica.port:
                ended, current = replace_round(base, headers, current)
                rounds.append((ended, current))
                assert time.monotonic() - killed_at < 30, "the replica was not promoted"
            promoted_at = time.monotonic()

            # The app finds the new primary: an entry dropped there is written back, and
            # the client's rate-limit window is counted there.
            new_primary = redis_set.replica.client()
            entry = cache.make_key("token:wxgzh:wxgzh_secret")
            window = cache.make_key(f"window:{rate_counter(client_id)}")
            new_primary.delete(entry, window)
            wait_until(
                lambda: new_primary.exists(entry) and new_primary.exists(window),
                30,
                interval=0.05,
                message="the app wrote its cache entry and rate window on the new primary",
            )
            in_use_at = time.monotonic()

            for _ in range(3):  # refreshes once the new primary is up
                ended, current = replace_round(base, headers, current)
                rounds.append((ended, current))

        # Requests were served throughout: the token path ran on the database while
        # Redis was away, and no stretch without an answer lasted the failover time.
        after_kill = sorted(a.finished for a in traffic.answers if a.status == 200)
        after_kill = [killed_at] + [t for t in after_kill if t > killed_at]
        longest_gap = max(b - a for a, b in itertools.pairwise(after_kill))
        assert longest_gap < failover_time, longest_gap
        failed = [a for a in traffic.answers if a.status != 200]
        assert failed == [], failed
        # No token was served after it was replaced: an answer to a request sent after
        # a round ended carries that round's token or a newer one.
        for ended, replaced_by in rounds:
            stale = [
                a.token
                for a in traffic.answers
                if a.status == 200 and a.started > ended and number(a.token) < replaced_by
            ]
            assert stale == [], (replaced_by, stale)
        # One upstream call per refresh, before, during and after the failover: the
        # database lease keeps the single flight while the Redis lock is away.
        assert len(upstream.calls("/cgi-bin/token")) == 1 + len(rounds) == current
        assert FetchLog.objects.filter(outcome="ok").count() == current
        print(
            f"\nfailover: replica promoted {promoted_at - killed_at:.1f} s after the kill, "
            f"Redis in use again after {in_use_at - killed_at:.1f} s, longest wait for an "
            f"answer {longest_gap:.2f} s, {len(traffic.answers)} requests, "
            f"{len(rounds)} refreshes, {current} upstream calls"
        )


def test_two_instances_share_one_upstream_call_and_see_each_others_flushes(
    tmp_path, upstream, wechat_secret, app
):
    # Issue 13: two production servers (different ports, as on two hosts) on one
    # MariaDB and one Redis.
    _, headers = app
    realm = wechat_secret.realm
    realm.timeout = 10  # far above the upstream's 0.5 s on a busy machine
    realm.min_flush_interval = 0
    realm.save()
    upstream.reply_with("/cgi-bin/token", numbered_tokens(delay=0.5))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    instance = dict(WEB_CONCURRENCY="2", WEB_THREADS="8")

    with (
        production_server(SERVE, tmp_path / "a", **instance) as first,
        production_server(SERVE, tmp_path / "b", **instance) as second,
    ):
        bases = itertools.cycle([first.base, second.base])
        lock = threading.Lock()

        def cold_request():
            with lock:
                base = next(bases)
            with requests.Session() as session:
                return base, ask(session, base, headers)

        # 300 concurrent cold requests, half through each instance.
        results = run_at_once(300, cold_request)

        assert [r for r in results if isinstance(r, Exception) or r[1].status != 200] == []
        assert {answer.token for _, answer in results} == {"TOKEN-1"}
        assert {base for base, _ in results} == {first.base, second.base}
        assert len(upstream.calls("/cgi-bin/token")) == 1

        # A flush through one instance is what the other hands out, at once.
        with requests.Session() as session:
            rejected = ask(session, first.base, headers, "&rejected=TOKEN-1")
            seen = ask(session, second.base, headers)
            flushed = ask(session, second.base, headers, "&flush=true")
            seen_again = ask(session, first.base, headers)

        assert (rejected.token, seen.token) == ("TOKEN-2", "TOKEN-2")
        assert (flushed.token, seen_again.token) == ("TOKEN-3", "TOKEN-3")
        assert len(upstream.calls("/cgi-bin/token")) == 3
