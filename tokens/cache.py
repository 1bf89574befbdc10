"""
The token cache: one entry per secret, keyed by (realm, key) so the hot path
answers without a database query. The entry holds the token encrypted (as in
the database) and the times the token path needs:

    {"t": ciphertext, "exp": expires_at, "at": fetched_at, "ref": refresh_at,
     "src": "fixed" | absent}

all epoch seconds. `ref` is computed when the entry is written, from the
realm's refresh margin; saving a realm or a secret evicts its entries, so a
changed margin, a disabled secret or new credentials take effect at once.
"""

from collections.abc import Iterable

from django.core.cache import cache

from tokenserver import crypto


def token_cache_key(realm_id: str, key: str) -> str:
    return f"token:{realm_id}:{key}"


def cache_read(realm_id: str, key: str) -> dict | None:
    return cache.get(token_cache_key(realm_id, key))


def cache_write(
    realm_id: str,
    key: str,
    *,
    token: str,
    expires_at: float | None,
    fetched_at: float,
    refresh_at: float,
    now: float,
    source: str | None = None,
) -> None:
    entry = {"t": crypto.encrypt(token), "exp": expires_at, "at": fetched_at, "ref": refresh_at}
    if source:
        entry["src"] = source
    # Keep the entry no longer than the token lives (a fixed token without
    # expiry is re-read from the database daily).
    ttl = (expires_at - now) if expires_at is not None else 86400
    cache.set(token_cache_key(realm_id, key), entry, timeout=max(1, int(ttl)))


def cache_evict(pairs: Iterable[tuple[str, str]]) -> None:
    keys = [token_cache_key(realm_id, key) for realm_id, key in pairs]
    if keys:
        cache.delete_many(keys)


def entry_token(entry: dict) -> str:
    return crypto.decrypt(entry["t"])
