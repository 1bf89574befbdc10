"""
Writes that must not be lost when the database is briefly down: a fetched
token's row and FetchLog rows. A write that fails on the connection
(OperationalError, InterfaceError) waits here and a background thread retries
it, in order, every RETRY_INTERVAL seconds until the database is back.

A write that can never succeed is not retried: a permanent error (the row is
too large for the server, too long for its column, breaks a constraint) drops
it at once, with an error log line and the `dropped` counter, so it cannot hold
the writes behind it (issue 11: an 18 MB row over MariaDB's max_allowed_packet
once blocked a worker's later writes for good).

The queue is in memory: a process that dies with writes pending loses them
(its tokens are still in Redis and the next fetch writes anew); the queue is
bounded, and what falls off is logged. `readyz` reports pending and dropped
writes, and a queue that is not draining.
"""

import logging
import threading
import time
from collections import deque

from django.db import DatabaseError, InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)

RETRY_INTERVAL = 2.0
MAX_PENDING = 10_000

#: MySQL/MariaDB errors raised as OperationalError that retrying cannot cure: the
#: statement itself is at fault, not the connection. 1153: packet bigger than
#: max_allowed_packet; 1406: data too long; 1366: incorrect string value; 1264: out of
#: range; 1292: incorrect value; 1048: column cannot be null.
PERMANENT_MYSQL_ERRORS = frozenset({1153, 1406, 1366, 1264, 1292, 1048})

#: "Server has gone away" / "Lost connection": an outage, or the server closing the
#: connection on a packet too large before the client read its 1153. When the
#: database answers a probe right after, the write itself is suspect: after
#: MAX_STRIKES such failures it is dropped.
CONNECTION_LOST_ERRORS = frozenset({2006, 2013})
MAX_STRIKES = 3


def is_permanent(error: DatabaseError) -> bool:
    """Whether retrying the write that raised `error` is pointless."""
    if not isinstance(error, (OperationalError, InterfaceError)):
        return True  # IntegrityError, DataError, ProgrammingError, …
    code = error.args[0] if error.args else None
    return code in PERMANENT_MYSQL_ERRORS


def _create(model, fields):
    model.objects.create(**fields)


def _describe(function, args) -> str:
    """What a write was, for a log line: the model or function, never the values."""
    if function is _create and args:
        return f"a {args[0].__name__} row"
    return getattr(function, "__name__", "a write")


def _database_answers() -> bool:
    """Whether the database answers a query on a fresh connection (False inside a transaction)."""
    connection = connections["default"]
    if connection.in_atomic_block:
        return False
    try:
        connection.close()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


def _close_connections() -> None:
    """Reconnect on the next try (a packet too large also ends the connection)."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


class Outbox:
    def __init__(self):
        # [function, args, queued at (time.monotonic()), strikes]
        self._pending = deque()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flusher at a time: each write runs once
        self._thread = None
        #: Writes dropped by this process since it started (permanent errors, overflow).
        self.dropped = 0

    def __len__(self):
        return len(self._pending)

    def oldest_age(self) -> float:
        """Seconds the oldest pending write has waited (0 when none)."""
        with self._lock:
            return time.monotonic() - self._pending[0][2] if self._pending else 0.0

    def write(self, model, **fields) -> None:
        """Create a row now, or as soon as the database is back."""
        self.run(_create, model, fields)

    def run(self, function, *args) -> None:
        """Run a database write now, or queue it for retries if the database is down."""
        if self._pending:
            # Keep order: older writes first.
            self._enqueue(function, args)
            return
        try:
            function(*args)
        except DatabaseError as error:
            if is_permanent(error):
                self._drop(function, args, error)
                if isinstance(error, OperationalError):
                    _close_connections()
                return
            logger.warning("database write deferred (%s); will retry", type(error).__name__)
            self._enqueue(function, args)

    def _drop(self, function, args, error) -> None:
        with self._lock:
            self.dropped += 1
        code = f" {error.args[0]}" if error.args and isinstance(error.args[0], int) else ""
        logger.error(
            "database write dropped: %s failed with %s%s, which retrying cannot cure",
            _describe(function, args),
            type(error).__name__,
            code,
        )

    def _enqueue(self, function, args) -> None:
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                self.dropped += 1
                logger.error("outbox full: the oldest pending database write was dropped")
            self._pending.append([function, args, time.monotonic(), 0])
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._retry_loop, name="outbox", daemon=True)
                self._thread.start()

    def flush(self) -> bool:
        """Try the pending writes in order; True when none is left."""
        with self._flushing:
            return self._flush()

    def _flush(self) -> bool:
        while True:
            with self._lock:
                if not self._pending:
                    return True
                entry = self._pending[0]
            function, args = entry[0], entry[1]
            try:
                function(*args)
            except DatabaseError as error:
                connections.close_all()  # reconnect on the next try
                if not is_permanent(error):
                    code = error.args[0] if error.args else None
                    if code not in CONNECTION_LOST_ERRORS or not _database_answers():
                        return False
                    entry[3] += 1
                    if entry[3] < MAX_STRIKES:
                        return False
                self._drop(function, args, error)
            with self._lock:
                self._pending.popleft()

    def _retry_loop(self) -> None:
        try:
            while not self.flush():
                time.sleep(RETRY_INTERVAL)
            logger.info("pending database writes done")
        finally:
            connections.close_all()


outbox = Outbox()
