"""
Validation of realm configuration, shared by the models' clean() and the API
serializers (which call full_clean()), so both reject the same input with the
same message.
"""

import string
from functools import lru_cache

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from jsonpath_ng.ext import arithmetic, iterable
from jsonpath_ng.ext import parse as jsonpath_parse
from jsonpath_ng.ext import string as jsonpath_string
from jsonpath_ng.jsonpath import JSONPath

#: Names an argument template may reference: the secret's five values.
TEMPLATE_NAMES = frozenset(f"key_{n}" for n in range(1, 6))

validate_http_url = URLValidator(
    schemes=["http", "https"], message="Enter a valid http or https URL."
)


#: jsonpath-ng's extensions that compute a value instead of reading one. Tokens and
#: lifetimes are read from the answer, never computed: `$.access_token * 400000` made
#: an 18 MB token once (issue 11), and sorting fails on mixed types at fetch time.
COMPUTING = {
    arithmetic.Operation: "arithmetic",
    jsonpath_string.Split: "`split()`",
    jsonpath_string.Sub: "`sub()`",
    jsonpath_string.Str: "`str()`",
    iterable.SortedThis: "sorting",
    iterable.Len: "`len`",
    iterable.Keys: "`keys`",
    iterable.Path: "`path`",
}


class ComputingPath(ValueError):
    """A JSONPath that computes (see COMPUTING)."""


def _computing_parts(node, seen=None):
    """The COMPUTING features anywhere in a parsed JSONPath (its whole tree)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return []
    seen.add(id(node))
    found = [COMPUTING[type(node)]] if type(node) in COMPUTING else []
    children = vars(node).values() if isinstance(node, JSONPath) else node
    for child in children:
        if isinstance(child, (JSONPath, list, tuple)):
            found += _computing_parts(child, seen)
    return found


@lru_cache(maxsize=512)
def compile_jsonpath(path: str):
    """
    Compile a JSONPath (jsonpath-ng, extended syntax: filters such as
    `$.data[?(@.type == 'app')].token` read, and are allowed); a bare name such as
    `access_token` is a valid path. Raises ComputingPath for a path that computes,
    so neither a save nor a fetch ever runs one. Cached: realms are read far more
    often than they change.
    """
    parsed = jsonpath_parse(path)
    computing = _computing_parts(parsed)
    if computing:
        raise ComputingPath(
            f"it computes a value ({', '.join(sorted(set(computing)))}); "
            "a path reads the answer, it does not compute"
        )
    return parsed


def validate_jsonpath(path: str) -> None:
    if not path:
        return
    try:
        compile_jsonpath(path)
    except Exception as exc:  # noqa: BLE001 - jsonpath-ng's parser raises many kinds
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ValidationError(
            "%(path)r is not a valid JSONPath: %(reason)s",
            code="invalid_jsonpath",
            params={"path": path, "reason": reason},
        ) from None


def validate_template(value: str) -> None:
    """
    An argument value is a literal or a template in string.Template syntax:
    `$key_1` alone, `${key_1}` inside a string (`Bearer ${key_1}`), `$$` for a
    literal dollar sign. Only `key_1` … `key_5` may be referenced.
    """
    template = string.Template(value)
    if not template.is_valid():
        raise ValidationError(
            "%(value)r is not a valid template: write $key_1 … $key_5 alone, "
            "${key_1} inside a string, and $$ for a literal $.",
            code="invalid_template",
            params={"value": value},
        )
    unknown = sorted(set(template.get_identifiers()) - TEMPLATE_NAMES)
    if unknown:
        raise ValidationError(
            "Template references %(names)s; only key_1 … key_5 exist "
            "(use ${key_1} inside a string).",
            code="unknown_template_name",
            params={"names": ", ".join(f"${name}" for name in unknown)},
        )


def render_template(value: str, values: dict[str, str]) -> str:
    """Render an argument template with a secret's values (unset ones are empty)."""
    mapping = {name: values.get(name) or "" for name in TEMPLATE_NAMES}
    return string.Template(value).substitute(mapping)


def validate_success_conditions(conditions) -> None:
    """A list of `[JSONPath, expected value]` pairs, all of which must hold."""
    if not isinstance(conditions, list):
        raise ValidationError(
            "Success conditions must be a list of [JSONPath, expected value] pairs.",
            code="invalid_conditions",
        )
    for position, condition in enumerate(conditions, start=1):
        if (
            not isinstance(condition, (list, tuple))
            or len(condition) != 2
            or not isinstance(condition[0], str)
            or not condition[0]
        ):
            raise ValidationError(
                "Success condition %(position)s must be a [JSONPath, expected value] pair.",
                code="invalid_conditions",
                params={"position": position},
            )
        validate_jsonpath(condition[0])


def validate_code_list(codes) -> None:
    """A list of upstream error codes (numbers or strings)."""
    if not isinstance(codes, list) or not all(
        isinstance(code, (int, str)) and not isinstance(code, bool) for code in codes
    ):
        raise ValidationError(
            "Give a list of error codes, e.g. [45009, 45011].", code="invalid_codes"
        )
