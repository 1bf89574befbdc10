"""Encryption at rest: the database never holds a secret value or a token in plain text."""

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from secret_store.models import Secret
from tests.factories import SecretFactory
from tokens.models import StoredToken
from tokenserver import crypto

pytestmark = pytest.mark.django_db


def raw_row(table, column, where_column, where_value):
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column} FROM {table} WHERE {where_column} = %s",  # noqa: S608 - test-owned names
            [where_value],
        )
        return cursor.fetchone()[0]


def test_secret_values_are_encrypted_in_the_raw_column():
    secret = SecretFactory(key_1="wx1234567890abcdef", key_2="the-app-secret-0123456789")

    raw_1 = raw_row("secrets_secret", "key_1", "id", secret.pk)
    raw_2 = raw_row("secrets_secret", "key_2", "id", secret.pk)

    assert "wx1234567890abcdef" not in raw_1
    assert "the-app-secret" not in raw_2
    assert crypto.decrypt(raw_1) == "wx1234567890abcdef"
    # Read back through the model: plain text again.
    assert Secret.objects.get(pk=secret.pk).key_2 == "the-app-secret-0123456789"


def test_unset_values_stay_empty():
    secret = SecretFactory(key_3="")

    assert raw_row("secrets_secret", "key_3", "id", secret.pk) == ""


def test_stored_token_is_encrypted_in_the_raw_column():
    from django.utils import timezone

    secret = SecretFactory()
    now = timezone.now()
    StoredToken.objects.create(
        secret=secret, token="ACCESS-TOKEN-XYZ", expires_at=now, fetched_at=now
    )

    raw = raw_row("tokens_storedtoken", "token", "secret_id", secret.pk)

    assert "ACCESS-TOKEN-XYZ" not in raw
    assert StoredToken.objects.get(secret=secret).token == "ACCESS-TOKEN-XYZ"


def test_a_4kb_token_fits(settings):
    # Feishu's newer tokens are about 4 KB.
    from django.utils import timezone

    secret = SecretFactory()
    big = "t" * 4096
    now = timezone.now()
    StoredToken.objects.create(secret=secret, token=big, expires_at=now, fetched_at=now)

    assert StoredToken.objects.get(secret=secret).token == big


def test_old_keys_still_decrypt_after_a_new_key_is_added(settings):
    secret = SecretFactory(key_1="before-rotation")
    old_keys = list(settings.TOKENSERVER_ENCRYPTION_KEYS)

    # The newest key goes first; the old one stays to decrypt.
    settings.TOKENSERVER_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *old_keys]

    assert Secret.objects.get(pk=secret.pk).key_1 == "before-rotation"


def test_a_value_under_an_unknown_key_fails_clearly(settings):
    secret = SecretFactory(key_1="lost")
    settings.TOKENSERVER_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(ValueError, match="cannot be decrypted") as raised:
        Secret.objects.get(pk=secret.pk)
    assert "lost" not in str(raised.value)
