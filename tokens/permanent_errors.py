"""
Permanent errors remembered (issue 14): an upstream answer that only an
operator can change (WeChat 40125 invalid AppSecret, 40164 caller IP not
whitelisted, OAuth2 invalid_client …: the realm's `permanent_error_codes`) is
remembered for the secret for the realm's `permanent_error_ttl` seconds. In
that window the token path answers the same 502 with the same detail and a
Retry-After, and makes no upstream call, no lock, no fetch-log row; saving the
secret or its realm forgets it at once (tokens.signals).

Where it lives: the database (`RememberedError`, one row per secret) is the
authority, so every worker and host agrees in every configuration, the
local-memory one included; the token path reads it in the query that loads
the secret anyway (load_secret joins it), so it costs no query of its own.
A copy in the cache (`flag:permanent:<realm>:<key>`) lets the requests that
wait for the holder's fetch see its answer without a database query per poll:
with Redis every worker and host sees it; with the local-memory cache only
the threads of the process that wrote it (or read the row), and only for
TOKENSERVER_LOCAL_CACHE_TTL, like token entries, so a save made through another
process reaches them within that time. A waiter that does not see a copy
(another process, Redis down) gets the lock in its turn and reads the row. The
hot path (a cached token) never looks here: a valid token is served whatever
the upstream says.

A remembered answer holds only for the secret's `version` and the realm's
`updated_at` it was fetched with: a fetch that started before the operator
saved new credentials cannot pin its answer on them.
"""

import math
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Q

from realms.models import Realm
from secret_store.models import Secret
from tokens.models import FetchLog, RememberedError
from tokens.upstream import UpstreamFailure
from tokenserver import cache as shared_cache
from tokenserver.errors import UpstreamError


def _flag(realm_id: str, key: str) -> str:
    return f"permanent:{realm_id}:{key}"


def is_permanent(realm: Realm, failure: UpstreamFailure) -> bool:
    """
    Whether the upstream's answer is one of the realm's permanent errors:
    an answer with an error code listed in `permanent_error_codes` (compared
    as text, as the fetch log records codes: 40125 and "40125" alike), and
    remembering is on (`permanent_error_ttl` > 0). Timeouts, unreachable
    upstreams, unreadable answers and HTTP 5xx (the provider is unwell,
    whatever the body says; such calls are retried) never are.
    """
    if realm.permanent_error_ttl <= 0 or failure.outcome != FetchLog.Outcome.UPSTREAM_ERROR:
        return False
    if failure.http_status is not None and failure.http_status >= 500:
        return False
    codes = {str(code) for code in realm.permanent_error_codes or []}
    return bool(failure.error_code) and failure.error_code in codes


def retry_after(seconds: float) -> int:
    """Whole seconds, at least 1 (a Retry-After header)."""
    return max(1, math.ceil(seconds))


@dataclass(frozen=True)
class Remembered:
    """A secret's remembered permanent error, and what it was fetched with."""

    detail: str
    outcome: str
    http_status: int | None
    error_code: str
    error_message: str
    until: float  # epoch seconds
    secret_id: int
    secret_version: int
    realm_stamp: float  # the realm's updated_at, epoch seconds

    def applies_to(self, secret: Secret, now: float) -> bool:
        return (
            now < self.until
            and self.secret_id == secret.pk
            and self.secret_version == secret.version
            and self.realm_stamp == secret.realm.updated_at.timestamp()
        )

    def error(self, now: float) -> UpstreamError:
        """The 502 the real attempt answered, with the time left as Retry-After."""
        # Now, not `now`: the copy may have been written since that was read (a
        # Retry-After past the window's end).
        return UpstreamError(
            self.detail,
            retry_after=retry_after(self.until - max(now, time.time())),
            outcome=self.outcome,
            http_status=self.http_status,
            error_code=self.error_code,
            error_message=self.error_message,
            remembered=True,
        )

    @classmethod
    def from_row(cls, row: RememberedError) -> "Remembered":
        return cls(
            row.detail,
            row.outcome,
            row.http_status,
            row.error_code,
            row.error_message,
            row.until.timestamp(),
            row.secret_id,
            row.secret_version,
            row.realm_updated_at.timestamp(),
        )


