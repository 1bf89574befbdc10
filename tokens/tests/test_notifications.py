"""
Failure notifications (issue 13): operators are told when a secret's refresh
starts failing and when it recovers, once per change of state, not per
attempt, across every process; by a signed webhook delivered outside the
request path with bounded retries. The receiver is a real HTTP server on
127.0.0.1 (the `webhook` fixture), the token provider the fake upstream.
"""

import json
import logging
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from tests.factories import WEBHOOK_SECRET, SecretFactory
from tests.helpers import child_env, free_port, run_at_once, wait_until
from tokens.dashboard import dashboard_summary, needs_attention
from tokens.models import FetchLog, Notification, RefreshHealth
from tokens.notifications import SIGNATURE_HEADER, notifications_send_due, sender
from tokens.refresh_health import failing_secrets_per_realm, refresh_failed, refresh_succeeded
from tokens.services import token_get, token_test_fetch
from tokens.tests.test_faults import database_down
from tokenserver.errors import UpstreamError, UpstreamUnavailable
from tokenserver.outbox import outbox

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN_PATH = "/cgi-bin/token"
REFUSED = {"errcode": 40013, "errmsg": "invalid appid"}
GRANTED = {"access_token": "ACCESS-TOKEN-0123456789", "expires_in": 7200}


def received(receiver):
    """The notifications the receiver got, as JSON, in order."""
    return [json.loads(call["body"]) for call in receiver.calls("/hook")]


def settled():
    """Nothing left to send and the sender thread has ended."""
    return not Notification.objects.filter(done=False).exists() and sender.idle()


def fail(secret):
    """One request for the secret's token while the provider refuses it."""
    with pytest.raises(UpstreamError):
        token_get(secret.realm_id, secret.name, flush=True)


