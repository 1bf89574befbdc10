"""
The single-flight fetch: however many requests, workers and hosts want a new
token for one secret at once, one of them calls the upstream.

`refresh()` takes the secret's lock (or waits for its holder's result),
looks again (another worker may have just stored what this request needs),
and only then calls the upstream through the realm's guards (circuit
breaker, rate-limit backoff, concurrency cap), retrying network errors and
HTTP 5xx with jittered backoff; it then caches and stores the token and
writes one FetchLog row per attempt. The upstream call never runs inside a
database transaction.

A chained realm's fetch (issue 14; tokens.chains) asks for its parent's token
first, holding its own lock; when its upstream refuses that token, the parent is
refreshed once (compare-and-refresh) and the call made once more. A fetch that
stores a new token refreshes, in a background thread, the chained tokens that
were fetched with another one.
"""

import hmac
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from realms.models import Realm
from secret_store.models import Secret
from tokens import cache as token_cache
from tokens import chains, guards, permanent_errors, quota, upstream
from tokens.locks import Lease, lock_for
from tokens.models import FetchLog, StoredToken, fingerprint
from tokens.refresh_health import refresh_failed, refresh_succeeded
from tokens.results import Snapshot, TokenResult
from tokens.threads import start_daemon
from tokenserver import metrics, request_id
from tokenserver.errors import (
    LockWaitTimeout,
    NotFound,
    QuotaExhausted,
    SecretDisabled,
    ServiceError,
    UnsendableRequest,
    UpstreamError,
    UpstreamUnavailable,
)
from tokenserver.outbox import outbox

logger = logging.getLogger(__name__)
#: One line per upstream attempt (tokens.fetch), with the FetchLog row's fields.
fetch_logger = logging.getLogger("tokens.fetch")

#: How much longer than the realm's timeout a request waits for another
#: worker's refresh before it gives up (with the still-valid token, or 503).
LOCK_WAIT_GRACE = 1.0

#: Retry backoff: full jitter over BASE × 2^attempt, at most CAP seconds.
RETRY_BASE, RETRY_CAP = 0.2, 2.0

#: Outcomes that mean "try again later" (503) rather than "the upstream said no" (502).
UNAVAILABLE_OUTCOMES = {FetchLog.Outcome.TIMEOUT, FetchLog.Outcome.UNREACHABLE}

#: A chained realm's refresh may take this many of its own call budgets while it holds
#: its lock: the parent's token, its call, the parent's refresh after a rejection, its
#: call again (the parent's sized like its own: usually the same provider).
CHAIN_BUDGETS = 4


@dataclass(frozen=True)
class Need:
    """
    Which token satisfies a request. Plain requests want a token not yet due
    for refresh (`lookahead` seconds ahead, for the refresher); flushes want
    one fetched at or after `fetched_after`; with `rejected`, any token but
    that one (a token the provider refused is never handed back). With
    `parent` (a chained realm refreshed ahead), only a token fetched with the
    parent token of that fingerprint does, besides.
    """

    fetched_after: float | None = None
    rejected: str | None = None
    lookahead: float = 0.0
    parent: str | None = None

    @classmethod
    def flush(cls, realm: Realm, requested_at: float, rejected: str | None = None) -> "Need":
        # Inside the realm's minimum interval the token just fetched is the answer.
        return cls(fetched_after=requested_at - realm.min_flush_interval, rejected=rejected)

    @property
    def forced(self) -> bool:
        """A new token asked for (a flush, a rejected token, a test fetch), not one kept alive."""
        return self.fetched_after is not None or self.rejected is not None

    @property
    def forces_new_token(self) -> bool:
        """
        Whether a fetch for this need answers a reported rejection: the provider is
        asked for a new token even where it would hand back the one it holds (the
        realm's `$force_refresh` is true: WeChat's stable_token, force_refresh). Only
        the fetch made because the rejected token was still current sends it; the
        requests coalesced on it, plain refreshes and flushes do not.
        """
        return self.rejected is not None

    def satisfied_by(self, snapshot: Snapshot | None, now: float) -> bool:
        if snapshot is None or not snapshot.alive(now):
            return False
        if self.parent is not None and snapshot.parent != self.parent:
            return False
        if self.rejected is not None:
            # Already replaced: no upstream call. Still current: refresh.
            return not hmac.compare_digest(snapshot.token.encode(), self.rejected.encode())
        if self.fetched_after is not None:
            return snapshot.fetched_at >= self.fetched_after
        return now + self.lookahead < snapshot.refresh_at


