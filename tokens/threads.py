"""
The daemon threads the token layer starts for work nobody waits for: the
stale-while-revalidate refreshes (tokens.background) and the chained tokens
refreshed ahead after their parent's token changed (tokens.single_flight). They
are tracked here, so tests and a one-shot refresher can wait until they are done.
Each closes its database connections when it ends.
"""

import logging
import threading
import time

from django.db import connections

logger = logging.getLogger(__name__)

_running: set[threading.Thread] = set()
_running_lock = threading.Lock()


def start_daemon(name: str, target, *args) -> threading.Thread:
    """Run `target(*args)` in a tracked daemon thread named `name`."""

    def run():
        try:
            target(*args)
        except Exception:  # a thread has no caller to raise to
            logger.exception("%s crashed", name)
        finally:
            connections.close_all()
            with _running_lock:
                _running.discard(threading.current_thread())

    thread = threading.Thread(target=run, name=name, daemon=True)
    with _running_lock:
        _running.add(thread)
    thread.start()
    return thread


def wait_for_daemons(timeout: float = 10.0) -> None:
    """
    Block until the tracked threads are done, those they started included (a
    parent's refresh that starts its children's), or `timeout` seconds passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        with _running_lock:
            threads = [thread for thread in _running if thread is not threading.current_thread()]
        if not threads:
            return
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if time.monotonic() >= deadline:
            return
