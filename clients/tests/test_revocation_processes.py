"""A revocation takes effect within one second on every worker process."""

import time

import pytest
import requests

from clients.access_tokens import access_token_issue, access_token_revoke, client_revoke_tokens
from clients.services import client_create
from tests.factories import RealmFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def statuses(base, token, count=12):
    headers = {"Authorization": f"Bearer {token}"}
    return [
        requests.get(f"{base}/api/realm", headers=headers, timeout=10).status_code
        for _ in range(count)
    ]


@pytest.mark.parametrize("revoke", ["token", "client"])
def test_revocation_reaches_every_worker_within_a_second(gunicorn_server, revoke):
    RealmFactory(id="wxgzh")
    client, _ = client_create("app", scopes=["realm:read"], allow=["*/*"])
    token, _ = access_token_issue(client.client_id, ["realm:read"])
    assert set(statuses(gunicorn_server, token)) == {200}  # several workers answered

    if revoke == "token":
        access_token_revoke(token)
    else:
        client_revoke_tokens(client.client_id)
    revoked_at = time.monotonic()

    # One second later, no worker accepts it any more.
    time.sleep(max(0.0, 1.0 - (time.monotonic() - revoked_at)))
    assert set(statuses(gunicorn_server, token, 16)) == {401}
