"""
Writes that must not be lost when the database is briefly down: a fetched
token's row and FetchLog rows. A write that fails on the connection
(OperationalError, InterfaceError) waits here and a background thread retries
it, in order, every RETRY_INTERVAL seconds until the database is back.

The queue is in memory: a process that dies with writes pending loses them
(its tokens are still in Redis and the next fetch writes anew); the queue is
bounded, and what falls off is logged. `readyz` reports pending writes.
"""

import logging
import threading
import time
from collections import deque

from django.db import DatabaseError, InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)

RETRY_INTERVAL = 2.0
MAX_PENDING = 10_000


def _create(model, fields):
    model.objects.create(**fields)


class Outbox:
    def __init__(self):
        self._pending = deque()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flusher at a time: each write runs once
        self._thread = None

    def __len__(self):
        return len(self._pending)

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
        except (OperationalError, InterfaceError) as error:
            logger.warning("database write deferred (%s); will retry", type(error).__name__)
            self._enqueue(function, args)
        except DatabaseError:
            logger.exception("database write failed and was dropped")

    def _enqueue(self, function, args) -> None:
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                logger.error("outbox full: the oldest pending database write was dropped")
            self._pending.append((function, args))
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
                function, args = self._pending[0]
            try:
                function(*args)
            except (OperationalError, InterfaceError):
                connections.close_all()  # reconnect on the next try
                return False
            except DatabaseError:
                logger.exception("pending database write failed and was dropped")
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
