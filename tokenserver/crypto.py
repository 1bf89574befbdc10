"""
Encryption at rest for secret values and cached tokens.

`TOKENSERVER_ENCRYPTION_KEYS` holds Fernet keys, newest first: the newest
encrypts, every key decrypts (MultiFernet), so keys rotate without downtime.
With DEBUG on and no key configured, a key derived from SECRET_KEY is used so
a developer can start without set-up; settings refuse that outside DEBUG.
"""

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

__all__ = ["InvalidToken", "decrypt", "encrypt", "generate_key"]


def generate_key() -> str:
    """A fresh Fernet key, as text for an environment variable."""
    return Fernet.generate_key().decode()


def configured_keys() -> list[str]:
    """The encryption keys, newest first (DEBUG without keys: one derived from SECRET_KEY)."""
    keys = list(settings.TOKENSERVER_ENCRYPTION_KEYS)
    if not keys:
        if not settings.DEBUG:
            raise ImproperlyConfigured("TOKENSERVER_ENCRYPTION_KEYS is not set.")
        digest = hashlib.sha256(settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return keys


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in configured_keys()])


def _reset(*, setting, **kwargs):
    if setting in ("TOKENSERVER_ENCRYPTION_KEYS", "SECRET_KEY", "DEBUG"):
        _fernet.cache_clear()
        decrypt_memoized.cache_clear()


setting_changed.connect(_reset)


def encrypt(plaintext: str) -> str:
    """Encrypt text under the newest key; the result is ASCII."""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    """Decrypt text encrypted under any configured key (raises InvalidToken)."""
    return _fernet().decrypt(ciphertext.encode()).decode()


@lru_cache(maxsize=4096)
def decrypt_memoized(ciphertext: str) -> str:
    """
    decrypt(), remembering the last few thousand answers: for the token
    cache's entries, read on every request and rewritten only on a refresh
    (a Fernet ciphertext always decrypts to the same text). Not for secret
    values, which are read rarely and need not stay in memory.
    """
    return decrypt(ciphertext)
