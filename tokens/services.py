"""
The token path (DESIGN.md, "The token path"):

1. the cache: a token that has not expired is returned at once; if it is
   inside its refresh margin, one request (across all workers and hosts: it
   must win the secret's lock) starts a refresh in the background;
2. else the database row, the same way (and put back in the cache);
3. else (no token, or it expired) the secret's single-flight lock: look again
   (another worker may have just refreshed), and only then call the upstream;
   persist, cache, log, release.

Flushes (`flush=true`) skip 1–2 and are satisfied by any token fetched after
they were asked for, or within the realm's `min_flush_interval`; with
`rejected=<token>` they are satisfied as soon as the current token is another
one. However many requests arrive at once, one upstream call per refresh, and
the upstream call runs outside any database transaction.
"""

import hmac
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.fernet import InvalidToken
from django.db import DatabaseError, connections, transaction

from realms.models import Realm
from secret_store.models import Secret
from tokens import cache as token_cache
from tokens import guards, upstream
from tokens.locks import lock_for
from tokens.models import CachedToken, FetchLog
from tokens.outbox import outbox
from tokenserver.errors import (
    LockWaitTimeout,
    NotFound,
    SecretDisabled,
    ServiceError,
    TooManyFlushes,
    UpstreamError,
    UpstreamUnavailable,
)

logger = logging.getLogger(__name__)

#: How much longer than the realm's timeout a request waits for another
#: worker's refresh before it gives up (with the still-valid token, or 503).
LOCK_WAIT_GRACE = 1.0

#: Seconds a secret's background refresh is not retried after it failed.
REVALIDATE_BACKOFF = 10.0

#: Retry backoff: full jitter over BASE × 2^attempt, at most CAP seconds.
RETRY_BASE, RETRY_CAP = 0.2, 2.0

#: Outcomes that mean "try again later" (503) rather than "the upstream said no" (502).
UNAVAILABLE_OUTCOMES = {FetchLog.Outcome.TIMEOUT, FetchLog.Outcome.UNREACHABLE}


@dataclass(frozen=True)
class TokenResult:
    """A token handed to an app, and where it came from."""

    token: str
    expires_at: float | None  # epoch seconds; None: a fixed token that never expires
    source: str  # cache | database | upstream | fixed
    http_status: int | None = None  # of the upstream's answer, when source is upstream
    lifetime: float | None = None  # granted, in seconds, when source is upstream

    def expires_in_ms(self, now: float | None = None) -> int | None:
        """The remaining lifetime in milliseconds, never more than what is really left."""
        if self.expires_at is None:
            return None
        return max(0, int((self.expires_at - (now or time.time())) * 1000))


@dataclass(frozen=True)
class Snapshot:
    """A token as the cache or the database holds it (times in epoch seconds)."""

    token: str
    fetched_at: float
    expires_at: float | None
    refresh_at: float

    def alive(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True)
class Need:
    """
    Which token satisfies a request. Plain requests want a token not yet due
    for refresh (`lookahead` seconds ahead, for the refresher); flushes want
    one fetched at or after `fetched_after`; with `rejected`, any token but
    that one (a token the provider refused is never handed back).
    """

    fetched_after: float | None = None
    rejected: str | None = None
    lookahead: float = 0.0

    @classmethod
    def flush(cls, realm: Realm, requested_at: float, rejected: str | None = None) -> "Need":
        # Inside the realm's minimum interval the token just fetched is the answer.
        return cls(fetched_after=requested_at - realm.min_flush_interval, rejected=rejected)

    def satisfied_by(self, snapshot: Snapshot | None, now: float) -> bool:
        if snapshot is None or not snapshot.alive(now):
            return False
        if self.rejected is not None:
            # Already replaced: no upstream call. Still current: refresh.
            return not hmac.compare_digest(snapshot.token.encode(), self.rejected.encode())
        if self.fetched_after is not None:
            return snapshot.fetched_at >= self.fetched_after
        return now + self.lookahead < snapshot.refresh_at


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _from_entry(entry: dict | None) -> Snapshot | None:
    if not entry:
        return None
    try:
        token = token_cache.entry_token(entry)
    except (InvalidToken, KeyError, TypeError):
        return None  # sealed under a key no longer configured (or not ours): a miss
    return Snapshot(token, entry["at"], entry["exp"], entry["ref"])


def _from_row(secret: Secret, stored: CachedToken | None) -> Snapshot | None:
    if stored is None:
        return None
    refresh_at = stored.refresh_at(secret.realm.refresh_margin)
    return Snapshot(
        stored.token, _epoch(stored.fetched_at), _epoch(stored.expires_at), _epoch(refresh_at)
    )


