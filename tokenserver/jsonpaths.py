"""
JSONPaths that read a JSON answer, and success conditions over them: the
realms' token answers (realms, tokens.upstream) and the console's sign-in
service (clients.sso) share these rules, so they live at the bottom layer.
"""

import json
from functools import lru_cache

from django.core.exceptions import ValidationError
from jsonpath_ng.ext import arithmetic, iterable
from jsonpath_ng.ext import parse as jsonpath_parse
from jsonpath_ng.ext import string as jsonpath_string
from jsonpath_ng.jsonpath import JSONPath

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


def same_value(found, expected) -> bool:
    """Whether a value found in an answer equals the expected one of a condition."""
    # Providers disagree on 0 versus "0": compare the JSON text as well.
    return (
        found == expected
        or json.dumps(found) == json.dumps(expected)
        or str(found) == str(expected)
    )


def condition_holds(path: str, expected, document) -> bool:
    """
    A success condition holds when the path finds a value equal to the expected
    one; an expected list means any of its values, and None (null) matches a
    missing field. Raises what jsonpath-ng raises on an odd document.
    """
    alternatives = expected if isinstance(expected, list) else [expected]
    found = [match.value for match in compile_jsonpath(path).find(document)] or [None]
    return any(same_value(value, wanted) for value in found for wanted in alternatives)
