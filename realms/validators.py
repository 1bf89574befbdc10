"""
Validation of realm configuration, shared by the models' clean() and the API
serializers (which call full_clean()), so both reject the same input with the
same message.
"""

import re
import string
from datetime import UTC, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

# The JSONPath rules live in tokenserver.jsonpaths (the console's sign-in uses them too);
# re-exported here, where the realm models and the upstream client have always read them.
from tokenserver.jsonpaths import (  # noqa: F401 - re-exported
    COMPUTING,
    ComputingPath,
    compile_jsonpath,
    validate_jsonpath,
    validate_success_conditions,
)

#: Names a template may reference: the secret's five values.
TEMPLATE_NAMES = frozenset(f"key_{n}" for n in range(1, 6))

#: What an argument may reference besides: `$jwt`, the assertion the realm's `jwt`
#: settings sign for each fetch (RFC 7523; realms.assertions), and `$parent_token`,
#: the current token of the realm's parent secret (a chained realm: Realm.parent).
JWT_NAME = "jwt"
PARENT_TOKEN_NAME = "parent_token"

#: And `$force_refresh`: `true` when the fetch answers a token reported rejected
#: (`rejected=`, X-Rejected-Token), `false` for every other fetch (requests, flushes, the
#: refresher, the console's test fetch). An argument that is `$force_refresh` alone is sent
#: in a JSON body as the JSON boolean, elsewhere as the text true/false (WeChat's
#: stable_token takes `"force_refresh": false`).
FORCE_REFRESH_NAME = "force_refresh"

ARGUMENT_TEMPLATE_NAMES = TEMPLATE_NAMES | {JWT_NAME, PARENT_TOKEN_NAME, FORCE_REFRESH_NAME}

#: Names whose value is a boolean: an argument that is one of them alone is sent as a
#: JSON boolean in a JSON body (see boolean_reference).
BOOLEAN_NAMES = frozenset({FORCE_REFRESH_NAME})

validate_http_url = URLValidator(
    schemes=["http", "https"], message="Enter a valid http or https URL."
)


def validate_template(value: str) -> None:
    """
    An argument value is a literal or a template in string.Template syntax:
    `$key_1` alone, `${key_1}` inside a string (`Bearer ${key_1}`), `$$` for a
    literal dollar sign. Only `key_1` … `key_5` may be referenced, `$jwt`
    (the signed assertion) where the realm has `jwt` settings, `$parent_token`
    (the parent secret's current token) where the realm has a parent, and
    `$force_refresh` (true only when the fetch answers a reported rejection).
    """
    _validate_template(value, ARGUMENT_TEMPLATE_NAMES)


def _validate_template(value: str, names: frozenset) -> None:
    template = string.Template(value)
    if not template.is_valid():
        raise ValidationError(
            "%(value)r is not a valid template: write $key_1 … $key_5 alone, "
            "${key_1} inside a string, and $$ for a literal $.",
            code="invalid_template",
            params={"value": value},
        )
    unknown = sorted(set(template.get_identifiers()) - names)
    if unknown:
        known = (
            "key_1 … key_5, jwt, parent_token, force_refresh"
            if JWT_NAME in names
            else "key_1 … key_5"
        )
        raise ValidationError(
            "Template references %(names)s; only %(known)s exist (use ${key_1} inside a string).",
            code="unknown_template_name",
            params={"names": ", ".join(f"${name}" for name in unknown), "known": known},
        )


def references_jwt(value: str) -> bool:
    """Whether an argument template references the signed assertion (`$jwt`)."""
    return _references(value, JWT_NAME)


def references_parent_token(value: str) -> bool:
    """Whether an argument template references the parent secret's token (`$parent_token`)."""
    return _references(value, PARENT_TOKEN_NAME)


def _references(value: str, name: str) -> bool:
    template = string.Template(value)
    return template.is_valid() and name in template.get_identifiers()


def boolean_reference(value: str) -> str | None:
    """
    The boolean name (BOOLEAN_NAMES) an argument value is a reference to, alone
    (`$force_refresh` or `${force_refresh}`), else None: such an argument is sent in a
    JSON body as a JSON boolean, not as text.
    """
    stripped = value.strip()
    for name in BOOLEAN_NAMES:
        if stripped in (f"${name}", f"${{{name}}}"):
            return name
    return None


def render_template(value: str, values: dict[str, str]) -> str:
    """
    Render a template with a secret's values (unset ones are empty); `values` may
    carry `jwt`, the assertion signed for this fetch, `parent_token`, the parent
    secret's token (a chained realm), and `force_refresh` ("true" or "false").
    """
    mapping = {name: values.get(name) or "" for name in ARGUMENT_TEMPLATE_NAMES}
    return string.Template(value).substitute(mapping)


# --- JWT assertions (RFC 7523) ------------------------------------------------------

#: Signing algorithms a realm's `jwt` settings may name (asymmetric only: the key is
#: the secret's, the provider holds the public half).
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384")

