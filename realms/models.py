import math
import string
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from realms.validators import (
    day_start_zone,
    references_jwt,
    references_parent_token,
    validate_code_list,
    validate_day_start,
    validate_http_url,
    validate_jsonpath,
    validate_jwt_config,
    validate_success_conditions,
    validate_template,
)

#: Of a provider's re-issue window, the part a refresh is scheduled in: a little
#: inside it, so a clock that runs behind the provider's still asks late enough.
REISSUE_SAFETY = 0.9


def reissue_limit_of(reissue_window: int | None) -> float | None:
    """How close to expiry a refresh must come, given a provider's re-issue window (s)."""
    return None if reissue_window is None else REISSUE_SAFETY * reissue_window


@dataclass(frozen=True)
class ProviderDay:
    """One day of a provider's daily quota: its date there, and when it starts and ends."""

    date: date
    starts_at: float  # epoch seconds
    ends_at: float

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.ends_at - now)


#: Upstream error codes that say the token a chained realm's call carried was refused:
#: WeChat's and WeCom's 40001 (invalid credential, access_token invalid or not latest),
#: 40014 (invalid access_token) and 42001 (access_token expired). A chained realm
#: (Realm.parent) counts them besides its own `parent_rejected_codes`.
PARENT_REJECTED_CODES = ("40001", "40014", "42001")

#: The longest chain of realms: a token, a token made from it, … (the single flight
#: of each holds its lock while it asks for its parent's token).
MAX_CHAIN_LENGTH = 4