def readme_verifier():
    """The README's verification snippet ("Failure notifications"), run as written."""
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    section = readme.split("## Failure notifications", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    namespace = {}
    exec(code, namespace)  # noqa: S102 - our own README, checked to stay true
    return namespace["verify"]


# --- Once per change of state ----------------------------------------------------------


def test_a_failing_refresh_notifies_once_and_more_failures_do_not(webhook, upstream, wechat_secret):
    upstream.reply(TOKEN_PATH, REFUSED)

    fail(wechat_secret)
    wait_until(lambda: len(webhook.calls("/hook")) == 1)
    for _ in range(3):
        fail(wechat_secret)
    wait_until(settled)

    [notification] = received(webhook)
    assert notification["outcome"] == "failing"
    assert (notification["realm"], notification["key"]) == ("wxgzh", "wxgzh_secret")
    assert notification["fetch_outcome"] == "upstream_error"
    assert (notification["error_code"], notification["error_message"]) == ("40013", "invalid appid")
    assert notification["attempts"] == 1
    health = RefreshHealth.objects.get(secret=wechat_secret)
    assert health.failing and health.attempts == 4
    assert notification["failing_since"] == health.failing_since.isoformat()
    assert Notification.objects.get().status == "delivered"


def test_recovery_notifies_once_with_when_it_began_and_how_many_attempts_failed(
    webhook, upstream, wechat_secret
):
    upstream.reply(TOKEN_PATH, REFUSED)
    fail(wechat_secret)
    fail(wechat_secret)
    upstream.reply(TOKEN_PATH, GRANTED)

    token_get("wxgzh", "wxgzh_secret", flush=True)
    assert token_test_fetch("wxgzh", "wxgzh_secret")["ok"]  # a second ok fetch
    wait_until(lambda: settled() and len(webhook.calls("/hook")) == 2)

    failing, recovered = received(webhook)
    assert (failing["outcome"], recovered["outcome"]) == ("failing", "recovered")
    assert recovered["failing_since"] == failing["failing_since"]
    assert recovered["attempts"] == 2
    assert recovered["error_code"] == "40013"  # the last error before it recovered
    assert not RefreshHealth.objects.get(secret=wechat_secret).failing
    assert len(upstream.calls(TOKEN_PATH)) == 4


def test_failures_retried_within_one_refresh_count_as_attempts_and_a_blip_is_no_failure(
    webhook, upstream, wechat_secret
):
    wechat_secret.realm.max_retries = 2
    wechat_secret.realm.save()
    answers = iter([(503, {}), (200, GRANTED)])
    upstream.reply_with(TOKEN_PATH, lambda number: (*next(answers, (503, {})), 0))

    token_get("wxgzh", "wxgzh_secret")  # a 503, retried: a token
    upstream.reply(TOKEN_PATH, {}, status=503)
    assert not token_test_fetch("wxgzh", "wxgzh_secret")["ok"]  # 3 attempts, all 503
    wait_until(settled)

    [notification] = received(webhook)
    assert notification["attempts"] == 3
    assert notification["fetch_outcome"] == FetchLog.Outcome.UPSTREAM_ERROR
    assert notification["error_code"] == ""


def test_a_refusal_by_the_realms_guards_is_a_failure_too(webhook, upstream, wechat_secret):
    wechat_secret.realm.breaker_threshold = 1
    wechat_secret.realm.max_retries = 0
    wechat_secret.realm.save()
    upstream.reply(TOKEN_PATH, {}, status=502)
    with pytest.raises(UpstreamError):
        token_get("wxgzh", "wxgzh_secret")

    with pytest.raises(UpstreamUnavailable):
        token_get("wxgzh", "wxgzh_secret")  # the breaker is open: not sent
    wait_until(settled)

    assert len(received(webhook)) == 1
    health = RefreshHealth.objects.get(secret=wechat_secret)
    assert (health.attempts, health.last_outcome, health.last_error_code) == (
        2,
        "rejected",
        "circuit_open",
    )


def test_threads_racing_on_the_same_failure_make_one_transition(webhook, wechat_secret):
    at = timezone.now()

    def record():
        return refresh_failed(
            wechat_secret.pk, "wxgzh", "wxgzh_secret", "timeout", "", "timed out", 1, at
        )

    made = run_at_once(12, record)

    assert made.count(True) == 1, made
    assert made.count(False) == 11
    assert RefreshHealth.objects.get(secret=wechat_secret).attempts == 12
    assert Notification.objects.filter(outcome="failing").count() == 1

    recovered = run_at_once(12, lambda: refresh_succeeded(wechat_secret.pk, "wxgzh", "k", at))

    assert recovered.count(True) == 1, recovered
    assert Notification.objects.get(outcome="recovered").attempts == 12
    wait_until(lambda: settled() and len(webhook.calls("/hook")) == 2)


RACER = """
import sys, time
import django
django.setup()
from django.utils import timezone
from tokens.refresh_health import refresh_failed
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
pk = int(sys.argv[1])
made = refresh_failed(pk, "wxgzh", "wxgzh_secret", "timeout", "", "", 1, timezone.now())
print("MADE" if made else "SEEN")
"""


@pytest.mark.slow
def test_processes_racing_on_the_same_failure_make_one_transition(webhook, wechat_secret):
    # Four processes (four app instances, say), released at the same instant.
    start = time.time() + 4
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(wechat_secret.pk), str(start)],
            cwd=settings.BASE_DIR,
            env=child_env(
                TOKENSERVER_WEBHOOK_URL=settings.TOKENSERVER_WEBHOOK_URL,
                TOKENSERVER_WEBHOOK_SECRET=WEBHOOK_SECRET,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        answers = [racer.communicate(timeout=60) for racer in racers]
    finally:
        for racer in racers:
            racer.kill()

    said = [out.strip().splitlines()[-1] if out.strip() else err for out, err in answers]
    assert sorted(said) == ["MADE", "SEEN", "SEEN", "SEEN"], said
    assert RefreshHealth.objects.get(secret=wechat_secret).attempts == 4
    assert Notification.objects.count() == 1


# --- Outside the request path, retried, then given up ------------------------------------


def test_the_request_that_fails_does_not_wait_for_the_webhook(
    webhook, settings, upstream, wechat_secret
):
    settings.TOKENSERVER_WEBHOOK_TIMEOUT = 5.0
    webhook.reply("/hook", {"ok": True}, delay=2.0)  # a slow receiver
    upstream.reply(TOKEN_PATH, REFUSED)

    started = time.monotonic()
    fail(wechat_secret)
    elapsed = time.monotonic() - started

    assert elapsed < 1.0
    wait_until(settled, timeout=10)
    assert Notification.objects.get().status == "delivered"


def test_a_receiver_answering_errors_is_retried_with_backoff_then_given_up(
    webhook, upstream, wechat_secret, caplog
):
    webhook.reply("/hook", {"error": "down for maintenance"}, status=500)
    upstream.reply(TOKEN_PATH, REFUSED)

    with caplog.at_level(logging.INFO, logger="tokens.notifications"):
        fail(wechat_secret)
        wait_until(settled)

    tries = webhook.calls("/hook")
    assert len(tries) == 3  # TOKENSERVER_WEBHOOK_MAX_TRIES
    gaps = [later["at"] - earlier["at"] for earlier, later in zip(tries, tries[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1, gaps  # RETRY_BASE, then twice that
    notification = Notification.objects.get()
    assert (notification.status, notification.tries, notification.last_error) == (
        "given up",
        3,
        "HTTP 500",
    )
    [given_up] = [r for r in caplog.records if "given up" in r.getMessage()]
    assert given_up.levelname == "WARNING"
    assert given_up.getMessage() == (
        f"notification {notification.pk} (wxgzh/wxgzh_secret failing) given up after 3 tries: "
        "HTTP 500"
    )


def test_a_receiver_that_is_down_is_retried_then_given_up_without_its_url_in_the_log(
    webhook, settings, upstream, wechat_secret, caplog
):
    settings.TOKENSERVER_WEBHOOK_URL = f"http://127.0.0.1:{free_port()}/hook/credential-in-path"
    upstream.reply(TOKEN_PATH, REFUSED)

    with caplog.at_level(logging.INFO):
        fail(wechat_secret)
        wait_until(settled)

    notification = Notification.objects.get()
    assert (notification.status, notification.tries) == ("given up", 3)
    assert notification.last_error == "unreachable"
    assert any("given up after 3 tries: unreachable" in r.getMessage() for r in caplog.records)
    assert "credential-in-path" not in caplog.text


def test_the_guard_applies_at_delivery_too(webhook, settings, upstream, wechat_secret):
    upstream.reply(TOKEN_PATH, REFUSED)
    fail(wechat_secret)
    wait_until(settled)
    # The receiver's network was allowed at start-up, and no longer is (as when a
    # DNS answer changes): the connection itself checks the address again.
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = []

    refresh_succeeded(wechat_secret.pk, "wxgzh", "wxgzh_secret", timezone.now())
    wait_until(settled)

    assert len(webhook.calls("/hook")) == 1  # the failing one, before
    recovered = Notification.objects.get(outcome="recovered")
    assert recovered.status == "given up"
    assert "127.0.0.1 refused: 127.0.0.1 is a loopback" in recovered.last_error


def test_a_failure_seen_while_the_database_is_down_is_notified_once_it_is_back(
    webhook, upstream, wechat_secret, caplog
):
    upstream.reply(TOKEN_PATH, REFUSED)
    tables = ["tokens_fetchlog", "tokens_refreshhealth", "tokens_notification"]

    with database_down(writes_to=tables):
        fail(wechat_secret)
    # Deferred with the fetch log's row (tokenserver.outbox), in order.
    assert "database write deferred" in caplog.text

    def flushed():
        outbox.flush()
        return len(outbox) == 0

    wait_until(flushed, timeout=10, message="the pending writes landed")
    wait_until(lambda: settled() and len(webhook.calls("/hook")) == 1)
    assert received(webhook)[0]["outcome"] == "failing"
    assert RefreshHealth.objects.get(secret=wechat_secret).failing


def test_a_notification_left_pending_is_sent_by_the_refresher(webhook, wechat_secret):
    # Queued by a process that stopped before its sender ran (nothing in memory survives).
    Notification.objects.create(
        realm="wxgzh",
        key="wxgzh_secret",
        outcome="failing",
        fetch_outcome="timeout",
        failing_since=timezone.now(),
        attempts=1,
    )

    call_command("refresh_tokens")

    [notification] = received(webhook)
    assert notification["fetch_outcome"] == "timeout"
    assert Notification.objects.get().status == "delivered"


def test_only_what_is_due_and_unclaimed_is_sent(webhook, wechat_secret):
    now = timezone.now()
    common = {"realm": "wxgzh", "key": "k", "outcome": "failing", "failing_since": now}
    Notification.objects.create(**common, attempts=1, next_try_at=now + timedelta(minutes=5))
    Notification.objects.create(**common, attempts=2, claimed_until=now + timedelta(minutes=1))
    Notification.objects.create(**common, attempts=3, done=True)

    assert notifications_send_due(now) == 0
    assert webhook.calls("/hook") == []


# --- What is sent -------------------------------------------------------------------------


def test_the_signature_verifies_and_a_tampered_body_or_an_old_timestamp_does_not(
    webhook, upstream, wechat_secret
):
    upstream.reply(TOKEN_PATH, REFUSED)
    fail(wechat_secret)
    wait_until(settled)
    [call] = webhook.calls("/hook")
    header, body = call["headers"][SIGNATURE_HEADER], call["body"]
    verify = readme_verifier()

    assert verify(body, header, WEBHOOK_SECRET)
    assert not verify(body.replace(b"failing", b"recover"), header, WEBHOOK_SECRET)
    assert not verify(body, header, "another secret")
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert verify(body, header, WEBHOOK_SECRET, now=timestamp + 299)
    assert not verify(body, header, WEBHOOK_SECRET, now=timestamp + 301)  # a replay
    assert not verify(body, "t=abc,v1=00", WEBHOOK_SECRET)


def test_a_notification_carries_no_token_and_no_secret_value(webhook, upstream, wechat_secret):
    upstream.reply(TOKEN_PATH, {"errcode": 40001, "errmsg": f"bad secret {wechat_secret.key_2}"})
    fail(wechat_secret)
    upstream.reply(TOKEN_PATH, GRANTED)
    token_get("wxgzh", "wxgzh_secret", flush=True)
    wait_until(lambda: settled() and len(webhook.calls("/hook")) == 2)

    sent = b"".join(call["body"] for call in webhook.calls("/hook")).decode()
    for value in (wechat_secret.key_1, wechat_secret.key_2, GRANTED["access_token"]):
        assert value not in sent
    assert "bad secret ***" in sent


def test_without_a_webhook_the_state_is_kept_and_nothing_is_queued(upstream, wechat_secret):
    upstream.reply(TOKEN_PATH, REFUSED)

    fail(wechat_secret)

    assert RefreshHealth.objects.get(secret=wechat_secret).failing
    assert not Notification.objects.exists()


# --- The metric's source ---------------------------------------------------------------


def test_failing_secrets_are_counted_per_realm_enabled_ones_only(wechat_secret):
    other = SecretFactory(realm=wechat_secret.realm, name="other")
    disabled = SecretFactory(realm=wechat_secret.realm, name="off", enabled=False)
    at = timezone.now()
    for secret in (wechat_secret, other, disabled):
        refresh_failed(secret.pk, "wxgzh", secret.name, "timeout", "", "", 1, at)
    refresh_succeeded(other.pk, "wxgzh", "other", at)

    assert failing_secrets_per_realm() == {"wxgzh": 1}


# --- Start-up ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"TOKENSERVER_WEBHOOK_URL": "hooks.example.com/x"}, "tokens.E003"),
        ({"TOKENSERVER_WEBHOOK_URL": "ftp://hooks.example.com/x"}, "tokens.E003"),
        ({"TOKENSERVER_WEBHOOK_URL": "http://hooks.example.com:99999/x"}, "tokens.E003"),
        ({"TOKENSERVER_WEBHOOK_URL": "http://169.254.169.254/latest"}, "tokens.E004"),
        ({"TOKENSERVER_WEBHOOK_URL": "http://10.1.2.3/hook"}, "tokens.E004"),
        ({"TOKENSERVER_WEBHOOK_SECRET": ""}, "tokens.E005"),
    ],
)
def test_a_webhook_that_cannot_work_stops_the_start_up(settings, given, error):
    settings.TOKENSERVER_WEBHOOK_URL = "https://hooks.example.com/tokenserver"
    settings.TOKENSERVER_WEBHOOK_SECRET = WEBHOOK_SECRET
    for name, value in given.items():
        setattr(settings, name, value)

    with pytest.raises(Exception, match=error):  # CommandError: SystemCheckError
        call_command("check")


def test_a_private_receiver_passes_once_its_network_is_allowed(settings):
    settings.TOKENSERVER_WEBHOOK_URL = "http://10.1.2.3/hook"
    settings.TOKENSERVER_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    call_command("check")


def manage_check(**env):
    """`manage.py check` in a process of its own, as a production start runs it."""
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_a_refused_webhook_url_stops_a_production_start_without_showing_it():
    result = manage_check(
        TOKENSERVER_WEBHOOK_URL="http://169.254.169.254/hook/credential-in-path",
        TOKENSERVER_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )

    assert result.returncode != 0
    assert "tokens.E004" in result.stderr
    assert "credential-in-path" not in result.stderr + result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "given",
    [
        {"TOKENSERVER_WEBHOOK_RETRY_BASE": "0"},
        {"TOKENSERVER_WEBHOOK_TIMEOUT": "-1"},
        {"TOKENSERVER_WEBHOOK_MAX_TRIES": "0"},
    ],
)
def test_bad_retry_settings_stop_the_start_up(given):
    result = manage_check(**given)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert next(iter(given)) in result.stderr


# --- The console reads the same state ----------------------------------------------------

SECRETS = "/admin/secrets/secret/"


def test_the_secret_list_says_since_when_a_refresh_fails_and_filters_on_it(
    console, upstream, wechat_secret
):
    healthy = SecretFactory(realm=wechat_secret.realm, name="healthy")
    upstream.reply(TOKEN_PATH, REFUSED)
    fail(wechat_secret)
    fail(wechat_secret)
    since = timezone.localtime(RefreshHealth.objects.get(secret=wechat_secret).failing_since)

    page = console.get(SECRETS).content.decode()
    failing_only = console.get(SECRETS, {"refresh": "failing"}).content.decode()
    ok_only = console.get(SECRETS, {"refresh": "ok"}).content.decode()

    assert f"failing since {since:%Y-%m-%d %H:%M:%S}, 2 attempts" in page
    assert "wxgzh_secret" in failing_only and healthy.name not in failing_only
    assert healthy.name in ok_only and "wxgzh_secret" not in ok_only


def test_the_secret_page_shows_the_last_error_and_the_recovery(console, upstream, wechat_secret):
    upstream.reply(TOKEN_PATH, REFUSED)
    fail(wechat_secret)
    page = f"{SECRETS}{wechat_secret.pk}/change/"

    failing = console.get(page).content.decode()
    upstream.reply(TOKEN_PATH, GRANTED)
    token_get("wxgzh", "wxgzh_secret", flush=True)
    recovered = console.get(page).content.decode()

    assert "1 attempt; last error: upstream_error 40013 invalid appid" in failing
    assert "ok since" in recovered
    assert "(the last failure: upstream_error 40013 invalid appid)" in recovered
    for text in (failing, recovered):
        assert wechat_secret.key_2 not in text and GRANTED["access_token"] not in text


def test_the_dashboard_counts_failing_secrets_and_says_since_when(console, upstream, wechat_secret):
    upstream.reply(TOKEN_PATH, REFUSED)
    fail(wechat_secret)
    fail(wechat_secret)
    health = RefreshHealth.objects.get(secret=wechat_secret)

    summary = dashboard_summary(timezone.now())
    [row] = needs_attention(timezone.now()).failing.rows
    index = console.get("/admin/").content.decode()

    assert summary.refresh_failing == 1
    assert (row["key"], row["failing_since"], row["attempts"]) == (
        "wxgzh_secret",
        health.failing_since,
        2,
    )
    assert "secrets failing to refresh" in index
    assert "2 attempts" in index


def test_notifications_are_listed_read_only_in_the_console(console, wechat_secret):
    Notification.objects.create(
        realm="wxgzh",
        key="wxgzh_secret",
        outcome="failing",
        fetch_outcome="timeout",
        failing_since=timezone.now(),
        attempts=1,
        tries=6,
        done=True,
        last_error="HTTP 500",
    )

    page = console.get("/admin/tokens/notification/").content.decode()

    assert "given up" in page and "HTTP 500" in page
    assert console.get("/admin/tokens/notification/add/").status_code == 403
