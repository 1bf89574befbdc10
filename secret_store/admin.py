"""
The console's secret form: values are write-only. The page itself is
registered by tokens.admin, which adds what only the token layer knows (the
test fetch, the token's state).
"""

from django import forms
from django.contrib import admin

from secret_store.models import VALUE_FIELDS, Secret

#: Write-only fields: the form never renders their stored value.
SEALED_FIELDS = (*VALUE_FIELDS, "token")


class SecretForm(forms.ModelForm):
    """
    Secret values are write-only: the inputs are password fields that never
    render the stored value; leaving one blank keeps it, and "clear" empties it.
    """

    clear = forms.MultipleChoiceField(
        choices=[(name, name) for name in SEALED_FIELDS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Empty these stored values.",
    )

    class Meta:
        model = Secret
        fields = ("realm", "name", *SEALED_FIELDS, "token_expires_at", "enabled", "comment")
        widgets = {name: forms.PasswordInput(render_value=False) for name in SEALED_FIELDS}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in SEALED_FIELDS:
            field = self.fields[name]
            field.required = False
            field.initial = ""
            is_set = bool(self.instance.pk and getattr(self.instance, name))
            field.help_text = "Stored (leave blank to keep)." if is_set else "Not set."

    def clean(self):
        cleaned = super().clean()
        cleared = set(cleaned.get("clear") or [])
        for name in SEALED_FIELDS:
            if name in cleared:
                cleaned[name] = ""
            elif not cleaned.get(name) and self.instance.pk:
                cleaned[name] = getattr(self.instance, name)  # blank keeps the stored value
        return cleaned


class SecretAdmin(admin.ModelAdmin):
    """Secrets in the console, without the token layer's additions (see tokens.admin)."""

    form = SecretForm
    list_display = ("name", "realm", "enabled", "updated_at")
    list_filter = ("enabled", "realm")
    search_fields = ("name", "comment", "realm__id")
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("realm", "name", "enabled", "comment")}),
        ("Values (write-only)", {"fields": (*VALUE_FIELDS, "clear")}),
        ("Fixed token (realms of kind fixed)", {"fields": ("token", "token_expires_at")}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    def get_deleted_objects(self, objs, request):
        """
        Deleting a secret whose token chained realms' secrets are fetched with is
        refused, as for the API (secret_delete): they show as protected objects.
        """
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for secret in objs:
            for child in Secret.objects.taking_token_of(secret.realm_id, secret.name):
                protected.append(f"{child} (fetched with the token of {secret})")
        return deleted, counts, perms_needed, protected