class Realm(models.Model):
    """
    One token provider: how to fetch a token from it and how to read the
    answer. `kind` says where tokens come from: `config` (an HTTP call built
    from this realm's arguments), `code` (the operator's own function at
    `code_url`, the seed's `logic_code`) or `fixed` (a token stored on each
    secret, no upstream call).

    A realm with a `parent` is chained (issue 14): its token is fetched with the
    current token of a secret of the parent realm, which its arguments send as
    `$parent_token` (WeChat's JS-SDK ticket is fetched with the access token). The
    parent secret is the one named `parent_key`, or, blank, the one with the child
    secret's own key (`parent_secret_of`).
    """

    class Kind(models.TextChoices):
        CONFIG = "config", "HTTP call built from the configuration"
        CODE = "code", "Operator's own function (code_url)"
        FIXED = "fixed", "Fixed token stored on each secret"

    class Method(models.TextChoices):
        GET = "GET"
        POST = "POST"

    class ContentType(models.TextChoices):
        JSON = "json", "JSON"
        FORM = "form", "Form (application/x-www-form-urlencoded)"

    class ExpiresInUnit(models.TextChoices):
        SECONDS = "s", "seconds"
        MILLISECONDS = "ms", "milliseconds"

    id = models.SlugField(max_length=50, primary_key=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CONFIG)
    url = models.URLField(
        max_length=2000, blank=True, validators=[validate_http_url], help_text="Token endpoint."
    )
    method = models.CharField(max_length=4, choices=Method.choices, default=Method.GET)
    content_type = models.CharField(
        max_length=4,
        choices=ContentType.choices,
        default=ContentType.JSON,
        help_text="How body arguments are sent.",
    )
    token_path = models.CharField(
        max_length=255,
        default="access_token",
        validators=[validate_jsonpath],
        help_text="JSONPath of the token in the answer; a bare name such as access_token works.",
    )
    expires_in_path = models.CharField(
        max_length=255,
        blank=True,
        default="expires_in",
        validators=[validate_jsonpath],
        help_text="JSONPath of the lifetime; blank: every token lives default_ttl seconds.",
    )
    expires_in_unit = models.CharField(
        max_length=2, choices=ExpiresInUnit.choices, default=ExpiresInUnit.SECONDS
    )
    expires_at_path = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_jsonpath],
        help_text="JSONPath of an absolute expiry (epoch seconds or ISO 8601); "
        "when set, it is used instead of expires_in_path.",
    )
    success_conditions = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_success_conditions],
        help_text='All must hold, e.g. [["errcode", 0]]. An expected list means any of '
        'its values, and null matches a missing field: [["errcode", [0, null]]].',
    )
    error_code_path = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_jsonpath],
        help_text="JSONPath of the upstream error code; blank: errcode, code or error.",
    )
    error_message_path = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_jsonpath],
        help_text="JSONPath of the upstream error message; blank: errmsg, msg, message, …",
    )
    code_url = models.URLField(
        max_length=2000,
        blank=True,
        validators=[validate_http_url],
        help_text="Kind code: the function that answers {token, expires_in} for a secret.",
    )
    timeout = models.FloatField(
        default=5.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(60)],
        help_text="Seconds to wait for the upstream (connect, and then read).",
    )
    max_concurrency = models.PositiveSmallIntegerField(
        default=4,
        validators=[MinValueValidator(1)],
        help_text="Upstream calls in flight at once for this realm.",
    )
    min_flush_interval = models.PositiveIntegerField(
        default=30,
        help_text="Seconds after a fetch during which flush=true returns the token just "
        "fetched instead of fetching again (protects quotas such as WeChat's).",
    )
    max_retries = models.PositiveSmallIntegerField(
        default=2,
        validators=[MaxValueValidator(10)],
        help_text="Retries of a call that failed on the network or with HTTP 5xx "
        "(never on 4xx or an upstream error code), with exponential backoff and jitter.",
    )
    rate_limit_codes = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_code_list],
        help_text="Upstream error codes that mean 'too many calls' (WeChat: [45009, 45011]); "
        "like HTTP 429, they make the realm back off.",
    )
    permanent_error_codes = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_code_list],
        help_text="Upstream error codes that only an operator can cure (WeChat: 40013 invalid "
        "AppID, 40125 invalid AppSecret, 40164 caller IP not whitelisted; OAuth2: "
        "invalid_client). Such an answer is remembered for the secret for "
        "permanent_error_ttl seconds: requests get the same 502 without an upstream call, "
        "until the time passes or the secret or realm is saved.",
    )
    permanent_error_ttl = models.PositiveIntegerField(
        default=600,
        validators=[MaxValueValidator(86400)],
        help_text="Seconds a permanent error (permanent_error_codes) is remembered; 0: never.",
    )
    breaker_threshold = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1)],
        help_text="Consecutive failures (network, timeout, HTTP 5xx, unreadable answers) "
        "after which the realm's upstream is not called for breaker_cooldown seconds.",
    )
    breaker_cooldown = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1)],
        help_text="Seconds the circuit breaker stays open.",
    )
    refresh_margin = models.PositiveIntegerField(
        default=300,
        help_text="Seconds before expiry at which a token is refreshed. Keep it under "
        "30 minutes for Feishu, which hands back the same token until then.",
    )
    reissue_window = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Seconds before expiry from which the provider issues a new token; before "
        "that it hands back the one it issued (Feishu, Lark: 1800; 0: the same token until it "
        "expires, as WeCom and DingTalk do). Refreshes are then scheduled inside it (90 % of "
        "it at most), whatever the margin. Blank: learnt from the answers (a same-token "
        "answer makes the next refresh wait).",
    )
    daily_budget = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Upstream calls each secret may make per provider day (WeChat: 2000 token "
        "fetches a day per app). At the budget, flushes and rejected-token reports are "
        "refused (429 quota_exhausted) until the day turns; calls the refresher needs to "
        "keep the token alive until then are kept in reserve. Blank: no budget.",
    )
    budget_alert_percent = models.PositiveSmallIntegerField(
        default=80,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Share of the daily budget past which the console warns, a line is logged "
        "and a notification is sent (once per secret and day).",
    )
    budget_day_starts = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_day_start],
        help_text="Where the provider's day starts at midnight: UTC, a UTC offset such as "
        "+08:00 (WeChat) or a time zone such as Asia/Shanghai.",
    )
    default_ttl = models.PositiveIntegerField(
        default=7200,
        validators=[MinValueValidator(1)],
        help_text="Lifetime in seconds when the answer carries none.",
    )
    jwt = models.JSONField(
        null=True,
        blank=True,
        default=None,
        validators=[validate_jwt_config],
        help_text="JWT assertion (RFC 7523) that arguments send as $jwt, signed per fetch, e.g. "
        '{"alg": "RS256", "key": "$key_2", "iss": "$key_1", "scope": "$key_3"}. '
        "alg: RS256, RS384, RS512, PS256, ES256 or ES384; key, iss, sub, aud, scope, kid: "
        "templates over the secret's values (aud blank: the url above); lifetime: at most "
        "3600 s. Blank: none.",
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
        error_messages={"invalid": "There is no realm %(value)r to take a parent token from."},
        help_text="Chained realm: the realm whose token this one is fetched with; arguments "
        "send it as $parent_token (WeChat's JS-SDK ticket is fetched with the access token). "
        "Blank: none.",
    )
    parent_key = models.CharField(
        max_length=100,
        blank=True,
        help_text="The parent secret's key; blank: the parent realm's secret with the same "
        "key as the child's (wx_jsapi/main is fetched with wxgzh/main's token).",
    )
    parent_rejected_codes = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_code_list],
        help_text="Chained realm: upstream error codes that mean the parent token was "
        "refused, besides WeChat's 40001, 40014 and 42001 (always counted). The parent is "
        "then refreshed once (compare-and-refresh) and the call retried once.",
    )
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self):
        return self.id

    def provider_day(self, now: float) -> ProviderDay:
        """
        The provider's day that `now` (epoch seconds) falls in: from midnight to
        midnight where `budget_day_starts` says (a zone's day may last 23 or 25 hours).
        """
        zone = day_start_zone(self.budget_day_starts)
        local = datetime.fromtimestamp(now, zone)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)  # wall-clock arithmetic: the next midnight there
        return ProviderDay(start.date(), start.timestamp(), end.timestamp())

    def budget_alert_calls(self) -> int | None:
        """How many calls of a day cross the alert threshold (None: no budget)."""
        if self.daily_budget is None:
            return None
        return max(1, math.ceil(self.daily_budget * self.budget_alert_percent / 100))

    def reissue_limit(self) -> float | None:
        """How close to expiry a refresh may come when the provider re-issues late (s)."""
        return reissue_limit_of(self.reissue_window)

    def parent_secret_of(self, name: str) -> tuple[str, str] | None:
        """The parent secret (realm, key) of this realm's secret `name`; None: not chained."""
        if not self.parent_id:
            return None
        return (self.parent_id, self.parent_key or name)

    def rejects_parent_token(self, error_code: str) -> bool:
        """
        Whether an upstream error code says the parent token this chained realm's call
        carried was refused (PARENT_REJECTED_CODES and `parent_rejected_codes`,
        compared as text, as the fetch log records codes).
        """
        if not self.parent_id or not error_code:
            return False
        codes = {*PARENT_REJECTED_CODES, *(str(code) for code in self.parent_rejected_codes or [])}
        return error_code in codes

    def clean(self):
        # No network I/O here: whether the URLs' addresses may be fetched is
        # checked by realm_upsert and the console's form
        # (realms.services.realm_url_refusals).
        errors = {}
        if self.jwt == {}:
            self.jwt = None  # an empty object says "no assertion", like null
        if self.jwt is not None and self.kind != self.Kind.CONFIG:
            errors["jwt"] = "Only a realm of kind config signs JWT assertions."
        if self.kind == self.Kind.CONFIG and not self.url:
            errors["url"] = "A realm of kind config needs the token endpoint's URL."
        if self.kind == self.Kind.CODE and not self.code_url:
            errors["code_url"] = "A realm of kind code needs code_url."
        if self.kind == self.Kind.CONFIG and not self.token_path:
            errors["token_path"] = "A realm of kind config needs token_path."
        errors.update(self._chain_errors())
        if errors:
            raise ValidationError(errors)

    def _chain_errors(self) -> dict[str, str]:
        """
        A chain must hold together when saved: the parent realm exists (the field's
        own check says so when it does not), the chain has no cycle and is at most
        MAX_CHAIN_LENGTH realms long, and the parent secrets exist: `parent_key`'s,
        or, blank, one with the key of each of this realm's secrets. Database
        queries only, no network I/O.
        """
        if not self.parent_id:
            if self.parent_key:
                return {"parent_key": "A parent key needs a parent realm."}
            return {}
        if self.kind != self.Kind.CONFIG:
            return {"parent": "Only a realm of kind config is fetched with a parent token."}
        parent = Realm.objects.filter(pk=self.parent_id).first()
        if parent is None:
            return {}  # the foreign key's validation names the missing realm
        trail = self._ancestors_refusal()
        if trail:
            return {"parent": trail}
        if self.parent_key:
            if not parent.secrets.filter(name=self.parent_key).exists():
                return {
                    "parent_key": f"Realm {parent.id} has no secret {self.parent_key!r} "
                    "to take the parent token from."
                }
            return {}
        if self._state.adding:
            return {}
        names = set(self.secrets.values_list("name", flat=True))
        missing = sorted(
            names - set(parent.secrets.filter(name__in=names).values_list("name", flat=True))
        )
        if missing:
            shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
            return {
                "parent": f"Each secret of this realm is fetched with the token of the secret "
                f"of {parent.id} with the same key, and {parent.id} has no secret {shown}: "
                "create them first, or name one secret in parent_key."
            }
        return {}

    def _ancestors_refusal(self) -> str:
        """Why the chain through `parent` cannot be (a cycle, too long), or ""."""
        trail = [self.id]
        current = self.parent_id
        while current:
            if current in trail:
                return "This makes a cycle: " + " → ".join([*trail, current]) + "."
            trail.append(current)
            current = Realm.objects.filter(pk=current).values_list("parent_id", flat=True).first()
        below = self._chain_length_below()
        if len(trail) + below > MAX_CHAIN_LENGTH:
            return (
                f"A chain of realms is at most {MAX_CHAIN_LENGTH} long; this one would be "
                f"{len(trail) + below}: "
                + " → ".join(reversed(trail))
                + (" → …" if below else "")
                + "."
            )
        return ""

    def _chain_length_below(self) -> int:
        """How many levels of chained realms hang below this one (0: none)."""
        if self._state.adding:
            return 0
        levels, frontier = 0, [self.id]
        while frontier and levels <= MAX_CHAIN_LENGTH:
            frontier = list(
                Realm.objects.filter(parent_id__in=frontier).values_list("id", flat=True)
            )
            levels += bool(frontier)
        return levels


