"""
How a secret's token stands, told the same way by the console and the API:
`secret_token_state` is the one computation; `secrets_with_token_facts`
loads what it needs for a whole list in one query (the realm and the stored
token joined, the last fetch-log row per secret as two subqueries), so a list
costs the same number of queries for 3 secrets as for 300.

The state comes from the database (the stored token), not the cache: the
cache holds the same token (the token path writes both), and a list must not
cost a cache round trip per row. The token itself is never loaded for a list
(deferred), and never leaves this module but as a fingerprint.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from realms.models import Realm, reissue_limit_of
from secret_store.models import VALUE_FIELDS, Secret
from tokens.models import FetchLog, RefreshHealth, StoredToken, TokenState, fingerprint

#: What a list never needs: the secret's values and its token (decrypted on load).
_SEALED = (*VALUE_FIELDS, "token", "stored_token__token")

#: How many fetch-log rows the console shows for one secret.
RECENT_FETCHES = 20


@dataclass(frozen=True)
class SecretTokenState:
    """A secret's token as the operator sees it: never the token itself."""

    state: TokenState
    expires_at: datetime | None  # the stored token's (or the fixed token's) expiry
    remaining: timedelta | None  # what is left of it, when it has not expired
    last_fetch_outcome: str | None  # of the secret's last fetch-log row, if any
    last_fetch_at: datetime | None

    def label(self) -> str:
        """ "valid, 83 min left", "refreshing, 4 min left", "expired", "never fetched", "fixed"."""
        if self.state in (TokenState.VALID, TokenState.REFRESHING) and self.remaining:
            seconds = int(self.remaining.total_seconds())
            left = f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"
            return f"{self.state.value}, {left} left"
        return "never fetched" if self.state == TokenState.NEVER_FETCHED else self.state.value

    def as_dict(self) -> dict:
        """The API's `token_state` object."""
        return {
            "state": self.state.value,
            "expires_at": self.expires_at,
            "last_fetch_outcome": self.last_fetch_outcome,
            "last_fetch_at": self.last_fetch_at,
        }


def secrets_with_token_facts(secrets: QuerySet) -> QuerySet:
    """
    `secrets` with what `secret_token_state` reads: the realm and the stored
    token (without its token) joined, and the outcome and time of each
    secret's last fetch-log row annotated (`last_fetch_outcome`, `last_fetch_at`);
    and what `secret_refresh_health` reads (joined too).
    """
    last = FetchLog.objects.of_secret(
        OuterRef("realm_id"), OuterRef("name"), OuterRef("created_at")
    )
    return (
        secrets.select_related("realm", "stored_token", "refresh_health")
        .defer("stored_token__token")
        .annotate(
            last_fetch_outcome=Subquery(last.values("outcome")[:1]),
            last_fetch_at=Subquery(last.values("created_at")[:1]),
        )
    )


def secret_token_state(secret: Secret, now: datetime | None = None) -> SecretTokenState:
    """
    How the token of `secret` stands at `now`. Reads what
    `secrets_with_token_facts` loaded; a secret loaded otherwise costs a query
    for its stored token and one for its last fetch.
    """
    now = now or timezone.now()
    state, expires_at = _state(secret, now)
    if hasattr(secret, "last_fetch_outcome"):
        outcome, at = secret.last_fetch_outcome, secret.last_fetch_at
    else:
        last = FetchLog.objects.of_secret(secret.realm_id, secret.name, secret.created_at)
        outcome, at = last.values_list("outcome", "created_at").first() or (None, None)
    remaining = expires_at - now if expires_at is not None and expires_at > now else None
    return SecretTokenState(state, expires_at, remaining, outcome, at)


def secret_refresh_health(secret: Secret) -> RefreshHealth | None:
    """
    Whether the secret's refreshes are failing (tokens.refresh_health), as
    `secrets_with_token_facts` loaded it (else one query); None until a refresh
    of it has failed once.
    """
    try:
        return secret.refresh_health
    except RefreshHealth.DoesNotExist:
        return None


def _state(secret: Secret, now: datetime) -> tuple[TokenState, datetime | None]:
    if secret.realm.kind == Realm.Kind.FIXED:
        return TokenState.FIXED, secret.token_expires_at
    stored = _stored(secret)
    realm = secret.realm
    state = _classify(realm.kind, realm.refresh_margin, stored, now, realm.reissue_limit())
    return state, None if stored is None else stored.expires_at


