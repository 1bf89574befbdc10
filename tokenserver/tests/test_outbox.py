"""
Issue 11: a write that can never succeed must not block the writes behind it.

An 18 MB token row exceeded MariaDB's max_allowed_packet; the outbox took the
error for a database outage, retried it forever, and later writes of that worker
queued behind it while /readyz said ready. Now a permanent error drops the write
at once (an error log line, a counter) and a queue that is not draining makes
/readyz fail.
"""

import logging

import pytest
from django.db import OperationalError, connection

from tests.factories import SecretFactory
from tests.helpers import wait_until
from tokens.models import FetchLog, StoredToken
from tokenserver import health
from tokenserver.outbox import outbox

pytestmark = pytest.mark.django_db(transaction=True)


def log_row(number):
    return {
        "realm": "wxgzh",
        "key": f"app-{number}",
        "trigger": FetchLog.Trigger.REQUEST,
        "outcome": FetchLog.Outcome.OK,
    }


@pytest.fixture(autouse=True)
def _empty_outbox():
    """Each test starts and ends with nothing pending (the outbox is process-wide)."""
    wait_until(lambda: outbox.flush(), timeout=10, message="the outbox drained")
    yield
    wait_until(lambda: outbox.flush(), timeout=10, message="the outbox drained")


def test_a_permanent_error_drops_the_write_and_the_next_ones_land(caplog):
    def too_large():
        raise OperationalError(1153, "Got a packet bigger than 'max_allowed_packet' bytes")

    dropped_before = outbox.dropped

    with caplog.at_level(logging.ERROR, logger="tokenserver.outbox"):
        outbox.run(too_large)
    for number in range(5):
        outbox.write(FetchLog, **log_row(number))

    assert len(outbox) == 0  # nothing waits behind the bad write
    assert FetchLog.objects.count() == 5
    assert outbox.dropped == dropped_before + 1
    assert "database write dropped: too_large failed with OperationalError 1153" in caplog.text


def test_a_permanent_error_at_the_head_of_the_queue_does_not_block_it(caplog):
    # The database was down (2006) when these writes came; when it is back, the first
    # write turns out to be one that can never succeed.
    state = {"down": True}

    def oversized():
        if state["down"]:
            raise OperationalError(2006, "Server has gone away")
        raise OperationalError(1153, "Got a packet bigger than 'max_allowed_packet' bytes")

    outbox.run(oversized)
    for number in range(3):
        outbox.write(FetchLog, **log_row(number))
    assert len(outbox) == 4

    state["down"] = False
    wait_until(lambda: outbox.flush(), timeout=10, message="the queue drained")

    assert FetchLog.objects.count() == 3


def test_readyz_fails_while_writes_are_not_draining(anonymous_api, monkeypatch):
    state = {"down": True}

    def write():
        if state["down"]:
            raise OperationalError(2006, "Server has gone away")

    outbox.run(write)
    monkeypatch.setattr(health, "WRITES_STUCK_AFTER", 0.0)  # any pending write is "stuck"

    stuck = anonymous_api.get("/readyz")
    state["down"] = False
    wait_until(lambda: outbox.flush(), timeout=10, message="the queue drained")
    drained = anonymous_api.get("/readyz")

    assert stuck.status_code == 503
    assert stuck.json()["checks"]["writes"] == "not draining"
    assert stuck.json()["pending_writes"] == 1
    # Issue 13: the answer names the check that failed and why.
    (failed,) = stuck.json()["failed"]
    assert failed["check"] == "writes"
    assert failed["reason"].startswith("outbox not draining: 1 database writes pending")
    assert drained.status_code == 200
    assert drained.json()["checks"]["writes"] == "ok"


@pytest.mark.skipif(connection.vendor != "mysql", reason="MariaDB's max_allowed_packet")
def test_a_row_over_max_allowed_packet_is_dropped_and_later_writes_land():
    # The real thing: a row larger than the server takes in one packet.
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@max_allowed_packet")
        packet = cursor.fetchone()[0]
    secret = SecretFactory()
    dropped_before = outbox.dropped

    outbox.write(
        StoredToken,
        secret=secret,
        token="x" * (packet + 1024),
        expires_at="2030-01-01T00:00:00Z",
        fetched_at="2026-01-01T00:00:00Z",
    )
    for number in range(3):
        outbox.write(FetchLog, **log_row(number))
    # The server may close the connection before the client reads its 1153 ("gone
    # away"): then the write is retried while the database answers, and dropped.
    wait_until(lambda: outbox.flush(), timeout=20, message="the queue drained")

    assert outbox.dropped == dropped_before + 1
    assert not StoredToken.objects.exists()
    assert FetchLog.objects.count() == 3
