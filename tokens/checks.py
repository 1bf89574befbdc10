"""System checks: configuration errors surface at start-up, not as a 500 later."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register

from tokenserver import netguard


@register()
def lock_backend_check(app_configs, **kwargs):
    backend = settings.TOKENSERVER_LOCK_BACKEND
    if backend not in ("redis", "database"):
        return [
            Error(
                f"TOKENSERVER_LOCK_BACKEND is {backend!r}; use 'redis' or 'database'.",
                id="tokens.E001",
            )
        ]
    if backend == "redis" and not settings.REDIS_URL:
        return [
            Error(
                "TOKENSERVER_LOCK_BACKEND is 'redis' but REDIS_URL is not set.",
                hint="Set REDIS_URL, or use TOKENSERVER_LOCK_BACKEND=database.",
                id="tokens.E002",
            )
        ]
    return []


@register()
def webhook_check(app_configs, **kwargs):
    """
    TOKENSERVER_WEBHOOK_URL (failure notifications): an http(s) URL with a host,
    one the upstream guard allows (tokenserver.netguard: no metadata or
    link-local address, no private or loopback one unless listed in
    TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS), and a signing secret beside it.
    """
    url = settings.TOKENSERVER_WEBHOOK_URL
    if not url:
        return []
    # The URL may carry a credential (many receivers put one in the path): never repeated.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return [
            Error(
                "TOKENSERVER_WEBHOOK_URL is not an http or https URL with a host.",
                hint="Write e.g. https://alerts.example.com/hooks/tokenserver.",
                id="tokens.E003",
            )
        ]
    errors = []
    try:
        netguard.check_url(url)
    except netguard.RefusedDestination as refused:
        errors.append(
            Error(
                f"TOKENSERVER_WEBHOOK_URL is refused by the upstream guard: {refused}.",
                hint="A receiver on a private network: list its network in "
                "TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS. Metadata and link-local "
                "addresses are always refused.",
                id="tokens.E004",
            )
        )
    if not settings.TOKENSERVER_WEBHOOK_SECRET:
        errors.append(
            Error(
                "TOKENSERVER_WEBHOOK_URL is set but TOKENSERVER_WEBHOOK_SECRET is not: "
                "notifications are always signed.",
                hint="Generate one with `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'` and give it to the receiver too.",
                id="tokens.E005",
            )
        )
    return errors
