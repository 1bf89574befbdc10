"""Where a request came from, for the limits and the console's allow-list."""

from django.conf import settings


def client_address(request) -> str:
    """
    The address a request came from: REMOTE_ADDR, or, behind a trusted proxy
    (TOKENSERVER_BEHIND_PROXY), the last X-Forwarded-For entry, the one that
    proxy appended. Earlier entries are the client's to write, so they are
    never trusted; without a trusted proxy the header is ignored altogether.
    """
    address = request.META.get("REMOTE_ADDR", "")
    if settings.TOKENSERVER_BEHIND_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        entries = [entry.strip() for entry in forwarded.split(",") if entry.strip()]
        if entries:
            address = entries[-1]
    return address
