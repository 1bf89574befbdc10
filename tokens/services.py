"""
The token path (DESIGN.md, "The token path"), as the API, the console and the
commands call it:

1. the cache: a token that has not expired is returned at once; if it is
   inside its refresh margin, one request (across all workers and hosts: it
   must win the secret's lock) starts a refresh in the background
   (tokens.background);
2. else the database row, the same way (and put back in the cache);
3. else (no token, or it expired) the single flight (tokens.single_flight):
   take the secret's lock, look again (another worker may have just
   refreshed), and only then call the upstream; persist, cache, log, release.

Flushes (`flush=true`) skip 1–2 and are satisfied by any token fetched after
they were asked for, or within the realm's `min_flush_interval`; with
`rejected=<token>` they are satisfied as soon as the current token is another
one.
"""

import logging
import time
from datetime import UTC, datetime

from django.db import transaction

from realms.models import Realm
from secret_store.models import Secret
from tokens import cache as token_cache
from tokens.background import revalidate
from tokens.models import FetchLog, StoredToken
from tokens.results import Snapshot, TokenResult
from tokens.single_flight import (
    Need,
    cache_put,
    load_secret,
    lock_ttl,
    look_again,
    refresh,
    stored_token,
)
from tokenserver import metrics
from tokenserver.errors import (
    LockWaitTimeout,
    NotFound,
    ServiceError,
    TooManyFlushes,
    UpstreamError,
    UpstreamUnavailable,
)

logger = logging.getLogger(__name__)

#: token_get's "read the cache entry yourself".
_READ = object()


def token_get(
    realm_id: str,
    key: str,
    *,
    flush: bool = False,
    rejected: str | None = None,
    trigger: str = FetchLog.Trigger.REQUEST,
    client: str = "",
    cached=_READ,
) -> TokenResult:
    """
    A valid token for the secret (`realm_id`, `key`).

    `cached` is the secret's cache entry when the caller has read it already
    (the API's fast path reads it with its rate-limit count, in one round
    trip); by default step 1 reads it.

    `flush` asks for a new token (coalesced, and not more often than the
    realm's `min_flush_interval`); `rejected` (implies `flush`) names the token
    the provider refused, so the refresh happens only if it is still current.
    Raises NotFound, SecretDisabled, TooManyFlushes (429), UpstreamError
    (502), UpstreamUnavailable or LockWaitTimeout (503).

    Counted in tokenserver_token_requests by realm and source (tokenserver.metrics).
    """
    try:
        result = _token_path(realm_id, key, flush, rejected, trigger, client, cached)
    except ServiceError as error:
        # The realm's name is a label only once it is known to exist.
        known = not error.context.get("realm_unverified")
        metrics.token_request(realm_id if known else metrics.UNKNOWN_REALM, "error")
        raise
    metrics.token_request(realm_id, "stale" if result.stale else result.source)
    return result


def _token_path(realm_id, key, flush, rejected, trigger, client, cached) -> TokenResult:
    """token_get's three steps."""
    now = time.time()
    flush = flush or rejected is not None

    # 1. The cache: no database query.
    if not flush:
        if cached is _READ:
            cached = token_cache.entry_read(realm_id, key)
        if cached and cached.alive(now):
            metrics.cache_lookup(hit=True)
            stale = cached.due(now)
            if stale:
                revalidate(realm_id, key, client, lock_ttl=cached.lock_ttl)
            return cached.result(stale=stale)
        metrics.cache_lookup(hit=False)

    secret = load_secret(realm_id, key)
    if secret.realm.kind == Realm.Kind.FIXED:
        return _fixed_token(secret, now)
    stored = stored_token(secret)

    # 2. The database row, put back in the cache.
    if not flush:
        if stored is not None:
            realm = secret.realm
            snapshot = stored.snapshot(realm.refresh_margin, reissue=realm.reissue_limit())
            if snapshot.alive(now):
                cache_put(secret, stored, now)
                stale = snapshot.due(now)
                if stale:
                    revalidate(realm_id, key, client, lock_ttl=lock_ttl(secret.realm))
                return snapshot.result(stale=stale)
        # 3. No token, or it expired: this request waits on the single flight.
        return refresh(secret, Need(), trigger=trigger, client=client)

    # A flush: satisfied by a token fetched since it was asked for (or within
    # the realm's minimum interval), else 3. with the flush's own need.
    need = Need.flush(secret.realm, now, rejected)
    found = look_again(secret, now, need, stored=stored)
    if found:
        return found
    if rejected is not None:
        _refuse_early_rejection(secret, stored, now)
    if trigger == FetchLog.Trigger.REQUEST:
        trigger = FetchLog.Trigger.FLUSH
    return refresh(secret, need, trigger=trigger, client=client)


def _refuse_early_rejection(secret: Secret, stored: StoredToken | None, now: float) -> None:
    """
    A token reported as rejected within the realm's minimum interval after it
    was fetched is not refreshed again (that is how a reporting loop would
    burn the quota), and not handed back either: 429 until the interval ends.
    """
    if stored is None:
        return
    fetched_at = stored.fetched_at.timestamp()
    wait = fetched_at + secret.realm.min_flush_interval - now
    if wait > 0:
        raise TooManyFlushes(
            f"The token of {secret} was fetched {now - fetched_at:.0f} s ago; "
            f"it may be refreshed again in {wait:.0f} s.",
            retry_after=max(1, int(wait + 0.999)),
        )


def _fixed_token(secret: Secret, now: float) -> TokenResult:
    """Realm kind fixed: the token the operator stored on the secret."""
    if not secret.fixed_token_is_valid(datetime.fromtimestamp(now, tz=UTC)):
        if not secret.token:
            raise NotFound(f"Secret {secret} has no fixed token stored.")
        raise NotFound(f"The fixed token of {secret} expired at {secret.token_expires_at}.")
    expires_at = secret.token_expires_at.timestamp() if secret.token_expires_at else None
    snapshot = Snapshot(
        secret.token,
        secret.updated_at.timestamp(),
        expires_at,
        expires_at if expires_at is not None else now + 86400,
        source="fixed",
    )
    token_cache.entry_write(secret.realm_id, secret.name, snapshot, now=now)
    return snapshot.result()


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
    secret = load_secret(realm_id, key)
    if secret.realm.kind == Realm.Kind.FIXED:
        result = _fixed_token(secret, time.time())
    else:
        try:
            # Not subject to the flush interval, nor to a remembered permanent error:
            # the operator (who may just have fixed the provider's IP whitelist) wants
            # a real call, and its answer sets or clears what is remembered.
            need = Need(fetched_after=time.time())
            result = refresh(
                secret, need, trigger=FetchLog.Trigger.ADMIN, client=client, recall=False
            )
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


def token_clear(secret: Secret, *, client: str = "") -> bool:
    """
    Forget the secret's token: the stored row and the cache entry (now, and
    again on commit, like the eviction signals), so the next request fetches
    a new one. A fixed token is the secret's own value: only its cache entry
    goes. A fetch already in flight may still store its token afterwards.
    Returns whether a stored token was deleted.
    """
    deleted, _ = StoredToken.objects.filter(secret=secret).delete()
    pair = [(secret.realm_id, secret.name)]
    token_cache.entries_evict(pair)
    transaction.on_commit(lambda: token_cache.entries_evict(pair))
    logger.info("%s: token cleared by %s", secret, client or "-")
    return bool(deleted)
