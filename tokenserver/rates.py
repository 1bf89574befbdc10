"""
Rates such as "60000/min": parsed once, in settings (a bad value stops the
start-up with ImproperlyConfigured), and by the rate limit that applies them.
"""

import re
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
PERIODS |= {"h": 3600, "hour": 3600, "d": 86400, "day": 86400}


@dataclass(frozen=True)
class Rate:
    """At most `limit` calls per `period` seconds."""

    limit: int
    period: int


def parse_rate(text: str, *, setting: str = "TOKENSERVER_TOKEN_RATE") -> Rate | None:
    """ "60000/min" → Rate(60000, 60); "0", "off" or "" → None (no limit)."""
    text = (text or "").strip().lower()
    if text in ("", "0", "off", "none"):
        return None
    match = re.fullmatch(r"(\d+)\s*/\s*(\d*)\s*([a-z]+)", text)
    if not match or match.group(3) not in PERIODS:
        raise ImproperlyConfigured(
            f"{setting} is {text!r}; write calls per period such as 60000/min or 1000/s "
            "(periods s, min, h, day), or off."
        )
    limit, multiple = int(match.group(1)), int(match.group(2) or 1)
    if limit == 0:
        return None
    return Rate(limit, multiple * PERIODS[match.group(3)])
