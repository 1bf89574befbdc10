"""
The console's dashboard (the admin index page): what state the tokens are
in, how the upstream calls went, and what needs an operator. Each function
takes `now` (tests pass a fixed one) and answers in a constant number of
queries, whatever the number of secrets and fetch-log rows: counts are
aggregates, lists are bounded (`limit`, with the total beside), and nothing
is looped over per row in Python.

It reads every layer, so it lives in the top one (tokens). The page shows
it through a template tag (tokens/templatetags/console_dashboard.py).

Which secrets count: the token states and "never fetched" concern enabled
secrets of realms that fetch (kind config or code); a fixed realm's secrets
hold their token themselves. No secret value or token is ever read: the
queries select names, times and fetch-log columns only.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import reduce
from operator import or_

from django.db.models import (
    Case,
    Count,
    DateTimeField,
    F,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce
from django.db.models.lookups import LessThanOrEqual

from realms.models import Realm
from secret_store.models import Secret
from tokens import guards, quota
from tokens.models import FetchLog, RefreshHealth, StoredToken
from tokens.reissue import ReissueWarning, realms_with_reissue_seen, reissue_warnings

#: How far back the fetch counts and the chart look.
WINDOW = timedelta(hours=24)
#: Tokens that expire within this are listed under "needs attention".
EXPIRING_SOON = timedelta(minutes=15)
#: Rows per "needs attention" list (the rest are counted).
ATTENTION_LIMIT = 20

OK = FetchLog.Outcome.OK
#: Every outcome but ok (refusals too: a secret whose realm is held back is not served).
FAILED = [outcome for outcome in FetchLog.Outcome.values if outcome != OK]
#: Before any fetch: "in a row" counts from here when a secret never had an ok one.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Summary:
    realms: int
    secrets: int
    secrets_disabled: int
    tokens_valid: int
    tokens_in_margin: int
    tokens_expired: int
    never_fetched: int
    fetches: int  # in the last 24 h, every attempt (refusals too)
    fetch_errors: int  # of those, every outcome but ok
    breakers_open: int | None  # None: the cache is down, nobody knows
    backing_off: int | None
    #: Enabled secrets whose refreshes are failing (tokens.refresh_health: the state
    #: the failure notifications tell).
    refresh_failing: int = 0


@dataclass(frozen=True)
class Hour:
    start: datetime
    end: datetime
    ok: int
    errors: int

    @property
    def total(self) -> int:
        return self.ok + self.errors


@dataclass(frozen=True)
class Bounded:
    """The first rows of a list, and how many there are in all."""

    rows: list
    total: int

    @property
    def more(self) -> int:
        return self.total - len(self.rows)


@dataclass(frozen=True)
class Attention:
    failing: Bounded  # dicts: realm, key, outcome, http_status, error_code, error_message,
    #                   created_at, in_a_row, failing_since and attempts (the refresh
    #                   health's, None when it has none)
    expiring: Bounded  # dicts: secret_id, realm, key, expires_at
    guarded: list[guards.GuardState] | None  # None: the cache is down
    never_fetched: Bounded  # dicts: id, realm, key, created_at
    #: Secrets past their daily budget's alert threshold (issue 14), most used first;
    #: None: the counts cannot be read (Redis unreachable).
    quota: Bounded | None = None  # quota.SecretUsage
    #: Realms whose refresh margin is wider than their provider re-issues (issue 14).
    reissue: list[ReissueWarning] = ()


def _fetching_secrets():
    """Enabled secrets whose realm fetches its tokens (not kind fixed)."""
    return Secret.objects.filter(enabled=True).exclude(realm__kind=Realm.Kind.FIXED)


def _in_margin(now: datetime, margins) -> Q:
    """
    A stored token (seen from its secret) inside its refresh margin: not
    expired, and within `min(refresh_margin, lifetime / 2)` of expiry, the
    window StoredToken.refresh_at draws the refresh time from. One term per
    distinct margin among the realms (a handful), so the condition is plain
    date comparisons; the half-lifetime cap compares two durations
    (expires_at − now ≤ now − fetched_at).
    """
    terms = [
        Q(
            realm__refresh_margin=margin,
            stored_token__expires_at__lte=now + timedelta(seconds=margin),
        )
        for margin in sorted(margins)
    ]
    within_margin = reduce(or_, terms, Q(pk__isnull=True))  # no realm: nothing inside
    at = Value(now, output_field=DateTimeField())
    past_half_life = LessThanOrEqual(
        F("stored_token__expires_at") - at, at - F("stored_token__fetched_at")
    )
    return Q(stored_token__expires_at__gt=now) & within_margin & Q(past_half_life)


def token_state_counts(now: datetime, margins) -> dict[str, int]:
    """
    How many enabled secrets of realms that fetch have a token in each state at
    `now` (valid, in_margin, expired) or none (never_fetched), in one aggregate;
    `margins` are the realms' distinct refresh margins. The console's cards and
    the metrics (tokens.collectors) read it.
    """
    counts = _fetching_secrets().aggregate(
        never=Count("pk", filter=Q(stored_token__isnull=True)),
        expired=Count("pk", filter=Q(stored_token__expires_at__lte=now)),
        in_margin=Count("pk", filter=_in_margin(now, margins)),
        alive=Count("pk", filter=Q(stored_token__expires_at__gt=now)),
    )
    return {
        "valid": counts["alive"] - counts["in_margin"],
        "in_margin": counts["in_margin"],
        "expired": counts["expired"],
        "never_fetched": counts["never"],
    }


def dashboard_summary(now: datetime) -> Summary:
    """The cards: five queries and one cache round trip."""
    realms = list(Realm.objects.values_list("id", "refresh_margin"))
    secrets = Secret.objects.aggregate(
        total=Count("pk"),
        disabled=Count("pk", filter=Q(enabled=False)),
        refresh_failing=Count(
            "pk", filter=Q(enabled=True, refresh_health__state=RefreshHealth.State.FAILING)
        ),
    )
    states = token_state_counts(now, {margin for _, margin in realms})
    fetches = FetchLog.objects.filter(created_at__gt=now - WINDOW, created_at__lte=now).aggregate(
        total=Count("pk"), errors=Count("pk", filter=~Q(outcome=OK))
    )
    held = guards.guard_states([realm_id for realm_id, _ in realms], now.timestamp())
    return Summary(
        realms=len(realms),
        secrets=secrets["total"],
        secrets_disabled=secrets["disabled"],
        tokens_valid=states["valid"],
        tokens_in_margin=states["in_margin"],
        tokens_expired=states["expired"],
        never_fetched=states["never_fetched"],
        fetches=fetches["total"],
        fetch_errors=fetches["errors"],
        breakers_open=None if held is None else sum(1 for s in held if s.breaker_open_until),
        backing_off=None if held is None else sum(1 for s in held if s.backoff_until),
        refresh_failing=secrets["refresh_failing"],
    )


def fetches_per_hour(now: datetime) -> list[Hour]:
    """
    Upstream attempts per hour over the last 24 h, ok and not ok, oldest
    first: 24 hours ending at `now` (start < created_at ≤ end), so they add
    up to the summary's counts. One query over the range the (created_at,
    outcome) index finds, grouped by hour number (a CASE over the hours'
    ends) and ok-or-not: portable, and no date truncation, which MySQL would
    need time-zone tables for.
    """
    starts = [now - WINDOW + timedelta(hours=number) for number in range(24)]
    hour_number = Case(
        *(
            When(created_at__lte=start + timedelta(hours=1), then=Value(number))
            for number, start in enumerate(starts)
        ),
        output_field=IntegerField(),
    )
    counts = {(number, ok): 0 for number in range(24) for ok in (True, False)}
    groups = (
        FetchLog.objects.filter(created_at__gt=now - WINDOW, created_at__lte=now)
        .annotate(
            hour=hour_number,
            ok=Case(When(outcome=OK, then=Value(True)), default=Value(False)),
        )
        .values("hour", "ok")
        .annotate(count=Count("pk"))
        .order_by()
    )
    for group in groups:
        counts[group["hour"], bool(group["ok"])] = group["count"]
    return [
        Hour(start, start + timedelta(hours=1), counts[number, True], counts[number, False])
        for number, start in enumerate(starts)
    ]


def _attempts_of(realm, key):
    return FetchLog.objects.filter(realm=realm, key=key).order_by()


def _bounded(queryset, limit: int, *fields, **expressions) -> Bounded:
    """
    The first `limit` rows (as dicts) and the total in one query: the total
    is a window count over every matching row, computed before the LIMIT.
    """
    rows = list(queryset.values(*fields, total_rows=Window(Count("pk")), **expressions)[:limit])
    total = rows[0]["total_rows"] if rows else 0
    for row in rows:
        del row["total_rows"]
    return Bounded(rows, total)


def needs_attention(now: datetime, limit: int = ATTENTION_LIMIT) -> Attention:
    """
    The lists under "needs attention", each bounded by `limit` with its total
    (newest failures first, soonest expiries first): four queries and one
    cache round trip, five when something is failing; and two or three more for
    the secrets past their quota's alert threshold and the realms whose refresh
    margin is wider than their provider re-issues (issue 14). A failing secret's row
    also says since when its refreshes fail and how many attempts failed
    (tokens.refresh_health, the state the notifications tell), when known.

    A secret is failing when its latest fetch-log row is not ok (found
    through the (realm, key, created_at) index, a lookup per enabled secret
    inside one query; joining those rows back by id instead made MariaDB scan
    the whole log); "in a row" counts its rows since its last ok one, for the
    rows shown only.
    """
    # Newest first along the (realm, key, created_at) index alone: each lookup
    # reads the first index entry. (Two attempts of one secret in the same
    # microsecond, which its lock rules out, would be taken in either order.)
    latest = _attempts_of(OuterRef("realm_id"), OuterRef("name")).order_by("-created_at")
    failing_secrets = _bounded(
        Secret.objects.filter(enabled=True)
        .alias(last_outcome=Subquery(latest.values("outcome")[:1]))
        .filter(last_outcome__in=FAILED)
        .alias(last_at=Subquery(latest.values("created_at")[:1]))
        .order_by("-last_at", "pk"),
        limit,
        last_id=Subquery(latest.values("id")[:1]),
        # Since when its refreshes fail, as the notifications told (a join, no query).
        failing_since=F("refresh_health__failing_since"),
        attempts=F("refresh_health__attempts"),
        health_state=F("refresh_health__state"),
    )
    health = {
        row["last_id"]: (row["failing_since"], row["attempts"])
        if row["health_state"] == RefreshHealth.State.FAILING
        else (None, None)
        for row in failing_secrets.rows
    }
    # The rows shown, with how many attempts failed since the secret's last ok one.
    last_ok = _attempts_of(OuterRef("realm"), OuterRef("key")).filter(outcome=OK)
    since_last_ok = (
        _attempts_of(OuterRef("realm"), OuterRef("key"))
        .filter(
            created_at__gt=Coalesce(
                Subquery(last_ok.order_by("-created_at").values("created_at")[:1]),
                Value(EPOCH, output_field=DateTimeField()),
            )
        )
        .values("realm")
        .annotate(count=Count("pk"))
        .values("count")
    )
    failing_rows = (
        list(
            FetchLog.objects.filter(pk__in=[row["last_id"] for row in failing_secrets.rows])
            .order_by("-created_at", "-id")
            .values(
                "id",
                "realm",
                "key",
                "outcome",
                "http_status",
                "error_code",
                "error_message",
                "created_at",
                in_a_row=Subquery(since_last_ok),
            )
        )
        if failing_secrets.rows
        else []
    )
    for row in failing_rows:
        row["failing_since"], row["attempts"] = health[row.pop("id")]
    failing = Bounded(failing_rows, failing_secrets.total)

    expiring = _bounded(
        StoredToken.objects.filter(
            secret__enabled=True, expires_at__gt=now, expires_at__lte=now + EXPIRING_SOON
        ).order_by("expires_at", "secret_id"),
        limit,
        "secret_id",
        "expires_at",
        realm=F("secret__realm_id"),
        key=F("secret__name"),
    )
    never_fetched = _bounded(
        _fetching_secrets().filter(stored_token__isnull=True).order_by("realm_id", "name"),
        limit,
        "id",
        "realm_id",
        "created_at",
        key=F("name"),
    )
    for row in never_fetched.rows:
        row["realm"] = row.pop("realm_id")
    # Every realm once: the guards, the re-issue warnings, the budgets.
    realms = list(realms_with_reissue_seen())
    usages = quota.budget_usages(now.timestamp(), realms)
    past_alert = None
    if usages is not None:
        past = [item for item in usages if item.usage.past_alert]
        past_alert = Bounded(past[:limit], len(past))
    return Attention(
        failing=failing,
        expiring=expiring,
        guarded=guards.guard_states([realm.id for realm in realms], now.timestamp()),
        never_fetched=never_fetched,
        quota=past_alert,
        reissue=reissue_warnings(realms),
    )