#: Longest assertion lifetime (RFC 7523 leaves it to the provider; Google refuses more).
JWT_MAX_LIFETIME = 3600

#: The `jwt` settings: which are templates over the secret's values, which are required.
JWT_TEMPLATE_FIELDS = ("key", "iss", "sub", "aud", "scope", "kid")
JWT_REQUIRED_FIELDS = ("alg", "key", "iss")
JWT_FIELDS = ("alg", *JWT_TEMPLATE_FIELDS, "lifetime")


def validate_jwt_config(config) -> None:
    """
    A realm's `jwt` settings: how to sign the assertion `$jwt` stands for.

        {"alg": "RS256", "key": "$key_2", "iss": "$key_1", "sub": "", "aud": "",
         "scope": "$key_3", "kid": "", "lifetime": 3600}

    `alg` one of JWT_ALGORITHMS; `key` (the PEM private key), `iss`, `sub`, `aud`,
    `scope`, `kid` templates over key_1 … key_5 (`aud` blank: the realm's url; `sub`,
    `scope`, `kid` blank or empty once rendered: left out); `lifetime` 1 … 3600 s
    (default 3600). Errors name the setting ("jwt.alg: …").
    """
    if config is None:
        return
    if not isinstance(config, dict):
        raise ValidationError(
            'Give an object, e.g. {"alg": "RS256", "key": "$key_2", "iss": "$key_1"}.',
            code="invalid_jwt",
        )
    errors = []
    unknown = sorted(set(config) - set(JWT_FIELDS))
    if unknown:
        errors.append(
            f"unknown setting(s) {', '.join(map(str, unknown))}; known: {', '.join(JWT_FIELDS)}."
        )
    for name in JWT_REQUIRED_FIELDS:
        if not config.get(name):
            errors.append(f"jwt.{name}: this setting is required.")
    alg = config.get("alg")
    if alg and alg not in JWT_ALGORITHMS:
        errors.append(f"jwt.alg: {alg!r} is not supported; use one of {', '.join(JWT_ALGORITHMS)}.")
    for name in JWT_TEMPLATE_FIELDS:
        value = config.get(name, "")
        if not isinstance(value, str):
            errors.append(f"jwt.{name}: give text (a template such as $key_1).")
            continue
        try:
            _validate_template(value, TEMPLATE_NAMES)
        except ValidationError as error:
            errors.extend(f"jwt.{name}: {message}" for message in error.messages)
    key = config.get("key")
    if (
        isinstance(key, str)
        and string.Template(key).is_valid()  # an invalid one is reported above
        and key
        and not string.Template(key).get_identifiers()
    ):
        # A literal key would sit in the realm, shown to every reader: keys are secret values.
        errors.append("jwt.key: reference the secret value holding the key, e.g. $key_2.")
    lifetime = config.get("lifetime", JWT_MAX_LIFETIME)
    if (
        not isinstance(lifetime, int)
        or isinstance(lifetime, bool)
        or not 1 <= lifetime <= JWT_MAX_LIFETIME
    ):
        errors.append(f"jwt.lifetime: give whole seconds from 1 to {JWT_MAX_LIFETIME}.")
    if errors:
        raise ValidationError(errors, code="invalid_jwt")


def validate_code_list(codes) -> None:
    """A list of upstream error codes (numbers or strings)."""
    if not isinstance(codes, list) or not all(
        isinstance(code, (int, str)) and not isinstance(code, bool) for code in codes
    ):
        raise ValidationError(
            "Give a list of error codes, e.g. [45009, 45011].", code="invalid_codes"
        )


# --- The provider's day (daily budgets) -------------------------------------------------

#: A UTC offset as the day boundary: +08:00 (WeChat's day starts at midnight in China).
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


@lru_cache(maxsize=64)
def day_start_zone(value: str) -> tzinfo:
    """
    The time zone whose midnight starts a provider's day (a realm's
    `budget_day_starts`): `UTC`, a UTC offset (`+08:00`, `-05:30`) or an IANA
    zone (`Asia/Shanghai`, read from the system's time-zone data, no network).
    Raises ValueError for anything else.
    """
    if value in ("UTC", "Z", "+00:00", "-00:00"):
        return UTC
    match = _OFFSET.match(value)
    if match:
        sign, hours, minutes = match.groups()
        if int(hours) > 14 or int(minutes) >= 60:
            raise ValueError(f"{value} is not a UTC offset (at most ±14:00)")
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-offset if sign == "-" else offset)
    if not value or value.startswith(("/", ".")) or ".." in value:
        raise ValueError(f"{value!r} is not a time zone")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not a time zone known here") from None


def validate_day_start(value: str) -> None:
    """A realm's `budget_day_starts` (see day_start_zone)."""
    try:
        day_start_zone(value)
    except ValueError:
        raise ValidationError(
            "%(value)r is not a day boundary: give UTC, a UTC offset such as +08:00 "
            "(WeChat: midnight in China) or a time zone such as Asia/Shanghai.",
            code="invalid_day_start",
            params={"value": value},
        ) from None
