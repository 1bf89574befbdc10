"""`GET /api/token?realm=…&key=…&flush=false`: the seed's token endpoint."""

from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from tokens.services import token_get, token_test_fetch
from tokenserver.api import parse_query


class TokenQuerySerializer(serializers.Serializer):
    realm = serializers.CharField(max_length=50)
    key = serializers.CharField(max_length=100)
    flush = serializers.BooleanField(default=False)
    rejected = serializers.CharField(max_length=16384, required=False, trim_whitespace=False)


class TokenView(APIView):
    """
    A valid token for one secret: `{"token", "expires_in", "source"}`, with
    `expires_in` the remaining lifetime in milliseconds.
    """

    def get(self, request):
        params = parse_query(TokenQuerySerializer, request)
        result = token_get(
            params["realm"],
            params["key"],
            flush=params["flush"],
            rejected=params.get("rejected"),
            client=request.user.get_username(),
        )
        response = Response(
            {"token": result.token, "expires_in": result.expires_in_ms(), "source": result.source}
        )
        # A token must not be kept by a browser or a proxy in between.
        response["Cache-Control"] = "no-store"
        return response


class TestFetchSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=100)


class TestFetchView(APIView):
    """
    `POST /api/realm/<id>/test` with `{"key": …}`: a real fetch for one secret,
    stored like any other; answers what the upstream said and the token masked.
    """

    def post(self, request, realm_id):
        serializer = TestFetchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        outcome = token_test_fetch(
            realm_id, serializer.validated_data["key"], client=request.user.get_username()
        )
        return Response(outcome)
