"""
Probes for orchestrators, without authentication (they reveal no data):
`/healthz` says the process answers; `/readyz` checks the database and the
cache, reports database writes waiting for the database to come back and those
dropped because they could never succeed, and fails when the waiting writes
are not draining. A 503 names what failed, each with a short reason (the kind
of error, never its message: a database's may name its host and user).
"""

from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import JsonResponse

from tokenserver.cache import CACHE_ERRORS, health
from tokenserver.outbox import outbox

#: Pending writes this old while /readyz runs mean the queue is not draining.
WRITES_STUCK_AFTER = 30.0


def healthz(request):
    return JsonResponse({"status": "ok"})


def _database_problem() -> str | None:
    """None when the database answers, else why not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return None
    except DatabaseError as error:
        connection.close()
        return f"database unreachable ({type(error).__name__})"


def _cache_problem() -> str | None:
    """None when the cache keeps a value, else why not."""
    try:
        cache.set("readyz", "1", timeout=5)
        ok = cache.get("readyz") == "1"
    except CACHE_ERRORS as error:
        health.failed(error)
        return f"cache (Redis) unreachable ({type(error).__name__})"
    if not ok:
        return "cache answered but did not keep a value"
    health.reset()
    return None


def _writes_problem() -> str | None:
    """None while the database writes kept for later drain, else how long they have waited."""
    age = outbox.oldest_age()
    if age > WRITES_STUCK_AFTER:
        return (
            f"outbox not draining: {len(outbox)} database writes pending, "
            f"the oldest for {age:.0f} s"
        )
    return None


#: Each check: its name, the value it reports when it fails, and the check itself.
CHECKS = [
    ("database", "unavailable", _database_problem),
    ("cache", "unavailable", _cache_problem),
    ("writes", "not draining", _writes_problem),
]


def readyz(request):
    checks, failed = {}, []
    for name, failing, check in CHECKS:
        problem = check()
        checks[name] = "ok" if problem is None else failing
        if problem is not None:
            failed.append({"check": name, "reason": problem})
    body = {
        "status": "degraded" if failed else "ready",
        "checks": checks,
        "pending_writes": len(outbox),
        "dropped_writes": outbox.dropped,
    }
    if failed:
        body["failed"] = failed
        body["detail"] = "Not ready: " + "; ".join(item["reason"] for item in failed) + "."
    return JsonResponse(body, status=503 if failed else 200)
