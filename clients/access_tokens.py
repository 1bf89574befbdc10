"""
Access tokens for clients: self-contained and authenticated-encrypted, so a
worker verifies one without a database query.

    tsat1.<kid>.<Fernet ciphertext of {"cid", "scp", "iat", "exp", "jti"}>

The Fernet keys are derived (HKDF-SHA256) from TOKENSERVER_ENCRYPTION_KEYS,
newest first, so rotating those keys rotates these too; `kid` names the key a
token was sealed with, which tells a token sealed under a key this server no
longer has ("wrong key") from a forged or damaged one ("bad signature").

Revocations (one token by its `jti`, or every token of a client issued before
a moment) are kept in the database and, with Redis, mirrored there; each
process holds a snapshot it reloads at most every REVOCATION_REFRESH seconds,
so a revocation takes effect within one second everywhere.
"""

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.cache import cache
from django.core.signals import setting_changed
from django.db import DatabaseError

from clients.models import Revocation
from tokenserver.cache import CACHE_ERRORS, health, redis_connection
from tokenserver.crypto import configured_keys

logger = logging.getLogger(__name__)

PREFIX = "tsat1"

#: Seconds a process trusts its revocation snapshot.
REVOCATION_REFRESH = 0.5


class InvalidAccessToken(Exception):
    """Why a token is not accepted: malformed, wrong key, bad signature, expired, revoked."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    client_id: str
    scopes: tuple[str, ...]
    issued_at: float  # epoch seconds, to the millisecond
    expires_at: int
    token_id: str
    allow: tuple[str, ...] = ()  # realm/key patterns whose tokens the client may read

    def expires_in(self, now: float | None = None) -> int:
        return max(0, int(self.expires_at - (now or time.time())))


# --- Keys ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _keys() -> list[tuple[str, Fernet]]:
    """(kid, Fernet) for every configured key, newest first."""
    derived = []
    for key in configured_keys():
        material = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"tokenserver access tokens"
        ).derive(base64.urlsafe_b64decode(key))
        kid = hashlib.sha256(material).hexdigest()[:8]
        derived.append((kid, Fernet(base64.urlsafe_b64encode(material))))
    return derived


def _reset(*, setting, **kwargs):
    if setting in ("TOKENSERVER_ENCRYPTION_KEYS", "SECRET_KEY", "DEBUG"):
        _keys.cache_clear()
        _decode.cache_clear()


setting_changed.connect(_reset)


# --- Issue and verify --------------------------------------------------------------------


def access_token_issue(
    client_id: str, scopes, *, allow=(), ttl: int | None = None
) -> tuple[str, Claims]:
    """
    A new access token for `client_id` with `scopes` (and the realm/key
    patterns it may read, so checking them needs no query), living `ttl`
    seconds (at most TOKENSERVER_ACCESS_TOKEN_MAX_TTL).
    """
    now = round(time.time(), 3)
    ttl = int(ttl if ttl is not None else settings.TOKENSERVER_ACCESS_TOKEN_TTL)
    ttl = max(1, min(ttl, settings.TOKENSERVER_ACCESS_TOKEN_MAX_TTL))
    claims = Claims(
        client_id, tuple(scopes), now, int(now) + ttl, secrets.token_hex(16), tuple(allow)
    )
    payload = json.dumps(
        {
            "cid": claims.client_id,
            "scp": list(claims.scopes),
            "alw": list(claims.allow),
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.token_id,
        },
        separators=(",", ":"),
    ).encode()
    kid, fernet = _keys()[0]
    return f"{PREFIX}.{kid}.{fernet.encrypt(payload).decode()}", claims


def access_token_decode(token: str) -> Claims:
    """The claims of a token sealed by this server (not checking expiry or revocation)."""
    return _decode(token)


@lru_cache(maxsize=4096)
def _decode(token: str) -> Claims:
    # Remembered: apps send the same token on every call, and opening it is
    # most of the cost of verifying it. Refusals are not remembered.
    parts = token.split(".", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidAccessToken("malformed")
    _, kid, sealed = parts
    fernet = next((f for k, f in _keys() if hmac_equal(k, kid)), None)
    if fernet is None:
        raise InvalidAccessToken("wrong key")
    try:
        data = json.loads(fernet.decrypt(sealed.encode()))
        return Claims(
            str(data["cid"]),
            tuple(data["scp"]),
            float(data["iat"]),
            int(data["exp"]),
            str(data["jti"]),
            tuple(data.get("alw", ())),
        )
    except (InvalidToken, ValueError, KeyError, TypeError):
        raise InvalidAccessToken("bad signature") from None


def hmac_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def access_token_verify(token: str, *, now: float | None = None) -> Claims:
    """Claims of a valid token; raises InvalidAccessToken saying why not. No database query."""
    claims = access_token_decode(token)
    now = now or time.time()
    if claims.expires_at <= now:
        raise InvalidAccessToken("expired")
    if revocations.is_revoked(claims):
        raise InvalidAccessToken("revoked")
    return claims


# --- Revocation ----------------------------------------------------------------------------


def _redis_key() -> str:
    return cache.make_key("revocations")


class Revocations:
    """A process's snapshot of what is revoked, reloaded at most every REVOCATION_REFRESH s."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loaded = float("-inf")
        self._tokens: set[str] = set()
        self._clients: dict[str, float] = {}

    def is_revoked(self, claims: Claims) -> bool:
        self._refresh()
        if claims.token_id in self._tokens:
            return True
        revoked_at = self._clients.get(claims.client_id)
        return revoked_at is not None and claims.issued_at < revoked_at

    def invalidate(self) -> None:
        """Reload at the next check (this process has just revoked something)."""
        self._loaded = float("-inf")

    def _refresh(self) -> None:
        if time.monotonic() - self._loaded < REVOCATION_REFRESH:
            return
        # One thread reloads; the others go on with the current snapshot.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self._loaded < REVOCATION_REFRESH:
                return
            try:
                self._tokens, self._clients = self._load()
            except DatabaseError:
                logger.warning("revocation list unavailable; keeping the last one")
            self._loaded = time.monotonic()
        finally:
            self._lock.release()

    @staticmethod
    def _load():
        """
        The database is the source of truth; the Redis mirror answers only
        while the database cannot (a lost or flushed Redis then un-revokes
        nothing). Raises DatabaseError when neither answers.
        """
        now = time.time()
        tokens, clients = set(), {}
        try:
            rows = list(
                Revocation.objects.filter(
                    expires_at__gt=datetime.fromtimestamp(now, tz=UTC)
                ).values_list("kind", "value", "revoked_at")
            )
        except DatabaseError:
            mirrored = _redis_entries()
            if mirrored is None:
                raise
            rows = [
                (kind, name, revoked_at)
                for kind, name, expires_at, revoked_at in mirrored
                if expires_at > now
            ]
        for kind, value, revoked_at in rows:
            if kind == Revocation.Kind.TOKEN:
                tokens.add(value)
            else:
                clients[value] = (
                    revoked_at.timestamp() if isinstance(revoked_at, datetime) else revoked_at
                )
        return tokens, clients


