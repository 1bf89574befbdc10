from django import forms
from django.contrib import admin, messages

from clients.access_tokens import client_revoke_tokens
from clients.models import SCOPE_CHOICES, Client, Revocation
from clients.services import client_delete, client_save


class ClientForm(forms.ModelForm):
    """Scopes as checkboxes, patterns one per line."""

    scopes = forms.MultipleChoiceField(
        choices=SCOPE_CHOICES, widget=forms.CheckboxSelectMultiple, required=False
    )
    allow = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        required=False,
        help_text="One REALM/KEY pattern per line, e.g. wxgzh/* or */billing-*.",
    )

    class Meta:
        model = Client
        fields = ("name", "enabled", "scopes", "allow", "comment")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["allow"] = "\n".join(self.instance.allow)

    def clean_allow(self):
        return [line.strip() for line in self.cleaned_data["allow"].splitlines() if line.strip()]


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    """
    Clients are created with `manage.py createclient`, which shows the secret
    once; the console never shows a secret, so it edits rights only.
    """

    form = ClientForm
    list_display = ("name", "client_id", "enabled", "scope_list", "allow_list", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("name", "client_id", "comment")
    readonly_fields = ("client_id", "created_at", "updated_at")
    actions = ["revoke_tokens"]

    def has_add_permission(self, request):
        return False  # manage.py createclient NAME --scope … --allow …

    def save_model(self, request, obj, form, change):
        client_save(obj)  # changed rights revoke the tokens issued before

    def delete_model(self, request, obj):
        client_delete(obj)

    def delete_queryset(self, request, queryset):
        for client in queryset:
            client_delete(client)

    @admin.display(description="scopes")
    def scope_list(self, obj):
        return " ".join(obj.scopes)

    @admin.display(description="allowed")
    def allow_list(self, obj):
        return " ".join(obj.allow)

    @admin.action(description="Revoke their access tokens now")
    def revoke_tokens(self, request, queryset):
        for client in queryset:
            client_revoke_tokens(client.client_id)
        self.message_user(
            request, f"Revoked the tokens of {queryset.count()} client(s).", messages.SUCCESS
        )


@admin.register(Revocation)
class RevocationAdmin(admin.ModelAdmin):
    list_display = ("kind", "value", "revoked_at", "expires_at")
    list_filter = ("kind",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
