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
from django.core.signals import setting_changed
from django.db import DatabaseError

from clients.models import Revocation

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
    issued_at: int
    expires_at: int
    token_id: str
    allow: tuple[str, ...] = ()  # realm/key patterns whose tokens the client may read

    def expires_in(self, now: float | None = None) -> int:
        return max(0, int(self.expires_at - (now or time.time())))


# --- Keys ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _keys() -> list[tuple[str, Fernet]]:
    """(kid, Fernet) for every configured key, newest first."""
    from tokenserver.crypto import configured_keys

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
    now = int(time.time())
    ttl = int(ttl if ttl is not None else settings.TOKENSERVER_ACCESS_TOKEN_TTL)
    ttl = max(1, min(ttl, settings.TOKENSERVER_ACCESS_TOKEN_MAX_TTL))
    claims = Claims(client_id, tuple(scopes), now, now + ttl, secrets.token_hex(16), tuple(allow))
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
            int(data["iat"]),
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


def _redis():
    """The raw Redis connection behind the cache, or None without Redis."""
    if not settings.REDIS_URL:
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def _redis_key() -> str:
    from django.core.cache import cache

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
        return revoked_at is not None and claims.issued_at <= revoked_at

    def invalidate(self) -> None:
        """Reload at the next check (this process has just revoked something)."""
        self._loaded = float("-inf")

    def _refresh(self) -> None:
        if time.monotonic() - self._loaded < REVOCATION_REFRESH:
            return
        with self._lock:
            if time.monotonic() - self._loaded < REVOCATION_REFRESH:
                return
            try:
                tokens, clients = self._load()
            except DatabaseError:
                logger.warning("revocation list unavailable; keeping the last one")
                self._loaded = time.monotonic()
                return
            self._tokens, self._clients = tokens, clients
            self._loaded = time.monotonic()

    @staticmethod
    def _load():
        now = time.time()
        tokens, clients = set(), {}
        redis = None
        try:
            redis = _redis()
            entries = redis.hgetall(_redis_key()) if redis is not None else None
        except Exception as error:  # noqa: BLE001 - Redis down: use the database
            logger.warning("revocations: Redis unavailable (%s)", type(error).__name__)
            entries = None
        if entries is not None:
            for field, value in entries.items():
                kind, _, name = field.decode().partition(":")
                expires_at, revoked_at = (float(x) for x in value.decode().split(","))
                if expires_at <= now:
                    continue
                if kind == "token":
                    tokens.add(name)
                else:
                    clients[name] = revoked_at
            return tokens, clients
        for kind, value, revoked_at in Revocation.objects.filter(
            expires_at__gt=datetime.fromtimestamp(now, tz=UTC)
        ).values_list("kind", "value", "revoked_at"):
            if kind == Revocation.Kind.TOKEN:
                tokens.add(value)
            else:
                clients[value] = revoked_at.timestamp()
        return tokens, clients


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
    try:
        redis = _redis()
        if redis is not None:
            redis.hset(_redis_key(), f"{kind}:{value}", f"{expires_at},{revoked_at}")
    except Exception as error:  # noqa: BLE001 - the database keeps it; reloads read it
        logger.warning("revocation not mirrored to Redis (%s)", type(error).__name__)
    revocations.invalidate()


def access_token_revoke(token: str) -> Claims:
    """Revoke one token (it must be one of ours; expired ones need no revoking)."""
    claims = access_token_decode(token)
    _record(Revocation.Kind.TOKEN, claims.token_id, time.time(), claims.expires_at)
    return claims


def client_revoke_tokens(client_id: str) -> None:
    """Revoke every token the client holds now (later ones are not affected)."""
    now = time.time()
    longest = now + max(settings.TOKENSERVER_ACCESS_TOKEN_MAX_TTL, 1)
    # Tokens are issued with whole seconds: include this second.
    _record(Revocation.Kind.CLIENT, client_id, float(int(now)), longest)


def revocations_prune() -> int:
    """Drop revocations whose tokens have all expired."""
    now = time.time()
    deleted, _ = Revocation.objects.filter(
        expires_at__lte=datetime.fromtimestamp(now, tz=UTC)
    ).delete()
    try:
        redis = _redis()
        if redis is not None:
            for field, value in redis.hgetall(_redis_key()).items():
                if float(value.decode().split(",")[0]) <= now:
                    redis.hdel(_redis_key(), field)
    except Exception:  # noqa: BLE001, S110 - best effort
        pass
    return deleted
