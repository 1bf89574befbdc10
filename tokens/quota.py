"""
The provider's quota guarded (issue 14): a realm may give each secret a daily
budget of upstream calls (`daily_budget`; WeChat allows 2,000 token fetches a
day per app and answers 45009 beyond), counted per provider day (from midnight
where `budget_day_starts` says: WeChat's day starts at midnight in China).

**Counting.** Every upstream attempt is counted before it is sent (retries
too: the provider counts them), with Redis when REDIS_URL is set (a Lua
script: compare and INCR, atomically, the key expiring after the day) and in
the database without it (`QuotaUsage`, one row per secret and day, a
conditional `UPDATE … SET calls = calls + 1 WHERE calls < limit`), so every
worker and host counts into one number and a call past the limit is never
granted, however many ask at once. An attempt refused before it was sent (a
value that cannot be sent, a refused address) is given back. Realms without a
budget are counted too (the console shows calls today), never refused.

**The reserve.** A flush, a rejected-token report or an operator's test
fetch (`forced`) may use the budget only down to a reserve: the refreshes the
secret's token needs to stay alive until the provider's day turns (computed
from its lifetime and refresh margin: `keepalive_calls`). A refresh that keeps
the token alive (the refresher, a background refresh, a request with no valid
token) may use the budget to its end. Past it: 429 `quota_exhausted` with
`Retry-After` until the day turns. Valid tokens are served throughout: the hot
path never looks here.

**Telling.** Past `budget_alert_percent` of the budget, and when the budget is
used up: a warning log line and a notification (tokens.notifications' outbox,
when a webhook is configured), once per secret and day (whoever first sees it:
Redis SET NX, or a conditional UPDATE of the row's flag). The console shows
"calls today / budget" per secret, and /metrics the share used per realm.

While Redis is unreachable the calls are not counted and nothing is refused
(as the rate limits: tokens keep being fetched; the provider's own limit, a
rate-limit code, still backs the realm off).
"""

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F

from realms.models import ProviderDay, Realm
from realms.validators import day_start_zone
from secret_store.models import VALUE_FIELDS, Secret
from tokens.models import Notification, QuotaUsage, StoredToken
from tokens.notifications import notification_queue
from tokenserver import cache as shared_cache
from tokenserver import metrics
from tokenserver.errors import QuotaExhausted
from tokenserver.outbox import outbox

logger = logging.getLogger(__name__)

#: Seconds a day's Redis counter (and its markers) outlive the day.
KEEP_AFTER_DAY = 3600
#: Days the database counter's rows are kept after their day (the refresher prunes).
KEEP_DAYS = 7
#: The shortest interval between two refreshes the reserve is computed with.
MIN_INTERVAL = 60.0

ALERT, EXHAUSTED = "quota_alert", "quota_exhausted"


@dataclass(frozen=True)
class Usage:
    """A secret's upstream calls in the provider's current day, against its budget."""

    calls: int | None  # None: not known now (Redis unreachable)
    budget: int | None  # None: no budget
    alert_at: int | None
    day: ProviderDay

    @property
    def past_alert(self) -> bool:
        return self.budget is not None and self.calls is not None and self.calls >= self.alert_at

    @property
    def exhausted(self) -> bool:
        return self.budget is not None and self.calls is not None and self.calls >= self.budget

    @property
    def day_ends_at(self) -> datetime:
        """When the provider's day turns (aware, UTC)."""
        return datetime.fromtimestamp(self.day.ends_at, UTC)

    def label(self) -> str:
        """ "12 / 2000", "1650 / 2000 (past 80 %)", "2000 / 2000 (used up)", "12" (no budget)."""
        calls = "?" if self.calls is None else str(self.calls)
        if self.budget is None:
            return calls
        text = f"{calls} / {self.budget}"
        if self.exhausted:
            return f"{text} (used up)"
        if self.past_alert:
            return f"{text} (past {math.floor(self.alert_at * 100 / self.budget)} %)"
        return text

    def as_dict(self) -> dict:
        """The API's `quota` object."""
        return {
            "calls_today": self.calls,
            "daily_budget": self.budget,
            "alert_at": self.alert_at,
            "day": self.day.date.isoformat(),
            "day_ends_at": self.day_ends_at,
        }


