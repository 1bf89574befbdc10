"""Realm and Argument validation (clean()), templates and JSONPaths."""

import pytest
from django.core.exceptions import ValidationError

from realms.models import Argument, Realm
from realms.validators import render_template, validate_jsonpath, validate_template


def valid_realm(**fields):
    return Realm(**{"id": "r", "url": "https://api.example.com/token", **fields})


def errors_of(instance, **kwargs):
    with pytest.raises(ValidationError) as raised:
        instance.full_clean(**kwargs)
    return raised.value.message_dict


@pytest.mark.django_db
def test_a_seed_realm_is_valid():
    valid_realm().full_clean()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["ftp://example.com/t", "file:///etc/passwd", "example.com", "javascript:x"]
)
def test_url_must_be_http_or_https(url):
    assert "url" in errors_of(valid_realm(url=url))


@pytest.mark.django_db
def test_config_realm_needs_a_url():
    assert "url" in errors_of(Realm(id="r", kind="config"))


@pytest.mark.django_db
def test_code_realm_needs_code_url():
    assert "code_url" in errors_of(Realm(id="r", kind="code"))


@pytest.mark.django_db
def test_fixed_realm_needs_neither():
    Realm(id="r", kind="fixed").full_clean()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "field", ["token_path", "expires_in_path", "error_code_path", "error_message_path"]
)
def test_paths_must_compile(field):
    assert field in errors_of(valid_realm(**{field: "$.data["}))


@pytest.mark.parametrize(
    "path", ["access_token", "$.data.token", "data.expire", "$..token", "$.list[0].t"]
)
def test_valid_jsonpaths(path):
    validate_jsonpath(path)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "conditions",
    ["errcode", [["errcode"]], [[0, 0]], [["", 0]], [["$.a[", 0]], {"errcode": 0}],
)
def test_success_conditions_shape(conditions):
    assert "success_conditions" in errors_of(valid_realm(success_conditions=conditions))


@pytest.mark.django_db
def test_valid_success_conditions():
    valid_realm(success_conditions=[["errcode", 0], ["$.ok", True]]).full_clean()


@pytest.mark.parametrize(
    "value", ["$key_1", "${key_5}", "Bearer ${key_1}", "literal", "a $$ b", ""]
)
def test_valid_templates(value):
    validate_template(value)


@pytest.mark.parametrize(
    "value", ["$key_6", "$key_0", "${secret}", "$key_1abc", "trailing $", "${key_1", "$1"]
)
def test_invalid_templates(value):
    with pytest.raises(ValidationError):
        validate_template(value)


def test_render_template():
    values = {"key_1": "id", "key_2": "s"}

    assert render_template("$key_1", values) == "id"
    assert render_template("Bearer ${key_2}", values) == "Bearer s"
    assert render_template("${key_1}:${key_2}", values) == "id:s"
    assert render_template("$$key_1", values) == "$key_1"
    assert render_template("$key_3", values) == ""


@pytest.mark.django_db
def test_argument_places():
    realm = valid_realm()
    realm.save()
    for place in ("url", "header", "body"):
        Argument(realm=realm, name="n", place=place, value="$key_1").full_clean()
    Argument(realm=realm, place="basic", value="${key_1}:${key_2}").full_clean()
    assert "place" in errors_of(Argument(realm=realm, name="n", place="cookie", value="x"))
    assert "value" in errors_of(Argument(realm=realm, place="basic", value="$key_1"))
    assert "name" in errors_of(Argument(realm=realm, name="", place="url", value="x"))
