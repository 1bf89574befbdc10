"""
Probes for orchestrators, without authentication (they reveal no data):
`/healthz` says the process answers; `/readyz` checks the database and the
cache, reports database writes waiting for the database to come back and those
dropped because they could never succeed, and fails when the waiting writes
are not draining.
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


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        connection.close()
        return False


def _cache_ok() -> bool:
    try:
        cache.set("readyz", "1", timeout=5)
        ok = cache.get("readyz") == "1"
    except CACHE_ERRORS as error:
        health.failed(error)
        return False
    if ok:
        health.reset()
    return ok


def readyz(request):
    checks = {
        "database": "ok" if _database_ok() else "unavailable",
        "cache": "ok" if _cache_ok() else "unavailable",
        "writes": "not draining" if outbox.oldest_age() > WRITES_STUCK_AFTER else "ok",
    }
    ready = all(value == "ok" for value in checks.values())
    body = {
        "status": "ready" if ready else "degraded",
        "checks": checks,
        "pending_writes": len(outbox),
        "dropped_writes": outbox.dropped,
    }
    return JsonResponse(body, status=200 if ready else 503)
