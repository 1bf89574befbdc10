"""
The token endpoint's fast path: `GET /api/token` from an app with a bearer
access token, answered before the rest of the middleware and DRF.

The common call, a valid bearer token asking for a plain (not flushed) token,
costs: one access-token decrypt (no database query), one cache round trip
that counts the call against the client's rate and reads the token entry
together (tokens.cache.entry_read_counted), and the token path from there.
Every other case (another method or path, no bearer token, an invalid one, a
missing scope or pattern, a flush, odd parameters) goes on to the DRF view,
which answers exactly as it always has; a call already counted here is not
counted again there (clients.throttles.COUNTED).
"""

import json

from django.http import HttpResponse
from rest_framework.exceptions import Throttled

from clients.access_tokens import InvalidAccessToken, access_token_verify
from clients.scopes import TOKEN_READ, pattern_allows
from clients.throttles import COUNTED, Verdict, rate_counter, token_rate, token_rate_hit
from tokens import cache as token_cache
from tokens.api import REJECTED_META  # a rejected token in a header: the view's business
from tokens.services import token_get
from tokenserver.errors import ServiceError, error_response

PATH = "/api/token"

#: The values DRF's BooleanField reads as false ("flush=false" is the seed's usage).
FALSE_VALUES = {"f", "F", "n", "N", "no", "No", "NO", "false", "False", "FALSE"}
FALSE_VALUES |= {"off", "Off", "OFF", "0"}

#: Longest realm id and secret name (the models' max_length).
MAX_REALM, MAX_KEY = 50, 100


def _plain_query(query, meta) -> tuple[str, str] | None:
    """(realm, key) of a plain token request whose parameters need no more checking, else None."""
    realm, key = query.get("realm"), query.get("key")
    if not realm or not key or "rejected" in query or REJECTED_META in meta:
        return None
    if query.get("flush", "false") not in FALSE_VALUES:
        return None
    for value, longest in ((realm, MAX_REALM), (key, MAX_KEY)):
        if len(value) > longest or value != value.strip() or "\x00" in value:
            return None  # the DRF view says what is wrong with it
    return realm, key


class TokenFastPath:
    """Django middleware; place it right after SecurityMiddleware."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info != PATH or request.method != "GET":
            return self.get_response(request)
        parts = request.META.get("HTTP_AUTHORIZATION", "").split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return self.get_response(request)  # staff, or a malformed header: DRF says so
        try:
            claims = access_token_verify(parts[1])
        except InvalidAccessToken:
            return self.get_response(request)
        if TOKEN_READ not in claims.scopes:
            return self.get_response(request)

        # The DRF view counts a call after authentication and scopes, before
        # anything else: so here.
        rate = token_rate()
        plain = _plain_query(request.GET, request.META)
        read = {}  # the cache entry, when read with the count
        if rate is None:
            verdict = Verdict(True)
        elif plain is None:
            verdict = token_rate_hit(claims.client_id)
        else:
            counted, read["cached"] = token_cache.entry_read_counted(
                *plain, counter=rate_counter(claims.client_id), window=rate.period
            )
            verdict = Verdict.of(rate, counted)
        setattr(request, COUNTED, True)
        if not verdict.allowed:
            return error_response(Throttled(wait=verdict.retry_after))
        if plain is None or not pattern_allows(claims.allow, *plain):
            return self.get_response(request)

        try:
            result = token_get(*plain, client=claims.client_id, **read)
        except ServiceError as error:
            return error_response(error)
        body = {
            "token": result.token,
            "expires_in": result.expires_in_ms(),
            "source": result.source,
        }
        response = HttpResponse(
            json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            content_type="application/json",
        )
        # A token must not be kept by a browser or a proxy in between.
        response["Cache-Control"] = "no-store"
        return response
