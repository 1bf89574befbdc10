"""
GET /metrics (issue 13): who may scrape (a bearer token from the settings, an
address allow-list, loopback when neither is configured), and, under the
production servers with several worker processes, one scrape adds up every
worker's counts, whichever worker answers it.
"""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict

from clients.access_tokens import access_token_issue
from clients.services import client_create
from tests.helpers import production_server, wait_until
from tests.metrics import samples, value
from tokens.testing import numbered_tokens
from tokenserver.tests.test_settings import run_manage

METRICS_TOKEN = "m" * 32


@pytest.fixture
def scraper(anonymous_api):
    def get(address="127.0.0.1", **headers):
        return anonymous_api.get("/metrics", REMOTE_ADDR=address, **headers)

    return get


# --- Who may scrape -----------------------------------------------------------------------


@pytest.mark.django_db
def test_with_nothing_configured_only_loopback_may_scrape(scraper):
    from_host = scraper("127.0.0.1")
    from_ipv6_host = scraper("::1")
    from_elsewhere = scraper("10.1.2.3")

    assert from_host.status_code == from_ipv6_host.status_code == 200
    assert from_host["Content-Type"].startswith("text/plain; version=")
    assert "tokenserver_token_requests" in from_host.content.decode()
    assert from_elsewhere.status_code == 403
    assert from_elsewhere.json()["error"] == "permission_denied"
    assert from_elsewhere.json()["request_id"] == from_elsewhere["X-Request-ID"]


@pytest.mark.django_db
def test_a_configured_token_is_required_even_from_loopback(scraper, settings):
    settings.TOKENSERVER_METRICS_TOKEN = METRICS_TOKEN

    without = scraper()
    wrong = scraper(HTTP_AUTHORIZATION="Bearer " + "x" * 32)
    right = scraper("10.9.9.9", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")

    assert without.status_code == wrong.status_code == 401
    assert without["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert METRICS_TOKEN not in without.content.decode()
    assert right.status_code == 200


@pytest.mark.django_db
def test_allowed_addresses_may_scrape_and_others_not(scraper, settings):
    settings.TOKENSERVER_METRICS_ALLOWED_IPS = ["10.0.0.0/8", "192.0.2.7"]

    assert scraper("10.1.2.3").status_code == 200
    assert scraper("192.0.2.7").status_code == 200
    assert scraper("192.0.2.8").status_code == 403
    assert scraper("127.0.0.1").status_code == 403  # the list replaces the loopback default


@pytest.mark.django_db
def test_behind_a_proxy_the_address_it_appended_counts(scraper, settings):
    settings.TOKENSERVER_METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    settings.TOKENSERVER_BEHIND_PROXY = True

    allowed = scraper("172.16.0.1", HTTP_X_FORWARDED_FOR="192.0.2.1, 10.1.2.3")
    spoofed = scraper("172.16.0.1", HTTP_X_FORWARDED_FOR="10.1.2.3, 192.0.2.1")

    assert allowed.status_code == 200
    assert spoofed.status_code == 403


@pytest.mark.django_db
def test_token_or_address_either_suffices(scraper, settings):
    settings.TOKENSERVER_METRICS_TOKEN = METRICS_TOKEN
    settings.TOKENSERVER_METRICS_ALLOWED_IPS = ["10.0.0.0/8"]

    assert scraper("10.1.2.3").status_code == 200
    assert scraper("192.0.2.1", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").status_code == 200
    assert scraper("192.0.2.1").status_code == 401


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"TOKENSERVER_METRICS_TOKEN": "short"}, "at least 16 characters"),
        ({"TOKENSERVER_METRICS_ALLOWED_IPS": "10.0.0.0/8,nonsense"}, "entry 2 ('nonsense')"),
    ],
)
def test_a_bad_metrics_setting_stops_the_start(given, said):
    result = run_manage(DEBUG="on", **given)

    assert result.returncode != 0
    assert said in result.stderr