class Argument(models.Model):
    """
    One parameter of a realm's token request: where it goes (`place`) and its
    value, a literal or a template over the secret's values (`$key_1`, or
    `${key_1}` inside a string), `$jwt`, the assertion the realm's `jwt`
    settings sign for each fetch (realms.assertions), and `$parent_token`, the
    current token of a chained realm's parent secret. Place `basic` sends HTTP
    Basic auth from a `user:password` template such as `${key_1}:${key_2}`.

    `$force_refresh` is `true` only when the fetch answers a token reported rejected
    (`rejected=`), else `false`; an argument that is `$force_refresh` alone is sent in a
    JSON body as the JSON boolean (WeChat's stable_token: `"force_refresh": false`).
    """

    class Place(models.TextChoices):
        URL = "url", "Query string"
        HEADER = "header", "Header"
        BODY = "body", "Body"
        BASIC = "basic", "HTTP Basic auth (user:password)"

    realm = models.ForeignKey(Realm, on_delete=models.CASCADE, related_name="arguments")
    name = models.CharField(max_length=100, blank=True)
    place = models.CharField(max_length=6, choices=Place.choices, default=Place.URL)
    value = models.CharField(max_length=1000, blank=True, validators=[validate_template])
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self):
        return f"{self.place}:{self.name}"

    def is_optional_for(self, values: dict) -> bool:
        """
        An argument that is one reference alone (`$key_3`) to a value the
        secret does not set is left out of the request, rather than sent empty
        (an optional OAuth2 `scope`, say).
        """
        names = string.Template(self.value).get_identifiers()
        return (
            len(names) == 1
            and self.value.strip() in (f"${names[0]}", f"${{{names[0]}}}")
            and not values.get(names[0])
        )

    def clean(self):
        if self.place == self.Place.BASIC:
            if ":" not in self.value:
                raise ValidationError(
                    {"value": "A basic argument is user:password, e.g. ${key_1}:${key_2}."}
                )
        elif not self.name:
            raise ValidationError({"name": "An argument needs a name."})
        try:
            realm = self.realm
        except Realm.DoesNotExist:
            realm = None
        if references_jwt(self.value) and realm is not None and not realm.jwt:
            raise ValidationError(
                {"value": "$jwt is the signed assertion: give the realm jwt settings first."}
            )
        if references_parent_token(self.value) and realm is not None and not realm.parent_id:
            raise ValidationError(
                {"value": "$parent_token is the parent secret's token: give the realm a parent."}
            )
