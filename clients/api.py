"""
`POST /api/auth/token`: the OAuth 2.0 client credentials grant (RFC 6749 §4.4).
Its OpenAPI description is in clients.schema.
"""

import base64
import binascii
from urllib.parse import unquote_plus

from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from rest_framework import permissions
from rest_framework.parsers import FormParser
from rest_framework.response import Response
from rest_framework.views import APIView

from clients.services import InvalidClient, client_token_exchange
from tokenserver.addresses import client_address
from tokenserver.errors import ServiceError, with_request_id
from tokenserver.parsers import NestingSafeJSONParser


def _basic_credentials(request) -> tuple[str | None, str | None] | None:
    """
    (client id, secret) from HTTP Basic; None without it, and (None, None)
    for credentials that cannot be read (a failed sign-in all the same).
    """
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, ValueError):  # ValueError: not ASCII; UnicodeDecodeError is one
        return None, None
    client_id, _, secret = decoded.partition(":")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


@method_decorator(sensitive_post_parameters("client_secret"), name="dispatch")
class AuthTokenView(APIView):
    """
    Exchange a client's id and secret (HTTP Basic, form or JSON) for a
    bearer access token: `{"access_token", "token_type", "expires_in", "scope"}`.
    """

    authentication_classes = []
    permission_classes = [permissions.AllowAny]
    # Not the API's SafeJSONParser: credentials that are not valid text (a lone
    # surrogate) must be a failed sign-in, counted, not a bare 400 (issue 11).
    parser_classes = [NestingSafeJSONParser, FormParser]

    @method_decorator(sensitive_variables("client_secret", "credentials"))
    def post(self, request):
        data = request.data if hasattr(request.data, "get") else {}
        if data.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type", "grant_type must be client_credentials.")
        try:
            credentials = _basic_credentials(request)
            if credentials is None:
                credentials = (
                    str(data.get("client_id") or ""),
                    str(data.get("client_secret") or ""),
                )
            client_id, client_secret = credentials
            scope = data.get("scope")
            token, claims = client_token_exchange(
                client_id,
                client_secret,
                scope=str(scope) if scope else None,
                address=client_address(request),
            )
        except ServiceError as error:
            response = _error(error.status_code, error.code, error.detail)
            if error.retry_after:
                response["Retry-After"] = str(error.retry_after)
            if isinstance(error, InvalidClient):
                response["WWW-Authenticate"] = 'Basic realm="api"'
            return response
        response = Response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": claims.expires_in(),
                "scope": " ".join(claims.scopes),
            }
        )
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        return response


def _error(status: int, code: str, detail: str) -> Response:
    # Our error shape, plus OAuth 2.0's error_description for OAuth libraries.
    response = Response(
        with_request_id({"error": code, "detail": detail, "error_description": detail}),
        status=status,
    )
    response["Cache-Control"] = "no-store"
    return response
