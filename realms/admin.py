from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from realms.models import Argument, Realm
from realms.presets import presets, quota_text, realm_from_preset, reissue_text, values_text
from realms.services import realm_url_refusals
from tokenserver.errors import ServiceError


class PresetForm(forms.Form):
    """Add a realm from a preset: which provider, and the realm's id."""

    preset = forms.ChoiceField()
    realm_id = forms.SlugField(
        label="Realm id",
        max_length=50,
        required=False,
        help_text="What apps will name the realm; blank: the preset's name.",
    )
    url = forms.URLField(
        label="Token endpoint",
        max_length=2000,
        required=False,
        assume_scheme="https",
        help_text="Blank: the preset's. Give it where the preset's help says so (a tenant in "
        "the URL, such as Entra ID's YOUR_TENANT_ID; a sandbox; your own OAuth 2.0 server).",
    )
    parent = forms.SlugField(
        label="Parent realm",
        max_length=50,
        required=False,
        help_text="Chained presets (tickets) only: the realm whose tokens the tickets are "
        "fetched with; blank: the preset's (wechat_official_account, wecom).",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["preset"].choices = [
            (name, f"{preset['title']} ({name})") for name, preset in presets().items()
        ]


class RealmForm(forms.ModelForm):
    """The realm form, with the upstream guard's check of its URLs."""

    class Meta:
        model = Realm
        fields = ()  # RealmAdmin.fieldsets choose the fields shown

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            # The instance gets the cleaned values only after clean(): check those.
            typed = Realm(url=cleaned.get("url") or "", code_url=cleaned.get("code_url") or "")
            for field, refusal in realm_url_refusals(typed).items():
                self.add_error(field, refusal)
        return cleaned


class ArgumentForm(forms.ModelForm):
    """One argument of the token request, with help on where it goes and what it may say."""

    class Meta:
        model = Argument
        fields = ("order", "place", "name", "value")
        help_texts = {
            "place": "url: a query parameter; header: an HTTP header; body: a field of the "
            "JSON or form body (content type above); basic: HTTP Basic credentials, "
            "value user:password (name unused).",
            "value": "A literal, or a template over the secret's values: $key_1 alone, "
            "${key_1} inside text (Bearer ${key_1}), $$ for a literal $. An argument that "
            "is only $key_3 is left out when the secret has no key_3. $jwt: the assertion "
            "signed with the realm's JWT settings (above) for each fetch. $parent_token: "
            "the current token of the parent secret (a chained realm, above). $force_refresh: "
            "true only when the fetch answers a token reported rejected (rejected=), else "
            "false; alone in a JSON body it is sent as a JSON boolean.",
        }


class ArgumentInline(admin.TabularInline):
    model = Argument
    form = ArgumentForm
    extra = 1
    fields = ("order", "place", "name", "value")


class RealmAdmin(admin.ModelAdmin):
    """
    The realm pages. Registered by tokens.admin, which adds what only the token
    layer knows (how the realm's secrets' tokens stand), as for secrets.
    """

    form = RealmForm
    list_display = ("id", "kind", "parent", "url", "method", "refresh_margin", "updated_at")
    list_filter = ("kind", "method")
    search_fields = ("id", "comment", "url")
    inlines = [ArgumentInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("id", "kind", "comment")}),
        ("Request", {"fields": ("url", "method", "content_type", "code_url", "timeout")}),
        (
            "Chained realm: a token made from another secret's token",
            {
                "fields": ("parent", "parent_key", "parent_rejected_codes"),
                "description": "Arguments send the parent secret's current token as "
                "$parent_token, e.g. access_token=$parent_token for WeChat's JS-SDK ticket. "
                "The parent's token is fetched (or reused) first; when this realm's upstream "
                "refuses it, the parent is refreshed once and the call retried once; a new "
                "parent token refreshes this realm's tokens ahead.",
            },
        ),
        (
            "JWT assertion (RFC 7523: JWT-bearer grant, private_key_jwt)",
            {
                "fields": ("jwt",),
                "description": "Arguments send the assertion signed with these settings as "
                "$jwt: assertion=$jwt for the JWT-bearer grant, client_assertion=$jwt for "
                "private_key_jwt client authentication.",
            },
        ),
        (
            "Answer",
            {
                "fields": (
                    "token_path",
                    "expires_in_path",
                    "expires_in_unit",
                    "expires_at_path",
                    "default_ttl",
                    "success_conditions",
                    "error_code_path",
                    "error_message_path",
                )
            },
        ),
        ("Refresh", {"fields": ("refresh_margin", "reissue_window", "min_flush_interval")}),
        (
            "Protecting the upstream",
            {
                "fields": (
                    "max_concurrency",
                    "max_retries",
                    "rate_limit_codes",
                    "permanent_error_codes",
                    "permanent_error_ttl",
                    "breaker_threshold",
                    "breaker_cooldown",
                )
            },
        ),
        (
            "Daily quota",
            {
                "fields": ("daily_budget", "budget_alert_percent", "budget_day_starts"),
                "description": "Upstream calls each secret may make per provider day, counted "
                "across every worker and host. At the budget, flushes and rejected-token "
                "reports get 429 quota_exhausted until the day turns, a valid token is still "
                "served, and the refresher keeps what it needs to keep tokens alive.",
            },
        ),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    def get_readonly_fields(self, request, obj=None):
        # The id is the primary key apps use: fixed once created.
        return (*self.readonly_fields, "id", "chained_realms") if obj else self.readonly_fields

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or not obj.children.exists():
            return fieldsets
        # A parent: the realms fetched with its tokens, under the chain's own settings.
        return tuple(
            (name, {**options, "fields": (*options["fields"], "chained_realms")})
            if "parent" in options["fields"]
            else (name, options)
            for name, options in fieldsets
        )

    @admin.display(description="realms fetched with its tokens")
    def chained_realms(self, obj):
        return ", ".join(sorted(obj.children.values_list("id", flat=True))) or "-"

    def get_urls(self):
        own = [
            path(
                "add-from-preset/",
                self.admin_site.admin_view(self.add_from_preset),
                name="realms_realm_add_from_preset",
            )
        ]
        return own + super().get_urls()

    def add_from_preset(self, request):
        """The console's "Add realm from preset" page."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PresetForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            name, realm_id = form.cleaned_data["preset"], form.cleaned_data["realm_id"] or None
            try:
                realm = realm_from_preset(
                    name,
                    realm_id,
                    url=form.cleaned_data["url"] or None,
                    parent=form.cleaned_data["parent"] or None,
                )
            except (ServiceError, ValidationError) as error:
                form.add_error(None, getattr(error, "detail", None) or "; ".join(error.messages))
            else:
                values = values_text(presets()[name])
                self.message_user(
                    request,
                    f"Realm {realm.id} created from preset {name}. Its secrets take: {values}.",
                    messages.SUCCESS,
                )
                return redirect(reverse("admin:realms_realm_change", args=[realm.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Add realm from preset",
            "form": form,
            "opts": self.model._meta,
            "presets": [
                {
                    "name": name,
                    **preset,
                    "quota_text": quota_text(preset["quota"]),
                    "reissue_text": reissue_text(preset["reissue_window"]),
                }
                for name, preset in presets().items()
            ],
        }
        return TemplateResponse(request, "admin/realms/realm/add_from_preset.html", context)
