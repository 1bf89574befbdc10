"""Pieces every API module uses: the seed's list envelope and its paging."""

from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

#: Largest page a list returns, whatever pageSize asks for.
MAX_PAGE_SIZE = 100


class PageQuerySerializer(serializers.Serializer):
    """The seed's paging parameters: `page` (from 1) and `pageSize`."""

    page = serializers.IntegerField(min_value=1, max_value=1_000_000, default=1)
    pageSize = serializers.IntegerField(min_value=1, default=10)  # noqa: N815 - the seed's name


def parse_query(serializer_class, request) -> dict:
    """Validate query parameters with a serializer (400 with the field at fault)."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def paginated(queryset, params: dict, to_dict) -> Response:
    """`{"data": {"list": [...], "total": n}, "success": "ok"}`, as the seed answered."""
    size = min(params["pageSize"], MAX_PAGE_SIZE)
    start = (params["page"] - 1) * size
    total = queryset.count()
    items = [to_dict(obj) for obj in queryset[start : start + size]]
    return Response({"data": {"list": items, "total": total}, "success": "ok"})


def enveloped(data, *, status=200) -> Response:
    """A single object in the seed's envelope (the answer to its POSTs)."""
    return Response({"data": data, "success": "ok"}, status=status)


class ScopedAPIView(APIView):
    """An API view that names, per method, the scope a client needs (`scopes`)."""

    scopes: dict[str, str] = {}

    def required_scope(self, request) -> str | None:
        return self.scopes.get(request.method)