def remember(secret: Secret, failure: UpstreamFailure, now: float) -> Remembered | None:
    """
    Remember the failure if it is permanent for the secret's realm (the row,
    and the Redis copy); returns it, or None when it is not permanent. Called
    by the holder of the secret's lock before it lets go, so the requests
    waiting for it find the answer instead of calling again. With the
    database down the row is not written (the secret could not be loaded
    either: the token path answers 503 then).
    """
    realm = secret.realm
    if not is_permanent(realm, failure):
        return None
    remembered = Remembered(
        failure.detail,
        failure.outcome,
        failure.http_status,
        failure.error_code,
        failure.error_message[:500],
        now + realm.permanent_error_ttl,
        secret.pk,
        secret.version,
        realm.updated_at.timestamp(),
    )
    _copy(secret, remembered, now)
    try:
        _store(secret.pk, remembered)
    except DatabaseError:
        pass  # the Redis copy, if any, still answers the waiters
    return remembered


def _store(secret_pk: int, remembered: Remembered) -> None:
    fields = {
        "secret_version": remembered.secret_version,
        "realm_updated_at": datetime.fromtimestamp(remembered.realm_stamp, tz=UTC),
        "until": datetime.fromtimestamp(remembered.until, tz=UTC),
        "outcome": remembered.outcome,
        "http_status": remembered.http_status,
        "error_code": remembered.error_code[:100],
        "error_message": remembered.error_message[:500],
        "detail": remembered.detail,
        "remembered_at": datetime.now(tz=UTC),
    }
    rows = RememberedError.objects.filter(secret_id=secret_pk)
    if rows.update(**fields):
        return
    try:
        with transaction.atomic():
            RememberedError.objects.create(secret_id=secret_pk, **fields)
    except IntegrityError:
        # Another process created it first (or the secret is gone).
        rows.update(**fields)


def loaded(secret: Secret, now: float) -> Remembered | None:
    """
    The secret's remembered error as loaded with it (load_secret joins the
    row: no query; a secret loaded otherwise costs one), if it applies now.
    """
    try:
        row = secret.remembered_error
    except RememberedError.DoesNotExist:
        return None
    remembered = Remembered.from_row(row)
    return remembered if remembered.applies_to(secret, now) else None


def _copy(secret: Secret, remembered: Remembered, now: float) -> None:
    """The cache's copy, for the waiters (briefly, in a per-process cache)."""
    seconds = remembered.until - now
    if not settings.REDIS_URL:
        seconds = min(seconds, settings.TOKENSERVER_LOCAL_CACHE_TTL)
    if seconds > 0:
        shared_cache.flag_set(_flag(secret.realm_id, secret.name), asdict(remembered), seconds)


def _from_flag(value) -> Remembered | None:
    try:
        return Remembered(**value) if isinstance(value, dict) else None
    except TypeError:  # written by another version of this module
        return None


def recall(secret: Secret, now: float, *, database: bool = True) -> Remembered | None:
    """
    The secret's remembered error, read anew, if it applies now. Waiters poll
    with `database=False`: the cache's copy only. Otherwise (the holder of the
    lock, about to call the upstream) the Redis copy, else the row, which is
    then copied to the cache for this process's (or every host's) waiters.
    """
    if settings.REDIS_URL or not database:
        copy = _from_flag(shared_cache.flag_get(_flag(secret.realm_id, secret.name)))
        if copy is not None and copy.applies_to(secret, now):
            return copy
        if not database:
            return None
    try:
        row = RememberedError.objects.filter(secret_id=secret.pk).first()
    except DatabaseError:
        return None
    if row is None:
        return None
    remembered = Remembered.from_row(row)
    if not remembered.applies_to(secret, now):
        return None
    _copy(secret, remembered, now)
    return remembered


def forget(secrets: Q, pairs) -> None:
    """
    Forget the remembered errors of the secrets `secrets` selects (the rows)
    and whose (realm, key) are in `pairs` (the Redis copies): on a save of
    the secret or its realm, and after a test fetch that got a token.
    """
    RememberedError.objects.filter(secrets).delete()
    shared_cache.flag_delete_many(_flag(realm_id, key) for realm_id, key in pairs)
