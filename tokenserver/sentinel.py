"""
Redis behind Sentinel: the `REDIS_URL` form that names Sentinel, read into
django-redis's Sentinel support, and the connection pool it uses.

    REDIS_URL=redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]

HOST:PORT are the Sentinels (port 26379 when left out), SERVICE is the name
they monitor the primary under (`sentinel monitor SERVICE …`), DB the Redis
database number (0 when left out). USER and PASSWORD, if given, are the
Redis servers' (the Sentinels themselves are asked without a password).
Example: `redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/mymaster/0`.

Every Redis user in tokenserver goes through the Django cache (the guarded
cache, the token entries, the rate-limit windows, the revocation list and
the Redis lock all ask django-redis for its client), so the cache
configuration built here is the only place the URL is read. Every command,
reads included, goes to the primary: django-redis's SentinelClient would send
reads to a replica, which may not have the write just made (a replaced
token, a flush, an eviction) yet, so tokenserver uses the default client on
django-redis's SentinelConnectionFactory, whose pool asks the Sentinels where
the primary is whenever it (re)connects.
"""

import re
from urllib.parse import quote, unquote

from django.core.exceptions import ImproperlyConfigured
from redis.connection import BlockingConnectionPool
from redis.sentinel import SentinelConnectionPool

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
FORM = f"{SCHEME}://[[user]:password@]host:port[,host:port…]/service[/db]"


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """
    A Sentinel pool that, like the plain Redis configuration's pool, makes a
    thread wait (up to its `timeout`) for a free connection when all
    `max_connections` are in use, instead of failing (which the guarded cache
    would take for Redis being down).
    """


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(f"{SCHEME}://")


def parse_sentinel_url(url: str) -> dict:
    """
    The parts of a `redis+sentinel://` URL: {"sentinels": [(host, port), …],
    "service": str, "db": int, "username": str, "password": str}.
    ImproperlyConfigured, naming the expected form, when it is malformed.
    """

    def refuse(why: str):
        # Never echo the URL: it may hold a password.
        return ImproperlyConfigured(f"REDIS_URL: {why}. Expected {FORM}.")

    if not is_sentinel_url(url):
        raise refuse(f"not a {SCHEME}:// URL")
    rest = url[len(SCHEME) + 3 :]
    if "?" in rest or "#" in rest:
        raise refuse("no query string or fragment is understood")
    netloc, _, path = rest.partition("/")
    username = password = ""
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        username, _, password = userinfo.partition(":")
        username, password = unquote(username), unquote(password)
    sentinels = []
    for item in netloc.split(","):
        host, colon, port = item.strip().rpartition(":") if ":" in item else (item, "", "")
        host = host.strip("[]")
        if not host:
            raise refuse("every Sentinel needs a host")
        if colon and not (port.isdigit() and 0 < int(port) < 65536):
            raise refuse("a Sentinel's port must be a number from 1 to 65535")
        sentinels.append((host, int(port) if colon else DEFAULT_SENTINEL_PORT))
    parts = path.split("/") if path else []
    if parts and parts[-1] == "":
        parts.pop()  # a trailing slash
    if not parts or not parts[0]:
        raise refuse("the service name (the Sentinels' master name) is missing")
    if len(parts) > 2:
        raise refuse("the path is /service or /service/db, nothing more")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", parts[0]):
        # django-redis reads the service name as the URL's host name (lower-cased).
        raise refuse("the service name must be lower-case letters, digits, '.', '_' or '-'")
    db = parts[1] if len(parts) == 2 else "0"
    if not db.isdigit():
        raise refuse("the database must be a number")
    return {
        "sentinels": sentinels,
        "service": parts[0],
        "db": int(db),
        "username": username,
        "password": password,
    }


def sentinel_cache_options(url: str) -> tuple[str, dict]:
    """
    The django-redis LOCATION and the OPTIONS entries that make the cache use
    Sentinel for `url`: (location, options). The caller adds its timeouts and
    pool size, as for a plain Redis URL.
    """
    parts = parse_sentinel_url(url)
    credentials = ""
    if parts["username"] or parts["password"]:
        credentials = f"{quote(parts['username'], safe='')}:{quote(parts['password'], safe='')}@"
    # django-redis's Sentinel factory reads the service name from the host part.
    location = f"redis://{credentials}{parts['service']}/{parts['db']}"
    options = {
        "CLIENT_CLASS": "django_redis.client.DefaultClient",
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "CONNECTION_POOL_CLASS": "tokenserver.sentinel.BlockingSentinelConnectionPool",
        "SENTINELS": parts["sentinels"],
    }
    return location, options


def describe(url: str) -> str:
    """How `manage.py backends` names a Sentinel configuration (never a password)."""
    parts = parse_sentinel_url(url)
    where = ",".join(f"{host}:{port}" for host, port in parts["sentinels"])
    return f"Redis through Sentinel {where}, service {parts['service']}, database {parts['db']}"
