"""
Keep the token cache true to the database: saving or deleting a realm or a
secret evicts the cached entries it affects (at once, and again after the
transaction commits, so a concurrent request cannot re-cache the old row), and new
credentials drop the stored token, which belongs to the old ones. Saving a secret,
its realm or an argument also forgets the permanent errors remembered for the
secrets concerned (tokens.permanent_errors): the operator changed something.
"""

from django.db import transaction
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from realms.models import Argument, Realm
from secret_store.models import Secret
from tokens.cache import entries_evict
from tokens.models import StoredToken
from tokens.permanent_errors import forget


def _evict_on_commit(pairs):
    # Now, so this process stops serving the old entry, and again on commit,
    # in case a concurrent request re-cached the old row in between.
    pairs = list(pairs)
    entries_evict(pairs)
    transaction.on_commit(lambda: entries_evict(pairs))


@receiver(post_save, sender=Secret)
def secret_saved(sender, instance, created, **kwargs):
    # post_save runs inside save(): the tracker still knows what was loaded.
    pairs = {(instance.realm_id, instance.name)}
    if not created:
        pairs.add(instance.previous_identity())
        if instance.credentials_changed():
            StoredToken.objects.filter(secret=instance).delete()
        forget(Q(secret_id=instance.pk), pairs)
    _evict_on_commit(pairs)


@receiver(post_delete, sender=Secret)
def secret_deleted(sender, instance, **kwargs):
    pairs = [(instance.realm_id, instance.name)]
    forget(Q(secret_id=instance.pk), pairs)  # the row went with the secret; the copy too
    _evict_on_commit(pairs)


@receiver(post_save, sender=Realm)
@receiver(post_delete, sender=Realm)
def realm_changed(sender, instance, **kwargs):
    # The realm's margin is baked into its cache entries: rebuild them.
    pairs = list(Secret.objects.filter(realm_id=instance.pk).values_list("realm_id", "name"))
    forget(Q(secret__realm_id=instance.pk), pairs)
    _evict_on_commit(pairs)


@receiver(post_save, sender=Argument)
@receiver(post_delete, sender=Argument)
def argument_changed(sender, instance, **kwargs):
    pairs = list(Secret.objects.filter(realm_id=instance.realm_id).values_list("realm_id", "name"))
    forget(Q(secret__realm_id=instance.realm_id), pairs)
    _evict_on_commit(pairs)
