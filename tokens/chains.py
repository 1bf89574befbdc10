"""
Chained realms (issue 14): a realm whose token is fetched with the current
token of another secret, its parent (`Realm.parent`; its arguments send it as
`$parent_token`). WeChat's JS-SDK ticket is fetched with the access token.

What the single flight (tokens.single_flight) needs to know about a chain:

- the parent's token (`parent_token`), through the token path, as an app would
  get it: the cached or stored token while it is valid, else the parent's own
  single flight; after the child's upstream refused it, compare-and-refresh
  (`rejected=` the token the child's call carried): the parent is refreshed only
  if that token is still its current one, and not within its realm's
  `min_flush_interval` of its fetch;
- which chained secrets hold a token fetched with another token than their
  parent's current one (`children_behind`), to refresh them ahead;
- for the refresher, how deep each realm sits in its chain (`chain_depths`), so
  parents are refreshed before their children, and the current token of each
  parent (`parent_fingerprints`).

The token path calls the single flight, which calls the token path back for
the parent: a cycle of calls across two modules. tokens.apps hands the token
path (tokens.services.token_get) to `connect` when the app is ready, so the
single flight imports nothing above it.

A chain has no cycle and is at most MAX_CHAIN_LENGTH realms long when it is
saved (Realm.clean); two saves racing could still close one, so each thread
keeps the trail of the secrets it is fetching parents for, and refuses to go
round (a cycle would otherwise wait on its own lock).
"""

from collections.abc import Callable, Iterable
from contextvars import ContextVar

from realms.models import MAX_CHAIN_LENGTH, Realm
from secret_store.models import Secret
from tokens.models import FetchLog, StoredToken, fingerprint
from tokens.results import TokenResult
from tokenserver.errors import (
    LockWaitTimeout,
    QuotaExhausted,
    ServiceError,
    UpstreamError,
    UpstreamUnavailable,
)

#: The token path (tokens.services.token_get), connected by tokens.apps.
_token_path: Callable[..., TokenResult] | None = None

#: The secrets whose parents this thread is fetching, outermost first.
_trail: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("chain_trail", default=())


def connect(token_path: Callable[..., TokenResult]) -> None:
    """Hand the token path to the chains (tokens.apps, at start-up)."""
    global _token_path
    _token_path = token_path


def parent_token(secret: Secret, *, rejected: str | None = None, client: str = "") -> TokenResult:
    """
    The current token of `secret`'s parent secret, through the token path
    (trigger `chain`, `client` the one the child's fetch is for). With `rejected`,
    the parent token the child's upstream refused: compare-and-refresh.

    Raises the child's error when the parent gives none: UpstreamUnavailable
    (503) when the parent's upstream or lock is unavailable, else UpstreamError
    (502: its upstream refused, it does not exist or is disabled, it may not be
    refreshed again yet), with the parent's detail and Retry-After, and context
    `outcome` rejected, `error_code` "parent" (what the child's fetch-log row
    says: no call was made for the child).
    """
    here = (secret.realm_id, secret.name)
    parent = secret.realm.parent_secret_of(secret.name)
    trail = _trail.get()
    if parent in trail or parent == here or len(trail) + 2 > MAX_CHAIN_LENGTH:
        route = " → ".join(f"{realm}/{key}" for realm, key in (*trail, here, parent))
        raise UpstreamError(
            f"The chain of {secret} goes round or is longer than {MAX_CHAIN_LENGTH}: {route}.",
            outcome=FetchLog.Outcome.REJECTED,
            error_code="parent",
            error_message="chain goes round or is too long",
        )
    if _token_path is None:
        raise RuntimeError("tokens.chains is not connected to the token path (tokens.apps)")
    token = _trail.set((*trail, here))
    try:
        return _token_path(
            *parent, rejected=rejected, trigger=FetchLog.Trigger.CHAIN, client=client
        )
    except ServiceError as error:
        raise _child_error(secret, parent, error) from None
    finally:
        _trail.reset(token)


def _child_error(secret: Secret, parent: tuple[str, str], error: ServiceError) -> ServiceError:
    """The parent's error, as the child's: its detail, named, and its Retry-After."""
    detail = (
        f"The parent token of {secret} ({parent[0]}/{parent[1]}) is not to be had: {error.detail}"
    )
    context = {
        "outcome": FetchLog.Outcome.REJECTED,
        "error_code": "parent",
        "error_message": error.detail[:500],
        # Answered from memory (tokens.permanent_errors): nothing new to log.
        "parent_remembered": bool(error.context.get("remembered")),
    }
    if isinstance(error, (UpstreamUnavailable, LockWaitTimeout)):
        return UpstreamUnavailable(detail, retry_after=error.retry_after or 5, **context)
    if isinstance(error, QuotaExhausted):
        # The parent's daily budget is used up: the child's answer is the same 429 with
        # the same Retry-After (until the parent provider's day turns), not a 502.
        return QuotaExhausted(detail, retry_after=error.retry_after, **context)
    return UpstreamError(detail, retry_after=error.retry_after, **context)


def children_behind(secret: Secret, token: str) -> list[Secret]:
    """
    The enabled secrets fetched with `secret`'s token whose stored token was fetched
    with another one than `token` (its new one), loaded as the single flight needs
    them. Secrets never fetched are left to their first request. One query.
    """
    return list(
        Secret.objects.taking_token_of(secret.realm_id, secret.name)
        .filter(enabled=True, stored_token__isnull=False)
        .exclude(stored_token__parent_fingerprint=fingerprint(token))
        .select_related("realm", "stored_token", "remembered_error")
        .order_by("realm_id", "name")
    )


def chain_depths() -> dict[str, int]:
    """Each realm's depth in its chain: 0 unchained, 1 a parent's child, … One query."""
    parents = dict(Realm.objects.values_list("id", "parent_id"))
    depths: dict[str, int] = {}

    def depth(realm_id: str) -> int:
        seen = []
        current = realm_id
        while parents.get(current) and current not in seen and len(seen) < MAX_CHAIN_LENGTH:
            seen.append(current)
            current = parents[current]
        return len(seen)

    for realm_id in parents:
        depths[realm_id] = depth(realm_id)
    return depths


def parent_fingerprints(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The fingerprints of the stored tokens of these (realm, key) secrets. One query."""
    wanted = set(pairs)
    if not wanted:
        return {}
    rows = StoredToken.objects.filter(
        secret__realm_id__in={realm_id for realm_id, _ in wanted},
        secret__name__in={name for _, name in wanted},
    ).values_list("secret__realm_id", "secret__name", "token")
    return {
        (realm_id, name): fingerprint(token)
        for realm_id, name, token in rows
        if (realm_id, name) in wanted
    }
