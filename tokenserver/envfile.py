"""
Write a `.env` with freshly generated keys, unless one exists.

    python -m tokenserver.envfile [PATH]

Used by `make run` and `make test` so a fresh checkout starts without set-up.
The file lists every setting tokenserver reads (SETTINGS below), commented out
with its default, so an operator sees every knob in one place; a test keeps
that list and the code in step. It imports no Django settings (which refuse
to load without these keys).
"""

import argparse
import os
import secrets
import sys
from pathlib import Path

import environ
from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parent.parent

#: Every environment variable tokenserver reads besides the two generated keys,
#: by section: (name, default as written in .env, what it does). Defaults in
#: angle brackets are computed. tokenserver/tests/test_envfile.py checks that
#: this list names exactly what settings.py, serve.py, gunicorn.conf.py and
#: tokenserver/metrics_dir.py read.
SETTINGS = {
    "Server (serve.py, gunicorn.conf.py; restart the server after a change)": [
        (
            "TOKENSERVER_BIND",
            "127.0.0.1:8000",
            "address to listen on; behind a proxy on another host 0.0.0.0:8000",
        ),
        ("WEB_CONCURRENCY", "<one per core; gunicorn: two per core>", "worker processes"),
        ("WEB_THREADS", "<4; gunicorn: 1>", "threads per worker"),
        (
            "TOKENSERVER_REFRESH_INTERVAL",
            "30",
            "serve.py --refresher: seconds between the refresher's passes",
        ),
        ("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING, ERROR"),
        (
            "LOG_FORMAT",
            "plain",
            "plain (human-readable) or json (one object per line, with the request id)",
        ),
        ("TOKENSERVER_LOG_REQUESTS", "<on with json, off with plain>", "one line per request"),
        (
            "PROMETHEUS_MULTIPROC_DIR",
            "<a fresh temporary directory per start>",
            "where the server's processes keep their metrics; emptied at start",
        ),
    ],
    "Metrics (GET /metrics; README, Observing it)": [
        (
            "TOKENSERVER_METRICS_TOKEN",
            "",
            "a bearer token (16+ characters) that may scrape; with neither this nor the "
            "list below: loopback only",
        ),
        ("TOKENSERVER_METRICS_ALLOWED_IPS", "", "addresses/CIDRs that may scrape, e.g. 10.0.0.0/8"),
    ],
    "Django": [
        ("DEBUG", "off", "never on in production: error pages show settings"),
        ("ALLOWED_HOSTS", "localhost,127.0.0.1", "host names the server answers, comma-separated"),
        ("TIME_ZONE", "UTC", "the console's time zone"),
        (
            "STATIC_ROOT",
            "<this directory>/staticfiles",
            "where collectstatic puts the console's files",
        ),
        (
            "TOKENSERVER_ENV_FILE",
            "<this directory>/.env",
            "environment only: another file to read instead of this one (empty: none)",
        ),
    ],
    "Database and cache (unset: SQLite in db.sqlite3 and a cache per process)": [
        (
            "DATABASE_URL",
            "sqlite:///<this directory>/db.sqlite3",
            "e.g. mysql://user:password@127.0.0.1:3306/tokenserver",
        ),
        ("CONN_MAX_AGE", "60", "MySQL/MariaDB: seconds a connection is kept for reuse"),
        (
            "REDIS_URL",
            "",
            "e.g. redis://127.0.0.1:6379/0: one cache, lock and rate limit for all workers; "
            "behind Sentinel: redis+sentinel://host1:26379,host2:26379,host3:26379/mymaster/0",
        ),
        ("REDIS_MAX_CONNECTIONS", "100", "Redis connections per worker process"),
        (
            "CACHE_KEY_PREFIX",
            "tokenserver",
            "prefix of every cache key (several installations on one Redis)",
        ),
        (
            "TOKENSERVER_LOCAL_CACHE_TTL",
            "5",
            "without Redis: seconds a process keeps a token before looking at the database again",
        ),
        (
            "TOKENSERVER_LOCK_BACKEND",
            "<redis with REDIS_URL, else database>",
            "the single-flight lock: redis or database",
        ),
        ("TOKENSERVER_LOCK_LEASE", "5", "seconds a refresh lock lasts unless its holder renews it"),
    ],
    "Apps and sign-ins": [
        ("TOKENSERVER_ACCESS_TOKEN_TTL", "7200", "seconds an app's access token lives by default"),
        ("TOKENSERVER_ACCESS_TOKEN_MAX_TTL", "86400", "the longest an app may ask for"),
        (
            "TOKENSERVER_TOKEN_RATE",
            "60000/min",
            "GET /api/token calls per client (0 or off: no limit)",
        ),
        ("TOKENSERVER_AUTH_FAILURE_RATE", "10/min", "failed sign-ins per username and address"),
        ("TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE", "50/min", "failed sign-ins per address"),
    ],
    "Upstreams (token providers)": [
        (
            "TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS",
            "",
            "private CIDRs allowed as token endpoints, e.g. 127.0.0.1/32 (make demo)",
        ),
        ("TOKENSERVER_MAX_TOKEN_BYTES", "65536", "largest token accepted from a provider"),
    ],
    "Failure notifications (README, Failure notifications)": [
        (
            "TOKENSERVER_WEBHOOK_URL",
            "",
            "where failing/recovered notifications are POSTed; must pass the upstream guard",
        ),
        ("TOKENSERVER_WEBHOOK_SECRET", "", "HMAC-SHA256 signing key; required with the URL"),
        ("TOKENSERVER_WEBHOOK_TIMEOUT", "5", "seconds one delivery may take"),
        ("TOKENSERVER_WEBHOOK_MAX_TRIES", "6", "tries before a notification is given up"),
        (
            "TOKENSERVER_WEBHOOK_RETRY_BASE",
            "10",
            "seconds before the first retry, doubling each time",
        ),
    ],
    "HTTPS and proxies": [
        ("TOKENSERVER_HTTPS", "off", "on behind TLS: secure cookies, redirect to https, HSTS"),
        ("SECURE_HSTS_SECONDS", "<31536000 with TOKENSERVER_HTTPS, else 0>", "HSTS lifetime"),
        ("SECURE_HSTS_INCLUDE_SUBDOMAINS", "<TOKENSERVER_HTTPS>", "HSTS for subdomains too"),
        ("SECURE_HSTS_PRELOAD", "<TOKENSERVER_HTTPS>", "HSTS preload"),
        (
            "TOKENSERVER_BEHIND_PROXY",
            "off",
            "on behind a trusted proxy: X-Forwarded-Proto and X-Forwarded-For count",
        ),
    ],
    "Console access and external sign-in (README, Console)": [
        (
            "TOKENSERVER_CONSOLE_ALLOWED_IPS",
            "",
            "addresses and CIDRs the console answers (empty: all)",
        ),
        ("TOKENSERVER_SSO_LOGIN_URL", "", "set to turn external sign-in on"),
        ("TOKENSERVER_SSO_VALIDATE_URL", "", "where a ticket is checked"),
        ("TOKENSERVER_SSO_LOGOUT_URL", "", ""),
        ("TOKENSERVER_SSO_REDIRECT_PARAM", "redirect_url", ""),
        ("TOKENSERVER_SSO_UID_COOKIE", "uid", ""),
        ("TOKENSERVER_SSO_TICKET_COOKIE", "ticket", ""),
        ("TOKENSERVER_SSO_COOKIE_DOMAIN", "", ""),
        ("TOKENSERVER_SSO_UID_FIELD", "uid", ""),
        ("TOKENSERVER_SSO_TICKET_FIELD", "ticket", ""),
        (
            "TOKENSERVER_SSO_MATCH",
            "[]",
            'JSON [[JSONPath, expected value], ...], e.g. [["code", 0]]',
        ),
        ("TOKENSERVER_SSO_MISSING_COOKIE", "undefined", ""),
        ("TOKENSERVER_SSO_MISSING_COOKIE_REDIRECTS", "off", ""),
        ("TOKENSERVER_SSO_CACHE_TTL", "60", "seconds a validated ticket is trusted"),
        ("TOKENSERVER_SSO_TIMEOUT", "5", "seconds to wait for the validation URL"),
        ("TOKENSERVER_SSO_CREATE_USERS", "off", ""),
        ("TOKENSERVER_SSO_GROUP", "", "group given to users it creates"),
        ("TOKENSERVER_SSO_EXCLUSIVE", "off", "on: no password sign-in"),
        ("TOKENSERVER_SSO_IGNORE_PATHS", "/static/,/healthz,/readyz,/api/", ""),
    ],
}

