from django.contrib import admin
from django.db import models

from realms.models import Argument, Realm


class ArgumentInline(admin.TabularInline):
    model = Argument
    extra = 1
    fields = ("order", "place", "name", "value")


@admin.register(Realm)
class RealmAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "url", "method", "refresh_margin", "updated_at")
    list_filter = ("kind", "method")
    search_fields = ("id", "comment", "url")
    inlines = [ArgumentInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("id", "kind", "comment")}),
        ("Request", {"fields": ("url", "method", "content_type", "code_url", "timeout")}),
        (
            "Answer",
            {
                "fields": (
                    "token_path",
                    "expires_in_path",
                    "expires_in_unit",
                    "default_ttl",
                    "success_conditions",
                    "error_code_path",
                    "error_message_path",
                )
            },
        ),
        ("Refresh", {"fields": ("refresh_margin", "max_concurrency")}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    def get_readonly_fields(self, request, obj=None):
        # The id is the primary key apps use: fixed once created.
        return (*self.readonly_fields, "id") if obj else self.readonly_fields
