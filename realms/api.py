"""
The realm API, seed-compatible: `GET/POST /api/realm`, `GET /api/realm/<id>`,
plus `PUT/PATCH/DELETE /api/realm/<id>`.

A realm travels as `{"id", "kind", "config": {...}, "comment", "created_at",
"updated_at"}`; "config" holds the seed's fields (url, method, arguments,
token_path, content_type, expires_in_path) and tokenserver's additions.
"""

from django.db.models import Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.response import Response

from clients.scopes import REALM_READ, REALM_WRITE
from realms.models import Argument, Realm
from realms.services import CONFIG_FIELDS, realm_delete, realm_upsert
from tokenserver.api import PageQuerySerializer, ScopedAPIView, enveloped, paginated, parse_query
from tokenserver.schema import AUTHENTICATED, WITH_BODY, error_responses
from tokenserver.schema import enveloped as enveloped_schema
from tokenserver.schema import paged as paged_schema


class UpperChoiceField(serializers.ChoiceField):
    """A choice that ignores case on input ("get" → "GET")."""

    def to_internal_value(self, data):
        return super().to_internal_value(data.upper() if isinstance(data, str) else data)


class ArgumentSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, allow_blank=True, default="")
    place = serializers.ChoiceField(choices=Argument.Place.choices, default=Argument.Place.URL)
    value = serializers.CharField(
        max_length=1000, allow_blank=True, default="", trim_whitespace=False
    )


class RealmConfigSerializer(serializers.Serializer):
    """The "config" object; fields left out keep their defaults (or values, for PATCH)."""

    url = serializers.CharField(max_length=2000, allow_blank=True, required=False)
    method = UpperChoiceField(choices=Realm.Method.choices, required=False)
    arguments = ArgumentSerializer(many=True, required=False)
    token_path = serializers.CharField(max_length=255, allow_blank=True, required=False)
    content_type = serializers.ChoiceField(choices=Realm.ContentType.choices, required=False)
    expires_in_path = serializers.CharField(max_length=255, allow_blank=True, required=False)
    expires_in_unit = serializers.ChoiceField(choices=Realm.ExpiresInUnit.choices, required=False)
    expires_at_path = serializers.CharField(max_length=255, allow_blank=True, required=False)
    success_conditions = serializers.JSONField(required=False)
    error_code_path = serializers.CharField(max_length=255, allow_blank=True, required=False)
    error_message_path = serializers.CharField(max_length=255, allow_blank=True, required=False)
    code_url = serializers.CharField(max_length=2000, allow_blank=True, required=False)
    timeout = serializers.FloatField(required=False)
    max_concurrency = serializers.IntegerField(required=False)
    refresh_margin = serializers.IntegerField(required=False)
    default_ttl = serializers.IntegerField(required=False)
    min_flush_interval = serializers.IntegerField(required=False)
    max_retries = serializers.IntegerField(required=False)
    rate_limit_codes = serializers.JSONField(required=False)
    permanent_error_codes = serializers.JSONField(required=False)
    permanent_error_ttl = serializers.IntegerField(required=False)
    breaker_threshold = serializers.IntegerField(required=False)
    breaker_cooldown = serializers.IntegerField(required=False)


class RealmWriteSerializer(serializers.Serializer):
    """What POST, PUT and PATCH accept. `logic_code` is the seed's name for code_url."""

    id = serializers.CharField(max_length=50, required=False)
    kind = serializers.ChoiceField(choices=Realm.Kind.choices, required=False)
    config = RealmConfigSerializer(required=False)
    comment = serializers.CharField(allow_blank=True, required=False)
    logic_code = serializers.CharField(max_length=2000, allow_blank=True, required=False)

    def validate(self, attrs):
        logic_code = attrs.pop("logic_code", None)
        if logic_code:
            attrs.setdefault("config", {})["code_url"] = logic_code
        return attrs


