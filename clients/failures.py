"""
Failed sign-ins, counted for every worker (window counters in the cache)
and shared by every way in: the console's login page, staff HTTP Basic and
the client credentials exchange.

Each failure counts twice: for its (address, username) pair and for its
address. Past TOKENSERVER_AUTH_FAILURE_RATE failures of a pair in its window,
that username is refused from that address, the right password included,
until the window ends; past TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE failures of
an address (one attacker trying many usernames), the whole address is.
Keyed on the pair, one attacker behind a shared NAT locks out only the
usernames it fails as, and everyone at the address only once it reaches the
address's looser limit. A window starts with its first failure; refused
attempts are not counted, so it ends on time. Like every counter in the
cache, these fail open while the cache is down.

Checking and counting are two steps: attempts in flight together may all
pass the check, so the limit is exact for attempts made one after another.

Kept apart from clients.services: DRF imports the authentication classes
while it loads, before the services' own imports (DRF views) are ready.
"""

import hashlib
import math
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import authenticate

from tokenserver.addresses import client_address
from tokenserver.cache import window_incr_and_get, window_read
from tokenserver.rates import Rate, parse_rate

PAIR_SETTING = "TOKENSERVER_AUTH_FAILURE_RATE"
ADDRESS_SETTING = "TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE"


@dataclass(frozen=True)
class Lockout:
    """Sign-ins refused for `retry_after` seconds: for one username, or the whole address."""

    retry_after: int
    whole_address: bool

    def message(self, *, account: str = "account", attempts: str = "sign-ins") -> str:
        """A sentence for the one refused, naming no username (nothing to enumerate)."""
        minutes = max(1, math.ceil(self.retry_after / 60))
        wait = "1 minute" if minutes == 1 else f"{minutes} minutes"
        whose = "" if self.whole_address else f" for this {account}"
        return f"Too many failed {attempts}{whose} from your address; try again in {wait}."


class SignInLocked(Exception):
    """A sign-in refused without trying the password (see Lockout)."""

    def __init__(self, lockout: Lockout):
        super().__init__(lockout.message())
        self.lockout = lockout


def _rates() -> tuple[Rate | None, Rate | None]:
    # Parsed on every use (a regular expression), so a changed setting holds at
    # once; the values were checked at start-up (settings.py).
    return (
        parse_rate(getattr(settings, PAIR_SETTING), setting=PAIR_SETTING),
        parse_rate(getattr(settings, ADDRESS_SETTING), setting=ADDRESS_SETTING),
    )


def _counters(address: str, username: str) -> tuple[str, str]:
    """
    The window counters of a pair and of its address. The username is hashed:
    a key of fixed shape whatever was typed (a secret in the wrong field, text
    that is no UTF-8), and case-folded, as MySQL compares usernames.
    """
    typed = username.casefold().encode("utf-8", "surrogatepass")
    return f"authfail:{address}:{hashlib.sha256(typed).hexdigest()[:32]}", f"authfail:{address}"


def auth_lockout(address: str, username: str) -> Lockout | None:
    """Whether `username` is refused from `address` now, and for how long (one cache read)."""
    pair_rate, address_rate = _rates()
    pair, whole = _counters(address, username)
    lockouts = []
    for counted, rate, whole_address in zip(
        window_read(pair, whole), (pair_rate, address_rate), (False, True), strict=True
    ):
        if rate is not None and counted is not None and counted.count >= rate.limit:
            lockouts.append(Lockout(max(1, math.ceil(counted.remaining)), whole_address))
    return max(lockouts, key=lambda lockout: lockout.retry_after, default=None)


def auth_failure_record(address: str, username: str) -> None:
    """Count one failed sign-in of `username` from `address`."""
    pair_rate, address_rate = _rates()
    pair, whole = _counters(address, username)
    for name, rate in ((pair, pair_rate), (whole, address_rate)):
        if rate is not None:
            window_incr_and_get(name, rate.period)


def staff_sign_in(request, username: str | None, password: str | None):
    """
    Django's authenticate() for a console or HTTP Basic sign-in: the user, or
    None for wrong or unreadable (None) credentials, which count as a
    failure. Raises SignInLocked, without trying the password, while the
    username or the address is locked out.
    """
    address = client_address(request)
    lockout = auth_lockout(address, username or "")
    if lockout is not None:
        raise SignInLocked(lockout)
    user = None
    if username is not None and password is not None:
        user = authenticate(request, username=username, password=password)
    if user is None:
        auth_failure_record(address, username or "")
    return user
