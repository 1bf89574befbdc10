"""
The token path (DESIGN.md, "The token path"):

1. the cache, when the token has more than its refresh margin left;
2. else the database row, when still good (put back in the cache);
3. else the secret's single-flight lock: look again (another worker may have
   just refreshed), and only then call the upstream; persist, cache, log,
   release.

However many requests, workers or hosts arrive at once, one upstream call
per refresh. The upstream call runs outside any database transaction.
"""

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import transaction

from realms.models import Realm
from secret_store.models import Secret
from tokens import cache as token_cache
from tokens import upstream
from tokens.locks import lock_for
from tokens.models import CachedToken, FetchLog
from tokenserver.errors import (
    LockWaitTimeout,
    NotFound,
    SecretDisabled,
    UpstreamError,
    UpstreamUnavailable,
)

logger = logging.getLogger(__name__)

#: How much longer than the realm's timeout a request waits for another
#: worker's refresh before it gives up with 503.
LOCK_WAIT_GRACE = 1.0

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


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def token_get(
    realm_id: str,
    key: str,
    *,
    flush: bool = False,
    trigger: str = FetchLog.Trigger.REQUEST,
    client: str = "",
) -> TokenResult:
    """
    A valid token for the secret (`realm_id`, `key`).

    `flush` asks for a token fetched after this call began (still
    single-flight: concurrent flushes share one upstream call). Raises
    NotFound, SecretDisabled, UpstreamError (502), UpstreamUnavailable or
    LockWaitTimeout (503).
    """
    requested_at = time.time()
    if not flush:
        hit = _from_cache(realm_id, key, requested_at)
        if hit:
            return hit

    secret = _load_secret(realm_id, key)
    if secret.realm.kind == Realm.Kind.FIXED:
        return _fixed_token(secret, requested_at)

    if not flush:
        stored = _from_database(secret, getattr(secret, "cached_token", None), requested_at)
        if stored:
            return stored

    if flush and trigger == FetchLog.Trigger.REQUEST:
        trigger = FetchLog.Trigger.FLUSH
    return _refresh(secret, requested_at=requested_at, flush=flush, trigger=trigger, client=client)


def _load_secret(realm_id: str, key: str) -> Secret:
    try:
        secret = Secret.objects.select_related("realm", "cached_token").get(
            realm_id=realm_id, key=key
        )
    except Secret.DoesNotExist:
        if not Realm.objects.filter(pk=realm_id).exists():
            raise NotFound(f"Unknown realm {realm_id!r}.") from None
        raise NotFound(f"Realm {realm_id!r} has no secret {key!r}.") from None
    if not secret.enabled:
        raise SecretDisabled(f"Secret {realm_id}/{key} is disabled.")
    return secret


def _from_cache(realm_id, key, now, *, fetched_after=None) -> TokenResult | None:
    """
    The cached token, if good enough: before its refresh time, or (for a
    flush) fetched after `fetched_after` and not yet expired.
    """
    entry = token_cache.cache_read(realm_id, key)
    if not entry:
        return None
    if fetched_after is None:
        usable = entry["ref"] > now
    else:
        usable = entry["at"] >= fetched_after and (entry["exp"] is None or entry["exp"] > now)
    if not usable:
        return None
    return TokenResult(token_cache.entry_token(entry), entry["exp"], entry.get("src", "cache"))


def _cache_put(secret: Secret, stored: CachedToken, now: float) -> None:
    token_cache.cache_write(
        secret.realm_id,
        secret.key,
        token=stored.token,
        expires_at=_epoch(stored.expires_at),
        fetched_at=_epoch(stored.fetched_at),
        refresh_at=_epoch(stored.refresh_at(secret.realm.refresh_margin)),
        now=now,
    )


def _from_database(secret, stored, now, *, fetched_after=None) -> TokenResult | None:
    """The stored token, if good enough (as in _from_cache); caches it again."""
    if stored is None:
        return None
    moment = _datetime(now)
    if fetched_after is None:
        usable = stored.is_fresh(secret.realm.refresh_margin, moment)
    else:
        usable = _epoch(stored.fetched_at) >= fetched_after and stored.is_alive(moment)
    if not usable:
        return None
    _cache_put(secret, stored, now)
    return TokenResult(stored.token, _epoch(stored.expires_at), "database")


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


