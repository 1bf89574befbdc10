"""
tokenserver settings: every knob is an environment variable, read with
django-environ. A `.env` file beside manage.py is read when present (variables
already in the environment win over it); `TOKENSERVER_ENV_FILE` names another
file, or none when set to the empty string.

The embedded default is SQLite plus the local-memory cache; set `DATABASE_URL`
and `REDIS_URL` for the production-like configuration (MariaDB/MySQL + Redis).
"""

import ipaddress
import json
from pathlib import Path

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from tokenserver.rates import parse_rate
from tokenserver.sentinel import is_sentinel_url, sentinel_cache_options

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
ENV_FILE = env.str("TOKENSERVER_ENV_FILE", default=str(BASE_DIR / ".env"))
if ENV_FILE and Path(ENV_FILE).is_file():
    env.read_env(ENV_FILE)

DEBUG = env.bool("DEBUG", default=False)

# Secrets: required outside DEBUG, so a misconfigured deployment fails at
# start-up with a clear message instead of running with a guessable key.
SECRET_KEY = env.str("SECRET_KEY", default="")
TOKENSERVER_ENCRYPTION_KEYS = env.list("TOKENSERVER_ENCRYPTION_KEYS", default=[])
if not DEBUG:
    _missing = [
        name
        for name, value in (
            ("SECRET_KEY", SECRET_KEY),
            ("TOKENSERVER_ENCRYPTION_KEYS", TOKENSERVER_ENCRYPTION_KEYS),
        )
        if not value
    ]
    if _missing:
        raise ImproperlyConfigured(
            f"{' and '.join(_missing)} must be set when DEBUG is off. "
            "Run `make run` once to generate a .env with fresh keys, or set them "
            "in the environment (generate an encryption key with "
            "`python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`)."
        )
elif not SECRET_KEY:
    SECRET_KEY = "insecure-debug-only-secret-key"  # noqa: S105 - DEBUG only
for _position, _key in enumerate(TOKENSERVER_ENCRYPTION_KEYS, start=1):
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            f"TOKENSERVER_ENCRYPTION_KEYS entry {_position} is not a Fernet key "
            "(32 url-safe base64-encoded bytes)."
        ) from None

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    # django.contrib.admin, its site signing in through clients.failures.
    "clients.apps.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # The API's OpenAPI schema and its docs pages, their assets served from here (no CDN).
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "clients",
    "realms",
    "secret_store",
    "tokens",
]

