"""System checks: configuration errors surface at start-up, not as a 500 later."""

from django.conf import settings
from django.core.checks import Error, register


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