#: Any token that has not expired.
ANY_VALID = Need(fetched_after=0.0)


def load_secret(realm_id: str, key: str) -> Secret:
    """
    The enabled secret (`realm_id`, `key`), with its realm and stored token.
    Raises NotFound, SecretDisabled, or UpstreamUnavailable when the database
    cannot answer.
    """
    try:
        # The remembered permanent error comes in the same query (tokens.permanent_errors).
        secret = Secret.objects.select_related("realm", "stored_token", "remembered_error").get(
            realm_id=realm_id, name=key
        )
    except Secret.DoesNotExist:
        # realm_unverified: the name came from the request (no metric label of it).
        if not Realm.objects.filter(pk=realm_id).exists():
            raise NotFound(f"Unknown realm {realm_id!r}.", realm_unverified=True) from None
        raise NotFound(
            f"Realm {realm_id!r} has no secret {key!r}.", realm_unverified=True
        ) from None
    except DatabaseError:
        raise UpstreamUnavailable(
            "The database is unavailable and the token is not in the cache.",
            retry_after=5,
            realm_unverified=True,
        ) from None
    if (secret.realm_id, secret.name) != (realm_id, key):
        # MySQL's collation matched another case: names are exact, everywhere
        # (cache keys and clients' patterns are case-sensitive).
        raise NotFound(f"Realm {realm_id!r} has no secret {key!r}.", realm_unverified=True)
    if not secret.enabled:
        raise SecretDisabled(f"Secret {realm_id}/{key} is disabled.")
    return secret


def stored_token(secret: Secret) -> StoredToken | None:
    """The secret's stored token, as loaded with it (load_secret selects it)."""
    try:
        return secret.stored_token
    except StoredToken.DoesNotExist:
        return None


def call_budget(realm: Realm) -> float:
    """
    The longest one refresh may take: for every attempt, the wait for an
    upstream slot (timeout) and the call itself (at most 2 × timeout: see
    upstream.fetch), plus the backoffs between attempts.
    """
    attempts = realm.max_retries + 1
    return attempts * 3 * realm.timeout + realm.max_retries * RETRY_CAP


def lock_ttl(realm: Realm) -> float:
    """
    The longest a refresh may hold a secret's lock (or an upstream slot):
    longer than the longest refresh, so a live holder keeps it to the end of
    its call. The lease itself is short and renewed by a heartbeat while the
    holder lives (tokens.locks), so a killed holder blocks the others only
    for TOKENSERVER_LOCK_LEASE; this caps how long a stuck one can renew it.
    A chained realm's holder also waits for its parent's token (CHAIN_BUDGETS).
    """
    return call_budget(realm) * (CHAIN_BUDGETS if realm.parent_id else 1) + 5


def wait_budget(realm: Realm) -> float:
    """
    How long a request waits for another worker's refresh of a secret: the
    realm's timeout (twice for a chained realm, whose holder asks for its
    parent's token first) and a grace.
    """
    return realm.timeout * (2 if realm.parent_id else 1) + LOCK_WAIT_GRACE


def secret_lock(realm_id: str, key: str, max_hold: float) -> Lease:
    """The single-flight lock of one secret, by the names apps use (the cache path has no pk)."""
    return lock_for(f"secret:{realm_id}:{key}", max_hold=max_hold)


def cache_put(secret: Secret, stored: StoredToken, now: float) -> None:
    """Put a stored token back in the cache, with the realm's refresh time."""
    realm = secret.realm
    token_cache.entry_write(
        secret.realm_id,
        secret.name,
        stored.snapshot(
            realm.refresh_margin, lock_ttl=lock_ttl(realm), reissue=realm.reissue_limit()
        ),
        now=now,
    )