# --- The counters ------------------------------------------------------------------------


def _key(secret_pk: int, day: ProviderDay) -> str:
    return f"quota:{secret_pk}:{day.date:%Y%m%d}"


def _ttl(day: ProviderDay, now: float) -> int:
    return max(1, int(day.ends_at - now) + KEEP_AFTER_DAY)


#: Count one call unless the count has reached the limit (ARGV[1], -1: none), starting
#: the key's expiry (ARGV[2] seconds) with the day's first call: {granted, count}.
_RESERVE = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
if limit >= 0 and count >= limit then return {0, count} end
count = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {1, count}
"""

#: Give one call back (never below 0).
_REFUND = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""

_scripts: dict = {}


def _run(redis, source: str, keys, args):
    script = _scripts.get(source)
    if script is None:
        script = _scripts.setdefault(source, redis.register_script(source))
    return script(keys=keys, args=args, client=redis)


class RedisCounter:
    """The counts in Redis: one key per secret and day (REDIS_URL set)."""

    def reserve(self, secret_pk, day, limit, now) -> tuple[bool, int | None]:
        redis = shared_cache.redis_connection()
        if redis is None:
            return True, None  # Redis is down: not counted, not refused
        try:
            granted, count = _run(
                redis,
                _RESERVE,
                [cache.make_key(_key(secret_pk, day))],
                [-1 if limit is None else limit, _ttl(day, now)],
            )
        except shared_cache.CACHE_ERRORS as error:
            shared_cache.health.failed(error)
            return True, None
        return bool(granted), int(count)

    def refund(self, secret_pk, day) -> None:
        redis = shared_cache.redis_connection()
        if redis is None:
            return
        try:
            _run(redis, _REFUND, [cache.make_key(_key(secret_pk, day))], [])
        except shared_cache.CACHE_ERRORS as error:
            shared_cache.health.failed(error)

    def read_many(self, pairs) -> dict | None:
        """{(secret_pk, day): calls} for these pairs (0 when none yet); None: unknown."""
        pairs = list(pairs)
        if not pairs:
            return {}
        redis = shared_cache.redis_connection()
        if redis is None:
            return None
        try:
            values = redis.mget([cache.make_key(_key(pk, day)) for pk, day in pairs])
        except shared_cache.CACHE_ERRORS as error:
            shared_cache.health.failed(error)
            return None
        return {pair: int(value or 0) for pair, value in zip(pairs, values, strict=True)}

    def first_to_tell(self, secret_pk, day, what, now) -> bool:
        redis = shared_cache.redis_connection()
        if redis is None:
            return False
        key = cache.make_key(f"{_key(secret_pk, day)}:{what}")
        try:
            return bool(redis.set(key, 1, nx=True, ex=_ttl(day, now)))
        except shared_cache.CACHE_ERRORS as error:
            shared_cache.health.failed(error)
            return False


class DatabaseCounter:
    """The counts in the database: one QuotaUsage row per secret and day (no Redis)."""

    def reserve(self, secret_pk, day, limit, now) -> tuple[bool, int | None]:
        try:
            return self._reserve(secret_pk, day, limit)
        except DatabaseError as error:
            # The secret was just loaded, so this is a blip: not counted, not refused.
            logger.warning("quota: the database did not count a call (%s)", type(error).__name__)
            return True, None

    def _reserve(self, secret_pk, day, limit) -> tuple[bool, int]:
        rows = QuotaUsage.objects.filter(secret_id=secret_pk, day=day.date)
        # The row lock orders concurrent UPDATEs, each sees the count the one before
        # it left: of N callers at limit − 1, one matches `calls < limit`.
        allowed = rows if limit is None else rows.filter(calls__lt=limit)
        granted = allowed.update(calls=F("calls") + 1)
        if not granted and not rows.exists():
            try:
                with transaction.atomic():
                    QuotaUsage.objects.create(secret_id=secret_pk, day=day.date)
            except IntegrityError:
                pass  # another process created it first (or the secret is gone)
            granted = allowed.update(calls=F("calls") + 1)
        count = rows.values_list("calls", flat=True).first()
        return bool(granted), count or 0

    def refund(self, secret_pk, day) -> None:
        try:
            QuotaUsage.objects.filter(secret_id=secret_pk, day=day.date, calls__gt=0).update(
                calls=F("calls") - 1
            )
        except DatabaseError:
            pass  # counted one too many: the safe side

    def read_many(self, pairs) -> dict | None:
        pairs = list(pairs)
        if not pairs:
            return {}
        try:
            rows = QuotaUsage.objects.filter(
                secret_id__in={pk for pk, _ in pairs}, day__in={day.date for _, day in pairs}
            ).values_list("secret_id", "day", "calls")
            found = {(pk, date): calls for pk, date, calls in rows}
        except DatabaseError:
            return None
        return {(pk, day): found.get((pk, day.date), 0) for pk, day in pairs}

    def first_to_tell(self, secret_pk, day, what, now) -> bool:
        flag = "alert_told" if what == ALERT else "exhausted_told"
        rows = QuotaUsage.objects.filter(secret_id=secret_pk, day=day.date, **{flag: False})
        try:
            return bool(rows.update(**{flag: True}))
        except DatabaseError:
            return False


def counter() -> RedisCounter | DatabaseCounter:
    """Where the counts live: Redis when REDIS_URL is set, else the database."""
    return RedisCounter() if settings.REDIS_URL else DatabaseCounter()


# --- The budget -----------------------------------------------------------------------------


def _stored(secret: Secret) -> StoredToken | None:
    try:
        return secret.stored_token
    except StoredToken.DoesNotExist:
        return None


def keepalive_calls(secret: Secret, now: float, day: ProviderDay) -> int:
    """
    How many refreshes the secret's token needs to stay alive until the
    provider's day turns: the first when its refresh window opens (now, with no
    token), then one per interval (its lifetime less that window), counted
    generously (the window's earliest point, whole intervals rounded up).
    """
    realm = secret.realm
    reissue = realm.reissue_limit()
    stored = _stored(secret)
    if stored is None:
        lifetime = float(realm.default_ttl)
        window = min(realm.refresh_margin, lifetime / 2, reissue or lifetime)
        first = now
    else:
        lifetime = stored.lifetime()
        window = stored.effective_margin(realm.refresh_margin, reissue)
        first = max(now, stored.expires_at.timestamp() - window)
    if first >= day.ends_at:
        return 0
    interval = max(MIN_INTERVAL, lifetime - window)
    return int((day.ends_at - first) // interval) + 1


def _limit(secret: Secret, forced: bool, now: float, day: ProviderDay) -> int | None:
    """The count this call may bring the day's to: the budget, less the reserve if forced."""
    budget = secret.realm.daily_budget
    if budget is None:
        return None
    # A budget smaller than the reserve leaves forced calls nothing (0, not less:
    # the Redis script reads a negative limit as none).
    return max(0, budget - keepalive_calls(secret, now, day)) if forced else budget


def _turns(realm: Realm, day: ProviderDay) -> str:
    """When the provider's day turns, as the realm's day boundary reads it."""
    moment = datetime.fromtimestamp(day.ends_at, day_start_zone(realm.budget_day_starts))
    return f"{moment:%Y-%m-%d %H:%M} {realm.budget_day_starts}"


def _refusal(secret: Secret, calls: int, limit: int, forced: bool, day, now) -> QuotaExhausted:
    realm = secret.realm
    budget = realm.daily_budget
    wait = math.ceil(day.seconds_left(now))
    turns = f"the provider's day turns at {_turns(realm, day)}, in {wait} s"
    if calls >= budget:
        used = f"{secret} has used all {budget} upstream calls of its daily budget"
        what = "no new token can be fetched" if not forced else "flushes and rejections are refused"
        detail = f"{used}; {what} until {turns}."
        if forced:
            detail += " A token that is still valid keeps being served (without flush)."
    else:
        kept = budget - limit
        detail = (
            f"{secret} has used {calls} of its {budget} upstream calls today; the last {kept} are "
            f"kept for the refreshes that keep its token alive until {turns}. Flushes and "
            "rejected-token reports are refused until then; the current token keeps being "
            "served (without flush)."
        )
    return QuotaExhausted(
        detail, retry_after=max(1, wait), calls=calls, budget=budget, forced=forced
    )


def check(secret: Secret, *, forced: bool, now: float | None = None) -> None:
    """
    Raise QuotaExhausted if the secret's budget already refuses this call
    (one read; no count): before taking the secret's lock, so a refused flush
    costs no lock and no fetch-log row. reserve() decides for real.
    """
    realm = secret.realm
    if realm.daily_budget is None:
        return
    now = now or time.time()
    day = realm.provider_day(now)
    limit = _limit(secret, forced, now, day)
    counts = counter().read_many([(secret.pk, day)])
    calls = None if counts is None else counts[(secret.pk, day)]
    if calls is not None and calls >= limit:
        metrics.quota_refused(realm.id, forced)
        raise _refusal(secret, calls, limit, forced, day, now)


def reserve(secret: Secret, *, forced: bool, now: float | None = None) -> ProviderDay:
    """
    Count one upstream attempt of the secret, about to be sent, against its
    daily budget: raises QuotaExhausted (nothing counted) if the budget does
    not allow it (`forced`: a flush, a rejected token, a test fetch, which may
    not use the reserve). Returns the provider day it was counted in (for a
    refund). Past the alert threshold, and at the budget, it is told once a day.
    """
    realm = secret.realm
    now = now or time.time()
    day = realm.provider_day(now)
    limit = _limit(secret, forced, now, day)
    granted, calls = counter().reserve(secret.pk, day, limit, now)
    if not granted:
        metrics.quota_refused(realm.id, forced)
        raise _refusal(secret, calls, limit, forced, day, now)
    if realm.daily_budget is not None and calls is not None:
        _tell(secret, calls, day, now)
    return day


def refund(secret: Secret, day: ProviderDay) -> None:
    """Give back an attempt reserve() counted that was not sent after all."""
    counter().refund(secret.pk, day)


def _tell(secret: Secret, calls: int, day: ProviderDay, now: float) -> None:
    """The alert (past the threshold) and the exhaustion (at the budget), once a day each."""
    realm = secret.realm
    budget = realm.daily_budget
    for what, reached in ((ALERT, realm.budget_alert_calls()), (EXHAUSTED, budget)):
        if calls < reached or not counter().first_to_tell(secret.pk, day, what, now):
            continue
        percent = math.floor(calls * 100 / budget)
        if what == ALERT:
            message = (
                f"{calls} of {budget} upstream calls used today ({percent} %), past the "
                f"alert threshold ({realm.budget_alert_percent} %)"
            )
        else:
            message = (
                f"all {budget} upstream calls of today used: flushes refused, no new token "
                "until the day turns"
            )
        logger.warning(
            "quota of %s/%s: %s; the provider's day turns at %s",
            realm.id,
            secret.name,
            message,
            _turns(realm, day),
            extra={"event": what, "realm": realm.id, "key": secret.name, "calls": calls},
        )
        outbox.run(
            _notify,
            realm.id,
            secret.name,
            what,
            message,
            calls,
            budget,
            datetime.fromtimestamp(day.starts_at, UTC),
            datetime.fromtimestamp(now, UTC),
        )


def _notify(realm_id, key, what, message, calls, budget, day_started, at) -> None:
    """Queue the quota notification (through the outbox: it waits while the database is down)."""
    with transaction.atomic():
        notification_queue(
            realm=realm_id,
            key=key,
            outcome=Notification.Outcome.QUOTA,
            fetch_outcome="",
            error_code=what,
            error_message=message[:500],
            failing_since=day_started,
            attempts=calls,
            at=at,
            calls=calls,
            budget=budget,
        )


# --- Reading ---------------------------------------------------------------------------------


def usage_many(secrets, now: float | None = None) -> dict[int, Usage]:
    """
    The usage of each of `secrets` (their realms loaded) in its provider's
    current day, by secret pk: one Redis round trip or one query, whatever the
    number. Calls read None while Redis is unreachable.
    """
    now = now or time.time()
    days = {secret.pk: secret.realm.provider_day(now) for secret in secrets}
    counts = counter().read_many(days.items())
    usages = {}
    for secret in secrets:
        day = days[secret.pk]
        realm = secret.realm
        usages[secret.pk] = Usage(
            None if counts is None else counts[(secret.pk, day)],
            realm.daily_budget,
            realm.budget_alert_calls(),
            day,
        )
    return usages


def usage(secret: Secret, now: float | None = None) -> Usage:
    """One secret's usage today (usage_many of one)."""
    return usage_many([secret], now)[secret.pk]


def budgeted_secrets():
    """Enabled secrets of realms that fetch and have a daily budget (with their realm)."""
    return (
        Secret.objects.filter(enabled=True, realm__daily_budget__isnull=False)
        .exclude(realm__kind=Realm.Kind.FIXED)
        .select_related("realm")
        .defer(*VALUE_FIELDS, "token")  # no decryption: names and realms only
    )


def prune(now: float | None = None) -> int:
    """Delete the database counter's rows of days long gone; how many went."""
    today = datetime.fromtimestamp(now or time.time(), UTC).date()
    return QuotaUsage.objects.filter(day__lt=today - timedelta(days=KEEP_DAYS)).delete()[0]


@dataclass(frozen=True)
class SecretUsage:
    """A budgeted secret's usage today, for the dashboard and the metrics."""

    secret_id: int
    realm_id: str
    key: str
    usage: Usage

    @property
    def share(self) -> float:
        """The share of its budget used today (0 … 1)."""
        return min(1.0, (self.usage.calls or 0) / self.usage.budget)


def budget_usages(now: float | None = None, realms=None) -> list[SecretUsage] | None:
    """
    Every enabled, budgeted secret that made calls today, with its usage,
    most used share first: two round trips whatever the number of secrets (the
    secrets, then one Redis MGET; without Redis, the realms, then the day's rows
    in one query; one when given every realm as `realms`, none without a budgeted
    realm). None while the counts cannot be read.
    """
    now = now or time.time()
    if realms is None:
        realms = Realm.objects.filter(daily_budget__isnull=False)
    realms = {
        realm.id: realm
        for realm in realms
        if realm.daily_budget is not None and realm.kind != Realm.Kind.FIXED
    }
    if not realms:
        return []
    if settings.REDIS_URL:
        secrets = list(budgeted_secrets())
        usages = usage_many(secrets, now)
        if any(usage.calls is None for usage in usages.values()):
            return None
        found = [
            SecretUsage(secret.pk, secret.realm_id, secret.name, usages[secret.pk])
            for secret in secrets
        ]
    else:
        days = {realm_id: realm.provider_day(now) for realm_id, realm in realms.items()}
        try:
            rows = list(
                QuotaUsage.objects.filter(
                    day__in={day.date for day in days.values()},
                    secret__enabled=True,
                    secret__realm_id__in=list(realms),
                    calls__gt=0,
                ).values_list("secret_id", "secret__realm_id", "secret__name", "day", "calls")
            )
        except DatabaseError:
            return None
        found = []
        for secret_id, realm_id, key, date, calls in rows:
            realm, day = realms[realm_id], days[realm_id]
            if date == day.date:
                usage = Usage(calls, realm.daily_budget, realm.budget_alert_calls(), day)
                found.append(SecretUsage(secret_id, realm_id, key, usage))
    found = [item for item in found if item.usage.calls]
    return sorted(found, key=lambda item: (-item.share, item.realm_id, item.key))
