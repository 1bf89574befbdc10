"""
How the OpenAPI description (drf-spectacular) describes the token layer's
routes: the token endpoint, the test fetch, the fetch log, and the secret
routes as served (with each secret's token state); and `load_descriptions`,
the preprocessing hook (SPECTACULAR_SETTINGS) that loads every app's
descriptions when a schema is generated, and only then (tokenserver/openapi.py
says why: the memory of every worker).
"""

from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers

# Drf-spectacular extensions register themselves when their module loads:
# clients.schema's (the security schemes, AuthTokenView) by this import, realms.schema's
# with REALM_ID.
import clients.schema  # noqa: F401
from realms.schema import REALM_ID
from secret_store.schema import SecretBaseSerializer, secret_schemas
from tokens.api import (
    REJECTED_HEADER,
    FetchLogQuerySerializer,
    TestFetchSerializer,
    TokenQuerySerializer,
)
from tokens.models import FetchLog, TokenState
from tokenserver.schema import AUTHENTICATED, WITH_BODY, described, error_responses
from tokenserver.schema import paged as paged_schema


def load_descriptions(endpoints, **kwargs):
    """
    The preprocessing hook: changes nothing. Importing this module (which
    drf-spectacular does to call it, before it builds any view's description)
    registers the API's descriptions: this module's and those it imports.
    """
    return endpoints


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


TOKEN_ERRORS = error_responses(
    400,
    502,
    503,
    *AUTHENTICATED,
    s403="Not allowed (`permission_denied`: a missing scope, or the client's patterns do not "
    "cover the realm and key) or the secret is disabled (`secret_disabled`).",
    s404="No such realm or key (`not_found`).",
    s429="Too many calls from this client (`throttled`), failed staff sign-ins, a "
    "rejected token reported again within the realm's minimum flush interval "
    "(`too_many_flushes`), or the secret's daily budget of upstream calls does not allow a "
    "fetch (`quota_exhausted`: a flush or a rejected token once only the calls kept to keep "
    "the token alive are left, or no valid token and the budget used up; Retry-After: until "
    "the provider's day turns); wait for Retry-After seconds.",
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
            "same_token",
        )


class TokenStateSerializer(serializers.Serializer):
    """How a secret's token stands (tokens.states), never the token."""

    state = serializers.ChoiceField(choices=TokenState.choices)
    expires_at = serializers.DateTimeField(allow_null=True)
    last_fetch_outcome = serializers.ChoiceField(choices=FetchLog.Outcome.choices, allow_null=True)
    last_fetch_at = serializers.DateTimeField(allow_null=True)


class SecretSerializer(SecretBaseSerializer):
    """A secret as the API answers it, with its token's state."""

    token_state = TokenStateSerializer()


class QuotaSerializer(serializers.Serializer):
    """A secret's upstream calls in the provider's current day (tokens.quota.Usage.as_dict)."""

    calls_today = serializers.IntegerField(
        allow_null=True, help_text="Upstream calls so far today (null: not known now)."
    )
    daily_budget = serializers.IntegerField(
        allow_null=True, help_text="The realm's daily budget per secret (null: none)."
    )
    alert_at = serializers.IntegerField(
        allow_null=True, help_text="Calls past which operators are warned (null: no budget)."
    )
    day = serializers.DateField(help_text="The provider's date of today.")
    day_ends_at = serializers.DateTimeField(help_text="When the provider's day turns.")


class SecretDetailSerializer(SecretSerializer):
    """One secret as the API answers it: its token's state and its calls of today."""

    quota = QuotaSerializer()


SECRETS = {
    name: extend_schema(tags=["secrets"], **arguments)
    for name, arguments in secret_schemas(SecretSerializer, "Secret").items()
    if name.startswith("list.")
} | {
    name: extend_schema(tags=["secrets"], **arguments)
    for name, arguments in secret_schemas(SecretDetailSerializer, "SecretDetail").items()
    if name.startswith("detail.")
}


TOKEN_GET = extend_schema(
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

TOKEN_POST = extend_schema(
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

REALM_TEST = extend_schema(
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
            s403="Not allowed (`permission_denied`) or the secret is disabled (`secret_disabled`).",
            s429="The secret's daily budget keeps its last calls for the refreshes that keep its "
            "token alive (`quota_exhausted`); Retry-After: until the provider's day turns.",
        ),
    },
)

FETCHLOG_LIST = extend_schema(
    operation_id="fetchlog_list",
    summary="The fetch log, newest first",
    tags=["tokens"],
    parameters=[FetchLogQuerySerializer],
    responses={
        200: paged_schema(FetchLogSerializer, "FetchLogPage"),
        **error_responses(400, *AUTHENTICATED),
    },
)


class TokenViewSchema(OpenApiViewExtension):
    """tokens.api.TokenView, described."""

    target_class = "tokens.api.TokenView"

    def view_replacement(self):
        return described(self.target_class, get=TOKEN_GET, post=TOKEN_POST)


class TestFetchViewSchema(OpenApiViewExtension):
    """tokens.api.TestFetchView, described."""

    target_class = "tokens.api.TestFetchView"

    def view_replacement(self):
        return described(self.target_class, post=REALM_TEST)


class FetchLogViewSchema(OpenApiViewExtension):
    """tokens.api.FetchLogView, described."""

    target_class = "tokens.api.FetchLogView"

    def view_replacement(self):
        return described(self.target_class, get=FETCHLOG_LIST)


class SecretTokenListViewSchema(OpenApiViewExtension):
    """tokens.api.SecretTokenListView, described."""

    target_class = "tokens.api.SecretTokenListView"

    def view_replacement(self):
        return described(self.target_class, get=SECRETS["list.get"], post=SECRETS["list.post"])


class SecretTokenDetailViewSchema(OpenApiViewExtension):
    """tokens.api.SecretTokenDetailView, described."""

    target_class = "tokens.api.SecretTokenDetailView"

    def view_replacement(self):
        return described(
            self.target_class,
            get=SECRETS["detail.get"],
            put=SECRETS["detail.put"],
            patch=SECRETS["detail.patch"],
            delete=SECRETS["detail.delete"],
        )
