"""
The realm API, seed-compatible: `GET/POST /api/realm`, `GET /api/realm/<id>`,
plus `PUT/PATCH/DELETE /api/realm/<id>`.

A realm travels as `{"id", "kind", "config": {...}, "comment", "created_at",
"updated_at"}`; "config" holds the seed's fields (url, method, arguments,
token_path, content_type, expires_in_path) and tokenserver's additions.
The OpenAPI description of these routes is in realms.schema.
"""

from django.db.models import Q
from django.shortcuts import get_object_or_404
from rest_framework import serializers
from rest_framework.response import Response

from clients.scopes import REALM_READ, REALM_WRITE
from realms.models import Argument, Realm
from realms.services import CONFIG_FIELDS, config_attribute, realm_delete, realm_upsert
from tokenserver.api import PageQuerySerializer, ScopedAPIView, enveloped, paginated, parse_query


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
    reissue_window = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="Seconds before expiry from which the provider issues a new token "
        "(Feishu: 1800; 0: only once it expired); null: learnt from its answers.",
    )
    default_ttl = serializers.IntegerField(required=False)
    min_flush_interval = serializers.IntegerField(required=False)
    max_retries = serializers.IntegerField(required=False)
    rate_limit_codes = serializers.JSONField(required=False)
    permanent_error_codes = serializers.JSONField(required=False)
    permanent_error_ttl = serializers.IntegerField(required=False)
    breaker_threshold = serializers.IntegerField(required=False)
    breaker_cooldown = serializers.IntegerField(required=False)
    daily_budget = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="Upstream calls per secret and provider day (WeChat: 2000); null: no budget.",
    )
    budget_alert_percent = serializers.IntegerField(
        required=False, help_text="Warn past this share of the budget (1-100, default 80)."
    )
    budget_day_starts = serializers.CharField(
        max_length=64,
        required=False,
        help_text="Where the provider's day starts at midnight: UTC (default), a UTC offset "
        "such as +08:00 (WeChat) or a time zone such as Asia/Shanghai.",
    )
    # Checked by the model (realms.validators.validate_jwt_config), the one validation.
    jwt = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="JWT assertion settings (RFC 7523), sent by arguments as $jwt: "
        '{"alg": "RS256"|"ES256"|…, "key": "$key_2", "iss": "$key_1", "sub", "aud" '
        '(blank: url), "scope", "kid", "lifetime" (≤ 3600)}; null: none.',
    )
    # A chained realm (issue 14): checked by the model (Realm.clean), the one validation.
    parent = serializers.CharField(
        max_length=50,
        allow_null=True,
        allow_blank=True,
        required=False,
        help_text="Chained realm: the id of the realm whose token this one is fetched with "
        "(arguments send it as $parent_token); null or blank: none.",
    )
    parent_key = serializers.CharField(
        max_length=100,
        allow_blank=True,
        required=False,
        help_text="The parent secret's key; blank: the parent realm's secret with the "
        "child secret's own key.",
    )
    parent_rejected_codes = serializers.JSONField(
        required=False,
        help_text="Error codes that mean the parent token was refused, besides 40001, "
        "40014 and 42001.",
    )


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
    config = {name: getattr(realm, config_attribute(name)) for name in CONFIG_FIELDS}
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

    def get(self, request):
        params = parse_query(RealmQuerySerializer, request)
        realms = Realm.objects.prefetch_related("arguments").order_by("-updated_at", "id")
        if params.get("keyword"):
            keyword = params["keyword"]
            realms = realms.filter(Q(comment__icontains=keyword) | Q(id__icontains=keyword))
        return paginated(realms, params, realm_to_dict)

    def post(self, request):
        realm, created = _write(request, None, partial=False)
        return enveloped(realm_to_dict(realm), status=201 if created else 200)


class RealmDetailView(ScopedAPIView):
    """One realm: read, replace (PUT), update in part (PATCH) or delete."""

    scopes = {"GET": REALM_READ, "PUT": REALM_WRITE, "PATCH": REALM_WRITE, "DELETE": REALM_WRITE}

    def get(self, request, realm_id):
        realm = get_object_or_404(Realm.objects.prefetch_related("arguments"), pk=realm_id)
        return Response(realm_to_dict(realm))

    def put(self, request, realm_id):
        realm, created = _write(request, realm_id, partial=False)
        return Response(realm_to_dict(realm), status=201 if created else 200)

    def patch(self, request, realm_id):
        get_object_or_404(Realm, pk=realm_id)
        realm, _ = _write(request, realm_id, partial=True)
        return Response(realm_to_dict(realm))

    def delete(self, request, realm_id):
        get_object_or_404(Realm, pk=realm_id)
        realm_delete(realm_id)
        return Response(status=204)
