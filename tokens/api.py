"""
`GET /api/token?realm=…&key=…&flush=false`: the seed's token endpoint (also
`POST /api/token` with the same parameters in the body, and the rejected token
in the `X-Rejected-Token` header, to keep tokens out of URLs); the operator's
test fetch; the fetch log for auditors; and the secret routes with the state
of each secret's token (secret_store.api's views, extended here).
"""

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from clients.authentication import ClientUser
from clients.scopes import LOG_READ, REALM_WRITE, TOKEN_FLUSH, TOKEN_READ
from clients.throttles import ClientTokenRateThrottle
from realms.api import REALM_ID
from secret_store.api import (
    SecretBaseSerializer,
    SecretDetailView,
    SecretListView,
    secret_schemas,
    secret_to_dict,
)
from tokens.models import FetchLog, TokenState
from tokens.services import token_get, token_test_fetch
from tokens.states import secret_token_state, secrets_with_token_facts
from tokenserver.api import PageQuerySerializer, ScopedAPIView, paginated, parse_query
from tokenserver.schema import AUTHENTICATED, WITH_BODY, error_responses
from tokenserver.schema import paged as paged_schema

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


class TokenSerializer(serializers.Serializer):
    """The seed's answer: `{"token", "expires_in", "source"}`."""

    token = serializers.CharField()
    expires_in = serializers.IntegerField(
        allow_null=True,
        min_value=0,
        help_text="Milliseconds the token has left; null for a fixed token without expiry.",
    )
    source = serializers.ChoiceField(
        choices=["cache", "database", "upstream", "fixed"],
        help_text="Where the token came from.",
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


TOKEN_ERRORS = error_responses(
    400,
    502,
    503,
    *AUTHENTICATED,
    s403="Not allowed (`permission_denied`: a missing scope, or the client's patterns do not "
    "cover the realm and key) or the secret is disabled (`secret_disabled`).",
    s404="No such realm or key (`not_found`).",
    s429="Too many calls from this client (`throttled`), failed staff sign-ins, or a "
    "rejected token reported again within the realm's minimum flush interval "
    "(`too_many_flushes`); wait for Retry-After seconds.",
)

REJECTED_HEADER_PARAMETER = OpenApiParameter(
    REJECTED_HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="A token the upstream refused: compare-and-refresh (implies flush; needs "
    "token:flush). Answered with another token as soon as the current one differs; if it is "
    "still current, it is refreshed (429 `too_many_flushes` if it was fetched within the "
    "realm's minimum flush interval). The way to report a token: never logged, unlike the "
    "`rejected` query parameter (kept for compatibility).",
)


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

    @extend_schema(
        operation_id="token_get",
        summary="Get a token (the seed's request)",
        description="A valid token for one secret, from the cache when it has one. "
        f"To report a token the upstream refused, send it in the {REJECTED_HEADER} header "
        "(or POST the parameters): `rejected=` in the query string is kept for compatibility.",
        tags=["tokens"],
        parameters=[
            TokenQuerySerializer,
            # Named again for their examples (the seed's request): the docs' "try it out".
            OpenApiParameter(
                "realm",
                {"type": "string", "minLength": 1, "maxLength": 50},
                OpenApiParameter.QUERY,
                required=True,
                description="The realm's id.",
                examples=[OpenApiExample("The seed's WeChat realm", value="wxgzh")],
            ),
            OpenApiParameter(
                "key",
                {"type": "string", "minLength": 1, "maxLength": 100},
                OpenApiParameter.QUERY,
                required=True,
                description="The secret's name.",
                examples=[OpenApiExample("The seed's secret", value="wxgzh_secret")],
            ),
            REJECTED_HEADER_PARAMETER,
        ],
        responses={
            200: TokenSerializer,
            **TOKEN_ERRORS,
            414: OpenApiResponse(
                description="The URL is longer than the server reads (64 KiB): send a long "
                f"rejected token in the {REJECTED_HEADER} header or POST it (no body)."
            ),
        },
        examples=[
            OpenApiExample(
                "The seed's answer",
                value={"token": "ACCESS_TOKEN", "expires_in": 7200000, "source": "database"},
                response_only=True,
            )
        ],
    )
    def get(self, request):
        return self._answer(request, token_params(request, request.query_params))

    @extend_schema(
        operation_id="token_post",
        summary="Get a token, parameters in the body",
        description="As GET /api/token, with the parameters in the body (form or JSON): "
        "a rejected token sent here never appears in a URL.",
        tags=["tokens"],
        parameters=[REJECTED_HEADER_PARAMETER],
        request=TokenQuerySerializer,
        responses={200: TokenSerializer, **TOKEN_ERRORS, **error_responses(415)},
        examples=[
            OpenApiExample(
                "The seed's request, in a body",
                value={"realm": "wxgzh", "key": "wxgzh_secret"},
                request_only=True,
            ),
            OpenApiExample(
                "Report a rejected token",
                value={"realm": "wxgzh", "key": "wxgzh_secret", "rejected": "ACCESS_TOKEN"},
                request_only=True,
            ),
        ],
    )
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


class TestFetchOutcomeSerializer(serializers.Serializer):
    """What token_test_fetch answers: a success (ok true) or what went wrong (ok false)."""

    ok = serializers.BooleanField()
    source = serializers.CharField(required=False, help_text="ok: where the token came from.")
    http_status = serializers.IntegerField(
        allow_null=True, help_text="The upstream's HTTP status (null: none, e.g. fixed)."
    )
    lifetime = serializers.IntegerField(
        allow_null=True, required=False, help_text="ok: seconds granted (null: no expiry)."
    )
    expires_in = serializers.IntegerField(
        allow_null=True, required=False, help_text="ok: milliseconds left (null: no expiry)."
    )
    token = serializers.CharField(required=False, help_text="ok: the token, masked.")
    error = serializers.CharField(required=False, help_text="not ok: the error code.")
    detail = serializers.CharField(required=False, help_text="not ok: what went wrong.")
    outcome = serializers.CharField(required=False, help_text="not ok: the fetch log's outcome.")
    error_code = serializers.CharField(
        required=False, allow_blank=True, help_text="not ok: the upstream's error code."
    )
    error_message = serializers.CharField(
        required=False, allow_blank=True, help_text="not ok: the upstream's error message."
    )


class TestFetchView(ScopedAPIView):
    """
    `POST /api/realm/<id>/test` with `{"key": …}`: a real fetch for one secret,
    stored like any other; answers what the upstream said and the token masked.
    """

    scopes = {"POST": REALM_WRITE}

    @extend_schema(
        operation_id="realm_test",
        summary="Test-fetch a token for one secret",
        description="A real upstream call (stored and served like any other); an upstream "
        "failure is a 200 with `ok: false` and what the upstream said.",
        tags=["realms"],
        parameters=[REALM_ID],
        request=TestFetchSerializer,
        responses={
            200: TestFetchOutcomeSerializer,
            **error_responses(
                404,
                *WITH_BODY,
                *AUTHENTICATED,
                s403="Not allowed (`permission_denied`) or the secret is disabled "
                "(`secret_disabled`).",
            ),
        },
    )
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


class FetchLogSerializer(serializers.ModelSerializer):
    """A fetch-log row as answered (fetchlog_to_dict): one upstream attempt, never a token."""

    class Meta:
        model = FetchLog
        fields = (
            "realm",
            "key",
            "trigger",
            "outcome",
            "http_status",
            "error_code",
            "error_message",
            "duration_ms",
            "lifetime",
            "client",
            "created_at",
            "request_id",
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
        "created_at": log.created_at,
    }


class FetchLogView(ScopedAPIView):
    """`GET /api/fetchlog?realm&key&outcome&trigger&page&pageSize`: the audit, newest first."""

    scopes = {"GET": LOG_READ}

    @extend_schema(
        operation_id="fetchlog_list",
        summary="The fetch log, newest first",
        tags=["tokens"],
        parameters=[FetchLogQuerySerializer],
        responses={
            200: paged_schema(FetchLogSerializer, "FetchLogPage"),
            **error_responses(400, *AUTHENTICATED),
        },
    )
    def get(self, request):
        params = parse_query(FetchLogQuerySerializer, request)
        logs = FetchLog.objects.all()
        for name in ("realm", "key", "outcome", "trigger"):
            if params.get(name):
                logs = logs.filter(**{name: params[name]})
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


class TokenStateSerializer(serializers.Serializer):
    """How a secret's token stands (tokens.states), never the token."""

    state = serializers.ChoiceField(choices=TokenState.choices)
    expires_at = serializers.DateTimeField(allow_null=True)
    last_fetch_outcome = serializers.ChoiceField(choices=FetchLog.Outcome.choices, allow_null=True)
    last_fetch_at = serializers.DateTimeField(allow_null=True)


class SecretSerializer(SecretBaseSerializer):
    """A secret as the API answers it, with its token's state."""

    token_state = TokenStateSerializer()


SCHEMAS = secret_schemas(SecretSerializer, "Secret")


def _described(*names: str) -> dict:
    return {name.split(".")[1]: extend_schema(tags=["secrets"], **SCHEMAS[name]) for name in names}


@extend_schema_view(**_described("list.get", "list.post"))
class SecretTokenListView(SecretTokenViewMixin, SecretListView):
    pass


@extend_schema_view(**_described("detail.get", "detail.put", "detail.patch", "detail.delete"))
class SecretTokenDetailView(SecretTokenViewMixin, SecretDetailView):
    pass
