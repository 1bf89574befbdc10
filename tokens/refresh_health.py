"""
Whether each secret's refreshes are failing (issue 13, "Failure notifications"),
kept in the database (`RefreshHealth`, one row per secret) so that every worker
process and every host agrees, and operators are told once per change of
state, not once per attempt.

The token path calls `refresh_failed` when a refresh ends in failure (after its
retries; a retried blip that then succeeds is no failure) and
`refresh_succeeded` when one ends with a token, both through the outbox
(tokenserver.outbox), so they wait with the fetch-log rows while the database
is down. The cache-hit path never gets here: these run only after an upstream
call (or a refusal to make one).

A state changes by a conditional UPDATE (`… WHERE state = 'ok'`, `… WHERE
state = 'failing'`) inside a transaction: the database's row lock orders
concurrent changes and the row count tells which process made the transition,
so of several processes that see the same failure exactly one queues the
notification (tokens.notifications), in the same transaction as the change.
The row is created beforehand on its own (an INSERT that one creator wins):
inside the transaction only one existing row is locked, so two first failures
cannot deadlock on MySQL's gap locks.
"""

import logging
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Count, F, QuerySet

from tokens.models import Notification, RefreshHealth
from tokens.notifications import notification_queue

logger = logging.getLogger(__name__)

FAILING, OK = RefreshHealth.State.FAILING, RefreshHealth.State.OK

#: Times a recovery is retried when the failing row changes under it (attempts counted).
_RECOVERY_TRIES = 5


def refresh_failed(
    secret_id: int,
    realm_id: str,
    key: str,
    outcome: str,
    error_code: str,
    error_message: str,
    attempts: int,
    at: datetime,
) -> bool:
    """
    Record a refresh of the secret that failed after `attempts` failed
    attempts (fetch-log rows), with the last one's outcome, code and
    (scrubbed) message. Returns whether this call made the secret's state go
    from ok (or unknown) to failing, and so queued the "failing"
    notification; an already failing secret only counts the attempts.
    """
    if not _ensure_row(secret_id, at):
        return False  # the secret is gone
    error = {
        "last_outcome": outcome,
        "last_error_code": error_code[:100],
        "last_error_message": error_message[:500],
    }
    rows = RefreshHealth.objects.filter(secret_id=secret_id)
    with transaction.atomic():
        began = rows.filter(state=OK).update(
            state=FAILING, failing_since=at, attempts=attempts, changed_at=at, **error
        )
        if not began:
            rows.filter(state=FAILING).update(attempts=F("attempts") + attempts, **error)
            return False
        notification_queue(
            realm=realm_id,
            key=key,
            outcome=Notification.Outcome.FAILING,
            fetch_outcome=outcome,
            error_code=error["last_error_code"],
            error_message=error["last_error_message"],
            failing_since=at,
            attempts=attempts,
            at=at,
        )
    logger.warning(
        "refresh of %s/%s is failing: %s %s (%d attempt%s)",
        realm_id,
        key,
        outcome,
        error_code or "-",
        attempts,
        "" if attempts == 1 else "s",
    )
    return True


def refresh_succeeded(secret_id: int, realm_id: str, key: str, at: datetime) -> bool:
    """
    Record a refresh of the secret that got a token. Returns whether this
    call made a failing secret ok again, and so queued the "recovered"
    notification. For a secret that is not failing (the usual case) this is
    one primary-key read.
    """
    for _ in range(_RECOVERY_TRIES):
        seen = (
            RefreshHealth.objects.filter(secret_id=secret_id, state=FAILING)
            .values_list("failing_since", "attempts")
            .first()
        )
        if seen is None:
            return False
        failing_since, attempts = seen
        with transaction.atomic():
            # Compare-and-set on what was read: attempts counted meanwhile by
            # another process make it read again, so the notification tells them.
            recovered = RefreshHealth.objects.filter(
                secret_id=secret_id, state=FAILING, failing_since=failing_since, attempts=attempts
            ).update(state=OK, changed_at=at)
            if not recovered:
                continue
            health = RefreshHealth.objects.get(secret_id=secret_id)
            notification_queue(
                realm=realm_id,
                key=key,
                outcome=Notification.Outcome.RECOVERED,
                fetch_outcome=health.last_outcome,
                error_code=health.last_error_code,
                error_message=health.last_error_message,
                failing_since=failing_since,
                attempts=attempts,
                at=at,
            )
        logger.info(
            "refresh of %s/%s recovered (failing since %s, %d failed attempts)",
            realm_id,
            key,
            failing_since.isoformat(),
            attempts,
        )
        return True
    return False  # it kept changing: another process is recording it


def _ensure_row(secret_id: int, at: datetime) -> bool:
    """Create the secret's row (state ok) unless it exists; False when the secret is gone."""
    if RefreshHealth.objects.filter(secret_id=secret_id).exists():
        return True
    try:
        with transaction.atomic():
            RefreshHealth.objects.create(secret_id=secret_id, changed_at=at)
    except IntegrityError:
        # Another process created it first, or the secret was deleted meanwhile.
        return RefreshHealth.objects.filter(secret_id=secret_id).exists()
    return True


def failing_secrets() -> QuerySet:
    """The health rows of enabled secrets whose refreshes are failing."""
    return RefreshHealth.objects.filter(state=FAILING, secret__enabled=True)


def failing_secrets_per_realm() -> dict[str, int]:
    """
    How many enabled secrets are failing, per realm (realms with none are left
    out): one query. For a gauge an alert rule can watch (e.g.
    `tokenserver_secrets_failing{realm="wxgzh"} > 0`).
    """
    rows = (
        failing_secrets()
        .values("secret__realm_id")
        .annotate(count=Count("pk"))
        .order_by("secret__realm_id")
    )
    return {row["secret__realm_id"]: row["count"] for row in rows}