def realm_to_dict(realm: Realm) -> dict:
    config = {name: getattr(realm, name) for name in CONFIG_FIELDS}
    config["arguments"] = [
        {"name": argument.name, "place": argument.place, "value": argument.value}
        for argument in realm.arguments.all()
    ]
    return {
        "id": realm.id,
        "kind": realm.kind,
        "config": config,
        "comment": realm.comment,
        "created_at": realm.created_at,
        "updated_at": realm.updated_at,
    }


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


class RealmQuerySerializer(PageQuerySerializer):
    keyword = serializers.CharField(required=False, allow_blank=True, max_length=200)


def _write(request, realm_id: str, *, partial: bool):
    serializer = RealmWriteSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    if realm_id is None:
        realm_id = data.get("id")
        if not realm_id:
            raise serializers.ValidationError({"id": ["This field is required."]})
    elif data.get("id", realm_id) != realm_id:
        raise serializers.ValidationError({"id": ["Does not match the realm in the URL."]})
    return realm_upsert(realm_id, data, partial=partial)


class RealmListView(ScopedAPIView):
    """List realms (newest updated first; `keyword` matches comment or id), or upsert one."""

    scopes = {"GET": REALM_READ, "POST": REALM_WRITE}

    @extend_schema(
        operation_id="realm_list",
        summary="List realms",
        tags=["realms"],
        parameters=[RealmQuerySerializer],
        responses={
            200: paged_schema(RealmOutSerializer, "RealmPage"),
            **error_responses(400, *AUTHENTICATED),
        },
    )
    def get(self, request):
        params = parse_query(RealmQuerySerializer, request)
        realms = Realm.objects.prefetch_related("arguments").order_by("-updated_at", "id")
        if params.get("keyword"):
            keyword = params["keyword"]
            realms = realms.filter(Q(comment__icontains=keyword) | Q(id__icontains=keyword))
        return paginated(realms, params, realm_to_dict)

    @extend_schema(
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
    def post(self, request):
        realm, created = _write(request, None, partial=False)
        return enveloped(realm_to_dict(realm), status=201 if created else 200)


class RealmDetailView(ScopedAPIView):
    """One realm: read, replace (PUT), update in part (PATCH) or delete."""

    scopes = {"GET": REALM_READ, "PUT": REALM_WRITE, "PATCH": REALM_WRITE, "DELETE": REALM_WRITE}

    @extend_schema(
        operation_id="realm_read",
        summary="Read a realm",
        tags=["realms"],
        parameters=[REALM_ID],
        responses={200: RealmOutSerializer, **error_responses(404, *AUTHENTICATED)},
    )
    def get(self, request, realm_id):
        realm = get_object_or_404(Realm.objects.prefetch_related("arguments"), pk=realm_id)
        return Response(realm_to_dict(realm))

    @extend_schema(
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
    def put(self, request, realm_id):
        realm, created = _write(request, realm_id, partial=False)
        return Response(realm_to_dict(realm), status=201 if created else 200)

    @extend_schema(
        operation_id="realm_update",
        summary="Change part of a realm",
        description="Changes only what the body names (an `arguments` list replaces the list).",
        tags=["realms"],
        parameters=[REALM_ID],
        request=RealmWriteSerializer,
        responses={200: RealmOutSerializer, **error_responses(404, *WITH_BODY, *AUTHENTICATED)},
    )
    def patch(self, request, realm_id):
        get_object_or_404(Realm, pk=realm_id)
        realm, _ = _write(request, realm_id, partial=True)
        return Response(realm_to_dict(realm))

    @extend_schema(
        operation_id="realm_delete",
        summary="Delete a realm",
        tags=["realms"],
        parameters=[REALM_ID],
        responses={
            204: None,
            **error_responses(
                404, *AUTHENTICATED, s409="The realm still has secrets (`conflict`)."
            ),
        },
    )
    def delete(self, request, realm_id):
        get_object_or_404(Realm, pk=realm_id)
        realm_delete(realm_id)
        return Response(status=204)
