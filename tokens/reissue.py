"""
Same-token answers, as the console tells them (issue 14): providers such as
Feishu hand back the token they issued while more than their re-issue window
remains (30 minutes), so a refresh earlier than that costs a call and brings
nothing new. The token path records such an answer (FetchLog.same_token) and
what it showed (StoredToken.same_token_left: the least lifetime left at which
the same token came back, per secret), and waits for the re-issue window before
the next refresh (StoredToken.reissue_limit). This module reads those facts for
the realm page and the dashboard, to warn an operator whose refresh margin is
wider than what the provider's answers show the window to be.
"""

from dataclasses import dataclass

from django.db.models import Min

from realms.models import Realm
from tokens.models import StoredToken


def realm_reissue_seen(realm: Realm) -> int | None:
    """
    The least lifetime left with which the realm's provider handed back a token
    already held, over its secrets' stored tokens (one query); None: never seen.
    """
    found = StoredToken.objects.filter(secret__realm=realm).aggregate(seen=Min("same_token_left"))
    return found["seen"]


def _warning(realm_id: str, margin: int, seen: int | None, window: int | None) -> str | None:
    if seen is not None and margin > seen:
        return (
            f"Realm {realm_id}: its provider handed back the same token with {seen} s left, "
            f"but the refresh margin is {margin} s: a refresh that early gets the same token "
            "back and costs a call. tokenserver waits for the re-issue window after such an "
            f"answer; set refresh_margin below {seen} s, or reissue_window to the provider's "
            "documented window (Feishu, Lark: 1800), to save those calls."
        )
    if window is not None and margin > window:
        return (
            f"Realm {realm_id}: the refresh margin ({margin} s) is wider than its "
            f"reissue_window ({window} s): refreshes are scheduled inside the window instead."
        )
    return None


def realm_reissue_warning(realm: Realm) -> str | None:
    """Why the realm's refresh margin is wider than its provider re-issues, if it is."""
    return _warning(realm.id, realm.refresh_margin, realm_reissue_seen(realm), realm.reissue_window)


def reissue_summary(realm: Realm) -> str:
    """What the realm's answers showed, when nothing is wrong with its margin."""
    seen = realm_reissue_seen(realm)
    if seen is None:
        return "Its provider has not handed back a token already held."
    return (
        f"Its provider handed back the same token with {seen} s left at the least; the "
        f"refresh margin ({realm.refresh_margin} s) is within that."
    )


@dataclass(frozen=True)
class ReissueWarning:
    realm_id: str
    margin: int
    seen: int | None
    text: str


def realms_with_reissue_seen():
    """Every realm with `seen`: realm_reissue_seen for each, in one query."""
    return Realm.objects.annotate(seen=Min("secrets__stored_token__same_token_left")).order_by("id")


def reissue_warnings(realms=None) -> list[ReissueWarning]:
    """
    Every realm whose refresh margin is wider than its provider re-issues (what
    its answers showed, or its reissue_window), by id: one query, none when given
    `realms` from realms_with_reissue_seen (the dashboard reads them anyway).
    """
    if realms is None:
        realms = realms_with_reissue_seen()
    warnings = []
    for realm in realms:
        text = _warning(realm.id, realm.refresh_margin, realm.seen, realm.reissue_window)
        if text:
            warnings.append(ReissueWarning(realm.id, realm.refresh_margin, realm.seen, text))
    return warnings
