import csv
import time
from datetime import UTC, datetime

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from realms.admin import RealmAdmin
from realms.models import Realm
from secret_store.admin import SecretAdmin
from secret_store.models import Secret
from secret_store.services import secret_set_enabled
from tokens import permanent_errors, quota
from tokens.models import FetchLog, Notification, RefreshHealth, StoredToken, TokenState
from tokens.reissue import realm_reissue_warning, reissue_summary
from tokens.services import token_clear, token_test_fetch
from tokens.states import (
    RECENT_FETCHES,
    realm_token_counts,
    secret_chain,
    secret_recent_fetches,
    secret_refresh_health,
    secret_token_fingerprint,
    secret_token_state,
    secrets_in_state,
    secrets_with_token_facts,
)
from tokenserver.errors import ServiceError


def _local(moment) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S}"


class TokenStateFilter(admin.SimpleListFilter):
    title = "token state"
    parameter_name = "token_state"

    def lookups(self, request, model_admin):
        return [(state.value, state.value.replace("_", " ")) for state in TokenState]

    def queryset(self, request, queryset):
        if self.value() in TokenState.values:
            return secrets_in_state(queryset, self.value())
        return queryset


class RefreshFilter(admin.SimpleListFilter):
    """Secrets whose refreshes are failing, or not (tokens.refresh_health)."""

    title = "refresh"
    parameter_name = "refresh"

    def lookups(self, request, model_admin):
        return RefreshHealth.State.choices

    def queryset(self, request, queryset):
        if self.value() == RefreshHealth.State.FAILING:
            return queryset.filter(refresh_health__state=RefreshHealth.State.FAILING)
        if self.value() == RefreshHealth.State.OK:
            return queryset.exclude(refresh_health__state=RefreshHealth.State.FAILING)
        return queryset


class LastOutcomeFilter(admin.SimpleListFilter):
    title = "last fetch"
    parameter_name = "last_fetch"
    NONE = "none"

    def lookups(self, request, model_admin):
        return [*FetchLog.Outcome.choices, (self.NONE, "no fetch yet")]

    def queryset(self, request, queryset):
        # The outcome is SecretTokenAdmin.get_queryset's annotation (a subquery).
        if self.value() == self.NONE:
            return queryset.filter(last_fetch_outcome__isnull=True)
        if self.value() in FetchLog.Outcome.values:
            return queryset.filter(last_fetch_outcome=self.value())
        return queryset


