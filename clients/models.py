import hashlib
import hmac
import secrets

from django.core.exceptions import ValidationError
from django.db import models
from model_utils import FieldTracker

from clients.scopes import SCOPES, validate_pattern, validate_scopes


def new_client_id() -> str:
    """A fresh client id: ts_ and 96 random bits."""
    return f"ts_{secrets.token_hex(12)}"


def _validate_scopes(value):
    try:
        validate_scopes(value if isinstance(value, list) else [])
    except ValueError as error:
        raise ValidationError(str(error)) from None
    if not isinstance(value, list):
        raise ValidationError("Give a list of scopes.")


def _validate_patterns(value):
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValidationError("Give a list of REALM/KEY patterns.")
    for pattern in value:
        try:
            validate_pattern(pattern)
        except ValueError as error:
            raise ValidationError(str(error)) from None


class Client(models.Model):
    """
    An app allowed to call the API. It proves who it is with `client_id` and
    a secret, of which only a SHA-256 digest is kept (the secret is 256
    random bits, so a slow password hash would add cost and no safety);
    `scopes` say what it may do and `allow` which realm/key pairs it may read
    tokens of.
    """

    name = models.CharField(max_length=100)
    client_id = models.CharField(max_length=40, unique=True, editable=False, default=new_client_id)
    secret_digest = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, validators=[_validate_scopes])
    allow = models.JSONField(
        default=list,
        blank=True,
        validators=[_validate_patterns],
        help_text='Realm/key patterns whose tokens it may read, e.g. ["wxgzh/*", "*/billing-*"].',
    )
    enabled = models.BooleanField(default=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    tracker = FieldTracker(fields=["scopes", "allow", "enabled"])

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} ({self.client_id})"

    def rights_changed(self) -> bool:
        """
        Whether its scopes, patterns or enabled flag differ from what was
        loaded: access tokens carry the rights they were issued with, so such
        a change revokes them (clients.services.client_save).
        """
        return not self._state.adding and any(
            self.tracker.has_changed(field) for field in ("scopes", "allow", "enabled")
        )

    @staticmethod
    def digest(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def set_secret(self) -> str:
        """Give the client a new secret; returns it (shown once, never stored)."""
        secret = secrets.token_urlsafe(32)
        self.secret_digest = self.digest(secret)
        return secret

    def check_secret(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_digest, self.digest(secret))


#: Every scope, for forms.
SCOPE_CHOICES = [(scope, scope) for scope in SCOPES]


class Revocation(models.Model):
    """
    A revoked access token (by its id) or a revoked client (every token it
    was issued before `revoked_at`). Kept until the tokens it concerns have
    expired (`expires_at`); the live list is mirrored in Redis when present.
    """

    class Kind(models.TextChoices):
        TOKEN = "token"
        CLIENT = "client"

    kind = models.CharField(max_length=6, choices=Kind.choices)
    value = models.CharField(max_length=64, help_text="Token id or client id.")
    revoked_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "value"], name="revocation_unique"),
        ]

    def __str__(self):
        return f"{self.kind} {self.value}"