def token_get(
    realm_id: str,
    key: str,
    *,
    flush: bool = False,
    rejected: str | None = None,
    trigger: str = FetchLog.Trigger.REQUEST,
    client: str = "",
) -> TokenResult:
    """
    A valid token for the secret (`realm_id`, `key`).

    `flush` asks for a new token (coalesced, and not more often than the
    realm's `min_flush_interval`); `rejected` (implies `flush`) names the token
    the provider refused, so the refresh happens only if it is still current.
    Raises NotFound, SecretDisabled, UpstreamError (502), UpstreamUnavailable
    or LockWaitTimeout (503).
    """
    now = time.time()
    flush = flush or rejected is not None
    if not flush:
        entry = token_cache.cache_read(realm_id, key)
        snapshot = _from_entry(entry)
        if snapshot and snapshot.alive(now):
            if now >= snapshot.refresh_at and "src" not in entry:
                _revalidate(realm_id, key, client, lock_ttl=entry.get("lt", 60.0))
            return TokenResult(snapshot.token, snapshot.expires_at, entry.get("src", "cache"))

    secret = _load_secret(realm_id, key)
    if secret.realm.kind == Realm.Kind.FIXED:
        return _fixed_token(secret, now)

    stored = getattr(secret, "cached_token", None)
    if not flush:
        snapshot = _from_row(secret, stored)
        if snapshot and snapshot.alive(now):
            _cache_put(secret, stored, now)
            if now >= snapshot.refresh_at:
                _revalidate(realm_id, key, client, lock_ttl=_lock_ttl(secret.realm))
            return TokenResult(snapshot.token, snapshot.expires_at, "database")
        # No token, or it expired: this request waits on the single flight.
        return _refresh(secret, Need(), trigger=trigger, client=client)

    need = Need.flush(secret.realm, now, rejected)
    found = _look_again(secret, now, need, stored=stored)
    if found:
        return found
    if rejected is not None:
        _refuse_early_rejection(secret, stored, now)
    if trigger == FetchLog.Trigger.REQUEST:
        trigger = FetchLog.Trigger.FLUSH
    return _refresh(secret, need, trigger=trigger, client=client)


def _refuse_early_rejection(secret: Secret, stored: CachedToken | None, now: float) -> None:
    """
    A token reported as rejected within the realm's minimum interval after it
    was fetched is not refreshed again (that is how a reporting loop would
    burn the quota), and not handed back either: 429 until the interval ends.
    """
    if stored is None:
        return
    wait = _epoch(stored.fetched_at) + secret.realm.min_flush_interval - now
    if wait > 0:
        raise TooManyFlushes(
            f"The token of {secret} was fetched {now - _epoch(stored.fetched_at):.0f} s ago; "
            f"it may be refreshed again in {wait:.0f} s.",
            retry_after=max(1, int(wait + 0.999)),
        )


def _load_secret(realm_id: str, key: str) -> Secret:
    try:
        secret = Secret.objects.select_related("realm", "cached_token").get(
            realm_id=realm_id, key=key
        )
    except Secret.DoesNotExist:
        if not Realm.objects.filter(pk=realm_id).exists():
            raise NotFound(f"Unknown realm {realm_id!r}.") from None
        raise NotFound(f"Realm {realm_id!r} has no secret {key!r}.") from None
    except DatabaseError:
        raise UpstreamUnavailable(
            "The database is unavailable and the token is not in the cache.", retry_after=5
        ) from None
    if (secret.realm_id, secret.key) != (realm_id, key):
        # MySQL's collation matched another case: names are exact, everywhere
        # (cache keys and clients' patterns are case-sensitive).
        raise NotFound(f"Realm {realm_id!r} has no secret {key!r}.")
    if not secret.enabled:
        raise SecretDisabled(f"Secret {realm_id}/{key} is disabled.")
    return secret


def _cache_put(secret: Secret, stored: CachedToken, now: float) -> None:
    token_cache.cache_write(
        secret.realm_id,
        secret.key,
        token=stored.token,
        expires_at=_epoch(stored.expires_at),
        fetched_at=_epoch(stored.fetched_at),
        refresh_at=_epoch(stored.refresh_at(secret.realm.refresh_margin)),
        now=now,
        lock_ttl=_lock_ttl(secret.realm),
    )


_UNSET = object()