MIDDLEWARE = [
    # The request id (X-Request-ID, log lines, error bodies), before anything answers.
    "tokenserver.request_id.RequestId",
    "django.middleware.security.SecurityMiddleware",
    # The console's address allow-list, before anything else (clients.sso).
    "clients.sso.ConsoleAllowList",
    # GET /api/token with a bearer token, answered before the rest (tokens.middleware).
    "tokens.middleware.TokenFastPath",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The console's external sign-in, when configured (clients.sso).
    "clients.sso.ConsoleSSO",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tokenserver.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "tokenserver.wsgi.application"

# --- Database ---------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the one writer; IMMEDIATE transactions take
    # the write lock up front so two writers wait (busy timeout) instead of
    # failing with "database is locked" on a lock upgrade. The test database
    # is a file, not shared memory, so several processes can use it.
    _db.setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    _db["TEST"] = {"NAME": str(BASE_DIR / "test_db.sqlite3")}
elif _db["ENGINE"] in ("django.db.backends.mysql",):
    # A database that went away must fail fast, not hang requests.
    _db.setdefault("OPTIONS", {}).update({"charset": "utf8mb4", "connect_timeout": 3})
    _db["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
    # Persistent connections, checked before reuse.
    _db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    _db["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="tokenserver")
if REDIS_URL:
    # redis://host:port/db, or Redis behind Sentinel:
    # redis+sentinel://host:26379,host2:26379/service/db (tokenserver/sentinel.py;
    # a malformed one is refused here, at start-up).
    _redis_options = {"CLIENT_CLASS": "django_redis.client.DefaultClient"}
    _redis_location = REDIS_URL
    if is_sentinel_url(REDIS_URL):
        _redis_location, _sentinel_options = sentinel_cache_options(REDIS_URL)
        _redis_options.update(_sentinel_options)
    else:
        # More threads than connections wait (up to 2 s) for one,
        # instead of failing (which would count as Redis being down).
        _redis_options["CONNECTION_POOL_CLASS"] = "redis.BlockingConnectionPool"
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": _redis_location,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "OPTIONS": {
                **_redis_options,
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
                "CONNECTION_POOL_KWARGS": {
                    "max_connections": env.int("REDIS_MAX_CONNECTIONS", default=100),
                    "timeout": 2,
                },
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "tokenserver",
            "KEY_PREFIX": CACHE_KEY_PREFIX,
        }
    }

# Without Redis every process has its own cache: its entries live at most this
# many seconds, so a secret disabled, deleted or flushed through one process
# reaches the others within that time (each re-reads the database).
TOKENSERVER_LOCAL_CACHE_TTL = env.float("TOKENSERVER_LOCAL_CACHE_TTL", default=5.0)

# Which single-flight lock the token path uses: "redis" needs REDIS_URL,
# "database" works everywhere (across processes on SQLite too).
TOKENSERVER_LOCK_BACKEND = env.str(
    "TOKENSERVER_LOCK_BACKEND", default="redis" if REDIS_URL else "database"
)
# Seconds a lock's lease lasts unless its holder renews it (a heartbeat
# thread renews it every third of that while the holder lives, up to the
# realm's call budget): a worker killed mid-refresh blocks its secret at most
# this long. Checked here, at start-up.
TOKENSERVER_LOCK_LEASE = env.float("TOKENSERVER_LOCK_LEASE", default=5.0)
if not TOKENSERVER_LOCK_LEASE > 0:
    raise ImproperlyConfigured(
        "TOKENSERVER_LOCK_LEASE must be a positive number of seconds, "
        f"not {TOKENSERVER_LOCK_LEASE}."
    )

# --- Clients and access tokens ------------------------------------------------
TOKENSERVER_ACCESS_TOKEN_TTL = env.int("TOKENSERVER_ACCESS_TOKEN_TTL", default=7200)
TOKENSERVER_ACCESS_TOKEN_MAX_TTL = env.int("TOKENSERVER_ACCESS_TOKEN_MAX_TTL", default=86400)
# Failed sign-ins (console, staff HTTP Basic, client credentials exchange),
# as rates like TOKENSERVER_TOKEN_RATE: past the first, one username (client
# id) is refused from one address until the window ends; past the second,
# looser one, the whole address is (clients/failures.py).
TOKENSERVER_AUTH_FAILURE_RATE = env.str("TOKENSERVER_AUTH_FAILURE_RATE", default="10/min")
TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE = env.str(
    "TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE", default="50/min"
)
parse_rate(TOKENSERVER_AUTH_FAILURE_RATE, setting="TOKENSERVER_AUTH_FAILURE_RATE")
parse_rate(TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE, setting="TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE")
if env.str("TOKENSERVER_AUTH_FAILURES_PER_MINUTE", default=""):
    raise ImproperlyConfigured(
        "TOKENSERVER_AUTH_FAILURES_PER_MINUTE is gone: failed sign-ins are now limited per "
        "address and username by TOKENSERVER_AUTH_FAILURE_RATE (e.g. 10/min) and per address "
        "by TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE (e.g. 50/min)."
    )
# GET /api/token calls per client ("60000/min", "1000/s"; "0" or "off": no
# limit). The default lets an app ask for its token on every call it makes,
# up to 1,000 a second, and stops a runaway loop; checked here, at start-up.
TOKENSERVER_TOKEN_RATE = env.str("TOKENSERVER_TOKEN_RATE", default="60000/min")
parse_rate(TOKENSERVER_TOKEN_RATE)

# Largest token accepted from an upstream, in bytes (UTF-8): a bigger one is an invalid
# answer, refused before anything is stored (Feishu's tokens are about 4 KB).
TOKENSERVER_MAX_TOKEN_BYTES = env.int("TOKENSERVER_MAX_TOKEN_BYTES", default=65536)
if TOKENSERVER_MAX_TOKEN_BYTES < 1:
    raise ImproperlyConfigured("TOKENSERVER_MAX_TOKEN_BYTES must be a positive number of bytes")

# --- Upstream destinations ----------------------------------------------------
# Loopback and private networks are refused as token endpoints unless listed
# here (CIDRs); link-local and cloud metadata addresses are always refused.
TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = env.list(
    "TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS", default=[]
)

# --- Failure notifications (tokens.notifications) --------------------------------
# A webhook told when a secret's refresh starts failing and when it recovers
# (README, "Failure notifications"): POSTed JSON, signed with HMAC-SHA256 under
# TOKENSERVER_WEBHOOK_SECRET. The URL passes the same guard as upstreams
# (TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS for a private receiver); tokens.checks
# refuses a malformed or refused URL, or one without a secret, at start-up.
TOKENSERVER_WEBHOOK_URL = env.str("TOKENSERVER_WEBHOOK_URL", default="")
TOKENSERVER_WEBHOOK_SECRET = env.str("TOKENSERVER_WEBHOOK_SECRET", default="")
# Seconds one delivery may take (connect, and each read).
TOKENSERVER_WEBHOOK_TIMEOUT = env.float("TOKENSERVER_WEBHOOK_TIMEOUT", default=5.0)
# Deliveries tried per notification before it is given up (with a warning).
TOKENSERVER_WEBHOOK_MAX_TRIES = env.int("TOKENSERVER_WEBHOOK_MAX_TRIES", default=6)
# Seconds before the first retry; each next one waits twice as long (capped at
# an hour): 10, 20, 40, 80, 160 s with the defaults, about five minutes in all.
TOKENSERVER_WEBHOOK_RETRY_BASE = env.float("TOKENSERVER_WEBHOOK_RETRY_BASE", default=10.0)
for _name in ("TOKENSERVER_WEBHOOK_TIMEOUT", "TOKENSERVER_WEBHOOK_RETRY_BASE"):
    if not globals()[_name] > 0:
        raise ImproperlyConfigured(f"{_name} must be a positive number of seconds.")
if TOKENSERVER_WEBHOOK_MAX_TRIES < 1:
    raise ImproperlyConfigured("TOKENSERVER_WEBHOOK_MAX_TRIES must be at least 1.")

# --- HTTPS (production) ---------------------------------------------------------
# Behind TLS, set TOKENSERVER_HTTPS=on: secure cookies, redirect to https,
# HSTS for SECURE_HSTS_SECONDS (0: off).
TOKENSERVER_HTTPS = env.bool("TOKENSERVER_HTTPS", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = TOKENSERVER_HTTPS
SECURE_SSL_REDIRECT = TOKENSERVER_HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if TOKENSERVER_HTTPS else 0)
# A token service is best on a host of its own; turn these off with the
# variables if subdomains of its domain must stay reachable over plain http.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=TOKENSERVER_HTTPS
)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=TOKENSERVER_HTTPS)
# Probes and scrapes reach each instance directly (not through the TLS proxy).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Behind a trusted reverse proxy: its X-Forwarded-Proto says https, and its
# X-Forwarded-For (the address it appended, the rightmost) is the client's
# address for the console's allow-list (clients.sso).
TOKENSERVER_BEHIND_PROXY = env.bool("TOKENSERVER_BEHIND_PROXY", default=False)
if TOKENSERVER_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- Console access: address allow-list and external sign-in (clients.sso) ---------
# Addresses and CIDRs the console (/admin/) answers; empty: every address.
TOKENSERVER_CONSOLE_ALLOWED_IPS = env.list("TOKENSERVER_CONSOLE_ALLOWED_IPS", default=[])
# External sign-in (SSO), on when TOKENSERVER_SSO_LOGIN_URL is set; the
# system checks in clients.checks refuse an incomplete or malformed setup.
TOKENSERVER_SSO_LOGIN_URL = env.str("TOKENSERVER_SSO_LOGIN_URL", default="")
TOKENSERVER_SSO_VALIDATE_URL = env.str("TOKENSERVER_SSO_VALIDATE_URL", default="")
TOKENSERVER_SSO_LOGOUT_URL = env.str("TOKENSERVER_SSO_LOGOUT_URL", default="")
TOKENSERVER_SSO_REDIRECT_PARAM = env.str("TOKENSERVER_SSO_REDIRECT_PARAM", default="redirect_url")
TOKENSERVER_SSO_UID_COOKIE = env.str("TOKENSERVER_SSO_UID_COOKIE", default="uid")
TOKENSERVER_SSO_TICKET_COOKIE = env.str("TOKENSERVER_SSO_TICKET_COOKIE", default="ticket")
TOKENSERVER_SSO_COOKIE_DOMAIN = env.str("TOKENSERVER_SSO_COOKIE_DOMAIN", default="") or None
TOKENSERVER_SSO_UID_FIELD = env.str("TOKENSERVER_SSO_UID_FIELD", default="uid")
TOKENSERVER_SSO_TICKET_FIELD = env.str("TOKENSERVER_SSO_TICKET_FIELD", default="ticket")
# [[JSONPath, expected value], ...], all of which must hold (JSON text).
# (clients.checks checks the rules themselves).
try:
    TOKENSERVER_SSO_MATCH = json.loads(env.str("TOKENSERVER_SSO_MATCH", default="[]"))