@admin.register(Secret)
class SecretTokenAdmin(SecretAdmin):
    """
    The secret pages, with what only the token layer knows: each token's state
    and last fetch (tokens.states, as the API tells them), refreshing or
    clearing it, and the secret's recent fetches. Never a token: a fingerprint.
    """

    change_form_template = "admin/tokens/secret/change_form.html"
    list_display = (
        "name",
        "realm",
        "token_state",
        "refresh",
        "last_fetch",
        "calls_today",
        "enabled",
    )
    list_filter = ("realm", TokenStateFilter, RefreshFilter, LastOutcomeFilter, "enabled")
    # Named, so the changelist does not select_related() everything instead.
    list_select_related = ("realm", "stored_token", "refresh_health")
    actions = ["test_fetch", "clear_token", "enable", "disable"]
    token_fields = (
        "token_state_detail",
        "token_expires",
        "token_fingerprint",
        "refresh_detail",
        "quota_detail",
        "recent_fetches",
    )

    def get_queryset(self, request):
        # One query for the whole page: the realm, the stored token and the last fetch.
        return secrets_with_token_facts(super().get_queryset(request))

    def get_changelist_instance(self, request):
        # The calls of today of the whole page in one Redis round trip (or query),
        # not one per row: the rows are read here once, and keep their usage.
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)
        usages = quota.usage_many(rows)
        for row in rows:
            row.usage_today = usages[row.pk]
        return changelist

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # Past the alert threshold: a warning above the page (issue 14).
        if request.method == "GET":
            secret = self.get_object(request, object_id)
            if secret is not None and secret.realm.daily_budget is not None:
                usage = quota.usage(secret)
                if usage.past_alert:
                    self.message_user(request, _quota_text(usage), messages.WARNING)
        return super().change_view(request, object_id, form_url, extra_context)

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), *self.token_fields, "chain")

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        token = self.token_fields[:4]
        if obj.realm.parent_id or Secret.objects.taking_token_of(obj.realm_id, obj.name).exists():
            token = (*token, "chain")  # a chained realm's secret, or a parent (issue 14)
        return (
            *fieldsets,
            ("Token (read-only)", {"fields": token}),
            ("Daily quota", {"fields": self.token_fields[4:5]}),
            ("Recent fetches", {"fields": self.token_fields[5:]}),
        )

    # --- Columns and read-only fields -----------------------------------------

    @admin.display(description="token")
    def token_state(self, obj):
        return secret_token_state(obj).label()

    @admin.display(description="refresh", ordering="refresh_health__failing_since")
    def refresh(self, obj):
        # The same state the notifications and the dashboard tell (tokens.refresh_health).
        health = secret_refresh_health(obj)
        return health.label() if health else "-"

    @admin.display(description="refresh")
    def refresh_detail(self, obj):
        health = secret_refresh_health(obj)
        if health is None:
            return "No refresh has failed."
        if health.failing:
            text = f"{health.label()}; last error: {health.error_text() or '-'}"
            # The secret's page only (one query): a remembered permanent error (issue 14).
            remembered = permanent_errors.loaded(obj, time.time())
            if remembered:
                until = _local(datetime.fromtimestamp(remembered.until, tz=UTC))
                text += (
                    f". Answered from memory until {until}, without calling the upstream; "
                    "saving the secret or its realm, or a test fetch, tries again."
                )
            return text
        recovered = _local(health.changed_at)
        return f"ok since {recovered} (the last failure: {health.error_text() or '-'})"

    @admin.display(description="calls today / budget")
    def calls_today(self, obj):
        usage = getattr(obj, "usage_today", None) or quota.usage(obj)
        return "-" if obj.realm.kind == Realm.Kind.FIXED else usage.label()

    @admin.display(description="calls today")
    def quota_detail(self, obj):
        if obj.realm.kind == Realm.Kind.FIXED:
            return "A fixed token: no upstream calls."
        return _quota_text(quota.usage(obj))

    @admin.display(description="last fetch", ordering="last_fetch_at")
    def last_fetch(self, obj):
        state = secret_token_state(obj)
        if state.last_fetch_outcome is None:
            return "-"
        return f"{state.last_fetch_outcome}, {_local(state.last_fetch_at)}"

    @admin.display(description="state")
    def token_state_detail(self, obj):
        return secret_token_state(obj).label()

    @admin.display(description="expires at")
    def token_expires(self, obj):
        expires_at = secret_token_state(obj).expires_at
        return _local(expires_at) if expires_at else "-"

    @admin.display(description="fingerprint")
    def token_fingerprint(self, obj):
        # The first 8 hex digits of the token's SHA-256: tells tokens apart, reveals nothing.
        return secret_token_fingerprint(obj) or "-"

    @admin.display(description="chain")
    def chain(self, obj):
        """
        The parent secret this one's token is fetched with (a link), and whether it was
        fetched with the parent's current token; the secrets fetched with this one's.
        Fingerprints only.
        """
        facts = secret_chain(obj)
        if facts is None:
            return "-"
        parts = []
        if facts.parent_name:
            if facts.parent is None:
                parts.append(
                    format_html("Fetched with the token of {} (missing).", facts.parent_name)
                )
            else:
                link = format_html(
                    '<a href="{}">{}</a>',
                    reverse("admin:secrets_secret_change", args=[facts.parent.pk]),
                    facts.parent_name,
                )
                made = facts.fetched_with or "-"
                current = facts.parent_fingerprint or "none yet"
                note = (
                    "the parent has another token since: it is refreshed ahead"
                    if facts.behind
                    else "current"
                )
                parts.append(
                    format_html(
                        "Fetched with the token of {} (its token: {}; this one was fetched "
                        "with {}: {}).",
                        link,
                        current,
                        made,
                        note,
                    )
                )
        if facts.children:
            links = format_html_join(
                ", ",
                '<a href="{}">{}</a>',
                (
                    (reverse("admin:secrets_secret_change", args=[child.pk]), str(child))
                    for child in facts.children
                ),
            )
            parts.append(format_html("Its token fetches the tokens of {}.", links))
        return format_html_join(" ", "{}", ((part,) for part in parts))

    @admin.display(description=f"last {RECENT_FETCHES} fetches")
    def recent_fetches(self, obj):
        rows = secret_recent_fetches(obj)
        if not rows:
            return "No fetch yet."
        head = format_html_join(
            "",
            "<th>{}</th>",
            (
                (name,)
                for name in ("time", "trigger", "outcome", "HTTP", "error", "ms", "lifetime", "by")
            ),
        )
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    _local(log.created_at),
                    log.trigger,
                    log.outcome,
                    log.http_status or "-",
                    " ".join(filter(None, (log.error_code, log.error_message))) or "-",
                    log.duration_ms,
                    "-" if log.lifetime is None else log.lifetime,
                    log.client or "-",
                )
                for log in rows
            ),
        )
        return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)

    # --- Actions ----------------------------------------------------------------

    @admin.action(description="Refresh now: fetch a new token from the upstream (test fetch)")
    def test_fetch(self, request, queryset):
        # A real fetch (WeChat invalidates the previous token), so it is stored.
        for secret in queryset:
            self._test_fetch(request, secret)

    def _test_fetch(self, request, secret):
        """One secret's test fetch (token_test_fetch, trigger admin), told as a message."""
        try:
            outcome = token_test_fetch(
                secret.realm_id, secret.name, client=request.user.get_username()
            )
        except ServiceError as error:
            self.message_user(request, f"{secret}: {error.detail}", messages.ERROR)
            return
        if not outcome["ok"]:
            self.message_user(request, f"{secret}: {outcome['detail']}", messages.ERROR)
            return
        status = outcome["http_status"] or "-"
        lifetime = outcome["lifetime"] if outcome["lifetime"] is not None else "-"
        # No part of the token: its fingerprint is on the secret's page.
        self.message_user(
            request,
            f"{secret}: ok (HTTP {status}), lifetime {lifetime} s granted, "
            f"source {outcome['source']}.",
            messages.SUCCESS,
        )

    @admin.action(description="Clear the stored and cached token")
    def clear_token(self, request, queryset):
        client = request.user.get_username()
        for secret in queryset:
            cleared = token_clear(secret, client=client)
            what = "token cleared" if cleared else "no stored token; cache entry dropped"
            self.message_user(request, f"{secret}: {what}.", messages.SUCCESS)

    @admin.action(description="Enable")
    def enable(self, request, queryset):
        changed = sum(secret_set_enabled(secret, True) for secret in queryset)
        self.message_user(request, f"{changed} secret(s) enabled.", messages.SUCCESS)

    @admin.action(description="Disable (apps get 403 at once)")
    def disable(self, request, queryset):
        changed = sum(secret_set_enabled(secret, False) for secret in queryset)
        self.message_user(request, f"{changed} secret(s) disabled.", messages.SUCCESS)

    # --- The change page's "Test fetch" button ------------------------------------

    def get_urls(self):
        own = [
            path(
                "<path:object_id>/test-fetch/",
                self.admin_site.admin_view(self.test_fetch_view),
                name="secrets_secret_test_fetch",
            )
        ]
        return own + super().get_urls()

    def test_fetch_view(self, request, object_id):
        """POST: the test fetch of one secret, then back to its page with the outcome."""
        if request.method != "POST":
            return redirect(reverse("admin:secrets_secret_change", args=[object_id]))
        secret = get_object_or_404(Secret.objects.select_related("realm"), pk=object_id)
        if not self.has_change_permission(request, secret):
            raise PermissionDenied
        self._test_fetch(request, secret)
        return redirect(reverse("admin:secrets_secret_change", args=[secret.pk]))


