"""
Prometheus metrics (`GET /metrics`, text format), counted where things happen
and, for what the database knows, computed when scraped.

Under the production server (serve.py, gunicorn.conf.py) prometheus_client runs
in multi-process mode: each worker writes its counters to memory-mapped files
in PROMETHEUS_MULTIPROC_DIR (tokenserver.metrics_dir sets it up per server
start), and a scrape adds up every worker's, whichever worker answers. Without
that variable (manage.py runserver, the tests) the numbers are this process's.

Counting costs the token path no I/O and no lock across processes: an update
is a write into this process's mmap under prometheus_client's in-process lock.
Labels are bounded: realm ids only once the realm is known to exist (a token
was found for it, or the database said so), never a secret's key, a client id
or anything a request made up.

Scrape-time collectors (`register_collector`) add what is a fact in the
database or the cache (token states, refresher lag, breakers per realm:
tokens.collectors); the one that answers the scrape computes them.
"""

import hmac
import ipaddress
import os
import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from tokenserver import metrics_dir
from tokenserver.addresses import client_address
from tokenserver.errors import with_request_id

metrics_dir.ensure_exists()  # before the first metric opens its file there

#: The realm label of a request whose realm may not exist (unknown realm or key, or the
#: database could not say): request input never becomes a label value.
UNKNOWN_REALM = "_unknown"

