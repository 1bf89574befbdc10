"""
The token cache: one entry per secret, keyed by (realm, key) so the hot path
answers without a database query. Callers read and write `Snapshot`s; the
entry's format is private to this module:

    {"t": ciphertext, "exp": expires_at, "at": fetched_at, "ref": refresh_at,
     "lt": lock lease in seconds, "src": "fixed" | absent, "pf": parent | absent}

all epoch seconds but `lt`: how long a refresh of this secret may hold its
lock, for the background refresh that starts from this entry; and `pf`: the
fingerprint of the parent token a chained realm's token was fetched with. `ref` is
computed when the entry is written, from the realm's refresh margin; saving a
realm or a secret evicts its entries (tokens.signals), so a changed margin, a
disabled secret or new credentials take effect at once.

The token is encrypted in the entry as in the database. Like every user of
the cache, this runs through tokenserver.cache's guard: with Redis down, reads
miss and writes do nothing, and the token path runs on the database alone.
"""

from collections.abc import Iterable

from django.conf import settings
from django.core.cache import cache

from tokens.results import Snapshot
from tokenserver import crypto
from tokenserver.cache import WindowCount, guarded, window_incr_and_get


def _cache_key(realm_id: str, key: str) -> str:
    return f"token:{realm_id}:{key}"


def entry_read(realm_id: str, key: str) -> Snapshot | None:
    """The cached token of a secret; None if missing, the cache is down, or a key was dropped."""
    return _snapshot(guarded(lambda: cache.get(_cache_key(realm_id, key))))


def entry_read_counted(
    realm_id: str, key: str, *, counter: str, window: float
) -> tuple[WindowCount | None, Snapshot | None]:
    """
    entry_read, and one call counted in the window counter `counter`, in one
    round trip to the cache (the hot path's rate limit and token read).
    """
    counted, entry = window_incr_and_get(counter, window, _cache_key(realm_id, key))
    return counted, _snapshot(entry)


def _snapshot(entry) -> Snapshot | None:
    if not entry:
        return None
    try:
        token = crypto.decrypt_memoized(entry["t"])
        return Snapshot(
            token,
            entry["at"],
            entry["exp"],
            entry["ref"],
            source=entry.get("src", "cache"),
            lock_ttl=entry.get("lt", 60.0),
            parent=entry.get("pf", ""),
        )
    except (crypto.InvalidToken, KeyError, TypeError):
        return None  # sealed under a key no longer configured (or not ours): a miss


def entry_write(realm_id: str, key: str, snapshot: Snapshot, *, now: float) -> None:
    """Cache a secret's token (if the cache is up), for no longer than it lives."""

    def write():
        entry = {
            "t": crypto.encrypt(snapshot.token),
            "exp": snapshot.expires_at,
            "at": snapshot.fetched_at,
            "ref": snapshot.refresh_at,
            "lt": snapshot.lock_ttl,
        }
        if snapshot.source == "fixed":
            entry["src"] = "fixed"
        if snapshot.parent:
            entry["pf"] = snapshot.parent
        # Keep the entry no longer than the token lives (a fixed token without
        # expiry is re-read from the database daily); a per-process cache keeps
        # it only briefly (settings.TOKENSERVER_LOCAL_CACHE_TTL).
        expires_at = snapshot.expires_at
        ttl = (expires_at - now) if expires_at is not None else 86400
        if not settings.REDIS_URL:
            ttl = min(ttl, settings.TOKENSERVER_LOCAL_CACHE_TTL)
        cache.set(_cache_key(realm_id, key), entry, timeout=max(1, int(ttl)))

    guarded(write)


def entries_evict(pairs: Iterable[tuple[str, str]]) -> None:
    """Drop the entries of these (realm, key) pairs."""
    keys = [_cache_key(realm_id, key) for realm_id, key in pairs]
    if keys:
        guarded(lambda: cache.delete_many(keys))


def entries_clear() -> None:
    """Drop every token entry (after a key rotation)."""

    def clear():
        if hasattr(cache, "delete_pattern"):
            cache.delete_pattern("token:*")
        else:
            cache.clear()  # the local-memory cache of this process

    guarded(clear)