#: look_again's "read the row anew".
_READ = object()


def look_again(secret: Secret, now: float, need: Need, *, stored=_READ) -> TokenResult | None:
    """
    A token that satisfies `need`: the cache first, then the database (the
    row passed as `stored`, None for none, or by default read anew).
    """
    snapshot = token_cache.entry_read(secret.realm_id, secret.name)
    if need.satisfied_by(snapshot, now):
        return snapshot.result("cache")
    if stored is _READ:
        stored = StoredToken.objects.filter(secret=secret).first()
    if stored is not None:
        snapshot = stored.snapshot(
            secret.realm.refresh_margin, reissue=secret.realm.reissue_limit()
        )
        if need.satisfied_by(snapshot, now):
            cache_put(secret, stored, now)
            return snapshot.result("database")
    return None


def refresh(
    secret: Secret,
    need: Need,
    *,
    trigger: str,
    client: str,
    recall: bool = True,
    renew_parent: bool = True,
) -> TokenResult:
    """
    Take the secret's lock (or wait for its holder's result), then fetch if still needed.
    A permanent error remembered for the secret (tokens.permanent_errors) is raised
    first, without the lock or an upstream call; `recall=False` (the console's test
    fetch) calls the upstream regardless. `renew_parent=False`: a chained realm's
    parent token refused by its upstream is not refreshed (see fetch_and_store). A
    daily budget that already refuses the call is raised first too (tokens.quota: 429
    quota_exhausted; a forced one may not use the reserve).
    """
    if recall:
        now = time.time()
        remembered = permanent_errors.loaded(secret, now)
        if remembered:
            raise remembered.error(now)
    quota.check(secret, forced=need.forced)
    lock = secret_lock(secret.realm_id, secret.name, lock_ttl(secret.realm))
    options = {"trigger": trigger, "client": client, "recall": recall, "renew_parent": renew_parent}
    if not lock.try_acquire():
        return _wait_for_holder(secret, need, lock, **options)
    return _fetch_if_needed(secret, need, lock, **options)


def _fetch_if_needed(secret, need, lock, **options) -> TokenResult:
    """Holding the lock: look again, and only then fetch; release the lock in any case."""
    try:
        found = look_again(secret, time.time(), need)
        if found:
            return found
        return fetch_and_store(
            secret,
            lock=lock,
            force_refresh=need.forces_new_token,
            forced=need.forced,
            **options,
        )
    finally:
        lock.release()


