"""
How the OpenAPI description (drf-spectacular) describes the realm API: the
realm as answered (realms.api.realm_to_dict), the seed's requests as examples,
each operation.

Loaded only when a schema is generated (tokens.schema.load_descriptions
imports it; tokenserver/schema.py says why).
"""

from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers

from realms.api import RealmQuerySerializer, RealmWriteSerializer
from realms.models import Argument, Realm
from realms.services import CONFIG_FIELDS
from tokenserver.schema import AUTHENTICATED, WITH_BODY, described, error_responses
from tokenserver.schema import enveloped as enveloped_schema
from tokenserver.schema import paged as paged_schema


@extend_schema_serializer(component_name="Argument")
class ArgumentOutSerializer(serializers.ModelSerializer):
    """An argument as answered (describes realm_to_dict for the schema)."""

    class Meta:
        model = Argument
        fields = ("name", "place", "value")


@extend_schema_serializer(component_name="RealmConfig")
class RealmConfigOutSerializer(serializers.ModelSerializer):
    """The "config" object as answered: every field, with its value or default."""

    # Blank when unused: plain text, not the "uri" format.
    url = serializers.CharField(help_text="Token endpoint (kind config).")
    code_url = serializers.CharField(help_text="The operator's function (kind code).")
    arguments = ArgumentOutSerializer(many=True)

    class Meta:
        model = Realm
        fields = (*CONFIG_FIELDS, "arguments")


@extend_schema_serializer(component_name="Realm")
class RealmOutSerializer(serializers.ModelSerializer):
    """A realm as answered (realm_to_dict)."""

    config = RealmConfigOutSerializer()

    class Meta:
        model = Realm
        fields = ("id", "kind", "config", "comment", "created_at", "updated_at")


#: The seed's realm requests, verbatim (they keep working: the seed's users send them).
SEED_REALMS = [
    OpenApiExample(
        "WeCom (the seed's request)",
        value={
            "id": "qywx_qynbkf",
            "config": {
                "url": "https://qyapi.weixin.qq.com/cgi-bin/gettoken",
                "method": "GET",
                "arguments": [
                    {"name": "corpid", "place": "url", "value": "$key_1"},
                    {"name": "corpsecret", "place": "url", "value": "$key_2"},
                ],
                "token_path": "access_token",
                "content_type": "json",
                "expires_in_path": "expires_in",
            },
        },
        request_only=True,
    ),
    OpenApiExample(
        "WeChat Official Account (the seed's request)",
        value={
            "id": "wxgzh",
            "config": {
                "url": "https://api.weixin.qq.com/cgi-bin/token",
                "method": "GET",
                "arguments": [
                    {"name": "appid", "place": "url", "value": "$key_1"},
                    {"name": "secret", "place": "url", "value": "$key_2"},
                    {"name": "grant_type", "place": "url", "value": "$key_3"},
                ],
                "token_path": "access_token",
                "content_type": "json",
                "expires_in_path": "expires_in",
            },
        },
        request_only=True,
    ),
]

REALM_SAVED = enveloped_schema(RealmOutSerializer(), "RealmSaved")

REALM_ID = OpenApiParameter(
    "realm_id",
    str,
    OpenApiParameter.PATH,
    description="The realm's id.",
    examples=[OpenApiExample("The seed's WeChat realm", value="wxgzh")],
)


REALM_LIST = extend_schema(
    operation_id="realm_list",
    summary="List realms",
    tags=["realms"],
    parameters=[RealmQuerySerializer],
    responses={
        200: paged_schema(RealmOutSerializer, "RealmPage"),
        **error_responses(400, *AUTHENTICATED),
    },
)

REALM_SAVE = extend_schema(
    operation_id="realm_save",
    summary="Create or replace a realm (the seed's save)",
    description="Fields left out take their defaults and the argument list is replaced. "
    "`kind` is inferred when absent: `config` → config, `logic_code` (or only `code_url`) "
    "→ code, neither → fixed. The URLs are checked against the upstream guard.",
    tags=["realms"],
    request=RealmWriteSerializer,
    examples=SEED_REALMS,
    responses={
        200: REALM_SAVED,
        201: REALM_SAVED,
        **error_responses(*WITH_BODY, *AUTHENTICATED),
    },
)

REALM_READ = extend_schema(
    operation_id="realm_read",
    summary="Read a realm",
    tags=["realms"],
    parameters=[REALM_ID],
    responses={200: RealmOutSerializer, **error_responses(404, *AUTHENTICATED)},
)

REALM_REPLACE = extend_schema(
    operation_id="realm_replace",
    summary="Create or replace a realm",
    tags=["realms"],
    parameters=[REALM_ID],
    request=RealmWriteSerializer,
    responses={
        200: RealmOutSerializer,
        201: RealmOutSerializer,
        **error_responses(*WITH_BODY, *AUTHENTICATED),
    },
)

REALM_UPDATE = extend_schema(
    operation_id="realm_update",
    summary="Change part of a realm",
    description="Changes only what the body names (an `arguments` list replaces the list).",
    tags=["realms"],
    parameters=[REALM_ID],
    request=RealmWriteSerializer,
    responses={200: RealmOutSerializer, **error_responses(404, *WITH_BODY, *AUTHENTICATED)},
)

REALM_DELETE = extend_schema(
    operation_id="realm_delete",
    summary="Delete a realm",
    tags=["realms"],
    parameters=[REALM_ID],
    responses={
        204: None,
        **error_responses(404, *AUTHENTICATED, s409="The realm still has secrets (`conflict`)."),
    },
)


class RealmListViewSchema(OpenApiViewExtension):
    """realms.api.RealmListView, described."""

    target_class = "realms.api.RealmListView"

    def view_replacement(self):
        return described(self.target_class, get=REALM_LIST, post=REALM_SAVE)


class RealmDetailViewSchema(OpenApiViewExtension):
    """realms.api.RealmDetailView, described."""

    target_class = "realms.api.RealmDetailView"

    def view_replacement(self):
        return described(
            self.target_class,
            get=REALM_READ,
            put=REALM_REPLACE,
            patch=REALM_UPDATE,
            delete=REALM_DELETE,
        )
