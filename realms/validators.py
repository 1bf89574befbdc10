"""
Validation of realm configuration, shared by the models' clean() and the API
serializers (which call full_clean()), so both reject the same input with the
same message.
"""

import string

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

#: Names an argument template may reference: the secret's five values.
TEMPLATE_NAMES = frozenset(f"key_{n}" for n in range(1, 6))

validate_http_url = URLValidator(
    schemes=["http", "https"], message="Enter a valid http or https URL."
)


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


def validate_code_list(codes) -> None:
    """A list of upstream error codes (numbers or strings)."""
    if not isinstance(codes, list) or not all(
        isinstance(code, (int, str)) and not isinstance(code, bool) for code in codes
    ):
        raise ValidationError(
            "Give a list of error codes, e.g. [45009, 45011].", code="invalid_codes"
        )
