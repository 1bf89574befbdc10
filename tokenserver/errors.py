"""
Errors that services raise and the API renders, and the API's error shape:
every error is JSON `{"error": "<code>", "detail": "<human sentence>",
"request_id": "<the X-Request-ID>"}` with the right status, plus `fields` for
validation errors and a `Retry-After` header where waiting helps. The request
id is the one in the answer's `X-Request-ID` header, in the log lines and on
the FetchLog rows of that request (tokenserver.request_id).
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from tokenserver import request_id

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A failure a service reports to its caller; the API renders it as is."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "bad_request"

    def __init__(self, detail: str, *, retry_after: int | None = None, **context):
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        #: Facts for callers that report more than the API body (the test fetch).
        self.context = context


class NotFound(ServiceError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ServiceError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class TooManyFlushes(ServiceError):
    """A refresh was forced again inside the realm's minimum interval (429)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "too_many_flushes"


class QuotaExhausted(ServiceError):
    """
    The secret's daily budget of upstream calls does not allow this call (429,
    `Retry-After`: until the provider's day turns). Issue 14, "The provider's quota
    guarded".
    """

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "quota_exhausted"


class SecretDisabled(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "secret_disabled"


class UpstreamError(ServiceError):
    """The upstream answered, but not with a token (502)."""

    status_code = status.HTTP_502_BAD_GATEWAY
    code = "upstream_error"


class UnsendableRequest(UpstreamError):
    """
    A secret's own values cannot be sent (a line break in a header, say): nothing
    was sent, and only that secret is affected (502, `invalid_request`).
    """

    code = "invalid_request"


class UpstreamUnavailable(ServiceError):
    """The upstream could not be reached in time (503, try again later)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "upstream_unavailable"


class LockWaitTimeout(ServiceError):
    """Another worker's refresh took longer than this request may wait (503)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "lock_timeout"


# DRF exception classes → our error codes.
_DRF_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
}


def _flatten(detail, prefix=""):
    """DRF's nested error detail → {"config.arguments[0].value": ["…"]}."""
    if isinstance(detail, dict):
        flat = {}
        for name, inner in detail.items():
            if name in ("non_field_errors", "__all__"):
                path = prefix
            elif isinstance(name, int):  # an item of a list
                path = f"{prefix}[{name}]"
            else:
                path = f"{prefix}.{name}" if prefix else name
            flat.update(_flatten(inner, path))
        return flat
    if (
        isinstance(detail, list)
        and detail
        and all(isinstance(item, (dict, list)) for item in detail)
    ):
        flat = {}
        for index, inner in enumerate(detail):
            if inner:
                flat.update(_flatten(inner, f"{prefix}[{index}]"))
        return flat
    messages = [str(item) for item in (detail if isinstance(detail, list) else [detail])]
    return {prefix or "non_field_errors": messages}


def with_request_id(body: dict) -> dict:
    """An error body with the current request's id added (every error shape carries it)."""
    current = request_id.current()
    if current:
        body["request_id"] = current
    return body


def validation_error_body(detail) -> dict:
    fields = _flatten(detail)
    first_field, first_messages = next(iter(fields.items()))
    sentence = first_messages[0] if first_messages else "Invalid input."
    if first_field != "non_field_errors":
        sentence = f"{first_field}: {sentence}"
    return {"error": "invalid", "detail": sentence, "fields": fields}


def error_parts(exc) -> tuple[int, dict, dict] | None:
    """
    (status, body, headers) of the answer to an error, in the
    `{"error", "detail"}` shape; None for an exception that is a real bug.
    """
    headers = {}
    if isinstance(exc, ServiceError):
        body = with_request_id({"error": exc.code, "detail": exc.detail})
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        return exc.status_code, body, headers

    if isinstance(exc, DjangoValidationError):
        # Model validation (full_clean) raised by a service: same shape as DRF's.
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if not isinstance(exc, exceptions.APIException):
        return None

    if isinstance(exc, exceptions.ValidationError):
        body = validation_error_body(exc.detail)
    else:
        code = next(
            (name for cls, name in _DRF_CODES.items() if isinstance(exc, cls)),
            str(exc.default_code),
        )
        body = {"error": code, "detail": str(exc.detail)}
    with_request_id(body)
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    return exc.status_code, body, headers


def api_exception_handler(exc, context):
    """DRF exception handler: every error in the `{"error", "detail"}` shape."""
    parts = error_parts(exc)
    if parts is None:
        return None  # a real bug: Django's 500 handler takes it (JSON under /api/)
    status_code, body, headers = parts
    set_rollback()
    return Response(body, status=status_code, headers=headers)


def error_response(exc) -> JsonResponse:
    """The same answer outside DRF (the token endpoint's fast path)."""
    status_code, body, headers = error_parts(exc)
    compact = {"separators": (",", ":"), "ensure_ascii": False}  # as DRF renders it
    return JsonResponse(body, status=status_code, headers=headers, json_dumps_params=compact)


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def json_or_default(default_view, status_code, code, detail):
    """Django error handlers that answer JSON under /api/ and HTML elsewhere."""

    def view(request, exception=None):
        if _is_api(request):
            body = with_request_id({"error": code, "detail": detail})
            return JsonResponse(body, status=status_code)
        if exception is None:
            return default_view(request)
        return default_view(request, exception)

    return view