except ValueError as _error:
    raise ImproperlyConfigured(
        f"TOKENSERVER_SSO_MATCH is not JSON ({_error}); write e.g. "
        '[["code", 0], ["data.result", true]].'
    ) from None
TOKENSERVER_SSO_MISSING_COOKIE = env.str("TOKENSERVER_SSO_MISSING_COOKIE", default="undefined")
TOKENSERVER_SSO_MISSING_COOKIE_REDIRECTS = env.bool(
    "TOKENSERVER_SSO_MISSING_COOKIE_REDIRECTS", default=False
)
TOKENSERVER_SSO_CACHE_TTL = env.float("TOKENSERVER_SSO_CACHE_TTL", default=60.0)
TOKENSERVER_SSO_TIMEOUT = env.float("TOKENSERVER_SSO_TIMEOUT", default=5.0)
TOKENSERVER_SSO_CREATE_USERS = env.bool("TOKENSERVER_SSO_CREATE_USERS", default=False)
TOKENSERVER_SSO_GROUP = env.str("TOKENSERVER_SSO_GROUP", default="")
TOKENSERVER_SSO_EXCLUSIVE = env.bool("TOKENSERVER_SSO_EXCLUSIVE", default=False)
TOKENSERVER_SSO_IGNORE_PATHS = env.list(
    "TOKENSERVER_SSO_IGNORE_PATHS", default=["/static/", "/healthz", "/readyz", "/api/"]
)