def _wait_for_holder(secret: Secret, need: Need, lock: Lease, **options) -> TokenResult:
    """
    Someone else holds the lock: poll for their result instead of queueing on the
    lock, so every waiter returns as soon as it lands (a token, or a permanent
    error the holder got and remembered); take the lock if it frees up first
    (then look again and fetch). The wait is counted in
    tokenserver_lock_wait_seconds, by how it ended.
    """
    realm = secret.realm
    started = time.monotonic()
    deadline = started + wait_budget(realm)
    delay = 0.005
    outcome = "timeout"
    try:
        while True:
            found = look_again(secret, time.time(), need)
            if found:
                outcome = "token"
                return found
            if options["recall"]:
                # The cache's copy only: the holder writes it before letting go.
                now = time.time()
                remembered = permanent_errors.recall(secret, now, database=False)
                if remembered:
                    outcome = "remembered"
                    raise remembered.error(now)
            if time.monotonic() >= deadline:
                still_valid = look_again(secret, time.time(), ANY_VALID)
                if still_valid:
                    outcome = "still_valid"
                    return still_valid
                raise LockWaitTimeout(
                    f"Another refresh of {secret} is taking longer than {realm.timeout:g} s.",
                    retry_after=1,
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            if lock.try_acquire():
                outcome = "acquired"
                break
    finally:
        metrics.lock_waited(secret.realm_id, outcome, time.monotonic() - started)
    return _fetch_if_needed(secret, need, lock, **options)


def _log_attempt(secret: Secret, *, trigger: str, client: str, outcome, **fields) -> None:
    """
    One FetchLog row per attempt (kept for later if the database is down), with the
    id of the request that caused it; one log line (JSON with LOG_FORMAT=json) and
    the upstream metrics. Never a token or a secret value: the fields are the row's.
    """
    rid = request_id.current()
    outbox.write(
        FetchLog,
        realm=secret.realm_id,
        key=secret.name,
        trigger=trigger,
        outcome=outcome,
        client=client,
        request_id=rid,
        **fields,
    )
    duration_ms = fields.get("duration_ms")
    sent = outcome != FetchLog.Outcome.REJECTED and duration_ms is not None
    metrics.upstream_attempt(secret.realm_id, outcome, duration_ms / 1000 if sent else None)
    failed = outcome != FetchLog.Outcome.OK
    fetch_logger.log(
        logging.WARNING if failed else logging.INFO,
        "fetch %s/%s: %s%s",
        secret.realm_id,
        secret.name,
        outcome,
        _suffix(fields),
        extra={
            "event": "fetch",
            "realm": secret.realm_id,
            "key": secret.name,
            "trigger": trigger,
            "outcome": outcome,
            "client": client,
            "http_status": fields.get("http_status"),
            "error_code": fields.get("error_code", ""),
            "error_message": fields.get("error_message", ""),
            "duration_ms": duration_ms,
            "lifetime": fields.get("lifetime"),
            "same_token": fields.get("same_token", False),
            "request_id": rid or None,
        },
    )


def _suffix(fields: dict) -> str:
    """The fetch line's tail: the error code, or that the token already held came back."""
    if fields.get("error_code"):
        return f" ({fields['error_code']})"
    if fields.get("same_token"):
        return f" (the same token, {fields.get('lifetime')} s left)"
    return ""


def fetch_and_store(
    secret: Secret,
    *,
    trigger: str,
    client: str,
    lock: Lease,
    recall: bool = True,
    renew_parent: bool = True,
    force_refresh: bool = False,
    forced: bool = False,
) -> TokenResult:
    """
    Call the upstream (outside any transaction) through the realm's guards,
    retrying network errors and 5xx; then cache, persist and log. The caller
    holds the secret's `lock`. If it loses it meanwhile (tokens.locks: a
    stall past the lease, or max_hold reached), another worker may be
    fetching too: this one makes no further attempt, and hands the token it
    got to its caller without caching it; the token row keeps whichever
    token expires later. At worst two fetches, never an older token served.

    A permanent error remembered for the secret is raised instead of calling
    (read anew: another holder may just have remembered it); one the upstream
    answers now is remembered before the lock is let go. With `recall=False`
    (the test fetch) the upstream is called regardless, and a token forgets
    any remembered error.

    `force_refresh` (a rejected token was still current: Need.forces_new_token) is
    what the realm's `$force_refresh` argument sends, on every attempt of this fetch.

    A chained realm (tokens.chains) gets its parent's token first and sends it.
    When its upstream refuses it (Realm.rejects_parent_token: WeChat's 40001,
    40014, 42001 and the realm's own codes), the parent is refreshed once,
    compare-and-refresh with the token this call carried, and the call made
    once more; refused again, that answer is the error (no loop). A refresh
    ahead passes `renew_parent=False`: it refreshes because the parent just got
    a new token, and must not make it get another (each would refresh the
    children ahead again). A new token stored refreshes ahead the chained
    tokens fetched with another one (`_refresh_children_ahead`).

    Each attempt is counted against the secret's daily budget before it is sent
    (tokens.quota; `forced`: a flush, a rejected token or a test fetch, which may
    not use the calls kept to keep the token alive): a refusal is 429
    quota_exhausted, one fetch-log row (rejected), and for a refresh that keeps the
    token alive a failure (the notifications).

    An answer that hands back the token already held is recorded as such
    (FetchLog.same_token), and what it shows of the provider's re-issue window
    schedules the next refresh (StoredToken.reissue_limit): never a loop.
    """
    realm = secret.realm
    if recall:
        now = time.time()
        remembered = permanent_errors.recall(secret, now)
        if remembered:
            raise remembered.error(now)
    parent = _parent_token(secret, trigger, client) if realm.parent_id else None
    attempt = 0
    while True:
        day = None
        try:
            guards.check(realm)
            with guards.upstream_slot(realm, max_hold=lock_ttl(realm), wait=realm.timeout):
                # Counted before it is sent: concurrent callers cannot overshoot the budget.
                day = quota.reserve(secret, forced=forced)
                sent_at = time.time()
                fetched = upstream.fetch(
                    realm,
                    secret,
                    force_refresh=force_refresh,
                    parent_token=parent.token if parent else None,
                )
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
            _failed(secret, FetchLog.Outcome.REJECTED, refused.reason, refused.detail, attempt + 1)
            raise UpstreamUnavailable(
                refused.detail, retry_after=refused.retry_after, outcome=FetchLog.Outcome.REJECTED
            ) from None
        except QuotaExhausted as refused:
            _log_attempt(
                secret,
                trigger=trigger,
                client=client,
                outcome=FetchLog.Outcome.REJECTED,
                error_code=refused.code,
                error_message=refused.detail[:500],
            )
            if not forced:
                # The token cannot be kept alive: that is a failing refresh.
                _failed(
                    secret, FetchLog.Outcome.REJECTED, refused.code, refused.detail, attempt + 1
                )
            raise
        except upstream.UpstreamFailure as failure:
            if failure.outcome == FetchLog.Outcome.REJECTED and day is not None:
                quota.refund(secret, day)  # nothing was sent: the provider counted nothing
            parent_refused = parent is not None and _refuses_parent(realm, failure)
            # First, so the requests waiting on this call see it at once. A refused
            # parent token is the parent's affair, never this secret's permanent error.
            remembered = (
                None if parent_refused else permanent_errors.remember(secret, failure, time.time())
            )
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
            if parent_refused and renew_parent and lock.held():
                # Once: the parent refreshed if the token this call carried is still its
                # current one (else its current one, no call), and this call made again.
                renew_parent = False
                parent = _parent_token(secret, trigger, client, rejected=parent.token)
                continue
            # Only network errors and HTTP 5xx are retried, never an answer
            # that says no (4xx, an upstream error code): see guards.is_retryable.
            # A holder that lost the lock leaves further attempts to the new holder.
            if guards.is_retryable(failure) and attempt < realm.max_retries and lock.held():
                time.sleep(random.uniform(0, min(RETRY_CAP, RETRY_BASE * 2**attempt)))  # noqa: S311
                attempt += 1
                continue
            _failed(secret, failure.outcome, failure.error_code, failure.error_message, attempt + 1)
            _raise_for(failure, retry_after=realm.permanent_error_ttl if remembered else None)

    guards.record_success(realm)
    if not recall:
        # The operator's test fetch got a token: whatever was remembered is cured.
        permanent_errors.forget(Q(secret_id=secret.pk), [(secret.realm_id, secret.name)])
    parent_fingerprint = fingerprint(parent.token) if parent else ""
    now = time.time()
    expires_at = sent_at + fetched.lifetime
    result = TokenResult(
        fetched.token,
        expires_at,
        "upstream",
        http_status=fetched.http_status,
        lifetime=fetched.lifetime,
    )
    stored = StoredToken(
        secret=secret,
        token=fetched.token,
        expires_at=datetime.fromtimestamp(expires_at, tz=UTC),
        fetched_at=datetime.fromtimestamp(now, tz=UTC),
        parent_fingerprint=parent_fingerprint,
    )
    same = _learn(stored, _held_token(secret), sent_at, fetched.lifetime)
    _log_attempt(
        secret,
        trigger=trigger,
        client=client,
        outcome=FetchLog.Outcome.OK,
        http_status=fetched.http_status,
        duration_ms=fetched.duration_ms,
        lifetime=int(fetched.lifetime),
        same_token=same,
    )
    # A failing secret is ok again (one "recovered" notification, whichever process sees it).
    outbox.run(refresh_succeeded, secret.pk, secret.realm_id, secret.name, timezone.now())
    if _changed_meanwhile(secret):
        # Disabled, deleted or given new credentials while we fetched: the
        # caller asked before that and gets its token, but it is not kept.
        logger.warning("%s changed during the fetch; its token is not kept", secret)
        return result
    if lock.held():
        # The cache first: if the database is down, the token is still served
        # from Redis while the writes wait in the outbox.
        cache_put(secret, stored, now)
    else:
        # The lock was lost during the call: another holder may have cached a
        # newer token, which this older one must not replace. Drop the entry
        # instead; readers take the database's token, the later-expiring one.
        logger.warning("%s: lock lost during the fetch; its token is not cached", secret)
        token_cache.entries_evict([(secret.realm_id, secret.name)])
    outbox.run(
        _store_token,
        secret.pk,
        fetched.token,
        stored.expires_at,
        stored.fetched_at,
        parent_fingerprint,
        stored.issued_at,
        stored.same_token_left,
        stored.reissued_left,
    )
    _refresh_children_ahead(secret, fetched.token, client)
    return result


def _held_token(secret: Secret) -> StoredToken | None:
    """The token the secret holds now, as stored (read anew; as loaded if the database fails)."""
    try:
        return StoredToken.objects.filter(secret_id=secret.pk).first()
    except DatabaseError:
        return stored_token(secret)


def _learn(fresh: StoredToken, held: StoredToken | None, sent_at: float, lifetime: float) -> bool:
    """
    Whether the upstream handed back the token already held (issue 14, "Same-token
    answers"), with what that shows of its re-issue window set on `fresh` (and
    carried over from `held`): a same-token answer keeps the token's issue time and
    lowers `same_token_left` to the lifetime it still had; a new token that replaced
    a held one still alive, from a provider seen handing tokens back, raises
    `reissued_left` to what the held one had left. An observation that contradicts
    the ones before (the provider changed) starts the learning afresh.
    """
    fresh.issued_at = fresh.fetched_at
    if held is None:
        return False
    seen_same, seen_new = held.same_token_left, held.reissued_left
    same = hmac.compare_digest(held.token.encode(), fresh.token.encode())
    if same:
        fresh.issued_at = held.issued()
        left = max(0, int(lifetime))
        seen_same = left if seen_same is None else min(seen_same, left)
        if seen_new is not None and seen_new >= seen_same:
            seen_new = None
    else:
        left = int(held.expires_at.timestamp() - sent_at)
        if seen_same is not None and left > 0:
            seen_new = max(seen_new or 0, left)
            if seen_new >= seen_same:
                seen_same = seen_new = None
    fresh.same_token_left, fresh.reissued_left = seen_same, seen_new
    return same


def _refuses_parent(realm: Realm, failure: upstream.UpstreamFailure) -> bool:
    """Whether a chained realm's upstream answered that the parent token it got is invalid."""
    return failure.outcome == FetchLog.Outcome.UPSTREAM_ERROR and realm.rejects_parent_token(
        failure.error_code
    )


def _parent_token(
    secret: Secret, trigger: str, client: str, *, rejected: str | None = None
) -> TokenResult:
    """
    A chained realm's parent token (tokens.chains.parent_token). When there is none
    to be had, this secret's refresh failed without a call: one fetch-log row says
    why (outcome rejected, error code "parent"), unless the parent's error was
    answered from memory (nothing new happened: a herd must not write a row each).
    """
    try:
        return chains.parent_token(secret, rejected=rejected, client=client)
    except ServiceError as error:
        if not error.context.get("parent_remembered"):
            message = error.context.get("error_message") or error.detail
            _log_attempt(
                secret,
                trigger=trigger,
                client=client,
                outcome=FetchLog.Outcome.REJECTED,
                error_code="parent",
                error_message=message[:500],
            )
            _failed(secret, FetchLog.Outcome.REJECTED, "parent", message, 1)
        raise


def _refresh_children_ahead(secret: Secret, token: str, client: str) -> None:
    """
    `secret` has a new token: the chained tokens fetched with another one are
    refreshed ahead, in a background thread (a ticket made with an invalidated
    token may stop working), one after the other, each through its own single
    flight: a request or a refresher already fetching it is waited for, and its
    result kept if it was fetched with this token. One query here, on the fetch
    path, finds them (usually none); the refresher catches up with what a
    process that died before it could not do.
    """
    try:
        children = chains.children_behind(secret, token)
    except DatabaseError:
        return  # the refresher catches up
    if children:
        start_daemon(
            f"refresh ahead: chained to {secret}",
            _refresh_ahead,
            children,
            fingerprint(token),
            client,
            request_id.current(),
        )


def _refresh_ahead(children: list[Secret], parent: str, client: str, rid: str = "") -> None:
    request_id.bind(rid)  # the fetch that got the parent's token: its id goes on the rows
    for child in children:
        try:
            refresh(
                child,
                Need(parent=parent),
                trigger=FetchLog.Trigger.CHAIN,
                client=client,
                renew_parent=False,
            )
        except ServiceError as error:
            logger.warning("refresh ahead of %s failed: %s", child, error.code)


def _failed(secret: Secret, outcome: str, code: str, message: str, attempts: int) -> None:
    """
    A refresh ended without a token after `attempts` failed attempts: the
    secret is failing (one "failing" notification, whichever process sees it
    first; tokens.refresh_health). Kept for later, like the fetch log, while
    the database is down.
    """
    outbox.run(
        refresh_failed,
        secret.pk,
        secret.realm_id,
        secret.name,
        outcome,
        code or "",
        (message or "")[:500],
        attempts,
        timezone.now(),
    )


def _changed_meanwhile(secret: Secret) -> bool:
    """Whether the secret was changed (or deleted, or disabled) since it was loaded."""
    try:
        return not Secret.objects.filter(
            pk=secret.pk, version=secret.version, enabled=True
        ).exists()
    except DatabaseError:
        return False  # cannot tell: keep the token (the outbox stores it later)


def _store_token(
    secret_pk,
    token,
    expires_at,
    fetched_at,
    parent_fingerprint="",
    issued_at=None,
    same_token_left=None,
    reissued_left=None,
) -> None:
    """
    Persist a fetched token, unless a newer one is already stored (newer:
    expiring later, which with equal lifetimes means requested later: the
    one a provider such as WeChat issued last and keeps valid). The same token
    handed back is always recorded (its new fetch time and what it showed of the
    re-issue window schedule the next refresh), keeping the later of the two
    expiries (both are at most the provider's).
    """
    learnt = {
        "issued_at": issued_at or fetched_at,
        "same_token_left": same_token_left,
        "reissued_left": reissued_left,
    }
    with transaction.atomic():
        current = StoredToken.objects.select_for_update().filter(secret_id=secret_pk).first()
        if current is None:
            if Secret.objects.filter(pk=secret_pk).exists():
                StoredToken.objects.create(
                    secret_id=secret_pk,
                    token=token,
                    expires_at=expires_at,
                    fetched_at=fetched_at,
                    parent_fingerprint=parent_fingerprint,
                    **learnt,
                )
        elif current.expires_at <= expires_at or current.token == token:
            current.expires_at = max(current.expires_at, expires_at)
            current.token, current.fetched_at = token, fetched_at
            current.parent_fingerprint = parent_fingerprint
            for name, value in learnt.items():
                setattr(current, name, value)
            current.save()


def _raise_for(failure: upstream.UpstreamFailure, *, retry_after: int | None = None):
    context = {
        "outcome": failure.outcome,
        "http_status": failure.http_status,
        "error_code": failure.error_code,
        "error_message": failure.error_message,
    }
    if failure.secret_fault:
        raise UnsendableRequest(failure.detail, **context) from None
    if failure.outcome in UNAVAILABLE_OUTCOMES:
        raise UpstreamUnavailable(failure.detail, retry_after=5, **context) from None
    # A remembered permanent error says for how long it will be answered without a call.
    raise UpstreamError(failure.detail, retry_after=retry_after, **context) from None
