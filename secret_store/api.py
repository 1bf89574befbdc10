"""
The secret API, seed-compatible: `GET/POST /api/secret`, plus
`GET/PUT/PATCH/DELETE /api/secret/<realm>/<key>`.

Values are write-only: answers say whether each is set ("******") or not
(null), never what it is. The fixed-token fields (`token`, `token_expires_at`)
appear only for secrets of realms of kind fixed (the seed's secrets, of
fetching realms, never had them).

The routes serve tokens.api's subclasses of these views, which add what only
the token layer knows (the fetched token's state) through `secrets()` and
`represent()`: this layer sits below tokens and cannot ask it. The routes'
OpenAPI description: secret_store.schema and tokens.schema.
"""

from django.shortcuts import get_object_or_404
from rest_framework import serializers
from rest_framework.response import Response

from clients.scopes import REALM_READ, SECRET_WRITE
from realms.models import Realm
from secret_store.models import VALUE_FIELDS, Secret
from secret_store.services import secret_delete, secret_upsert
from tokenserver.api import PageQuerySerializer, ScopedAPIView, enveloped, paginated, parse_query

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


class SecretListView(SecretViewMixin, ScopedAPIView):
    """List secrets (optionally of one realm), or create/update one."""

    scopes = {"GET": REALM_READ, "POST": SECRET_WRITE}

    def get(self, request):
        params = parse_query(SecretQuerySerializer, request)
        secrets = self.secrets().order_by("-updated_at", "id")
        if params.get("realm"):
            secrets = secrets.filter(realm_id=params["realm"])
        return paginated(secrets, params, self.represent)

    def post(self, request):
        secret, created = _write(request)
        return enveloped(self.represent(secret), status=201 if created else 200)


class SecretDetailView(SecretViewMixin, ScopedAPIView):
    """One secret: read (masked), replace (PUT), update in part (PATCH) or delete."""

    scopes = {"GET": REALM_READ, "PUT": SECRET_WRITE, "PATCH": SECRET_WRITE, "DELETE": SECRET_WRITE}

    def get(self, request, realm_id, key):
        secret = get_object_or_404(self.secrets(), realm_id=realm_id, name=key)
        return Response(self.represent(secret))

    def put(self, request, realm_id, key):
        secret, created = _write(request, realm_id, key, replace=True)
        return Response(self.represent(secret), status=201 if created else 200)

    def patch(self, request, realm_id, key):
        secret, _ = _write(request, realm_id, key, partial=True)
        return Response(self.represent(secret))

    def delete(self, request, realm_id, key):
        secret_delete(realm_id, key)
        return Response(status=204)
