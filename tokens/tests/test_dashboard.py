"""
The console's dashboard (issue 12): the numbers of tokens/dashboard.py, at a
"now" the tests choose, and the admin index page that shows them.
"""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from realms.models import Realm
from tests.factories import FetchLogFactory, RealmFactory, SecretFactory, StoredTokenFactory
from tokens import guards
from tokens.dashboard import dashboard_summary, fetches_per_hour, needs_attention
from tokens.models import FetchLog
from tokens.upstream import UpstreamFailure

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ERROR = FetchLog.Outcome.UPSTREAM_ERROR


def token_for(secret, *, left, lifetime=7200, now=NOW):
    """`secret`'s stored token, `left` seconds from expiry at `now`, of `lifetime` seconds."""
    return StoredTokenFactory(
        secret=secret,
        fetched_at=now + timedelta(seconds=left - lifetime),
        expires_at=now + timedelta(seconds=left),
    )


def ago(**delta):
    return NOW - timedelta(**delta)


# --- The cards -------------------------------------------------------------------


def test_tokens_by_state_count_enabled_secrets_of_fetching_realms():
    realm = RealmFactory(id="wxgzh", refresh_margin=300)
    token_for(SecretFactory(realm=realm), left=3600)  # valid
    token_for(SecretFactory(realm=realm), left=299)  # inside the 300 s margin
    token_for(SecretFactory(realm=realm), left=-1)  # expired
    SecretFactory(realm=realm)  # never fetched
    SecretFactory(realm=realm, enabled=False)  # disabled: in no state
    SecretFactory(realm=RealmFactory(id="static", kind=Realm.Kind.FIXED), token="FIXED")

    summary = dashboard_summary(NOW)

    assert (summary.realms, summary.secrets, summary.secrets_disabled) == (2, 6, 1)
    assert (
        summary.tokens_valid,
        summary.tokens_in_margin,
        summary.tokens_expired,
        summary.never_fetched,
    ) == (1, 1, 1, 1)


def test_the_margin_is_each_realms_own_and_at_most_half_the_lifetime():
    short = RealmFactory(id="short", refresh_margin=60)
    long = RealmFactory(id="long", refresh_margin=600)
    token_for(SecretFactory(realm=short), left=120)  # outside 60 s
    token_for(SecretFactory(realm=long), left=120)  # inside 600 s
    # Lifetime 400 s: the margin is capped at 200 s (StoredToken.refresh_at).
    token_for(SecretFactory(realm=long), left=250, lifetime=400)
    token_for(SecretFactory(realm=long), left=150, lifetime=400)

    summary = dashboard_summary(NOW)

    assert (summary.tokens_valid, summary.tokens_in_margin) == (2, 2)


def test_fetches_and_errors_in_the_last_24_hours():
    FetchLogFactory(created_at=NOW)
    FetchLogFactory(created_at=ago(hours=23, minutes=59))
    FetchLogFactory(created_at=ago(hours=2), outcome=ERROR, error_code="40013")
    FetchLogFactory(created_at=ago(hours=1), outcome=FetchLog.Outcome.REJECTED)
    FetchLogFactory(created_at=ago(hours=24))  # just outside
    FetchLogFactory(created_at=ago(days=3), outcome=ERROR)

    summary = dashboard_summary(NOW)

    assert (summary.fetches, summary.fetch_errors) == (4, 2)


def test_open_breakers_and_backoffs_are_counted():
    now = timezone.now()  # the guards keep real time
    flaky, limited, _calm = RealmFactory(breaker_threshold=2), RealmFactory(), RealmFactory()
    for _ in range(2):
        guards.record_failure(flaky, UpstreamFailure("timeout", "timed out"))
    guards.record_failure(
        limited, UpstreamFailure("upstream_error", "slow down", http_status=429, retry_after=90)
    )

    summary = dashboard_summary(now)

    assert (summary.breakers_open, summary.backing_off) == (1, 1)


# --- The chart -------------------------------------------------------------------


def test_fetches_per_hour_ok_and_errors_oldest_first():
    FetchLogFactory(created_at=NOW)  # the last hour (its end is included)
    FetchLogFactory(created_at=ago(minutes=59), outcome=ERROR)  # the last hour
    FetchLogFactory(created_at=ago(hours=1))  # the hour before (its end)
    FetchLogFactory(created_at=ago(hours=23, minutes=30), outcome=FetchLog.Outcome.TIMEOUT)
    FetchLogFactory(created_at=ago(hours=25))  # outside

    hours = fetches_per_hour(NOW)

    assert len(hours) == 24
    assert hours[0].start == ago(hours=24) and hours[-1].end == NOW
    assert [(h.ok, h.errors) for h in hours if h.total] == [(0, 1), (1, 0), (1, 1)]
    assert (hours[0].errors, hours[22].ok, hours[23].ok, hours[23].errors) == (1, 1, 1, 1)
    assert sum(h.total for h in hours) == dashboard_summary(NOW).fetches


# --- Needs attention -------------------------------------------------------------------


