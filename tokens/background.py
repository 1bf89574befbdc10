"""
Refreshes nobody waits for: stale-while-revalidate (a request that finds its
token inside the refresh margin gets it at once, and one request, across all
workers and hosts, starts a refresh in a background thread) and the
refresher (`manage.py refresh_tokens`), which refreshes tokens before they
come due. Both go through the same single flight as requests.

The refresher takes chained realms (issue 14) parents first: one wave per depth
in the chain, and a chained token is due as well when its parent's current token
is another one than the one it was fetched with.
"""

import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.db import connections

from realms.models import Realm
from tokens import chains, quota
from tokens.models import FetchLog, StoredToken
from tokens.single_flight import (
    Need,
    fetch_and_store,
    load_secret,
    look_again,
    refresh,
    secret_lock,
)
from tokens.threads import start_daemon, wait_for_daemons
from tokenserver import metrics, request_id
from tokenserver.cache import flag_get, flag_set
from tokenserver.errors import ServiceError

logger = logging.getLogger(__name__)

#: Seconds a secret's background refresh is not retried after it failed.
REVALIDATE_BACKOFF = 10.0

# --- Stale-while-revalidate ------------------------------------------------------


def _backoff_flag(realm_id: str, key: str) -> str:
    return f"revalidate:{realm_id}:{key}"


def revalidate(realm_id: str, key: str, client: str, *, lock_ttl: float) -> None:
    """
    Refresh a due token in the background, once: only the request that wins
    the secret's lock starts it; the others (and this one) return at once.
    The lock, with the realm's usual lease, passes to the background thread.
    """
    if flag_get(_backoff_flag(realm_id, key)):
        return
    lock = secret_lock(realm_id, key, lock_ttl)
    if not lock.try_acquire():
        return
    # The request that started it: its id goes on the fetch's log line and row.
    start_daemon(
        f"revalidate {realm_id}/{key}",
        _background_refresh,
        realm_id,
        key,
        lock,
        client,
        request_id.current(),
    )


def _background_refresh(realm_id, key, lock, client, rid="") -> None:
    request_id.bind(rid)
    try:
        secret = load_secret(realm_id, key)
        if secret.realm.kind != Realm.Kind.FIXED and not look_again(secret, time.time(), Need()):
            quota.check(secret, forced=False)  # a budget used up: no lock held in vain
            fetch_and_store(secret, trigger=FetchLog.Trigger.REQUEST, client=client, lock=lock)
    except ServiceError as error:
        flag_set(_backoff_flag(realm_id, key), True, REVALIDATE_BACKOFF)
        logger.warning("background refresh of %s/%s failed: %s", realm_id, key, error.code)
    finally:
        lock.release()


def wait_for_background_refreshes(timeout: float = 10.0) -> None:
    """
    Block until the background refreshes started so far are done, and the chained
    tokens they refresh ahead (tests, a one-shot refresher, shutdown).
    """
    wait_for_daemons(timeout)


# --- The refresher ---------------------------------------------------------------


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

    Chained realms parents first: one wave per depth in the chain (tokens.chains),
    each decided when the waves above are done. A chained token is due as well
    when it was fetched with another token than its parent's current one (the
    parent's refresh in the wave above, or one whose refresh ahead a process did
    not live to do); it is refreshed only if still so (`Need.parent`), so the
    refresh ahead that the parent's refresh started and this wave share one call.

    A token whose provider hands back the same token until late in its life
    (StoredToken.reissue_limit: issue 14, same-token answers) is refreshed at its
    due time, not `lookahead` ahead of it: early, the provider would hand it back
    again. Unless its window is too short for that (under two lookaheads): a pass
    late then could let it expire; but a provider that re-issues only once the
    token expired (a window of 0) is asked then, not before.
    """
    report = RefreshReport()
    rows = (
        StoredToken.objects.select_related("secret__realm")
        .filter(secret__enabled=True)
        .exclude(secret__realm__kind=Realm.Kind.FIXED)
        .defer("token")  # no decryption for the ones that are not due
    )
    depths = chains.chain_depths()
    waves = defaultdict(list)
    for stored in rows:
        report.checked += 1
        waves[depths.get(stored.secret.realm_id, 0)].append(stored)

    def refresh_one(job):
        secret, need = job
        try:
            result = refresh(secret, need, trigger=FetchLog.Trigger.REFRESHER, client="refresher")
            return "refreshed" if result.source == "upstream" else "skipped"
        except ServiceError:
            return "failed"
        finally:
            connections.close_all()

    for depth in sorted(waves):
        due = _due_in_wave(waves[depth], lookahead, chained=depth > 0)
        report.due += len(due)
        if not due:
            continue
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for outcome in pool.map(refresh_one, due):
                if outcome == "refreshed":
                    report.refreshed += 1
                elif outcome == "failed":
                    report.failed += 1
    metrics.refresher_pass_done()
    return report


def _due_in_wave(rows, lookahead: float, *, chained: bool) -> list[tuple]:
    """(secret, Need) of the stored tokens in `rows` that are due, decided now."""
    now = time.time()
    parents = {}
    if chained:
        pairs = {stored.secret.realm.parent_secret_of(stored.secret.name) for stored in rows}
        parents = chains.parent_fingerprints(pairs)
    due = []
    for stored in rows:
        secret, realm = stored.secret, stored.secret.realm
        parent = parents.get(realm.parent_secret_of(secret.name)) if chained else None
        behind = parent is not None and stored.parent_fingerprint != parent
        reissue = realm.reissue_limit()
        ahead = _lookahead(stored.reissue_limit(reissue), lookahead)
        if behind or now + ahead >= stored.refresh_at(realm.refresh_margin, reissue).timestamp():
            due.append((secret, Need(lookahead=ahead, parent=parent)))
    return due


def _lookahead(limit: float | None, lookahead: float) -> float:
    """
    How far ahead of its due time the refresher refreshes a token: `lookahead`,
    but not at all when its provider re-issues late (`limit`: the provider would
    hand the token back) and there is room to be a pass late (at least two
    lookaheads), or re-issues only once it expired (0).
    """
    if limit is not None and (limit >= 2 * lookahead or limit == 0):
        return 0.0
    return lookahead