def _classify(
    kind: str, margin: int, stored: StoredToken | None, now: datetime, reissue=None
) -> TokenState:
    if kind == Realm.Kind.FIXED:
        return TokenState.FIXED
    if stored is None:
        return TokenState.NEVER_FETCHED
    return stored.state(margin, now, reissue)


def _stored(secret: Secret) -> StoredToken | None:
    try:
        return secret.stored_token
    except StoredToken.DoesNotExist:
        return None


def secret_token_fingerprint(secret: Secret) -> str | None:
    """The fingerprint of the token apps get for `secret` now (stored or fixed), if any."""
    if secret.realm.kind == Realm.Kind.FIXED:
        return fingerprint(secret.token) if secret.token else None
    stored = _stored(secret)
    return stored.fingerprint() if stored is not None else None


def secret_recent_fetches(secret: Secret, limit: int = RECENT_FETCHES) -> list[FetchLog]:
    """The secret's last `limit` fetch-log rows, newest first."""
    return list(FetchLog.objects.of_secret(secret.realm_id, secret.name, secret.created_at)[:limit])


def secrets_in_state(secrets: QuerySet, state: str, now: datetime | None = None) -> QuerySet:
    """
    The secrets of `secrets` whose token is in `state` at `now`. The state is
    computed by the same model method as everywhere (StoredToken.state: the
    refresh margin depends on each token's lifetime), from one light query
    (no values, no tokens), then filtered by primary key.
    """
    now = now or timezone.now()
    rows = secrets.values_list(
        "pk",
        "realm__kind",
        "realm__refresh_margin",
        "realm__reissue_window",
        *(f"stored_token__{name}" for name in _TIMES),
    )
    matching = [
        pk
        for pk, kind, margin, window, *times in rows
        if _classify(kind, margin, _row_token(*times), now, reissue_limit_of(window)) == state
    ]
    return secrets.filter(pk__in=matching)


#: What a stored token's state depends on, besides its realm.
_TIMES = ("fetched_at", "expires_at", "issued_at", "same_token_left", "reissued_left")


def _row_token(*times) -> StoredToken | None:
    # An unsaved row with what its state depends on: the model's method decides.
    if times[1] is None:
        return None
    return StoredToken(**dict(zip(_TIMES, times, strict=True)))


def realm_token_counts(realm: Realm, now: datetime | None = None) -> dict[TokenState, int]:
    """How many of the realm's secrets have their token in each state (every state listed)."""
    now = now or timezone.now()
    counts = dict.fromkeys(TokenState, 0)
    secrets = (
        Secret.objects.filter(realm=realm).select_related("realm", "stored_token").defer(*_SEALED)
    )
    for secret in secrets:
        counts[_state(secret, now)[0]] += 1
    return counts


@dataclass(frozen=True)
class SecretChain:
    """
    A secret's place in a chain of realms (issue 14), as the console shows it:
    the parent secret its token is fetched with (`parent_name` even when that
    secret is missing), the fingerprints of the parent's current token and of the
    one this secret's token was fetched with, and the secrets fetched with its
    token. Fingerprints only, never a token.
    """

    parent_name: str  # "wxgzh/main"; "" when the realm is not chained
    parent: Secret | None
    parent_fingerprint: str | None  # of the parent's stored token
    fetched_with: str | None  # the parent token's fingerprint this secret's token was fetched with
    children: list[Secret]

    @property
    def behind(self) -> bool:
        """Fetched with another parent token than the parent's current one (refreshed ahead)."""
        return bool(self.fetched_with and self.parent_fingerprint) and (
            self.fetched_with != self.parent_fingerprint
        )


def secret_chain(secret: Secret) -> SecretChain | None:
    """The chain `secret` is in (None: none), for its console page: a few queries."""
    children = list(
        Secret.objects.taking_token_of(secret.realm_id, secret.name)
        .defer(*VALUE_FIELDS, "token")
        .order_by("realm_id", "name")
    )
    pair = secret.realm.parent_secret_of(secret.name)
    if pair is None and not children:
        return None
    parent = None
    parent_fingerprint = None
    if pair is not None:
        parent = (
            Secret.objects.filter(realm_id=pair[0], name=pair[1])
            .select_related("realm", "stored_token")
            .defer(*VALUE_FIELDS, "token")
            .first()
        )
        parent_fingerprint = secret_token_fingerprint(parent) if parent else None
    stored = _stored(secret)
    return SecretChain(
        parent_name=f"{pair[0]}/{pair[1]}" if pair else "",
        parent=parent,
        parent_fingerprint=parent_fingerprint,
        fetched_with=(stored.parent_fingerprint or None) if stored else None,
        children=children,
    )
