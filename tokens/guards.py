"""
What stands between the token path and a provider: a circuit breaker and a
rate-limit backoff per realm, and a cap on upstream calls in flight per realm.

State lives in the cache (so it is shared by every worker and host with
Redis, and per process with the local-memory cache); the concurrency cap uses
the same leases as the single-flight lock (Redis, or database rows).

Which failures count for the breaker: the ones that say the *provider* is
unwell — timeouts, unreachable, HTTP 5xx, unreadable answers. A refusal with
an error code (a wrong secret, HTTP 4xx) concerns one secret, not the realm,
and never opens the breaker.
"""

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from realms.models import Realm
from tokens.locks import lock_for
from tokens.models import FetchLog
from tokens.upstream import UpstreamFailure
from tokenserver import cache as shared_cache

Outcome = FetchLog.Outcome

logger = logging.getLogger(__name__)

#: Seconds a realm backs off after a rate-limit answer without Retry-After.
RATE_LIMIT_BACKOFF = 60.0


class Refused(Exception):
    """The upstream is not to be called now; `retry_after` says for how long."""

    def __init__(self, reason: str, detail: str, retry_after: float):
        super().__init__(detail)
        self.reason = reason  # circuit_open | rate_limited | busy
        self.detail = detail
        self.retry_after = max(1, int(retry_after + 0.999))


def _open_until_flag(realm_id: str) -> str:
    return f"breaker:{realm_id}:open_until"


def _failures_flag(realm_id: str) -> str:
    return f"breaker:{realm_id}:failures"


def _backoff_flag(realm_id: str) -> str:
    return f"backoff:{realm_id}"


def check(realm: Realm, now: float | None = None) -> None:
    """Raise Refused while the realm's breaker is open or it is backing off."""
    now = now or time.time()
    open_until = shared_cache.flag_get(_open_until_flag(realm.id))
    if open_until and open_until > now:
        raise Refused(
            "circuit_open",
            f"upstream of realm {realm.id} failed {realm.breaker_threshold} times in a row; "
            f"not calling it for {open_until - now:.0f} s",
            open_until - now,
        )
    backoff_until = shared_cache.flag_get(_backoff_flag(realm.id))
    if backoff_until and backoff_until > now:
        raise Refused(
            "rate_limited",
            f"upstream of realm {realm.id} asked to slow down; backing off for "
            f"{backoff_until - now:.0f} s",
            backoff_until - now,
        )


def breaker_state(realm: Realm, now: float | None = None) -> str:
    """closed | open (for operators and tests)."""
    open_until = shared_cache.flag_get(_open_until_flag(realm.id))
    return "open" if open_until and open_until > (now or time.time()) else "closed"


@dataclass(frozen=True)
class GuardState:
    """A realm the guards hold back now: its breaker is open, or it backs off (until when)."""

    realm_id: str
    breaker_open_until: datetime | None
    backoff_until: datetime | None


def guard_states(realm_ids, now: float | None = None) -> list[GuardState] | None:
    """
    The realms among `realm_ids` whose breaker is open or that back off, in
    one cache round trip (for the console); None while the cache is down:
    then nobody knows, and the guards let calls through.
    """
    now = now or time.time()
    names = {}
    for realm_id in realm_ids:
        names[_open_until_flag(realm_id)] = realm_id
        names[_backoff_flag(realm_id)] = realm_id
    flags = shared_cache.flag_get_many(names)
    if flags is None:
        return None

    def until(name):
        value = flags.get(name)
        return datetime.fromtimestamp(value, UTC) if value and value > now else None

    states = []
    for realm_id in realm_ids:
        open_until = until(_open_until_flag(realm_id))
        backoff_until = until(_backoff_flag(realm_id))
        if open_until or backoff_until:
            states.append(GuardState(realm_id, open_until, backoff_until))
    return states


def is_rate_limit(realm: Realm, failure: UpstreamFailure) -> bool:
    if failure.http_status == 429:
        return True
    codes = {str(code) for code in realm.rate_limit_codes or []}
    return bool(failure.error_code) and failure.error_code in codes


def counts_against_breaker(failure: UpstreamFailure) -> bool:
    if failure.outcome in (Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.INVALID_RESPONSE):
        return True
    return failure.http_status is not None and failure.http_status >= 500


def is_retryable(failure: UpstreamFailure) -> bool:
    """Network errors and HTTP 5xx only: never 4xx, never an upstream error code."""
    if failure.outcome in (Outcome.TIMEOUT, Outcome.UNREACHABLE):
        return True
    return (
        failure.outcome == Outcome.UPSTREAM_ERROR
        and failure.http_status is not None
        and failure.http_status >= 500
    )


def record_failure(realm: Realm, failure: UpstreamFailure) -> None:
    now = time.time()
    if is_rate_limit(realm, failure):
        seconds = failure.retry_after or RATE_LIMIT_BACKOFF
        shared_cache.flag_set(_backoff_flag(realm.id), now + seconds, seconds)
        logger.warning(
            "realm %s rate-limited by its upstream; backing off %.0f s", realm.id, seconds
        )
    if not counts_against_breaker(failure):
        return
    # The count lives long enough to span slow consecutive failures.
    failures = shared_cache.counter_incr(_failures_flag(realm.id), 10 * realm.breaker_cooldown)
    if failures >= realm.breaker_threshold:
        shared_cache.flag_set(
            _open_until_flag(realm.id), now + realm.breaker_cooldown, realm.breaker_cooldown
        )
        logger.warning(
            "realm %s: %d consecutive upstream failures, circuit open for %d s",
            realm.id,
            failures,
            realm.breaker_cooldown,
        )


def record_success(realm: Realm) -> None:
    """A success closes the breaker: the failures must be consecutive."""
    shared_cache.flag_delete(_failures_flag(realm.id))
    shared_cache.flag_delete(_open_until_flag(realm.id))


@contextmanager
def upstream_slot(realm: Realm, *, max_hold: float, wait: float):
    """
    One of the realm's `max_concurrency` upstream slots, across every process
    and host, held like a secret's lock (a renewed lease, at most `max_hold`
    seconds); waits up to `wait` seconds for one, then raises Refused(busy).
    """
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        for number in range(realm.max_concurrency):
            slot = lock_for(f"realm:{realm.id}:slot:{number}", max_hold=max_hold)
            if slot.try_acquire():
                try:
                    yield
                finally:
                    slot.release()
                return
        if time.monotonic() >= deadline:
            raise Refused(
                "busy",
                f"realm {realm.id} already has {realm.max_concurrency} upstream calls in flight",
                1,
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
