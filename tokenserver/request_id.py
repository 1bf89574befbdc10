"""
Request ids: every request gets one, returned in the `X-Request-ID` header, put
on every log line written while it runs (tokenserver.logging.AddRequestId), on
the FetchLog rows of the upstream calls it causes, and in every JSON error
body (tokenserver.errors).

An incoming `X-Request-ID` (set by a proxy or the calling app, to follow one
call through several services) is kept when it is sane: 1 to 64 characters
of letters, digits, `.`, `_`, `-` and `:`. Anything else (too long, spaces,
control characters: a log-injection attempt or a mistake) is replaced by a
fresh id; the request is not refused for it.

Fresh ids cost no system call: a random prefix drawn once per process and a
counter (`3f9a1c2e4b7d-1a`), unique across processes and hosts.
"""

import contextvars
import itertools
import logging
import re
import secrets
import time

from django.conf import settings

from tokenserver.addresses import client_address

HEADER = "X-Request-ID"
#: What an incoming id may look like (the FetchLog column holds 64 characters).
SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_prefix = secrets.token_hex(6)
_counter = itertools.count(1)

request_logger = logging.getLogger("tokenserver.requests")


def current() -> str:
    """The id of the request this thread is serving ("" outside a request)."""
    return _current.get()


def bind(request_id: str) -> contextvars.Token:
    """Make `request_id` the current one (a background thread working for a request)."""
    return _current.set(request_id)


def unbind(token: contextvars.Token) -> None:
    _current.reset(token)


def new() -> str:
    """A fresh id: this process's random prefix and the next number."""
    return f"{_prefix}-{next(_counter):x}"


def accepted(incoming: str | None) -> str:
    """The incoming id if it is sane, else a fresh one."""
    if incoming and SANE.fullmatch(incoming):
        return incoming
    return new()


class RequestId:
    """
    Django middleware, first in MIDDLEWARE: sets the request's id, answers it in
    `X-Request-ID`, and, when TOKENSERVER_LOG_REQUESTS is on (the default with
    LOG_FORMAT=json), logs one line per request: method, path (never the query
    string: it carries credentials), status, duration, client address.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = accepted(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = request_id
        token = _current.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[HEADER] = request_id
            if settings.TOKENSERVER_LOG_REQUESTS:
                self._log(request, response.status_code, started)
            return response
        finally:
            _current.reset(token)

    @staticmethod
    def _log(request, status: int, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        request_logger.info(
            "%s %s %d %.1f ms",
            request.method,
            request.path,
            status,
            duration_ms,
            extra={
                "event": "request",
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": duration_ms,
                "remote": client_address(request),
            },
        )
