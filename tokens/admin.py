import csv
from datetime import datetime

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import StreamingHttpResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import timezone

from secret_store.admin import SecretAdmin
from secret_store.models import Secret
from tokens.models import FetchLog, StoredToken
from tokens.services import token_test_fetch
from tokenserver.errors import ServiceError


@admin.register(Secret)
class SecretTokenAdmin(SecretAdmin):
    """The secret pages, with the test fetch (a real fetch through the token path)."""

    actions = ["test_fetch"]

    @admin.action(description="Test fetch: get a new token from the upstream now")
    def test_fetch(self, request, queryset):
        # A real fetch (WeChat invalidates the previous token), so it is stored.
        client = request.user.get_username()
        for secret in queryset.select_related("realm"):
            try:
                outcome = token_test_fetch(secret.realm_id, secret.name, client=client)
            except ServiceError as error:
                self.message_user(request, f"{secret}: {error.detail}", messages.ERROR)
                continue
            if not outcome["ok"]:
                self.message_user(request, f"{secret}: {outcome['detail']}", messages.ERROR)
                continue
            status = outcome["http_status"] or "-"
            lifetime = outcome["lifetime"] if outcome["lifetime"] is not None else "-"
            self.message_user(
                request,
                f"{secret}: ok (HTTP {status}), token {outcome['token']}, "
                f"lifetime {lifetime} s, source {outcome['source']}.",
                messages.SUCCESS,
            )


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: these records are written by the token path, not by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(StoredToken)
class StoredTokenAdmin(ReadOnlyAdmin):
    # The token itself is never shown, not even in part.
    list_display = ("secret", "fetched_at", "expires_at", "remaining_seconds")
    fields = ("secret", "fetched_at", "expires_at")
    list_select_related = ("secret",)
    search_fields = ("secret__name", "secret__realm__id")

    @admin.display(description="seconds left")
    def remaining_seconds(self, obj):
        return max(0, int(obj.remaining(timezone.now()).total_seconds()))


#: The fetch log's columns, in the CSV export and on the detail page.
EXPORT_COLUMNS = (
    "id",
    "created_at",
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
)


@admin.register(FetchLog)
class FetchLogAdmin(ReadOnlyAdmin):
    """
    The fetch log: read-only for everyone, superusers included (it is the
    audit trail), with a CSV export of what the list's filters and search show.
    """

    list_display = (
        "created_at",
        "realm",
        "key",
        "trigger",
        "outcome",
        "http_status",
        "error_code",
        "duration_ms",
        "lifetime",
        "client",
    )
    list_filter = ("outcome", "trigger", "realm", "client")
    search_fields = ("realm", "key", "error_code", "error_message", "client")
    date_hierarchy = "created_at"
    # The detail page: every recorded field, in the order of the CSV.
    fields = EXPORT_COLUMNS
    readonly_fields = EXPORT_COLUMNS

    #: Rows read per query while exporting.
    export_chunk_size = 2000

    def get_urls(self):
        own = [
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_csv),
                name="tokens_fetchlog_export",
            )
        ]
        return own + super().get_urls()

    def export_csv(self, request):
        """
        The rows the list shows with the same query string (filters, date,
        search), as CSV, streamed a chunk at a time.
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            # The list itself explains a bad filter (it redirects with ?e=1).
            changelist_url = reverse("admin:tokens_fetchlog_changelist")
            return redirect(f"{changelist_url}?{request.GET.urlencode()}")
        rows = csv_rows(changelist.get_queryset(request), chunk_size=self.export_chunk_size)
        response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
        filename = f"fetchlog-{timezone.now():%Y%m%d-%H%M%S}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "no-store"
        return response


class _Echo:
    """A file-like object csv.writer writes to, handing each line back."""

    def write(self, value):
        return value


#: Characters that make a spreadsheet read a cell as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str:
    """
    One CSV cell: text starting like a formula is prefixed with a quote, so a
    spreadsheet shows it instead of evaluating it (error messages and client
    names come from upstreams and operators).
    """
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    if isinstance(value, str) and text.startswith(_FORMULA_STARTS):
        return "'" + text
    return text


def csv_rows(queryset, *, chunk_size: int):
    """
    The header and the rows of `queryset` as CSV text, newest first,
    `chunk_size` rows per query. Each query continues after the last row of
    the one before (keyset paging on created_at, id) instead of streaming one
    cursor: MySQL's driver would load a whole result set into memory, and
    OFFSET would slow down with every page.
    """
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_COLUMNS)
    queryset = queryset.order_by("-created_at", "-id").values_list(*EXPORT_COLUMNS)
    created_at_index, id_index = EXPORT_COLUMNS.index("created_at"), EXPORT_COLUMNS.index("id")
    after = Q()
    while True:
        chunk = list(queryset.filter(after)[:chunk_size])
        if not chunk:
            return
        yield "".join(writer.writerow([csv_cell(value) for value in row]) for row in chunk)
        last_created_at, last_id = chunk[-1][created_at_index], chunk[-1][id_index]
        after = Q(created_at__lt=last_created_at) | Q(created_at=last_created_at, id__lt=last_id)