TEMPLATE_HEAD = """\
# Generated by `python -m tokenserver.envfile`. Keep this file secret.
# Every setting tokenserver reads is below, commented out with its default:
# uncomment a line to change it, then restart the server (settings are read at
# start-up). Variables set in the environment win over this file.
SECRET_KEY={secret_key}
# Fernet keys, newest first: the first encrypts, all decrypt (README, key rotation).
TOKENSERVER_ENCRYPTION_KEYS={encryption_key}
"""


def render(secret_key: str, encryption_key: str) -> str:
    """The text of a new .env: the two keys, then every other setting commented out."""
    lines = [TEMPLATE_HEAD.format(secret_key=secret_key, encryption_key=encryption_key)]
    for section, settings in SETTINGS.items():
        lines.append(f"\n# --- {section}\n")
        for name, default, help_text in settings:
            if help_text:
                lines.append(f"# {name}: {help_text}\n")
            lines.append(f"# {name}={default}\n")
    return "".join(lines)


def read_env_file():
    """
    Read the .env file into os.environ, as the settings do (variables already
    set win; TOKENSERVER_ENV_FILE names another file, or none when empty): for
    serve.py and gunicorn.conf.py, whose knobs are read before Django starts.
    """
    path = os.environ.get("TOKENSERVER_ENV_FILE", str(BASE_DIR / ".env"))
    if path and Path(path).is_file():
        environ.Env.read_env(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(BASE_DIR / ".env"))
    args = parser.parse_args(argv)
    path = Path(args.path)
    if path.exists():
        print(f"{path} exists; left as it is.")
        return 0
    path.write_text(
        render(
            secret_key=secrets.token_urlsafe(50),
            encryption_key=Fernet.generate_key().decode(),
        )
    )
    path.chmod(0o600)
    print(f"Wrote {path} with fresh SECRET_KEY and TOKENSERVER_ENCRYPTION_KEYS.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
