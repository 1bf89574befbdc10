"""Secret writes: create or update (whole or in part) and delete."""

from django.core.exceptions import ValidationError
from django.db import transaction

from realms.models import Realm
from secret_store.models import VALUE_FIELDS, Secret
from tokenserver.errors import Conflict, NotFound

#: Fields a caller may set on a secret.
WRITABLE_FIELDS = (*VALUE_FIELDS, "token", "token_expires_at", "enabled", "comment")

_DEFAULTS = {name: "" for name in (*VALUE_FIELDS, "token", "comment")} | {
    "token_expires_at": None,
    "enabled": True,
}


@transaction.atomic
def secret_upsert(
    realm_id: str, name: str, data: dict, *, replace: bool = False
) -> tuple[Secret, bool]:
    """
    Create the secret (`realm_id`, `name`) or update it from `data`.

    Fields `data` leaves out keep their stored values, unless `replace`
    (PUT), which resets them; `None` or "" clears a value. New credentials
    drop the stored token (tokens.signals). Raises django ValidationError,
    keyed by the API's field names.
    """
    realm = Realm.objects.filter(pk=realm_id).first()
    if realm is None:
        raise ValidationError({"realm": [f"Unknown realm {realm_id!r}."]})
    secret = Secret.objects.select_for_update().filter(realm=realm, name=name).first()
    created = secret is None
    if created:
        secret = Secret(realm=realm, name=name)
    for field in WRITABLE_FIELDS:
        if field in data:
            value = data[field]
            setattr(secret, field, _DEFAULTS[field] if value is None else value)
        elif replace:
            setattr(secret, field, _DEFAULTS[field])
    try:
        secret.full_clean()
    except ValidationError as error:
        # The API (the seed) calls the secret's name "key".
        raise ValidationError(
            {
                "key" if field == "name" else field: messages
                for field, messages in error.message_dict.items()
            }
        ) from None
    secret.save()
    return secret, created


def secret_set_enabled(secret: Secret, enabled: bool) -> bool:
    """
    Enable or disable a secret; returns whether it changed. A full save, not a
    queryset update, so its version goes up and its cache entry is evicted
    (tokens.signals): a disabled secret stops being served at once.
    """
    if secret.enabled == enabled:
        return False
    secret.enabled = enabled
    secret.save()
    return True


def secret_delete(realm_id: str, name: str) -> None:
    """
    Delete a secret; refused (409) while secrets of chained realms are fetched with
    its token (they would have no parent).
    """
    children = sorted(str(child) for child in Secret.objects.taking_token_of(realm_id, name))
    if children:
        raise Conflict(
            f"Secret {realm_id}/{name} is the parent of {', '.join(children)}: their tokens "
            "are fetched with its token; delete them first."
        )
    deleted, _ = Secret.objects.filter(realm_id=realm_id, name=name).delete()
    if not deleted:
        raise NotFound(f"Realm {realm_id!r} has no secret {name!r}.")
