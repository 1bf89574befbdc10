import string

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from realms.validators import (
    references_jwt,
    validate_code_list,
    validate_http_url,
    validate_jsonpath,
    validate_jwt_config,
    validate_success_conditions,
    validate_template,
)


class Realm(models.Model):
    """
    One token provider: how to fetch a token from it and how to read the
    answer. `kind` says where tokens come from: `config` (an HTTP call built
    from this realm's arguments), `code` (the operator's own function at
    `code_url`, the seed's `logic_code`) or `fixed` (a token stored on each
    secret, no upstream call).
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
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self):
        return self.id

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
        if errors:
            raise ValidationError(errors)


class Argument(models.Model):
    """
    One parameter of a realm's token request: where it goes (`place`) and its
    value, a literal or a template over the secret's values (`$key_1`, or
    `${key_1}` inside a string) and `$jwt`, the assertion the realm's `jwt`
    settings sign for each fetch (realms.assertions). Place `basic` sends HTTP Basic auth from a
    `user:password` template such as `${key_1}:${key_2}`.

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
