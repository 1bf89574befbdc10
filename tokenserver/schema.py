"""
What the OpenAPI description (drf-spectacular) shares across the API: the error
body and the statuses that carry it, the seed's envelopes around objects and
pages, and `described`, which the apps' `schema` modules use to describe their
views.

Loaded only when a schema is generated, never in a worker that has not served
one (tokenserver.openapi says why): the views carry no drf-spectacular
annotation; each app's `schema` module describes them with
OpenApiViewExtensions, registered when tokens.schema.load_descriptions (the
preprocessing hook in SPECTACULAR_SETTINGS) imports them. Nothing a worker
imports at start may import a `schema` module (tokenserver/tests/test_openapi.py
checks it in a fresh process).

The serializers here and in the `schema` modules only describe answers (the
views build them as dicts): Schemathesis, run against the live schema in the
tests, checks that what is served matches what is described.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema_view, inline_serializer
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """Every error the API answers (tokenserver.errors)."""

    error = serializers.CharField(
        help_text="A stable code: invalid, malformed_request, not_authenticated, "
        "authentication_failed, permission_denied, not_found, method_not_allowed, "
        "not_acceptable, unsupported_media_type, throttled, conflict, too_many_flushes, "
        "secret_disabled, upstream_error, invalid_request, upstream_unavailable, "
        "lock_timeout, unsupported_grant_type, invalid_scope, invalid_client, "
        "too_many_failures."
    )
    detail = serializers.CharField(help_text="What went wrong, as a sentence for a person.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text='`invalid` only: messages per field, e.g. {"config.url": ["…"]}.',
    )
    error_description = serializers.CharField(
        required=False,
        help_text="`POST /api/auth/token` only: `detail` again, for OAuth 2.0 libraries.",
    )
    request_id = serializers.CharField(
        help_text="The request's id, also in the X-Request-ID header, on its log lines and "
        "on the fetch-log rows of the upstream calls it caused: quote it when reporting.",
    )


#: What each error status means across the API (the codes it carries).
ERROR_MEANINGS = {
    400: "Invalid input (`invalid`, with `fields`) or a body that cannot be read "
    "(`malformed_request`).",
    401: "No credentials, or credentials that do not verify (`not_authenticated`, "
    "`authentication_failed`; with `WWW-Authenticate`).",
    403: "The caller may not do this (`permission_denied`: not staff, a missing scope, "
    "a pattern that does not cover the secret).",
    404: "No such object (`not_found`).",
    406: "The `Accept` header asks for something other than JSON (`not_acceptable`).",
    409: "The object is still in use (`conflict`).",
    415: "The body is neither JSON nor a form (`unsupported_media_type`).",
    429: "Too many calls (`throttled`) or failed sign-ins; wait for `Retry-After` seconds.",
    502: "The upstream answered, but not with a token (`upstream_error`, "
    "`invalid_request`), or its address is refused.",
    503: "The upstream cannot be reached or is not called now (its breaker is open, it asked "
    "to back off, every slot is busy: `upstream_unavailable`), or another worker's refresh "
    "is slow (`lock_timeout`); retry after `Retry-After` seconds.",
}

#: What every authenticated endpoint may answer, whatever it does.
AUTHENTICATED = (401, 403, 406, 429)
#: What an endpoint that reads a body may answer besides.
WITH_BODY = (400, 415)


def error_responses(*statuses: int, **meanings: str) -> dict[int, OpenApiResponse]:
    """
    The error answers of an endpoint, each the error body: `statuses` with
    their usual meaning, `meanings` ("s404"="…") for a status this endpoint
    means in its own way.
    """
    own = {int(name.removeprefix("s")): text for name, text in meanings.items()}
    answers = {}
    for status in sorted({*statuses, *own}):
        answers[status] = OpenApiResponse(
            ErrorSerializer, description=own.get(status) or ERROR_MEANINGS[status]
        )
    return answers


SUCCESS = serializers.ChoiceField(choices=["ok"], help_text="Always `ok` (the seed's envelope).")


def enveloped(serializer, name: str):
    """`{"data": <object>, "success": "ok"}`: the seed's answer to its POSTs."""
    return inline_serializer(name=name, fields={"data": serializer, "success": SUCCESS})


def paged(serializer_class, name: str):
    """`{"data": {"list": [...], "total": n}, "success": "ok"}`: the seed's lists."""
    page = inline_serializer(
        name=f"{name}Data",
        fields={
            "list": serializer_class(many=True),
            "total": serializers.IntegerField(min_value=0, help_text="Matches on every page."),
        },
    )
    return inline_serializer(name=name, fields={"data": page, "success": SUCCESS})


def described(view, **methods):
    """
    For an OpenApiViewExtension's view_replacement(): a subclass of `view` with
    `methods` ({"get": extend_schema(...), ...}) applied as @extend_schema_view
    would. A new subclass each call: the view itself, which serves requests,
    stays unannotated (extend_schema_view wraps inherited methods).
    """
    replacement = type(view.__name__, (view,), {"__module__": view.__module__})
    return extend_schema_view(**methods)(replacement)
