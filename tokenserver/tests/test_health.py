"""Probes: /healthz (the process answers) and /readyz (database and cache)."""

import pytest
from django.db import OperationalError, connection

pytestmark = pytest.mark.django_db


def test_healthz_needs_no_credentials(anonymous_api):
    response = anonymous_api.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_and_cache(anonymous_api):
    response = anonymous_api.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "cache": "ok", "writes": "ok"},
        "pending_writes": 0,
        "dropped_writes": response.json()["dropped_writes"],  # this process's, since it started
    }


def test_readyz_names_what_failed_and_why_without_secrets(anonymous_api):
    # Issue 13: a 503 says which check failed, with a short reason: the kind of
    # error, not its message (a database's names its host and user).
    def refuse(execute, sql, params, many, context):
        raise OperationalError("(1045, \"Access denied for user 'root'@'db.internal'\")")

    with connection.execute_wrapper(refuse):
        response = anonymous_api.get("/readyz")

    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "degraded"
    assert body["checks"] == {"database": "unavailable", "cache": "ok", "writes": "ok"}
    assert body["failed"] == [
        {"check": "database", "reason": "database unreachable (OperationalError)"}
    ]
    assert body["detail"] == "Not ready: database unreachable (OperationalError)."
    assert "root" not in response.content.decode()
    assert "db.internal" not in response.content.decode()
