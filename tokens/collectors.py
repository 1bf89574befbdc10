"""
Metrics that are facts in the database or the cache, computed when /metrics
is scraped (by the worker that answers) rather than counted: the token states
(how many tokens are inside their refresh margin, expired, never fetched),
the refresher's lag, each realm's breaker and backoff, and how much of their
daily budget the secrets of budgeted realms used today (issue 14). tokens.apps
registers `TokenFacts` with tokenserver.metrics.register_collector.

A scrape costs four queries and one cache round trip, whatever the number of
secrets, plus one row read per token inside its margin or past it (the lag
needs each one's own refresh time); no token column is read. The budgets add
one query (the budgeted realms) and, when there are any, one more query or one
query and one Redis round trip.

Secrets whose refresh is failing (tokenserver_secrets_failing) come from the
failure notifications' state (tokens.refresh_health): the console and the
webhook read the same rows, so an alert rule sees what they show.
"""

import logging
from datetime import timedelta
from functools import reduce
from operator import or_

from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from realms.models import Realm, reissue_limit_of
from tokens import guards, quota
from tokens.dashboard import token_state_counts
from tokens.models import StoredToken
from tokens.refresh_health import failing_secrets_per_realm

logger = logging.getLogger(__name__)


def refresher_lag(now, margins) -> float:
    """
    How many seconds the most overdue token is past its refresh time (0: none is):
    tokens of enabled secrets of realms that fetch, that nobody (the refresher, a
    request's background refresh) refreshed in time. Expired ones count; a secret
    whose refresh keeps failing keeps it up until it is fixed or disabled.
    """
    window = reduce(
        or_,
        (
            Q(secret__realm__refresh_margin=margin, expires_at__lte=now + timedelta(seconds=margin))
            for margin in margins
        ),
        Q(pk__isnull=True),
    )
    rows = (
        StoredToken.objects.filter(window, secret__enabled=True)
        .exclude(secret__realm__kind=Realm.Kind.FIXED)
        .values_list(
            "secret_id",
            "expires_at",
            "fetched_at",
            "issued_at",
            "same_token_left",
            "reissued_left",
            "secret__realm__refresh_margin",
            "secret__realm__reissue_window",
        )
    )
    lag = 0.0
    for secret_id, expires_at, fetched_at, issued_at, same, new, margin, window in rows:
        due = StoredToken(
            secret_id=secret_id,
            expires_at=expires_at,
            fetched_at=fetched_at,
            issued_at=issued_at,
            same_token_left=same,
            reissued_left=new,
        )
        reissue = reissue_limit_of(window)
        lag = max(lag, (now - due.refresh_at(margin, reissue)).total_seconds())
    return lag


class TokenFacts:
    """The scrape-time collector (see the module's docstring)."""

    def collect(self):
        now = timezone.now()
        up = GaugeMetricFamily(
            "tokenserver_database_facts_up",
            "1 when this scrape could read the token facts from the database, else 0 "
            "(then tokenserver_tokens and the refresher lag are left out).",
        )
        try:
            realms = list(
                Realm.objects.exclude(kind=Realm.Kind.FIXED).values_list("id", "refresh_margin")
            )
            margins = {margin for _, margin in realms}
            states = token_state_counts(now, margins)
            lag = refresher_lag(now, margins)
            failing = failing_secrets_per_realm()
        except DatabaseError as error:
            logger.warning("metrics: the database could not answer (%s)", type(error).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        tokens = GaugeMetricFamily(
            "tokenserver_tokens",
            "Tokens of enabled secrets of realms that fetch, by state: valid, in_margin "
            "(expiring within their refresh margin: a refresh is due in there), expired, "
            "never_fetched.",
            labels=["state"],
        )
        for state, count in states.items():
            tokens.add_metric([state], count)
        yield tokens

        refresher = GaugeMetricFamily(
            "tokenserver_refresher_lag_seconds",
            "How far past its refresh time the most overdue token is (0: none is).",
        )
        refresher.add_metric([], lag)
        yield refresher

        # Every realm that fetches has a value (0 too), so an alert rule on
        # `tokenserver_secrets_failing > 0` sees a realm recover.
        secrets_failing = GaugeMetricFamily(
            "tokenserver_secrets_failing",
            "Enabled secrets whose refresh is failing (since the failure notification; "
            "0 once it recovered), per realm.",
            labels=["realm"],
        )
        for realm_id, _ in realms:
            secrets_failing.add_metric([realm_id], failing.get(realm_id, 0))
        yield secrets_failing

        yield from self.guards(realms)
        yield from self.quota()

    @staticmethod
    def quota():
        """
        Each budgeted realm's most used secret and how many are past the alert
        threshold (issue 14), today; left out while the counts cannot be read.
        """
        try:
            budgeted = list(
                Realm.objects.filter(daily_budget__isnull=False).exclude(kind=Realm.Kind.FIXED)
            )
            usages = quota.budget_usages(realms=budgeted)
        except DatabaseError:
            return
        if usages is None:
            return
        used = GaugeMetricFamily(
            "tokenserver_quota_used_ratio",
            "The largest share of its daily budget of upstream calls a secret of the realm has "
            "used in the provider's current day (0-1; 1: used up).",
            labels=["realm"],
        )
        past = GaugeMetricFamily(
            "tokenserver_quota_secrets_past_alert",
            "Enabled secrets of the realm past their daily budget's alert threshold today.",
            labels=["realm"],
        )
        for realm_id in (realm.id for realm in budgeted):
            mine = [item for item in usages if item.realm_id == realm_id]
            used.add_metric([realm_id], max((item.share for item in mine), default=0.0))
            past.add_metric([realm_id], sum(1 for item in mine if item.usage.past_alert))
        yield used
        yield past

    @staticmethod
    def guards(realms):
        """Each realm's breaker and backoff, from the cache (left out while it is down)."""
        held = guards.guard_states([realm_id for realm_id, _ in realms])
        if held is None:
            return
        by_realm = {state.realm_id: state for state in held}
        breaker = GaugeMetricFamily(
            "tokenserver_breaker_open",
            "1 while the realm's circuit breaker is open (its upstream is not called), else 0.",
            labels=["realm"],
        )
        backoff = GaugeMetricFamily(
            "tokenserver_rate_limit_backoff",
            "1 while the realm backs off after its upstream's rate limit, else 0.",
            labels=["realm"],
        )
        for realm_id, _ in realms:
            state = by_realm.get(realm_id)
            breaker.add_metric([realm_id], 1 if state and state.breaker_open_until else 0)
            backoff.add_metric([realm_id], 1 if state and state.backoff_until else 0)
        yield breaker
        yield backoff
