"""
The secret API, seed-compatible: `GET/POST /api/secret`, plus
`GET/PUT/PATCH/DELETE /api/secret/<realm>/<key>`.

Values are write-only: answers say whether each is set ("******") or not
(null), never what it is. The fixed-token fields (`token`, `token_expires_at`)
appear only for secrets of realms of kind fixed (the seed's secrets, of
fetching realms, never had them).

The routes serve tokens.api's subclasses of these views, which add what only
the token layer knows (the fetched token's state) through `secrets()` and
`represent()`: this layer sits below tokens and cannot ask it.
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from clients.scopes import REALM_READ, SECRET_WRITE
from realms.models import Realm
from secret_store.models import VALUE_FIELDS, Secret
from secret_store.services import secret_delete, secret_upsert
from tokenserver.api import PageQuerySerializer, ScopedAPIView, enveloped, paginated, parse_query
from tokenserver.schema import AUTHENTICATED, WITH_BODY, error_responses
from tokenserver.schema import enveloped as enveloped_schema
from tokenserver.schema import paged as paged_schema

MASK = "******"


def _value_field():
    # No trimming: a secret value is what the operator pasted, to the byte.
    return serializers.CharField(
        max_length=8192, allow_blank=True, allow_null=True, required=False, trim_whitespace=False
    )


class SecretWriteSerializer(serializers.Serializer):
    realm = serializers.CharField(max_length=50, required=False)
    key = serializers.CharField(max_length=100, required=False)
    key_1 = _value_field()
    key_2 = _value_field()
    key_3 = _value_field()
    key_4 = _value_field()
    key_5 = _value_field()
    token = serializers.CharField(
        max_length=16384, allow_blank=True, allow_null=True, required=False, trim_whitespace=False
    )
    token_expires_at = serializers.DateTimeField(allow_null=True, required=False)
    enabled = serializers.BooleanField(required=False)
    comment = serializers.CharField(allow_blank=True, required=False)


def secret_to_dict(secret: Secret) -> dict:
    """The secret's representation (reads its realm: select it with the secret)."""
    masked = {name: MASK if getattr(secret, name) else None for name in VALUE_FIELDS}
    fixed = {}
    if secret.realm.kind == Realm.Kind.FIXED:
        fixed = {
            "token": MASK if secret.token else None,
            "token_expires_at": secret.token_expires_at,
        }
    return {
        "realm": secret.realm_id,
        "key": secret.name,
        **masked,
        **fixed,
        "enabled": secret.enabled,
        "comment": secret.comment,
        "created_at": secret.created_at,
        "updated_at": secret.updated_at,
    }


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
    each secret answered as `answer`: the token layer's views describe their own
    answer (with `token_state`) with the same function.
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


def _described(name: str):
    return extend_schema(tags=["secrets"], **BASE_SCHEMAS[name])


class SecretViewMixin:
    """What the secret views list and how they render one (tokens.api extends both)."""

    def secrets(self):
        return Secret.objects.select_related("realm")

    def represent(self, secret: Secret) -> dict:
        return secret_to_dict(secret)


class SecretQuerySerializer(PageQuerySerializer):
    realm = serializers.CharField(required=False, allow_blank=True, max_length=50)


def _write(request, realm_id=None, key=None, *, replace=False, partial=False):
    serializer = SecretWriteSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = dict(serializer.validated_data)
    if realm_id is None:
        missing = {
            name: ["This field is required."] for name in ("realm", "key") if not data.get(name)
        }
        if missing:
            raise serializers.ValidationError(missing)
        realm_id, key = data["realm"], data["key"]
    else:
        for name, expected in (("realm", realm_id), ("key", key)):
            if data.get(name, expected) != expected:
                raise serializers.ValidationError({name: ["Does not match the URL."]})
        if partial:
            get_object_or_404(Secret, realm_id=realm_id, name=key)
    return secret_upsert(realm_id, key, data, replace=replace)


BASE_SCHEMAS = secret_schemas(SecretBaseSerializer, "SecretBase")


class SecretListView(SecretViewMixin, ScopedAPIView):
    """List secrets (optionally of one realm), or create/update one."""

    scopes = {"GET": REALM_READ, "POST": SECRET_WRITE}

    @_described("list.get")
    def get(self, request):
        params = parse_query(SecretQuerySerializer, request)
        secrets = self.secrets().order_by("-updated_at", "id")
        if params.get("realm"):
            secrets = secrets.filter(realm_id=params["realm"])
        return paginated(secrets, params, self.represent)

    @_described("list.post")
    def post(self, request):
        secret, created = _write(request)
        return enveloped(self.represent(secret), status=201 if created else 200)


class SecretDetailView(SecretViewMixin, ScopedAPIView):
    """One secret: read (masked), replace (PUT), update in part (PATCH) or delete."""

    scopes = {"GET": REALM_READ, "PUT": SECRET_WRITE, "PATCH": SECRET_WRITE, "DELETE": SECRET_WRITE}

    @_described("detail.get")
    def get(self, request, realm_id, key):
        secret = get_object_or_404(self.secrets(), realm_id=realm_id, name=key)
        return Response(self.represent(secret))

    @_described("detail.put")
    def put(self, request, realm_id, key):
        secret, created = _write(request, realm_id, key, replace=True)
        return Response(self.represent(secret), status=201 if created else 200)

    @_described("detail.patch")
    def patch(self, request, realm_id, key):
        secret, _ = _write(request, realm_id, key, partial=True)
        return Response(self.represent(secret))

    @_described("detail.delete")
    def delete(self, request, realm_id, key):
        secret_delete(realm_id, key)
        return Response(status=204)