def _look_again(secret, now, need: Need, *, stored=_UNSET) -> TokenResult | None:
    """A token that satisfies `need`: the cache first, then the database."""
    entry = token_cache.cache_read(secret.realm_id, secret.key)
    snapshot = _from_entry(entry)
    if need.satisfied_by(snapshot, now):
        return TokenResult(snapshot.token, snapshot.expires_at, "cache")
    if stored is _UNSET:
        stored = CachedToken.objects.filter(secret=secret).first()
    snapshot = _from_row(secret, stored)
    if need.satisfied_by(snapshot, now):
        _cache_put(secret, stored, now)
        return TokenResult(snapshot.token, snapshot.expires_at, "database")
    return None


def _fixed_token(secret: Secret, now: float) -> TokenResult:
    """Realm kind fixed: the token the operator stored on the secret."""
    if not secret.fixed_token_is_valid(_datetime(now)):
        if not secret.token:
            raise NotFound(f"Secret {secret} has no fixed token stored.")
        raise NotFound(f"The fixed token of {secret} expired at {secret.token_expires_at}.")
    expires_at = _epoch(secret.token_expires_at) if secret.token_expires_at else None
    token_cache.cache_write(
        secret.realm_id,
        secret.key,
        token=secret.token,
        expires_at=expires_at,
        fetched_at=_epoch(secret.updated_at),
        refresh_at=expires_at if expires_at is not None else now + 86400,
        now=now,
        source="fixed",
    )
    return TokenResult(secret.token, expires_at, "fixed")


def _lock_name(realm_id: str, key: str) -> str:
    """The single-flight lock of one secret, by the names apps use (the cache path has no pk)."""
    return f"secret:{realm_id}:{key}"


def _call_budget(realm: Realm) -> float:
    """
    The longest one refresh may take: for every attempt, the wait for an
    upstream slot (timeout) and the call itself (at most 2 × timeout: see
    upstream.fetch), plus the backoffs between attempts.
    """
    attempts = realm.max_retries + 1
    return attempts * 3 * realm.timeout + realm.max_retries * RETRY_CAP


def _lock_ttl(realm: Realm) -> float:
    # Longer than the longest refresh, so the lock is not lost mid-call;
    # short enough that a killed holder blocks the others only briefly.
    return _call_budget(realm) + 5