TOKEN_REQUESTS = Counter(
    "tokenserver_token_requests",
    "Token requests that reached the token path (GET /api/token past authentication, "
    "patterns and rate limit; flushes too), by realm and where the token came from: cache, "
    "database, upstream (a fetch), fixed, stale (a cached or stored token handed out inside "
    "its refresh margin while a background refresh was started), error.",
    ["realm", "source"],
)
CACHE_LOOKUPS = Counter(
    "tokenserver_token_cache_lookups",
    "Token cache lookups of plain (not flushed) token requests: hit (a token that has not "
    "expired) or miss.",
    ["result"],
)
UPSTREAM_FETCHES = Counter(
    "tokenserver_upstream_fetches",
    "Upstream attempts (one FetchLog row each), by realm and outcome (ok, upstream_error, "
    "invalid_response, timeout, unreachable, rejected: not sent, held back by the guards).",
    ["realm", "outcome"],
)
UPSTREAM_SECONDS = Histogram(
    "tokenserver_upstream_fetch_seconds",
    "Duration of upstream calls that were sent, by realm.",
    ["realm"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)
LOCK_WAITS = Histogram(
    "tokenserver_lock_wait_seconds",
    "Waits of requests that found a secret's refresh in another worker's hands, by realm and "
    "how they ended: token (the holder's result), acquired (the lock, then fetched or found "
    "it), still_valid (gave up, served the valid token), timeout (gave up, 503), remembered (the "
    "holder's permanent error, remembered: the same 502).",
    ["realm", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUOTA_REFUSALS = Counter(
    "tokenserver_quota_refusals",
    "Upstream calls refused by the secret's daily budget (429 quota_exhausted), by realm and "
    "call: forced (a flush, a rejected token, a test fetch: refused once the calls kept to keep "
    "the token alive are all that is left) or refresh (the budget is used up).",
    ["realm", "call"],
)
REFRESHER_LAST_PASS = Gauge(
    "tokenserver_refresher_last_pass_timestamp_seconds",
    "When the refresher (refresh_tokens, beside this server) last finished a pass.",
    multiprocess_mode="max",
)
PROCESSES = Gauge(
    "tokenserver_processes",
    "Live processes of this server that count metrics, by kind (web: serving workers).",
    ["kind"],
    multiprocess_mode="livesum",
)

# Label children, looked up once: the token path then pays a dict lookup, no lock.
_token_requests: dict = {}
_cache_hit = CACHE_LOOKUPS.labels("hit")
_cache_miss = CACHE_LOOKUPS.labels("miss")


def token_request(realm_id: str, source: str) -> None:
    """One token request answered from `source` (see TOKEN_REQUESTS)."""
    child = _token_requests.get((realm_id, source))
    if child is None:
        child = _token_requests.setdefault(
            (realm_id, source), TOKEN_REQUESTS.labels(realm_id, source)
        )
    child.inc()


def cache_lookup(hit: bool) -> None:
    (_cache_hit if hit else _cache_miss).inc()


def upstream_attempt(realm_id: str, outcome: str, seconds: float | None) -> None:
    """One upstream attempt; `seconds` when the call was sent."""
    UPSTREAM_FETCHES.labels(realm_id, outcome).inc()
    if seconds is not None:
        UPSTREAM_SECONDS.labels(realm_id).observe(seconds)


def lock_waited(realm_id: str, outcome: str, seconds: float) -> None:
    LOCK_WAITS.labels(realm_id, outcome).observe(seconds)


def quota_refused(realm_id: str, forced: bool) -> None:
    QUOTA_REFUSALS.labels(realm_id, "forced" if forced else "refresh").inc()


def refresher_pass_done() -> None:
    REFRESHER_LAST_PASS.set(time.time())


def process_started(kind: str) -> None:
    """This process serves (`web`): counted in tokenserver_processes while it lives."""
    PROCESSES.labels(kind).set(1)


# --- Scrape-time collectors ---------------------------------------------------------------

_collectors: list = []


def register_collector(collector) -> None:
    """
    Add a collector (an object with `collect()` yielding metric families) that every
    scrape runs, in the worker that answers it. The registration point for facts the
    database or the cache holds; tokens.apps registers tokens.collectors' there.
    """
    if collector not in _collectors:
        _collectors.append(collector)


class _Scrape:
    """What one scrape reports: every worker's counts, then the registered collectors."""

    def __init__(self, collectors):
        self.collectors = collectors

    def collect(self):
        for collector in self.collectors:
            yield from collector.collect()


def scrape() -> bytes:
    """The metrics in Prometheus' text format."""
    path = os.environ.get(metrics_dir.VARIABLE)
    if path:
        metrics_dir.reap_dead_processes(path)
        counted = MultiProcessCollector(None, path=path)
    else:
        counted = REGISTRY
    return generate_latest(_Scrape([counted, *_collectors]))


# --- Who may scrape -------------------------------------------------------------------------

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


def _bearer_ok(request) -> bool:
    expected = settings.TOKENSERVER_METRICS_TOKEN
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if not expected or len(parts) != 2 or parts[0].lower() != "bearer":
        return False
    return hmac.compare_digest(
        parts[1].encode(errors="surrogateescape"), expected.encode(errors="surrogateescape")
    )


def _allowed_networks() -> list:
    entries = settings.TOKENSERVER_METRICS_ALLOWED_IPS
    if entries:
        return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries]
    # Neither a token nor addresses configured: loopback only (a scrape from the host).
    return [] if settings.TOKENSERVER_METRICS_TOKEN else LOOPBACK


def _address_ok(request) -> bool:
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in _allowed_networks())


def scrape_refusal(request) -> JsonResponse | None:
    """
    None when `request` may scrape: it carries the bearer token, or comes from an
    allowed address (TOKENSERVER_METRICS_ALLOWED_IPS; loopback when neither that nor
    a token is configured). Else a 401 (a token is configured: ask for it) or a 403.
    """
    if _bearer_ok(request) or _address_ok(request):
        return None
    if settings.TOKENSERVER_METRICS_TOKEN:
        body = {"error": "not_authenticated", "detail": "GET /metrics needs the metrics token."}
        response = JsonResponse(with_request_id(body), status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body = {"error": "permission_denied", "detail": "Metrics are not served to this address."}
    return JsonResponse(with_request_id(body), status=403)


def metrics_view(request):
    """GET /metrics: the Prometheus text format, to the scrapers allowed (scrape_refusal)."""
    refusal = scrape_refusal(request)
    if refusal is not None:
        return refusal
    if request.method not in ("GET", "HEAD"):
        body = {"error": "method_not_allowed", "detail": f'Method "{request.method}" not allowed.'}
        return JsonResponse(with_request_id(body), status=405, headers={"Allow": "GET, HEAD"})
    response = HttpResponse(scrape(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
