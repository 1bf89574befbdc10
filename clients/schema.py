"""
How the OpenAPI description (drf-spectacular) names the API's authentication:
apps hold a bearer access token from the client credentials grant (an OAuth
2.0 scheme, so each operation lists the scope it needs and the docs page can
get a token), staff sign in with HTTP Basic or the console's session; and how
it describes `POST /api/auth/token`.

Loaded only when a schema is generated (tokens.schema.load_descriptions
imports it; tokenserver/schema.py says why), which registers these extensions.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers

from clients.scopes import LOG_READ, REALM_READ, REALM_WRITE, SECRET_WRITE, TOKEN_FLUSH, TOKEN_READ
from tokenserver.schema import described, error_responses

SCOPE_MEANINGS = {
    TOKEN_READ: "Read tokens (GET /api/token) of the secrets the client's patterns cover.",
    TOKEN_FLUSH: "Force a refresh (flush=true) or report a rejected token.",
    REALM_READ: "Read realms and secrets (values masked).",
    REALM_WRITE: "Create, change and delete realms; test fetches.",
    SECRET_WRITE: "Create, change and delete secrets.",
    LOG_READ: "Read the fetch log.",
}


class ClientBearerScheme(OpenApiAuthenticationExtension):
    """clients.authentication.BearerAuthentication: the scope the view names per method."""

    target_class = "clients.authentication.BearerAuthentication"
    name = "client"

    def get_security_definition(self, auto_schema):
        return {
            "type": "oauth2",
            "description": (
                "An app's access token, sent as `Authorization: Bearer <token>`: exchanged "
                "for the client's id and secret at `POST /api/auth/token` "
                "(client credentials grant, HTTP Basic or form). Each operation names the "
                "scope it needs; the token endpoint also needs a pattern (REALM/KEY) that "
                "covers the secret."
            ),
            "flows": {
                "clientCredentials": {"tokenUrl": "/api/auth/token", "scopes": SCOPE_MEANINGS}
            },
        }

    def get_security_requirement(self, auto_schema):
        required = getattr(auto_schema.view, "scopes", {}).get(auto_schema.method)
        return {self.name: [required] if required else []}


class StaffBasicScheme(OpenApiAuthenticationExtension):
    """clients.authentication.ThrottledBasicAuthentication."""

    target_class = "clients.authentication.ThrottledBasicAuthentication"
    name = "staff"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "basic",
            "description": (
                "A staff user's username and password (any scope). Failed sign-ins are "
                "limited per address and username: past the limit, 429 with Retry-After."
            ),
        }


class ConsoleSessionScheme(OpenApiAuthenticationExtension):
    """The console's session (staff signed in at /admin/); unsafe methods need the CSRF token."""

    target_class = "rest_framework.authentication.SessionAuthentication"
    name = "console"
    priority = 1  # over drf-spectacular's own description of it

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": (
                "A staff user signed in to the console (/admin/); unsafe methods also need "
                "the `X-CSRFToken` header."
            ),
        }


class CredentialsSerializer(serializers.Serializer):
    """What the exchange reads (described for the docs; the view reads it as sent)."""

    grant_type = serializers.ChoiceField(choices=["client_credentials"])
    client_id = serializers.CharField(
        required=False, help_text="Or the username part of HTTP Basic (form-urlencoded)."
    )
    client_secret = serializers.CharField(
        required=False, help_text="Or the password part of HTTP Basic (form-urlencoded)."
    )
    scope = serializers.CharField(
        required=False,
        help_text="Space-separated scopes to ask for, a subset of the client's (default: all).",
    )


class AccessTokenSerializer(serializers.Serializer):
    access_token = serializers.CharField(help_text="Send as `Authorization: Bearer <token>`.")
    token_type = serializers.ChoiceField(choices=["Bearer"])
    expires_in = serializers.IntegerField(help_text="Seconds the access token stays valid.")
    scope = serializers.CharField(help_text="The scopes granted, space-separated.")


AUTH_TOKEN_POST = extend_schema(
    operation_id="auth_token",
    summary="Exchange a client's credentials for an access token",
    tags=["auth"],
    request={
        "application/x-www-form-urlencoded": CredentialsSerializer,
        "application/json": CredentialsSerializer,
    },
    responses={
        200: AccessTokenSerializer,
        **error_responses(
            406,
            415,
            s400="`unsupported_grant_type`, `invalid_scope` (a scope the client does not "
            "hold) or a body that cannot be read (`malformed_request`).",
            s401="Unknown client or wrong secret (`invalid_client`, with WWW-Authenticate).",
            s429="Too many failed sign-ins from this address (`too_many_failures`); "
            "wait for Retry-After seconds.",
        ),
    },
    examples=[
        OpenApiExample(
            "Client credentials",
            value={
                "grant_type": "client_credentials",
                "client_id": "billing",
                "client_secret": "…",
            },
            request_only=True,
        )
    ],
)


class AuthTokenViewSchema(OpenApiViewExtension):
    """clients.api.AuthTokenView, described."""

    target_class = "clients.api.AuthTokenView"

    def view_replacement(self):
        return described(self.target_class, post=AUTH_TOKEN_POST)
