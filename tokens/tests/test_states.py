"""
How a secret's token stands (issue 12): the model's facts (StoredToken.state,
fingerprint) and the one function the console and the API both call
(tokens.states.secret_token_state).
"""

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from secret_store.models import Secret
from tests.factories import RealmFactory, SecretFactory, stored_token
from tokens.models import FetchLog, StoredToken, TokenState
from tokens.states import (
    realm_token_counts,
    secret_token_state,
    secrets_in_state,
    secrets_with_token_facts,
)

pytestmark = pytest.mark.django_db


def _token(fetched_ago, left):
    now = timezone.now()
    return StoredToken(
        fetched_at=now - timedelta(seconds=fetched_ago), expires_at=now + timedelta(seconds=left)
    ), now


@pytest.mark.parametrize(
    ("fetched_ago", "left", "margin", "state"),
    [
        (600, 6600, 300, TokenState.VALID),
        (6950, 250, 300, TokenState.REFRESHING),  # inside the 300 s margin
        (7200, 0, 300, TokenState.EXPIRED),
        (7300, -100, 300, TokenState.EXPIRED),
        # A margin longer than half the lifetime counts as half of it (refresh_at does too).
        (100, 200, 3600, TokenState.VALID),
        (160, 140, 3600, TokenState.REFRESHING),
    ],
)
def test_stored_token_state(fetched_ago, left, margin, state):
    token, now = _token(fetched_ago, left)

    assert token.state(margin, now) == state


def test_refreshing_starts_no_later_than_the_token_path_refreshes():
    token, now = _token(6000, 1200)

    # From the point the token path refreshes on, the state says "refreshing".
    assert token.state(1500, token.refresh_at(1500)) == TokenState.REFRESHING
    assert token.state(1000, now) == TokenState.VALID


def test_fingerprint_is_a_short_hash_never_the_token():
    token = StoredToken(token="ACCESS-TOKEN-123")

    assert token.fingerprint() == hashlib.sha256(b"ACCESS-TOKEN-123").hexdigest()[:8]
    assert "ACCESS" not in token.fingerprint()


def test_secret_token_state_of_each_kind():
    fetched = SecretFactory(realm=RealmFactory(refresh_margin=300))
    stored_token(fetched, age=600, left=83 * 60 + 30)
    never = SecretFactory()
    fixed = SecretFactory(realm=RealmFactory(kind="fixed", url=""), token="FIXED")

    states = {
        secret.pk: secret_token_state(secret)
        for secret in secrets_with_token_facts(Secret.objects.all())
    }

    assert states[fetched.pk].state == TokenState.VALID
    assert states[fetched.pk].label() == "valid, 83 min left"
    assert states[never.pk].label() == "never fetched"
    assert states[never.pk].expires_at is None
    assert states[fixed.pk].label() == "fixed"


def test_last_fetch_is_the_newest_row_of_this_secret_only():
    secret = SecretFactory(name="app")
    other = SecretFactory(name="other", realm=secret.realm)
    FetchLog.objects.create(realm=secret.realm_id, key="app", trigger="request", outcome="ok")
    FetchLog.objects.create(realm=secret.realm_id, key="app", trigger="admin", outcome="timeout")
    FetchLog.objects.create(realm=secret.realm_id, key="other", trigger="request", outcome="ok")
    # A row from before the secret existed belongs to an earlier secret of that name.
    FetchLog.objects.create(
        realm=secret.realm_id,
        key="app",
        trigger="request",
        outcome="unreachable",
        created_at=secret.created_at - timedelta(days=1),
    )

    annotated = secrets_with_token_facts(Secret.objects.filter(pk=secret.pk)).get()

    assert secret_token_state(annotated).last_fetch_outcome == "timeout"
    # A secret loaded without the annotations gets the same answer (with a query).
    assert secret_token_state(secret).last_fetch_outcome == "timeout"
    assert secret_token_state(other).last_fetch_outcome == "ok"


def test_filter_by_state_and_realm_counts_agree_with_the_states():
    realm = RealmFactory(refresh_margin=300)
    valid, refreshing, expired, never = (SecretFactory(realm=realm) for _ in range(4))
    stored_token(valid, left=3000)
    stored_token(refreshing, age=7000, left=200)
    stored_token(expired, age=7300, left=-100)

    for state, secret in [
        (TokenState.VALID, valid),
        (TokenState.REFRESHING, refreshing),
        (TokenState.EXPIRED, expired),
        (TokenState.NEVER_FETCHED, never),
    ]:
        assert list(secrets_in_state(Secret.objects.all(), state)) == [secret]
    assert realm_token_counts(realm) == {
        TokenState.VALID: 1,
        TokenState.REFRESHING: 1,
        TokenState.EXPIRED: 1,
        TokenState.NEVER_FETCHED: 1,
        TokenState.FIXED: 0,
    }