def test_failing_secrets_with_their_last_error_and_how_many_in_a_row():
    realm = RealmFactory(id="wxgzh")
    SecretFactory(realm=realm, name="recovered")
    SecretFactory(realm=realm, name="broken")
    SecretFactory(realm=realm, name="never_ok")
    FetchLogFactory(key="recovered", created_at=ago(hours=2), outcome=ERROR)
    FetchLogFactory(key="recovered", created_at=ago(hours=1))
    FetchLogFactory(key="broken", created_at=ago(hours=3))
    FetchLogFactory(key="broken", created_at=ago(hours=2), outcome=ERROR, error_code="40001")
    FetchLogFactory(
        key="broken",
        created_at=ago(minutes=5),
        outcome=ERROR,
        http_status=200,
        error_code="40013",
        error_message="invalid appid",
    )
    for minutes in (30, 20, 10):
        FetchLogFactory(
            key="never_ok", created_at=ago(minutes=minutes), outcome=FetchLog.Outcome.TIMEOUT
        )
    FetchLogFactory(key="deleted", created_at=ago(minutes=1), outcome=ERROR)  # no secret now

    failing = needs_attention(NOW).failing

    assert failing.total == 2
    assert [(r["key"], r["in_a_row"]) for r in failing.rows] == [("broken", 2), ("never_ok", 3)]
    broken = failing.rows[0]
    assert (broken["realm"], broken["error_code"], broken["error_message"]) == (
        "wxgzh",
        "40013",
        "invalid appid",
    )
    assert broken["created_at"] == ago(minutes=5)


def test_tokens_expiring_within_15_minutes_soonest_first():
    realm = RealmFactory(refresh_margin=60)
    token_for(SecretFactory(realm=realm, name="later"), left=14 * 60)
    token_for(SecretFactory(realm=realm, name="soon"), left=30)
    token_for(SecretFactory(realm=realm, name="fine"), left=16 * 60)
    token_for(SecretFactory(realm=realm, name="gone"), left=-5)
    token_for(SecretFactory(realm=realm, name="off", enabled=False), left=30)

    expiring = needs_attention(NOW).expiring

    assert [r["key"] for r in expiring.rows] == ["soon", "later"]
    assert expiring.rows[0]["expires_at"] == NOW + timedelta(seconds=30)


def test_realms_held_back_by_their_guards_and_until_when():
    now = timezone.now()
    flaky = RealmFactory(id="flaky", breaker_threshold=1, breaker_cooldown=30)
    guards.record_failure(flaky, UpstreamFailure("unreachable", "refused"))

    (state,) = needs_attention(now).guarded

    assert state.realm_id == "flaky" and state.backoff_until is None
    assert 29 <= (state.breaker_open_until - now).total_seconds() <= 31


def test_each_list_is_bounded_and_counts_the_rest():
    realm = RealmFactory(id="wxgzh")
    for number in range(25):
        SecretFactory(realm=realm, name=f"app{number:02d}")

    never = needs_attention(NOW, limit=20).never_fetched

    assert (len(never.rows), never.total, never.more) == (20, 25, 5)
    assert never.rows[0]["key"] == "app00"


# --- The page ---------------------------------------------------------------------------


def _arrange(secrets):
    """`secrets` secrets in each state, with failures, fetches over the day, a breaker open."""
    realm = RealmFactory(id="wxgzh", breaker_threshold=1)
    now = timezone.now()
    for number in range(secrets):
        name = f"app{number}"
        secret = SecretFactory(realm=realm, name=name, key_1="wx-VALUE-NEVER-SHOWN")
        if number % 3 == 0:
            token_for(secret, left=600, now=now)
        elif number % 3 == 1:
            token_for(secret, left=-60, now=now)
        FetchLogFactory(realm="wxgzh", key=name, created_at=now - timedelta(hours=1 + number % 23))
        FetchLogFactory(
            realm="wxgzh",
            key=name,
            created_at=now - timedelta(minutes=number % 50),
            outcome=ERROR,
            error_code="40013",
            error_message="invalid <appid>",
        )
    guards.record_failure(realm, UpstreamFailure("timeout", "timed out"))


def _index_queries(console):
    with CaptureQueriesContext(connection) as queries:
        page = console.get("/admin/")
    assert page.status_code == 200
    return len(queries), page.content.decode()


def test_the_index_page_shows_the_dashboard_above_the_app_list(console):
    _arrange(6)

    _, html = _index_queries(console)

    assert html.index('id="dashboard"') < html.index('id="content-main"')
    assert "app-tokens" in html and "app-secrets" in html  # the stock app list stays below
    assert re.search(r"<svg[^>]*role=\"img\"", html)
    assert "invalid &lt;appid&gt;" in html  # escaped, as every text
    assert "40013" in html and "Circuit open" in html
    assert "wx-VALUE-NEVER-SHOWN" not in html and "STORED-TOKEN-VALUE" not in html
    assert "<script" not in html.split('id="dashboard"')[1].split("</section>")[0]


def test_the_index_page_costs_the_same_queries_for_3_and_30_secrets(console):
    console.get("/admin/")  # the session and user rows, warm like every later page
    _arrange(3)
    few, _ = _index_queries(console)
    FetchLog.objects.all().delete()
    Realm.objects.get(id="wxgzh").secrets.all().delete()
    Realm.objects.all().delete()
    _arrange(30)

    many, html = _index_queries(console)

    assert few == many <= 13
    assert "and 10 more" in html  # 30 failing, 20 shown


def test_staff_without_view_rights_get_the_stock_index_only(client, staff_user):
    client.force_login(staff_user)  # staff, no permissions
    _arrange(3)

    page = client.get("/admin/")

    assert page.status_code == 200
    assert 'id="dashboard"' not in page.content.decode()
