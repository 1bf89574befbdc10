"""
`GET /api/token?realm=…&key=…&flush=false`: the seed's token endpoint (also
`POST /api/token` with the same parameters in the body, and the rejected token
in the `X-Rejected-Token` header, to keep tokens out of URLs); the operator's
test fetch; the fetch log for auditors; and the secret routes with the state
of each secret's token (secret_store.api's views, extended here). Their
OpenAPI description is in tokens.schema.
"""

from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from clients.authentication import ClientUser
from clients.scopes import LOG_READ, REALM_WRITE, TOKEN_FLUSH, TOKEN_READ
from clients.throttles import ClientTokenRateThrottle
from secret_store.api import SecretDetailView, SecretListView, secret_to_dict
from tokens import quota
from tokens.models import FetchLog
from tokens.services import token_get, token_test_fetch
from tokens.states import secret_token_state, secrets_with_token_facts
from tokenserver.api import PageQuerySerializer, ScopedAPIView, paginated, parse_query

#: The header that carries a token an upstream refused (out of the URL, so out of access logs).
REJECTED_HEADER = "X-Rejected-Token"
REJECTED_META = "HTTP_X_REJECTED_TOKEN"


class TokenQuerySerializer(serializers.Serializer):
    realm = serializers.CharField(max_length=50, help_text="The realm's id.")
    key = serializers.CharField(max_length=100, help_text="The secret's name.")
    flush = serializers.BooleanField(
        default=False, help_text="Fetch a fresh token (needs token:flush)."
    )
    rejected = serializers.CharField(
        max_length=16384,
        required=False,
        trim_whitespace=False,
        help_text=f"A token the upstream refused (implies flush; needs token:flush). "
        f"Prefer the {REJECTED_HEADER} header or a POST: a query string lands in access logs.",
    )


def token_params(request, data) -> dict:
    """
    The token request's parameters from `data` (the query string or the body),
    with the rejected token from the X-Rejected-Token header when sent; the
    header and the parameter together must agree.
    """
    header = request.META.get(REJECTED_META)
    if header is not None and hasattr(data, "get"):
        sent = data.get("rejected")
        if sent is not None and sent != header:
            raise serializers.ValidationError(
                {"rejected": [f"Differs from the {REJECTED_HEADER} header; send one."]}
            )
        data = data.copy()
        data["rejected"] = header
    serializer = TokenQuerySerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class TokenView(ScopedAPIView):
    """
    A valid token for one secret: `{"token", "expires_in", "source"}`, with
    `expires_in` the remaining lifetime in milliseconds. Clients need
    `token:read` (and `token:flush` to flush) and a pattern allowing the secret.
    GET reads the parameters from the query string, POST from the body (form or
    JSON); either takes the rejected token from the X-Rejected-Token header.
    """

    throttle_classes = [ClientTokenRateThrottle]
    scopes = {"GET": TOKEN_READ, "POST": TOKEN_READ}

    def get(self, request):
        return self._answer(request, token_params(request, request.query_params))

    def post(self, request):
        return self._answer(request, token_params(request, request.data))

    def _answer(self, request, params):
        user = request.user
        if isinstance(user, ClientUser):
            forced = params["flush"] or "rejected" in params
            if forced and not user.has_scope(TOKEN_FLUSH):
                raise PermissionDenied(f"This call needs the scope {TOKEN_FLUSH}.")
            if not user.may_read(params["realm"], params["key"]):
                raise PermissionDenied(
                    f"This client's allowed patterns do not cover realm {params['realm']!r}, "
                    f"key {params['key']!r}."
                )
        result = token_get(
            params["realm"],
            params["key"],
            flush=params["flush"],
            rejected=params.get("rejected"),
            client=user.get_username(),
        )
        response = Response(
            {"token": result.token, "expires_in": result.expires_in_ms(), "source": result.source}
        )
        # A token must not be kept by a browser or a proxy in between.
        response["Cache-Control"] = "no-store"
        return response


class TestFetchSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=100, help_text="The secret to fetch a token for.")


class TestFetchView(ScopedAPIView):
    """
    `POST /api/realm/<id>/test` with `{"key": …}`: a real fetch for one secret,
    stored like any other; answers what the upstream said and the token masked.
    """

    scopes = {"POST": REALM_WRITE}

    def post(self, request, realm_id):
        serializer = TestFetchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        outcome = token_test_fetch(
            realm_id, serializer.validated_data["key"], client=request.user.get_username()
        )
        return Response(outcome)


class FetchLogQuerySerializer(PageQuerySerializer):
    realm = serializers.CharField(required=False, max_length=50)
    key = serializers.CharField(required=False, max_length=100)
    outcome = serializers.ChoiceField(choices=FetchLog.Outcome.choices, required=False)
    trigger = serializers.ChoiceField(choices=FetchLog.Trigger.choices, required=False)
    same_token = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="true: only answers that handed back the token already held; false: the others.",
    )


def fetchlog_to_dict(log: FetchLog) -> dict:
    return {
        "realm": log.realm,
        "key": log.key,
        "trigger": log.trigger,
        "outcome": log.outcome,
        "http_status": log.http_status,
        "error_code": log.error_code,
        "error_message": log.error_message,
        "duration_ms": log.duration_ms,
        "lifetime": log.lifetime,
        "client": log.client,
        "request_id": log.request_id,
        "same_token": log.same_token,
        "created_at": log.created_at,
    }


class FetchLogView(ScopedAPIView):
    """`GET /api/fetchlog?realm&key&outcome&trigger&page&pageSize`: the audit, newest first."""

    scopes = {"GET": LOG_READ}

    def get(self, request):
        params = parse_query(FetchLogQuerySerializer, request)
        logs = FetchLog.objects.all()
        for name in ("realm", "key", "outcome", "trigger"):
            if params.get(name):
                logs = logs.filter(**{name: params[name]})
        if params.get("same_token") is not None:
            logs = logs.filter(same_token=params["same_token"])
        return paginated(logs, params, fetchlog_to_dict)


class SecretTokenViewMixin:
    """
    The secret routes as served: each secret carries `token_state` (state,
    expires_at, last fetch outcome and time; never the token), computed by
    the same function as the console's (tokens.states).
    """

    def secrets(self):
        return secrets_with_token_facts(super().secrets())

    def represent(self, secret) -> dict:
        return {**secret_to_dict(secret), "token_state": secret_token_state(secret).as_dict()}


class SecretTokenListView(SecretTokenViewMixin, SecretListView):
    pass


class SecretTokenDetailView(SecretTokenViewMixin, SecretDetailView):
    """One secret, with its upstream calls of today against its daily budget (`quota`)."""

    def represent(self, secret) -> dict:
        return {**super().represent(secret), "quota": quota.usage(secret).as_dict()}
