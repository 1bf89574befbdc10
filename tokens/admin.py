from django.contrib import admin, messages
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