# --- The whole server's numbers -------------------------------------------------------------

COMMANDS = {
    "serve.py": [sys.executable, "serve.py"],
    "gunicorn.conf.py": [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
    + ["tokenserver.wsgi"],
}


def counted_by_pid(directory: Path) -> dict[int, float]:
    """Token requests each worker process has written to the shared directory."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        total = 0.0
        for key, number, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "tokenserver_token_requests_total":
                total += number
        if total:
            counts[int(path.stem.rpartition("_")[2])] = total
    return counts


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_scrape_adds_up_every_workers_counts(command, tmp_path, upstream, wechat_secret):
    upstream.reply_with("/cgi-bin/token", numbered_tokens())
    app, _ = client_create("app", scopes=["token:read"], allow=["wxgzh/*"])
    bearer, _ = access_token_issue(app.client_id, app.scopes, allow=app.allow)
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_999999.db").write_bytes(b"left over from an earlier start")

    with production_server(
        COMMANDS[command], tmp_path, WEB_CONCURRENCY="2", PROMETHEUS_MULTIPROC_DIR=str(shared)
    ) as server:
        assert not (shared / "counter_999999.db").exists()  # emptied at start
        sent = 0

        def both_workers_served():
            nonlocal sent
            # A new connection each time, so the kernel hands them to either worker.
            answer = requests.get(
                f"{server.base}/api/token?realm=wxgzh&key=wxgzh_secret",
                headers={"Authorization": f"Bearer {bearer}", "Connection": "close"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            sent += 1
            return len(counted_by_pid(shared)) >= 2

        wait_until(both_workers_served, 60, message="requests answered by both workers")
        scrapes = [
            requests.get(f"{server.base}/metrics", headers={"Connection": "close"}, timeout=10)
            for _ in range(6)
        ]

    for scrape in scrapes:
        assert scrape.status_code == 200
        text = scrape.content.decode()
        served = sum(
            number
            for (name, labels), number in samples(text).items()
            if name == "tokenserver_token_requests_total" and ("realm", "wxgzh") in labels
        )
        assert served == sent  # every worker's, whichever answered
        assert value(text, "tokenserver_processes", kind="web") == 2
        fetched = value(text, "tokenserver_upstream_fetches_total", realm="wxgzh", outcome="ok")
        assert fetched == 1
    assert not shared.exists() or not list(shared.glob("gauge_live*"))  # marked dead at exit


def live_workers(directory: Path) -> set[int]:
    return {int(path.stem.rpartition("_")[2]) for path in directory.glob("gauge_livesum_*.db")}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_dead_worker_leaves_its_counts_but_not_its_liveness(tmp_path, wechat_secret):
    # granian replaces a worker killed with SIGKILL without telling Python: the scrape
    # notices, drops the dead one's live gauge (tokenserver_processes) and keeps its counts.
    shared = tmp_path / "metrics"
    command = COMMANDS["serve.py"]
    with production_server(
        command, tmp_path, WEB_CONCURRENCY="2", PROMETHEUS_MULTIPROC_DIR=str(shared)
    ) as server:
        first = wait_until(lambda: len(live_workers(shared)) == 2 and live_workers(shared), 30)
        victim = min(first)

        os.kill(victim, signal.SIGKILL)

        def scrape():
            try:
                return requests.get(f"{server.base}/metrics", timeout=10).content.decode()
            except requests.ConnectionError:
                return ""  # a connection the killed worker had accepted: reset

        replaced = wait_until(
            lambda: (
                victim not in live_workers(shared) and len(live_workers(shared)) == 2
                if value(scrape(), "tokenserver_processes", kind="web") == 2
                else False
            ),
            60,
            message="the dead worker's live gauge dropped and its replacement counted",
        )
        assert replaced
        assert value(scrape(), "tokenserver_processes", kind="web") == 2