def _redis_entries():
    """(kind, value, expires_at, revoked_at) from the Redis mirror, or None if unavailable."""
    redis = redis_connection()
    if redis is None:
        return None
    try:
        entries = redis.hgetall(_redis_key())
    except CACHE_ERRORS as error:
        health.failed(error)
        return None
    mirrored = []
    for field, value in entries.items():
        kind, _, name = field.decode().partition(":")
        expires_at, revoked_at = (float(x) for x in value.decode().split(","))
        mirrored.append((kind, name, expires_at, revoked_at))
    return mirrored


revocations = Revocations()


def _record(kind: str, value: str, revoked_at: float, expires_at: float) -> None:
    Revocation.objects.update_or_create(
        kind=kind,
        value=value,
        defaults={
            "revoked_at": datetime.fromtimestamp(revoked_at, tz=UTC),
            "expires_at": datetime.fromtimestamp(expires_at, tz=UTC),
        },
    )
    redis = redis_connection()
    if redis is not None:
        try:
            redis.hset(_redis_key(), f"{kind}:{value}", f"{expires_at},{revoked_at}")
        except CACHE_ERRORS as error:
            health.failed(error)  # the database keeps it, and is read first
    revocations.invalidate()


def access_token_revoke(token: str) -> Claims:
    """Revoke one token (it must be one of ours; expired ones need no revoking)."""
    claims = access_token_decode(token)
    _record(Revocation.Kind.TOKEN, claims.token_id, time.time(), claims.expires_at)
    return claims


def client_revoke_tokens(client_id: str) -> None:
    """Revoke every token the client holds now (tokens issued afterwards are not affected)."""
    now = time.time()
    longest = now + max(settings.TOKENSERVER_ACCESS_TOKEN_MAX_TTL, 1)
    _record(Revocation.Kind.CLIENT, client_id, now, longest)


def revocations_prune() -> int:
    """Drop revocations whose tokens have all expired."""
    now = time.time()
    deleted, _ = Revocation.objects.filter(
        expires_at__lte=datetime.fromtimestamp(now, tz=UTC)
    ).delete()
    redis = redis_connection()
    for kind, name, expires_at, _ in (_redis_entries() if redis is not None else None) or []:
        if expires_at <= now:
            try:
                redis.hdel(_redis_key(), f"{kind}:{name}")
            except CACHE_ERRORS as error:
                health.failed(error)
                break
    return deleted
