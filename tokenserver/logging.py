"""
Log records as tokenserver writes them: query strings redacted, the request
id on every line, and, with LOG_FORMAT=json, one JSON object per line.

Credentials travel in query strings (WeChat's appid and secret; a reported
`rejected` token), and libraries log URLs: urllib3 on a malformed answer,
Django's development server for every request. `RedactQueryStrings`
rewrites `?name=value&…` in the message and its arguments to
`?name=***&…`; the JSON formatter redacts the extra fields it writes too.
"""

import json
import logging
import re
from datetime import UTC, datetime

from tokenserver import request_id

_QUERY_VALUE = re.compile(r"([?&][^=&\s#\"'()]+=)[^&\s#\"'()]*")

#: What every LogRecord has; anything else on a record came as `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
    "request",  # django.request's HttpRequest: its id is the line's request_id
    "server_time",  # django.server's
}


def redact(text: str) -> str:
    return _QUERY_VALUE.sub(r"\1***", text)


class RedactQueryStrings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg = record.getMessage()
            except (TypeError, ValueError):
                record.msg = str(record.msg)
            record.args = None
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class AddRequestId(logging.Filter):
    """Puts the current request's id on the record (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            # django.request logs a 4xx/5xx after the middleware has returned,
            # with the request on the record.
            request = getattr(record, "request", None)
            record.request_id = request_id.current() or getattr(request, "request_id", None) or "-"
        return True


def _safe(value):
    """An extra field as JSON: numbers, booleans and None as they are, the rest as redacted text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """
    One JSON object per line: time (UTC, ISO 8601), level, logger, message,
    request_id, the record's `extra=` fields (redacted like the message), and
    the traceback as `exc` when there is one.
    """

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or request_id.current() or None,
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_") and name not in line:
                line[name] = _safe(value)
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = redact(record.exc_text)
        return json.dumps(line, ensure_ascii=False, default=str)
