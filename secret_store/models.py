import re
import unicodedata

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from model_utils import FieldTracker

from realms.assertions import key_refusal
from realms.models import Realm
from tokenserver.fields import EncryptedTextField

#: The secret's value fields, in order.
VALUE_FIELDS = ("key_1", "key_2", "key_3", "key_4", "key_5")

#: What a token is fetched with (or, for kind fixed, what it is): a change
#: makes the stored token belong to the old credentials.
CREDENTIAL_FIELDS = (*VALUE_FIELDS, "token", "token_expires_at")

validate_key_name = RegexValidator(
    r"^[A-Za-z0-9_.-]+$", "Use letters, digits, '_', '.' and '-' only."
)


#: A PEM block (a private key for JWT assertions), alone in the value.
_PEM_BLOCK = re.compile(r"\s*-----BEGIN ([A-Z0-9 ]+)-----.*-----END \1-----\s*", re.DOTALL)


def validate_secret_text(value: str) -> None:
    """
    A secret value goes into URLs, headers and bodies as it is: a control character
    (often a newline pasted with it) or a lone surrogate could never be sent, so it is
    refused here rather than at every fetch (issue 11). Nothing is stripped silently.

    One exception (issue 14): a value that is a PEM block alone (the private key a
    realm's JWT settings sign with, realms.assertions) may hold line breaks (LF or
    CR LF), as PEM is written: the signer reads it, and a header or Basic credentials
    that referenced it would still be refused at fetch time. Other control characters
    are refused in it too.
    """
    line_breaks_allowed = _PEM_BLOCK.fullmatch(value) is not None
    for position, char in enumerate(value, start=1):
        if line_breaks_allowed and char in "\r\n":
            continue
        if unicodedata.category(char) == "Cc":
            what = "a line break" if char in "\r\n" else "a control character"
            where = "at the end" if position == len(value) else f"at position {position}"
            raise ValidationError(
                "This value holds %(what)s (U+%(code)04X) %(where)s; remove it.",
                code="control_character",
                params={"what": what, "code": ord(char), "where": where},
            )
        if unicodedata.category(char) == "Cs":
            raise ValidationError(
                "This value is not valid Unicode (a lone surrogate at position %(position)s).",
                code="surrogate",
                params={"position": position},
            )


class SecretQuerySet(models.QuerySet):
    def taking_token_of(self, realm_id: str, name: str) -> "SecretQuerySet":
        """
        The secrets of chained realms fetched with the token of the secret (`realm_id`,
        `name`): those of its realm's children that name it in `parent_key`, or, with
        `parent_key` blank, that have its key (Realm.parent_secret_of).
        """
        return self.filter(realm__parent_id=realm_id).filter(
            Q(realm__parent_key=name) | Q(realm__parent_key="", name=name)
        )


