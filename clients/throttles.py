"""
The per-client rate limit of the token endpoint (TOKENSERVER_TOKEN_RATE, e.g.
"60000/min"; "0" or "off" disables it). Staff are not limited.

A fixed window per client: the first call starts a window of the rate's
period, every call in it counts, and calls past the limit are refused (429,
`Retry-After` until the window ends). With Redis the counter is one key per
client, incremented atomically (a Lua script that also reads the token
entry, so the hot path makes one round trip), so the limit is exact across
every worker and host; without Redis it is exact per process. While the
cache is down the limit is not enforced: apps keep getting their tokens.
"""

import math
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.core.signals import setting_changed
from rest_framework.throttling import BaseThrottle

from clients.authentication import ClientUser
from tokenserver.cache import WindowCount, window_incr_and_get
from tokenserver.rates import Rate, parse_rate


@lru_cache(maxsize=1)
def token_rate() -> Rate | None:
    """The configured rate of the token endpoint (None: unlimited)."""
    return parse_rate(settings.TOKENSERVER_TOKEN_RATE)


def _reset(*, setting, **kwargs):
    if setting == "TOKENSERVER_TOKEN_RATE":
        token_rate.cache_clear()


setting_changed.connect(_reset)


def rate_counter(client_id: str) -> str:
    """The name of a client's window counter."""
    return f"rate:token:{client_id}"


@dataclass(frozen=True)
class Verdict:
    """Whether one call is within the client's rate, and if not, how long to wait."""

    allowed: bool
    retry_after: int = 0

    @classmethod
    def of(cls, rate: Rate, counted: WindowCount | None) -> "Verdict":
        if counted is None or counted.count <= rate.limit:
            return cls(True)
        return cls(False, max(1, math.ceil(counted.remaining)))


def token_rate_hit(client_id: str) -> Verdict:
    """Count one call of a client against the token rate."""
    rate = token_rate()
    if rate is None:
        return Verdict(True)
    counted, _ = window_incr_and_get(rate_counter(client_id), rate.period)
    return Verdict.of(rate, counted)


#: Set on a request whose call was already counted (by the token fast path).
COUNTED = "tokenserver_rate_counted"


class ClientTokenRateThrottle(BaseThrottle):
    """
    The token rate as a DRF throttle, for requests that reach the DRF view:
    clients only, and only if the fast path has not counted the call already.
    """

    def allow_request(self, request, view):
        self._wait = None
        if not isinstance(request.user, ClientUser) or getattr(request._request, COUNTED, False):
            return True
        verdict = token_rate_hit(request.user.get_username())
        setattr(request._request, COUNTED, True)
        if not verdict.allowed:
            self._wait = verdict.retry_after
        return verdict.allowed

    def wait(self):
        return self._wait
