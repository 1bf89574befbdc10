"""`manage.py backends`: which database, cache and lock this configuration uses."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand

from tokenserver import sentinel
from tokenserver.sentinel import is_sentinel_url


def describe_backends() -> list[str]:
    """One line each for the database, the cache and the lock; never a password."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database_line = f"database: SQLite, {database['NAME']} (the embedded default)"
    else:
        where = f"{database['HOST'] or 'localhost'}:{database['PORT'] or 3306}"
        database_line = f"database: MySQL/MariaDB at {where}, database {database['NAME']}"
    if is_sentinel_url(settings.REDIS_URL):
        cache_line = f"cache: {sentinel.describe(settings.REDIS_URL)}"
    elif settings.REDIS_URL:
        redis = urlsplit(settings.REDIS_URL)
        cache_line = f"cache: Redis at {redis.hostname}:{redis.port or 6379}{redis.path or '/0'}"
    else:
        cache_line = "cache: local memory, per process (no REDIS_URL)"
    return [database_line, cache_line, f"lock: {settings.TOKENSERVER_LOCK_BACKEND}"]


class Command(BaseCommand):
    help = (
        "Print which database, cache and lock this configuration uses "
        "(DATABASE_URL, REDIS_URL; never a password). serve.py prints it at start."
    )

    def handle(self, *args, **options):
        for line in describe_backends():
            self.stdout.write(line)
