"""
The floor of `make bench`: the least a token endpoint can do, and what the
benchmark compares tokenserver with. Not part of the product.

A bare WSGI callable that does one Redis GET of a key the benchmark sets (a
JSON document `{"token", "exp"}`) and answers the same shape as
`GET /api/token`: `{"token", "expires_in", "source"}`. No routing, no
authentication, no framework. The benchmark serves it with gunicorn and 4 sync
workers, always, so ratios stay comparable across changes:

    BENCH_FLOOR_REDIS_URL=redis://127.0.0.1:6379/5 BENCH_FLOOR_KEY=... \\
        gunicorn --workers 4 --worker-class sync bench.floor:application

Without BENCH_FLOOR_REDIS_URL (the benchmark's fallback without Redis) the
document comes from BENCH_FLOOR_DOCUMENT, read once at start: the floor then
has no network round trip at all, and the benchmark says so.
"""

import json
import os
import time

import redis

_KEY = os.environ.get("BENCH_FLOOR_KEY", "tokenserver-bench:floor")
_URL = os.environ.get("BENCH_FLOOR_REDIS_URL", "")
_CLIENT = redis.Redis.from_url(_URL, socket_timeout=2, socket_connect_timeout=2) if _URL else None
_DOCUMENT = os.environ.get("BENCH_FLOOR_DOCUMENT", "").encode()


def application(environ, start_response):
    raw = _CLIENT.get(_KEY) if _CLIENT is not None else _DOCUMENT
    if not raw:
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": "not_found", "detail": "The benchmark has not set the key."}']
    document = json.loads(raw)
    body = json.dumps(
        {
            "token": document["token"],
            "expires_in": max(0, int((document["exp"] - time.time()) * 1000)),
            "source": "cache",
        }
    ).encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]