def _refresh(secret, need: Need, *, trigger, client) -> TokenResult:
    """Take the secret's lock (or wait for its holder's result), then fetch if still needed."""
    realm = secret.realm
    lock = lock_for(_lock_name(secret.realm_id, secret.key), ttl=_lock_ttl(realm))
    deadline = time.monotonic() + realm.timeout + LOCK_WAIT_GRACE
    delay = 0.005
    while not lock.try_acquire():
        # Someone else is refreshing: poll for their result instead of
        # queueing on the lock, so every waiter returns as soon as it lands.
        found = _look_again(secret, time.time(), need)
        if found:
            return found
        if time.monotonic() >= deadline:
            still_valid = _look_again(secret, time.time(), Need(fetched_after=0.0))
            if still_valid:
                return still_valid
            raise LockWaitTimeout(
                f"Another refresh of {secret} is taking longer than {realm.timeout:g} s.",
                retry_after=1,
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    try:
        found = _look_again(secret, time.time(), need)
        if found:
            return found
        return _fetch_and_store(secret, trigger=trigger, client=client)
    finally:
        lock.release()


# --- Stale-while-revalidate ------------------------------------------------------

_background: set[threading.Thread] = set()
_background_lock = threading.Lock()


def _revalidate(realm_id: str, key: str, client: str, *, lock_ttl: float) -> None:
    """
    Refresh a due token in the background, once: only the request that wins
    the secret's lock starts it; the others (and this one) return at once.
    The lock, with the realm's usual lease, passes to the background thread.
    """
    backoff = f"revalidate:{realm_id}:{key}"
    if token_cache.flag_get(backoff):
        return
    lock = lock_for(_lock_name(realm_id, key), ttl=lock_ttl)
    if not lock.try_acquire():
        return
    thread = threading.Thread(
        target=_background_refresh,
        args=(realm_id, key, lock, client),
        name=f"revalidate {realm_id}/{key}",
        daemon=True,
    )
    with _background_lock:
        _background.add(thread)
    thread.start()


def _background_refresh(realm_id, key, lock, client) -> None:
    try:
        secret = _load_secret(realm_id, key)
        if secret.realm.kind != Realm.Kind.FIXED and not _look_again(secret, time.time(), Need()):
            _fetch_and_store(secret, trigger=FetchLog.Trigger.REQUEST, client=client)
    except ServiceError as error:
        token_cache.flag_set(f"revalidate:{realm_id}:{key}", True, REVALIDATE_BACKOFF)
        logger.warning("background refresh of %s/%s failed: %s", realm_id, key, error.code)
    except Exception:  # a thread has no caller to raise to
        logger.exception("background refresh of %s/%s crashed", realm_id, key)
    finally:
        lock.release()
        connections.close_all()
        with _background_lock:
            _background.discard(threading.current_thread())


def wait_for_background_refreshes(timeout: float = 10.0) -> None:
    """Block until the background refreshes started so far are done (tests, shutdown)."""
    deadline = time.monotonic() + timeout
    while True:
        with _background_lock:
            threads = list(_background)
        if not threads:
            return
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if time.monotonic() >= deadline:
            return


# --- The upstream call --------------------------------------------------------------


def _log_attempt(secret, *, trigger, client, outcome, **fields) -> None:
    """One FetchLog row per attempt; kept for later if the database is down."""
    outbox.write(
        FetchLog,
        realm=secret.realm_id,
        key=secret.key,
        trigger=trigger,
        outcome=outcome,
        client=client,
        **fields,
    )


def _fetch_and_store(secret: Secret, *, trigger: str, client: str) -> TokenResult:
    """
    Call the upstream (outside any transaction) through the realm's guards,
    retrying network errors and 5xx; then persist, cache and log.
    """
    realm = secret.realm
    attempt = 0
    while True:
        try:
            guards.check(realm)
            with guards.upstream_slot(realm, ttl=_lock_ttl(realm), wait=realm.timeout):
                sent_at = time.time()
                fetched = upstream.fetch(realm, secret)
            break
        except guards.Refused as refused:
            _log_attempt(
                secret,
                trigger=trigger,
                client=client,
                outcome=FetchLog.Outcome.REJECTED,
                error_code=refused.reason,
                error_message=refused.detail[:500],
            )
            raise UpstreamUnavailable(
                refused.detail, retry_after=refused.retry_after, outcome="rejected"
            ) from None
        except upstream.UpstreamFailure as failure:
            _log_attempt(
                secret,
                trigger=trigger,
                client=client,
                outcome=failure.outcome,
                http_status=failure.http_status,
                error_code=failure.error_code,
                error_message=failure.error_message,
                duration_ms=failure.duration_ms,
            )
            guards.record_failure(realm, failure)
            logger.warning("fetch %s failed: %s (attempt %d)", secret, failure.outcome, attempt + 1)
            if guards.is_retryable(failure) and attempt < realm.max_retries:
                time.sleep(random.uniform(0, min(RETRY_CAP, RETRY_BASE * 2**attempt)))  # noqa: S311
                attempt += 1
                continue
            _raise_for(failure)

    guards.record_success(realm)
    now = time.time()
    expires_at = sent_at + fetched.lifetime
    result = TokenResult(
        fetched.token,
        expires_at,
        "upstream",
        http_status=fetched.http_status,
        lifetime=fetched.lifetime,
    )
    _log_attempt(
        secret,
        trigger=trigger,
        client=client,
        outcome=FetchLog.Outcome.OK,
        http_status=fetched.http_status,
        duration_ms=fetched.duration_ms,
        lifetime=int(fetched.lifetime),
    )
    if _changed_meanwhile(secret):
        # Disabled, deleted or given new credentials while we fetched: the
        # caller asked before that and gets its token, but it is not kept.
        logger.warning("%s changed during the fetch; its token is not kept", secret)
        return result
    stored = CachedToken(
        secret=secret,
        token=fetched.token,
        expires_at=_datetime(expires_at),
        fetched_at=_datetime(now),
    )
    # The cache first: if the database is down, the token is still served
    # from Redis while the writes wait in the outbox.
    _cache_put(secret, stored, now)
    outbox.run(_store_token, secret.pk, fetched.token, stored.expires_at, stored.fetched_at)
    logger.info("fetched %s (lifetime %ds, attempt %d)", secret, fetched.lifetime, attempt + 1)
    return result


def _changed_meanwhile(secret: Secret) -> bool:
    """Whether the secret was changed (or deleted, or disabled) since it was loaded."""
    try:
        return not Secret.objects.filter(
            pk=secret.pk, version=secret.version, enabled=True
        ).exists()
    except DatabaseError:
        return False  # cannot tell: keep the token (the outbox stores it later)


def _store_token(secret_pk, token, expires_at, fetched_at) -> None:
    """
    Persist a fetched token, unless a newer one is already stored (newer:
    expiring later, which with equal lifetimes means requested later: the
    one a provider such as WeChat issued last and keeps valid).
    """
    with transaction.atomic():
        current = CachedToken.objects.select_for_update().filter(secret_id=secret_pk).first()
        if current is None:
            if Secret.objects.filter(pk=secret_pk).exists():
                CachedToken.objects.create(
                    secret_id=secret_pk, token=token, expires_at=expires_at, fetched_at=fetched_at
                )
        elif current.expires_at <= expires_at:
            current.token, current.expires_at, current.fetched_at = token, expires_at, fetched_at
            current.save()


def _raise_for(failure: upstream.UpstreamFailure):
    context = {
        "outcome": failure.outcome,
        "http_status": failure.http_status,
        "error_code": failure.error_code,
        "error_message": failure.error_message,
    }
    if failure.outcome in UNAVAILABLE_OUTCOMES:
        raise UpstreamUnavailable(failure.detail, retry_after=5, **context) from None
    raise UpstreamError(failure.detail, **context) from None


# --- Operators and the refresher ------------------------------------------------------


def mask_token(token: str) -> str:
    """The first 6 characters and an ellipsis: enough to recognise, not to use."""
    return f"{token[:6]}…" if len(token) > 6 else "…"


def token_test_fetch(realm_id: str, key: str, *, client: str = "") -> dict:
    """
    An operator's test of a secret: a real fetch through the token path
    (trigger admin). A real fetch invalidates the previous token at providers
    such as WeChat, so its token is stored and served, not thrown away.
    Returns what happened, with the token masked; raises NotFound and
    SecretDisabled like token_get.
    """
    secret = _load_secret(realm_id, key)
    if secret.realm.kind == Realm.Kind.FIXED:
        result = _fixed_token(secret, time.time())
    else:
        try:
            # Not subject to the flush interval: the operator wants a real call.
            need = Need(fetched_after=time.time())
            result = _refresh(secret, need, trigger=FetchLog.Trigger.ADMIN, client=client)
        except (UpstreamError, UpstreamUnavailable, LockWaitTimeout) as error:
            return {
                "ok": False,
                "error": error.code,
                "detail": error.detail,
                "outcome": error.context.get("outcome", error.code),
                "http_status": error.context.get("http_status"),
                "error_code": error.context.get("error_code", ""),
                "error_message": error.context.get("error_message", ""),
            }
    return {
        "ok": True,
        "source": result.source,
        "http_status": result.http_status,
        "lifetime": None if result.lifetime is None else int(result.lifetime),
        "expires_in": result.expires_in_ms(),
        "token": mask_token(result.token),
    }


@dataclass
class RefreshReport:
    """What one refresher run did."""

    checked: int = 0
    due: int = 0
    refreshed: int = 0
    failed: int = 0

    def __str__(self):
        return (
            f"{self.checked} tokens checked, {self.due} due, {self.refreshed} refreshed, "
            f"{self.failed} failed"
        )


def tokens_refresh_due(*, lookahead: float, workers: int = 4) -> RefreshReport:
    """
    Refresh every enabled secret's token that comes due within `lookahead`
    seconds (each token's due time carries its own jitter), through the same
    single flight as requests, so apps normally never wait on an upstream.
    """
    now = time.time()
    report = RefreshReport()
    due = []
    rows = (
        CachedToken.objects.select_related("secret__realm")
        .filter(secret__enabled=True)
        .exclude(secret__realm__kind=Realm.Kind.FIXED)
        .defer("token")  # no decryption for the ones that are not due
    )
    for stored in rows:
        report.checked += 1
        realm = stored.secret.realm
        if now + lookahead >= _epoch(stored.refresh_at(realm.refresh_margin)):
            due.append(stored.secret)
    report.due = len(due)

    def refresh(secret):
        try:
            result = _refresh(
                secret,
                Need(lookahead=lookahead),
                trigger=FetchLog.Trigger.REFRESHER,
                client="refresher",
            )
            return "refreshed" if result.source == "upstream" else "skipped"
        except ServiceError:
            return "failed"
        finally:
            connections.close_all()

    if due:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for outcome in pool.map(refresh, due):
                if outcome == "refreshed":
                    report.refreshed += 1
                elif outcome == "failed":
                    report.failed += 1
    return report


def fetchlog_prune(age, *, batch_size: int = 5000) -> int:
    """Delete FetchLog rows older than `age` (a timedelta), `batch_size` at a time."""
    from django.utils import timezone

    cutoff = timezone.now() - age
    deleted = 0
    while True:
        ids = list(
            FetchLog.objects.filter(created_at__lt=cutoff).values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        deleted += FetchLog.objects.filter(id__in=ids).delete()[0]
