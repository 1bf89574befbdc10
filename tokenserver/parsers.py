"""Request parsers."""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _lone_surrogate_at(data) -> str | None:
    """
    Where a parsed JSON document holds a string that is not valid Unicode (JSON can
    spell a lone surrogate, `\\ud800`; no database, log or UTF-8 encoder takes it), as
    a path such as `config.method`; None when there is none. Iterative: the document
    may be as deep as the parser allowed.
    """
    stack = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and any(0xD800 <= ord(char) <= 0xDFFF for char in value):
                return where or "the body"
        elif isinstance(value, dict):
            for key, item in value.items():
                stack.append((where, key))  # a key is text too
                stack.append((f"{where}.{key}" if where else str(key), item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    return None


class NestingSafeJSONParser(JSONParser):
    """DRF's JSON parser, with absurdly deep nesting a 400 instead of a RecursionError."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None


class SafeJSONParser(NestingSafeJSONParser):
    """
    The API's JSON parser: text that is not valid Unicode (a lone surrogate) is a 400
    naming where it is, before any view sees it (issue 11: it made 500s wherever it
    went). The credentials exchange, which must count such a body as a failed sign-in,
    uses NestingSafeJSONParser and checks the text itself.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        where = _lone_surrogate_at(data)
        if where is not None:
            # The path is built from the client's own keys: keep it printable.
            shown = where.encode("utf-8", "replace").decode()[:200]
            raise ParseError(
                f"JSON parse error - {shown} is not valid Unicode text (a lone surrogate)."
            )
        return data