# --- Auth -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- I18N -------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static files (admin console), served by WhiteNoise ----------------------
STATIC_URL = "static/"
# Where collectstatic puts the files whitenoise serves; the production entry points
# (serve.py, gunicorn.conf.py) collect them at start.
STATIC_ROOT = env.path("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- REST framework ---------------------------------------------------------
REST_FRAMEWORK = {
    # Apps: bearer access tokens. Staff: HTTP Basic or the console's session.
    # A header-based scheme first: its WWW-Authenticate makes a refusal a 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "clients.authentication.BearerAuthentication",
        "clients.authentication.ThrottledBasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["clients.authentication.StaffOrScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "tokenserver.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
    ],
    "EXCEPTION_HANDLER": "tokenserver.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

# The OpenAPI schema (/api/schema/) and its docs (/api/docs/, Swagger UI): public,
# as they hold no secrets, and their scripts served from our static files.
SPECTACULAR_SETTINGS = {
    "TITLE": "tokenserver API",
    "DESCRIPTION": (
        "Access tokens of third-party APIs, fetched, cached and handed out. "
        "Apps authenticate with a bearer access token (`POST /api/auth/token`, "
        "client credentials) whose scopes each operation names; staff with HTTP Basic "
        "or the console's session. Every error is JSON "
        '`{"error": "<code>", "detail": "<sentence>"}` (+ `fields` for invalid input).'
    ),
    "VERSION": "1",
    "SERVE_PUBLIC": True,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No validator badge: Swagger UI would send the schema's URL to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # Loads the API's descriptions (each app's `schema` module) when a schema is
    # generated, not in every worker at start (tokenserver/openapi.py says why).
    "PREPROCESSING_HOOKS": ["tokens.schema.load_descriptions"],
    # One name per choice set used by several fields.
    "ENUM_NAME_OVERRIDES": {
        "FetchOutcomeEnum": "tokens.models.FetchLog.Outcome",
        "TokenStateEnum": "tokens.models.TokenState",
    },
}

# --- Logging ----------------------------------------------------------------
# "plain" (human-readable lines, the default) or "json" (one JSON object per line,
# with the request id: tokenserver.logging.JsonFormatter).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}.")
# One log line per request (method, path without its query string, status, duration);
# on by default with LOG_FORMAT=json. Off, the hot path writes no log line.
TOKENSERVER_LOG_REQUESTS = env.bool("TOKENSERVER_LOG_REQUESTS", default=LOG_FORMAT == "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "tokenserver.logging.JsonFormatter"},
    },
    "filters": {
        # Query strings carry credentials (WeChat) and reported tokens.
        "redact_query_strings": {"()": "tokenserver.logging.RedactQueryStrings"},
        "request_id": {"()": "tokenserver.logging.AddRequestId"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["redact_query_strings", "request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # urllib3 logs URLs with their query string (at DEBUG, and at WARNING
        # on a malformed answer), and WeChat's credentials travel there.
        "urllib3": {"level": "ERROR"},
        # The development server's request lines go through the filter too.
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# --- Metrics (GET /metrics, tokenserver.metrics) -------------------------------
# Who may scrape: a request with `Authorization: Bearer <TOKENSERVER_METRICS_TOKEN>`,
# or from an address in TOKENSERVER_METRICS_ALLOWED_IPS (addresses and CIDRs; the
# client address as tokenserver.addresses reads it). Either one suffices. With
# neither set, loopback only (127.0.0.0/8, ::1).
TOKENSERVER_METRICS_TOKEN = env.str("TOKENSERVER_METRICS_TOKEN", default="")
if TOKENSERVER_METRICS_TOKEN and len(TOKENSERVER_METRICS_TOKEN) < 16:
    raise ImproperlyConfigured(
        "TOKENSERVER_METRICS_TOKEN must be at least 16 characters (e.g. "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
    )
TOKENSERVER_METRICS_ALLOWED_IPS = env.list("TOKENSERVER_METRICS_ALLOWED_IPS", default=[])
for _position, _entry in enumerate(TOKENSERVER_METRICS_ALLOWED_IPS, start=1):
    try:
        ipaddress.ip_network(_entry.strip(), strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"TOKENSERVER_METRICS_ALLOWED_IPS entry {_position} ({_entry!r}) is not an "
            "address or a network (e.g. 10.0.0.0/8)."
        ) from None