def _quota_text(usage: quota.Usage) -> str:
    """A secret's calls of today as the console says them, with the day's end."""
    turns = _local(datetime.fromtimestamp(usage.day.ends_at, tz=UTC))
    if usage.calls is None:
        return f"Not known now (Redis unreachable); the provider's day turns at {turns}."
    calls = f"{usage.calls} upstream call{'' if usage.calls == 1 else 's'} today"
    if usage.budget is None:
        return f"{calls} (no daily budget); the provider's day turns at {turns}."
    text = f"{calls} of a daily budget of {usage.budget}"
    if usage.exhausted:
        text += ": used up. Flushes and rejected tokens get 429 quota_exhausted, no new token "
        text += "is fetched"
    elif usage.past_alert:
        text += f": past the alert threshold ({usage.alert_at} calls)"
    return f"{text}; the provider's day turns at {turns}."


@admin.register(Realm)
class RealmTokenAdmin(RealmAdmin):
    """
    The realm pages, with how the tokens of the realm's secrets stand, and a
    warning when its refresh margin is wider than what its provider's answers
    show its re-issue window to be (issue 14, same-token answers).
    """

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "token_counts", "reissue_seen")

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return (
            *fieldsets,
            ("Secrets and their tokens", {"fields": ("token_counts", "reissue_seen")}),
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET":
            realm = self.get_object(request, object_id)
            warning = realm_reissue_warning(realm) if realm is not None else None
            if warning:
                self.message_user(request, warning, messages.WARNING)
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="same-token answers")
    def reissue_seen(self, obj):
        return realm_reissue_warning(obj) or reissue_summary(obj)

    @admin.display(description="secrets")
    def token_counts(self, obj):
        counts = realm_token_counts(obj)
        total = sum(counts.values())
        if not total:
            return "No secrets."
        stand = ", ".join(
            f"{count} {state.value.replace('_', ' ')}" for state, count in counts.items() if count
        )
        return f"{total} secret(s): {stand}"


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: these records are written by the token path, not by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """Failure notifications sent to the webhook (tokens.notifications), or waiting, or given up."""

    list_display = (
        "created_at",
        "realm",
        "key",
        "outcome",
        "attempts",
        "status",
        "tries",
        "last_error",
        "delivered_at",
    )
    list_filter = ("outcome", "done", "realm")
    search_fields = ("realm", "key", "error_code", "error_message")
    date_hierarchy = "created_at"
    fields = (
        "created_at",
        "realm",
        "key",
        "outcome",
        "fetch_outcome",
        "error_code",
        "error_message",
        "failing_since",
        "attempts",
        "status",
        "tries",
        "next_try_at",
        "last_error",
        "delivered_at",
    )
    readonly_fields = fields


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
    "request_id",
    "same_token",
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
        "same_token",
        "client",
    )
    list_filter = ("outcome", "trigger", "same_token", "realm", "client")
    # A request id from an error body or a log line finds its rows (issue 13).
    search_fields = ("realm", "key", "error_code", "error_message", "client", "request_id")
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
