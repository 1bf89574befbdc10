from django.contrib import admin
from django.utils import timezone

from tokens.models import CachedToken, FetchLog


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: these records are written by the token path, not by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(CachedToken)
class CachedTokenAdmin(ReadOnlyAdmin):
    # The token itself is never shown, not even in part.
    list_display = ("secret", "fetched_at", "expires_at", "remaining_seconds")
    fields = ("secret", "fetched_at", "expires_at")
    list_select_related = ("secret",)
    search_fields = ("secret__key", "secret__realm__id")

    @admin.display(description="seconds left")
    def remaining_seconds(self, obj):
        return max(0, int(obj.remaining(timezone.now()).total_seconds()))


@admin.register(FetchLog)
class FetchLogAdmin(ReadOnlyAdmin):
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
    list_filter = ("outcome", "trigger", "realm")
    search_fields = ("realm", "key", "error_code", "error_message", "client")
    date_hierarchy = "created_at"
