"""
The values the token path passes around: a `Snapshot` is a token as the
cache or the database holds it; a `TokenResult` is a token handed to an app.
"""

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """
    A token as the cache or the database holds it (times in epoch seconds).
    `source` is where it was read (cache, database; fixed for a fixed
    token); `lock_ttl` is how long a refresh of this secret may hold its lock;
    `parent` is the fingerprint of the parent token a chained realm's token was
    fetched with ("" for the others).
    """

    token: str
    fetched_at: float
    expires_at: float | None  # None: a fixed token that never expires
    refresh_at: float
    source: str = "cache"
    lock_ttl: float = 60.0
    parent: str = ""

    def alive(self, now: float) -> bool:
        """Not yet expired (it may be due for a refresh)."""
        return self.expires_at is None or self.expires_at > now

    def due(self, now: float) -> bool:
        """Inside its refresh margin: hand it out, and refresh it in the background."""
        return now >= self.refresh_at and self.source != "fixed"

    def result(self, source: str | None = None, *, stale: bool = False) -> "TokenResult":
        return TokenResult(self.token, self.expires_at, source or self.source, stale=stale)


@dataclass(frozen=True)
class TokenResult:
    """A token handed to an app, and where it came from."""

    token: str
    expires_at: float | None  # epoch seconds; None: a fixed token that never expires
    source: str  # cache | database | upstream | fixed
    http_status: int | None = None  # of the upstream's answer, when source is upstream
    lifetime: float | None = None  # granted, in seconds, when source is upstream
    #: Handed out inside its refresh margin, while a background refresh was asked for.
    stale: bool = False

    def expires_in_ms(self, now: float | None = None) -> int | None:
        """The remaining lifetime in milliseconds, never more than what is really left."""
        if self.expires_at is None:
            return None
        return max(0, int((self.expires_at - (now or time.time())) * 1000))
