"""
Failed authentication attempts, counted per address for every worker (in the
cache): the client credentials exchange and staff HTTP Basic both stop
answering an address that failed too often this minute.

Kept apart from clients.services: DRF imports the authentication classes
while it loads, before the services' own imports (DRF views) are ready.
"""

from tokenserver import cache as shared_cache


def _failures_flag(address: str) -> str:
    return f"authfail:{address}"


def auth_failures_exceeded(address: str, limit: int) -> bool:
    """Whether `address` failed `limit` times this minute (counted for all workers)."""
    return shared_cache.flag_get(_failures_flag(address), 0) >= limit


def auth_failure_record(address: str) -> None:
    shared_cache.counter_incr(_failures_flag(address), 60)
