"""
A logging filter that keeps query-string values out of every log line.

Credentials travel in query strings (WeChat's appid and secret; a reported
`rejected` token), and libraries log URLs: urllib3 on a malformed answer,
Django's development server for every request. The filter rewrites
`?name=value&…` in the message and its arguments to `?name=***&…`.
"""

import logging
import re

_QUERY_VALUE = re.compile(r"([?&][^=&\s#\"'()]+=)[^&\s#\"'()]*")


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
