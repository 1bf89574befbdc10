"""
Refreshes nobody waits for: stale-while-revalidate (a request that finds its
token inside the refresh margin gets it at once, and one request, across all
workers and hosts, starts a refresh in a background thread) and the
refresher (`manage.py refresh_tokens`), which refreshes tokens before they
come due. Both go through the same single flight as requests.
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.db import connections

from realms.models import Realm
from tokens import quota
from tokens.models import FetchLog, StoredToken
from tokens.single_flight import (
    Need,
    fetch_and_store,
    load_secret,
    look_again,
    refresh,
    secret_lock,
)
from tokenserver import metrics, request_id
from tokenserver.cache import flag_get, flag_set
from tokenserver.errors import ServiceError

logger = logging.getLogger(__name__)

#: Seconds a secret's background refresh is not retried after it failed.
REVALIDATE_BACKOFF = 10.0

# --- Stale-while-revalidate ------------------------------------------------------

_background: set[threading.Thread] = set()
_background_lock = threading.Lock()


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
    thread = threading.Thread(
        target=_background_refresh,
        # The request that started it: its id goes on the fetch's log line and row.
        args=(realm_id, key, lock, client, request_id.current()),
        name=f"revalidate {realm_id}/{key}",
        daemon=True,
    )
    with _background_lock:
        _background.add(thread)
    thread.start()


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

    A token whose provider hands back the same token until late in its life
    (StoredToken.reissue_limit: issue 14, same-token answers) is refreshed at its
    due time, not `lookahead` ahead of it: early, the provider would hand it back
    again. Unless its window is too short for that (under two lookaheads): a pass
    late then could let it expire; but a provider that re-issues only once the
    token expired (a window of 0) is asked then, not before.
    """
    now = time.time()
    report = RefreshReport()
    due = []
    rows = (
        StoredToken.objects.select_related("secret__realm")
        .filter(secret__enabled=True)
        .exclude(secret__realm__kind=Realm.Kind.FIXED)
        .defer("token")  # no decryption for the ones that are not due
    )
    for stored in rows:
        report.checked += 1
        realm = stored.secret.realm
        reissue = realm.reissue_limit()
        limit = stored.reissue_limit(reissue)
        ahead = 0.0 if limit is not None and (limit >= 2 * lookahead or limit == 0) else lookahead
        if now + ahead >= stored.refresh_at(realm.refresh_margin, reissue).timestamp():
            due.append((stored.secret, ahead))
    report.due = len(due)

    def refresh_one(item):
        secret, ahead = item
        try:
            result = refresh(
                secret,
                Need(lookahead=ahead),
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
            for outcome in pool.map(refresh_one, due):
                if outcome == "refreshed":
                    report.refreshed += 1
                elif outcome == "failed":
                    report.failed += 1
    metrics.refresher_pass_done()
    return report
