"""Model fields shared by the apps."""

from django.db import models

from tokenserver import crypto


class EncryptedTextField(models.TextField):
    """
    A text column that holds Fernet ciphertext; Python code sees plain text.

    The empty string is stored as it is (an unset value), everything else is
    encrypted on the way in and decrypted on the way out, so the database
    never holds the plain value. TEXT, not VARCHAR: Feishu's newer tokens are
    about 4 KB before encryption grows them.
    """

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        try:
            return crypto.decrypt(value)
        except crypto.InvalidToken:
            # Never echo the ciphertext: say which column and what to do.
            raise ValueError(
                f"{self.model.__name__}.{self.name} cannot be decrypted with any key "
                "in TOKENSERVER_ENCRYPTION_KEYS (was a key removed too early?)"
            ) from None

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value:
            return value
        return crypto.encrypt(value)
