"""Key rotation: every encrypted column re-encrypted under the newest key."""

from django.db import transaction

from secret_store.models import VALUE_FIELDS, Secret
from tokens import cache as token_cache
from tokens.models import StoredToken


def keys_rotate(batch_size: int = 500) -> dict[str, int]:
    """
    Re-encrypt every secret value and cached token under the newest key.
    Rows are read (decrypted with whichever key fits) and written back with
    `update()`, which encrypts under the first key and fires no signals (the
    values do not change, so caches and versions must not either).
    """
    counts = {}
    for model, fields in (
        (Secret, (*VALUE_FIELDS, "token")),
        (StoredToken, ("token",)),
    ):
        done = 0
        for pk in model.objects.values_list("pk", flat=True).order_by("pk").iterator():
            with transaction.atomic():
                row = model.objects.select_for_update().filter(pk=pk).first()
                if row is None:
                    continue
                model.objects.filter(pk=pk).update(**{name: getattr(row, name) for name in fields})
            done += 1
        counts[model._meta.verbose_name_plural] = done
    # Cache entries are sealed too: drop them (they refill from the database),
    # so nothing sealed under an old key outlives the old key.
    token_cache.entries_clear()
    return counts
