"""Probes: /healthz (the process answers) and /readyz (database and cache)."""

import pytest

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
