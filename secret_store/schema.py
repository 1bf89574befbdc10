"""
How the OpenAPI description (drf-spectacular) describes the secret API: a
secret as answered (never a value) and each operation, as `secret_schemas`
builds them for the routes' views (tokens.schema: the token layer's
subclasses, which add each secret's token state, are the views served).

Loaded only when a schema is generated (tokens.schema.load_descriptions
imports it; tokenserver/schema.py says why).
"""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter
from rest_framework import serializers

from secret_store.api import SecretQuerySerializer, SecretWriteSerializer
from tokenserver.schema import AUTHENTICATED, WITH_BODY, error_responses
from tokenserver.schema import enveloped as enveloped_schema
from tokenserver.schema import paged as paged_schema


def _masked_value(help_text="`******` when set, null when not (values are write-only)."):
    return serializers.CharField(allow_null=True, help_text=help_text)


class SecretBaseSerializer(serializers.Serializer):
    """A secret as answered (secret_to_dict), for the schema: never a value."""

    realm = serializers.CharField()
    key = serializers.CharField(help_text="The name apps ask for.")
    key_1 = _masked_value()
    key_2 = _masked_value()
    key_3 = _masked_value()
    key_4 = _masked_value()
    key_5 = _masked_value()
    token = serializers.CharField(
        allow_null=True,
        required=False,
        help_text="Realms of kind fixed only: `******` when set, null when not.",
    )
    token_expires_at = serializers.DateTimeField(
        allow_null=True, required=False, help_text="Realms of kind fixed only (null: never)."
    )
    enabled = serializers.BooleanField()
    comment = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


#: The seed's secret request, verbatim.
SEED_SECRET = OpenApiExample(
    "WeChat Official Account secret (the seed's request)",
    value={
        "realm": "wxgzh",
        "key": "wxgzh_secret",
        "key_1": "wx1234567890abcdef",
        "key_2": "0123456789abcdef0123456789abcdef",
        "key_3": "client_credential",
    },
    request_only=True,
)

SECRET_PATH = [
    OpenApiParameter(
        "realm_id",
        str,
        OpenApiParameter.PATH,
        description="The secret's realm.",
        examples=[OpenApiExample("The seed's WeChat realm", value="wxgzh")],
    ),
    OpenApiParameter(
        "key",
        str,
        OpenApiParameter.PATH,
        description="The secret's name.",
        examples=[OpenApiExample("The seed's secret", value="wxgzh_secret")],
    ),
]


def secret_schemas(answer, prefix: str) -> dict[str, dict]:
    """
    The secret routes' descriptions (extend_schema arguments per view and method),
    each secret answered as `answer` (tokens.schema's SecretSerializer, with
    `token_state`: the routes serve the token layer's subclasses of the views).
    """
    saved = enveloped_schema(answer(), f"{prefix}Saved")
    return {
        "list.get": {
            "operation_id": "secret_list",
            "summary": "List secrets",
            "parameters": [SecretQuerySerializer],
            "responses": {
                200: paged_schema(answer, f"{prefix}Page"),
                **error_responses(400, *AUTHENTICATED),
            },
        },
        "list.post": {
            "operation_id": "secret_save",
            "summary": "Create or update a secret (the seed's save)",
            "description": "Values left out are kept; null or an empty string clears one. "
            "An unknown realm is a 400.",
            "request": SecretWriteSerializer,
            "examples": [SEED_SECRET],
            "responses": {200: saved, 201: saved, **error_responses(*WITH_BODY, *AUTHENTICATED)},
        },
        "detail.get": {
            "operation_id": "secret_read",
            "summary": "Read a secret (values masked)",
            "parameters": SECRET_PATH,
            "responses": {200: answer, **error_responses(404, *AUTHENTICATED)},
        },
        "detail.put": {
            "operation_id": "secret_replace",
            "summary": "Create or replace a secret",
            "description": "Values left out are cleared.",
            "parameters": SECRET_PATH,
            "request": SecretWriteSerializer,
            "responses": {
                200: answer,
                201: answer,
                **error_responses(*WITH_BODY, *AUTHENTICATED),
            },
        },
        "detail.patch": {
            "operation_id": "secret_update",
            "summary": "Change part of a secret",
            "parameters": SECRET_PATH,
            "request": SecretWriteSerializer,
            "responses": {200: answer, **error_responses(404, *WITH_BODY, *AUTHENTICATED)},
        },
        "detail.delete": {
            "operation_id": "secret_delete",
            "summary": "Delete a secret",
            "parameters": SECRET_PATH,
            "responses": {204: None, **error_responses(404, *AUTHENTICATED)},
        },
    }