class Secret(models.Model):
    """
    One app's credentials at one realm. Apps ask for its token by (`realm`,
    `name`), which the API calls `key` (the seed's word; `name` here, so it is
    not mistaken for the values `key_1` … `key_5`).

    `key_1` … `key_5` are the values argument templates refer to (`$key_1`);
    `token` and `token_expires_at` serve realms of kind `fixed`. All values are
    encrypted at rest and write-only: no API response or admin page shows them.
    """

    realm = models.ForeignKey(Realm, on_delete=models.PROTECT, related_name="secrets")
    name = models.CharField(
        max_length=100,
        validators=[validate_key_name],
        db_column="key",
        help_text="What apps ask for: /api/token?realm=…&key=<name>.",
    )
    key_1 = EncryptedTextField(blank=True, default="", validators=[validate_secret_text])
    key_2 = EncryptedTextField(blank=True, default="", validators=[validate_secret_text])
    key_3 = EncryptedTextField(blank=True, default="", validators=[validate_secret_text])
    key_4 = EncryptedTextField(blank=True, default="", validators=[validate_secret_text])
    key_5 = EncryptedTextField(blank=True, default="", validators=[validate_secret_text])
    token = EncryptedTextField(
        blank=True,
        default="",
        validators=[validate_secret_text],
        help_text="Kind fixed: the token.",
    )
    token_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Kind fixed: when the token expires (blank: never)."
    )
    enabled = models.BooleanField(default=True)
    version = models.PositiveIntegerField(
        default=1,
        editable=False,
        help_text="Goes up when the values, the identity or enabled change: a fetch that "
        "started before does not store its token.",
    )
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    #: What was loaded, so a save can tell what changed.
    tracker = FieldTracker(fields=[*CREDENTIAL_FIELDS, "enabled", "realm", "name"])

    objects = SecretQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(fields=["realm", "name"], name="secret_unique_realm_key"),
        ]

    def __str__(self):
        return f"{self.realm_id}/{self.name}"

    def save(self, *args, **kwargs):
        # A fetch that started before this change must not store its token.
        if not self._state.adding and (
            self.credentials_changed()
            or self.tracker.has_changed("enabled")
            or self.previous_identity() != (self.realm_id, self.name)
        ):
            self.version += 1
        super().save(*args, **kwargs)

    def values(self) -> dict[str, str]:
        """The values argument templates may reference."""
        return {name: getattr(self, name) for name in VALUE_FIELDS}

    def credentials_changed(self) -> bool:
        """Whether the values differ from what was loaded (true when new)."""
        return self._state.adding or any(
            self.tracker.has_changed(name) for name in CREDENTIAL_FIELDS
        )

    def previous_identity(self) -> tuple[str, str] | None:
        """(realm, name) as loaded; None when new."""
        if self._state.adding:
            return None
        return (self.tracker.previous("realm"), self.tracker.previous("name"))

    def clean(self):
        # A fixed token that is already expired is a mistake at save time;
        # one that expires later is merely stale, so only new values are checked.
        if (
            self.token_expires_at is not None
            and self.token_expires_at <= timezone.now()
            and self.credentials_changed()
        ):
            raise ValidationError({"token_expires_at": "This time is in the past."})
        # The private key the realm's JWT settings sign with (issue 14): a key that
        # cannot sign is refused now rather than at every fetch. No network I/O.
        try:
            realm = self.realm
        except Realm.DoesNotExist:
            realm = None
        if realm is not None and realm.jwt and self.credentials_changed():
            refusal = key_refusal(realm.jwt, self.values())
            if refusal:
                name, message = refusal
                field = name if name in VALUE_FIELDS else "__all__"
                raise ValidationError({field: f"{message}."})
        limit = settings.TOKENSERVER_MAX_TOKEN_BYTES
        if len(self.token.encode("utf-8", "surrogatepass")) > limit:
            raise ValidationError(
                {"token": f"This token is longer than TOKENSERVER_MAX_TOKEN_BYTES ({limit})."}
            )
        chain = self._chain_refusal(realm)
        if chain:
            raise ValidationError({"name": chain})

    def _chain_refusal(self, realm: Realm | None) -> str:
        """
        Chained realms (issue 14) at save time: a secret of a chained realm whose
        parent secret is the one with its own key needs that secret to exist; a
        secret whose token chained secrets are fetched with keeps its identity
        (renamed or moved, it would leave them without a parent). Queries only.
        """
        identity = self.previous_identity()
        if identity == (self.realm_id, self.name):
            return ""  # neither new nor renamed: nothing a chain depends on changed
        if realm is not None and realm.parent_id and not realm.parent_key:
            if not Secret.objects.filter(realm_id=realm.parent_id, name=self.name).exists():
                return (
                    f"Realm {realm.id} is fetched with the token of the secret of "
                    f"{realm.parent_id} with the same key, and {realm.parent_id} has no "
                    f"secret {self.name!r}: create it first."
                )
        if identity is not None:
            children = Secret.objects.taking_token_of(*identity).order_by("realm_id", "name")
            names = [str(child) for child in children[:6]]
            if names:
                shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
                return (
                    f"{shown} are fetched with this secret's token (chained realms): "
                    "it keeps its realm and key while they do."
                )
        return ""

    def fixed_token_is_valid(self, now=None) -> bool:
        now = now or timezone.now()
        return bool(self.token) and (self.token_expires_at is None or self.token_expires_at > now)
