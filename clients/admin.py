from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.debug import sensitive_post_parameters

from clients.access_tokens import InvalidAccessToken, access_token_revoke
from clients.models import SCOPE_CHOICES, Client, Revocation
from clients.services import client_create, client_delete, client_revoke, client_save
from tokenserver.crypto import InvalidToken, decrypt, encrypt

#: Session key of a new client's secret, between the add form and the page that shows it.
NEW_SECRET_SESSION_KEY = "clients.new_secret"


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

    def clean_scopes(self):
        scopes = self.cleaned_data["scopes"]
        if not scopes and self.instance.pk is None:
            raise forms.ValidationError("Grant at least one scope.")  # as createclient
        return scopes

    def clean_allow(self):
        return [line.strip() for line in self.cleaned_data["allow"].splitlines() if line.strip()]


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    """
    Clients: created here or with `manage.py createclient`; either shows the
    secret once (only its digest is kept). Changed rights, a deletion and
    the revoke actions revoke the client's access tokens.
    """

    form = ClientForm
    list_display = ("name", "client_id", "enabled", "scope_list", "allow_list", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("name", "client_id", "comment")
    readonly_fields = ("client_id", "created_at", "updated_at")
    actions = ["revoke_tokens", "revoke_and_disable"]

    def get_fields(self, request, obj=None):
        if obj is None:  # a new client: enabled, with an id and dates of its own
            return ("name", "scopes", "allow", "comment")
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def get_urls(self):
        own = [
            path(
                "<path:object_id>/secret/",
                self.admin_site.admin_view(self.secret_view),
                name="clients_client_secret",
            )
        ]
        return own + super().get_urls()

    def save_model(self, request, obj, form, change):
        if change:
            client_save(obj)  # changed rights revoke the tokens issued before
            return
        created, secret = client_create(
            obj.name, scopes=obj.scopes, allow=obj.allow, comment=obj.comment
        )
        # The admin goes on with `obj` (history, redirect): make it the saved client.
        obj.pk = created.pk
        obj.refresh_from_db()
        # Kept for the next page only, and encrypted: sessions are stored readable.
        request.session[NEW_SECRET_SESSION_KEY] = {
            "client_id": created.client_id,
            "secret": encrypt(secret),
        }

    def response_add(self, request, obj, post_url_continue=None):
        # Whichever save button: the next page is the one that shows the secret.
        return redirect(reverse("admin:clients_client_secret", args=[obj.pk]))

    def secret_view(self, request, object_id):
        """
        The page after adding a client: its secret, once. The session entry is
        removed as it is read, so a reload (or any later visit) says the
        secret can no longer be shown.
        """
        client = get_object_or_404(Client, pk=object_id)
        if not self.has_view_permission(request, client):
            raise PermissionDenied
        secret = None
        entry = request.session.get(NEW_SECRET_SESSION_KEY)
        if entry and entry.get("client_id") == client.client_id:
            del request.session[NEW_SECRET_SESSION_KEY]
            try:
                secret = decrypt(entry["secret"])
            except InvalidToken:  # the keys were rotated in between
                secret = None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Client {client.name}" + (" created" if secret else ""),
            "opts": self.model._meta,
            "client": client,
            "secret": secret,
        }
        response = TemplateResponse(request, "admin/clients/client/secret.html", context)
        response["Cache-Control"] = "no-store"
        return response

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

    @admin.action(description="Revoke their access tokens now", permissions=["change"])
    def revoke_tokens(self, request, queryset):
        for client in queryset:
            client_revoke(client.client_id)
        self.message_user(
            request,
            f"Revoked the access tokens of {len(queryset)} client(s); they may get new ones.",
            messages.SUCCESS,
        )

    @admin.action(description="Revoke their access tokens and disable them", permissions=["change"])
    def revoke_and_disable(self, request, queryset):
        for client in queryset:
            client_revoke(client.client_id, disable=True)
        self.message_user(
            request,
            f"Revoked the access tokens of {len(queryset)} client(s) and disabled them.",
            messages.SUCCESS,
        )


class RevokeTokenForm(forms.Form):
    token = forms.CharField(
        label="Access token",
        strip=True,
        # Never echoed back into the page (a refused one stays out of the HTML too).
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "size": 80}),
        help_text="The whole access token (tsat1.…). Every worker refuses it within a second.",
    )


@admin.register(Revocation)
class RevocationAdmin(admin.ModelAdmin):
    list_display = ("kind", "value", "revoked_at", "expires_at")
    list_filter = ("kind",)

    def has_add_permission(self, request):
        return False  # rows come from the revoke actions and the revoke-token page

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Deleting a revocation would quietly make a revoked token valid again: rows
        # go away only when they expire with the tokens they name.
        return False

    def may_revoke(self, request) -> bool:
        """Whether the user may add revocations (the model permission; no add form)."""
        opts = self.model._meta
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('add', opts)}")

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "may_revoke": self.may_revoke(request)}
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        own = [
            path(
                "revoke-token/",
                self.admin_site.admin_view(
                    sensitive_post_parameters("token")(self.revoke_token_view)
                ),
                name="clients_revocation_revoke_token",
            )
        ]
        return own + super().get_urls()

    def revoke_token_view(self, request):
        """The console's "Revoke an access token" page."""
        if not self.may_revoke(request):
            raise PermissionDenied
        form = RevokeTokenForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                claims = access_token_revoke(form.cleaned_data["token"])
            except InvalidAccessToken as error:
                form.add_error("token", f"Not an access token of this server ({error.reason}).")
            else:
                self.message_user(
                    request,
                    f"Revoked access token {claims.token_id} of client {claims.client_id}.",
                    messages.SUCCESS,
                )
                return redirect(reverse("admin:clients_revocation_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Revoke an access token",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/clients/revocation/revoke_token.html", context)