def _look_again(secret, now, fetched_after) -> TokenResult | None:
    """Has another worker refreshed meanwhile? The cache first, then the database."""
    found = _from_cache(secret.realm_id, secret.key, now, fetched_after=fetched_after)
    if found:
        return found
    stored = CachedToken.objects.filter(secret=secret).first()
    return _from_database(secret, stored, now, fetched_after=fetched_after)


def _lock_ttl(realm: Realm) -> float:
    # Longer than the longest upstream call (connect + read timeouts), so the
    # lock is not lost mid-call; short enough that a killed holder blocks the
    # others only briefly.
    return 2 * realm.timeout + 5


def _refresh(secret, *, requested_at, flush, trigger, client) -> TokenResult:
    realm = secret.realm
    # A flush is satisfied by any token fetched after it was asked for: that
    # is how concurrent flushes share one upstream call.
    fetched_after = requested_at if flush else None
    lock = lock_for(f"secret:{secret.pk}", ttl=_lock_ttl(realm))
    deadline = time.monotonic() + realm.timeout + LOCK_WAIT_GRACE
    delay = 0.005
    while not lock.try_acquire():
        # Someone else is refreshing: poll for their result instead of
        # queueing on the lock, so every waiter returns as soon as it lands.
        found = _look_again(secret, time.time(), fetched_after)
        if found:
            return found
        if time.monotonic() >= deadline:
            raise LockWaitTimeout(
                f"Another refresh of {secret} is taking longer than {realm.timeout:g} s.",
                retry_after=1,
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    try:
        found = _look_again(secret, time.time(), fetched_after)
        if found:
            return found
        return _fetch_and_store(secret, trigger=trigger, client=client)
    finally:
        lock.release()


def _fetch_and_store(secret: Secret, *, trigger: str, client: str) -> TokenResult:
    """Call the upstream (outside any transaction), then persist, cache and log."""
    realm = secret.realm
    sent_at = time.time()
    try:
        fetched = upstream.fetch(realm, secret)
    except upstream.UpstreamFailure as failure:
        FetchLog.objects.create(
            realm=realm.id,
            key=secret.key,
            trigger=trigger,
            outcome=failure.outcome,
            http_status=failure.http_status,
            error_code=failure.error_code,
            error_message=failure.error_message,
            duration_ms=failure.duration_ms,
            client=client,
        )
        logger.warning("fetch %s failed: %s", secret, failure.outcome)
        context = {
            "outcome": failure.outcome,
            "http_status": failure.http_status,
            "error_code": failure.error_code,
            "error_message": failure.error_message,
        }
        if failure.outcome in UNAVAILABLE_OUTCOMES:
            raise UpstreamUnavailable(failure.detail, retry_after=5, **context) from None
        raise UpstreamError(failure.detail, **context) from None

    now = time.time()
    expires_at = sent_at + fetched.lifetime
    with transaction.atomic():
        stored, _ = CachedToken.objects.update_or_create(
            secret=secret,
            defaults={
                "token": fetched.token,
                "expires_at": _datetime(expires_at),
                "fetched_at": _datetime(now),
            },
        )
        FetchLog.objects.create(
            realm=realm.id,
            key=secret.key,
            trigger=trigger,
            outcome=FetchLog.Outcome.OK,
            http_status=fetched.http_status,
            duration_ms=fetched.duration_ms,
            lifetime=int(fetched.lifetime),
            client=client,
        )
    _cache_put(secret, stored, now)
    logger.info("fetched %s (lifetime %ds)", secret, fetched.lifetime)
    return TokenResult(
        fetched.token,
        expires_at,
        "upstream",
        http_status=fetched.http_status,
        lifetime=fetched.lifetime,
    )


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
    try:
        result = token_get(realm_id, key, flush=True, trigger=FetchLog.Trigger.ADMIN, client=client)
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
