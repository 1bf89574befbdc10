"""
Issue 12: clients in the console. Creating one shows its secret exactly once,
on the page after saving (only its digest is kept); operators revoke a
client's access tokens, or one access token, and the API refuses them at once.
"""

import base64
import re

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from clients.access_tokens import access_token_issue, revocations
from clients.admin import NEW_SECRET_SESSION_KEY
from clients.models import Client, Revocation
from clients.services import client_create

pytestmark = pytest.mark.django_db

ADD = "/admin/clients/client/add/"
LIST = "/admin/clients/client/"
REVOKE_TOKEN = "/admin/clients/revocation/revoke-token/"


@pytest.fixture(autouse=True)
def _fresh_revocations():
    revocations.invalidate()
    yield
    revocations.invalidate()


def bearer(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def exchange(client_id, secret):
    api = APIClient()
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    api.credentials(HTTP_AUTHORIZATION=f"Basic {encoded}")
    return api.post("/api/auth/token", {"grant_type": "client_credentials"}, format="json")


def shown_secret(page) -> str | None:
    match = re.search(r'<code id="client-secret">([^<]+)</code>', page.content.decode())
    return match.group(1) if match else None


@pytest.fixture
def app_with_tokens():
    """A client with two access tokens that may list realms."""
    app, _ = client_create("billing", scopes=["realm:read"], allow=["wxgzh/*"])
    first, _ = access_token_issue(app.client_id, app.scopes, allow=app.allow)
    second, _ = access_token_issue(app.client_id, app.scopes, allow=app.allow)
    assert bearer(first).get("/api/realm").status_code == 200
    assert bearer(second).get("/api/realm").status_code == 200
    return app, first, second


# --- Creating a client: the secret, once ------------------------------------------------------


def test_a_client_created_in_the_console_shows_its_secret_once(console):
    form = {"name": "billing", "scopes": ["token:read"], "allow": "wxgzh/*\n*/billing-*\n"}

    saved = console.post(ADD, form)
    next_page = console.get(saved["Location"])
    reload = console.get(saved["Location"])

    app = Client.objects.get(name="billing")
    assert saved.status_code == 302
    assert saved["Location"] == f"{LIST}{app.pk}/secret/"
    secret = shown_secret(next_page)
    assert secret and app.check_secret(secret)
    assert (app.scopes, app.allow) == (["token:read"], ["wxgzh/*", "*/billing-*"])
    assert app.enabled
    assert exchange(app.client_id, secret).status_code == 200
    # Not on a reload, nor anywhere else in the console.
    assert shown_secret(reload) is None
    assert "cannot be shown again" in reload.content.decode()
    for page in (reload, console.get(f"{LIST}{app.pk}/change/"), console.get(LIST)):
        assert page.status_code == 200
        assert secret not in page.content.decode()
    assert "no-store" in next_page["Cache-Control"]


def test_the_secret_waits_for_its_page_encrypted(console):
    saved = console.post(ADD, {"name": "billing", "scopes": ["token:read"], "allow": ""})

    kept = console.session[NEW_SECRET_SESSION_KEY]
    secret = shown_secret(console.get(saved["Location"]))

    assert secret and secret not in str(kept)
    assert NEW_SECRET_SESSION_KEY not in console.session


def test_the_secret_page_of_another_client_shows_no_secret(console):
    other, _ = client_create("other", scopes=["token:read"])
    console.post(ADD, {"name": "billing", "scopes": ["token:read"], "allow": ""})

    page = console.get(f"{LIST}{other.pk}/secret/")

    assert page.status_code == 200
    assert shown_secret(page) is None


def test_a_client_without_scopes_or_with_a_bad_pattern_is_not_created(console):
    no_scope = console.post(ADD, {"name": "a", "allow": ""})
    bad_pattern = console.post(ADD, {"name": "b", "scopes": ["token:read"], "allow": "nopattern"})

    assert no_scope.status_code == bad_pattern.status_code == 200
    assert "Grant at least one scope." in no_scope.content.decode()
    assert "must be REALM/KEY" in bad_pattern.content.decode()
    assert not Client.objects.exists()


# --- Revoking -------------------------------------------------------------------------------


def test_revoking_a_clients_tokens_in_the_console(console, app_with_tokens):
    app, first, second = app_with_tokens

    page = console.post(LIST, {"action": "revoke_tokens", "_selected_action": [app.pk]})

    assert page.status_code == 302
    assert bearer(first).get("/api/realm").status_code == 401
    assert bearer(second).get("/api/realm").status_code == 401
    assert Client.objects.get(pk=app.pk).enabled


def test_revoking_and_disabling_a_client_in_the_console(console):
    app, secret = client_create("billing", scopes=["realm:read"])
    token = exchange(app.client_id, secret).json()["access_token"]

    console.post(LIST, {"action": "revoke_and_disable", "_selected_action": [app.pk]})

    assert bearer(token).get("/api/realm").status_code == 401
    assert exchange(app.client_id, secret).status_code == 401
    assert not Client.objects.get(pk=app.pk).enabled


def test_revoking_one_access_token_in_the_console(console, app_with_tokens):
    app, first, second = app_with_tokens

    page = console.post(REVOKE_TOKEN, {"token": f"  {first}\n"})

    assert page.status_code == 302
    assert page["Location"] == "/admin/clients/revocation/"
    assert bearer(first).get("/api/realm").status_code == 401
    assert bearer(second).get("/api/realm").status_code == 200
    assert Revocation.objects.get().kind == Revocation.Kind.TOKEN


def test_a_pasted_text_that_is_no_token_of_ours_is_refused_and_not_echoed(console):
    pasted = "tsat1.abcdef12.not-a-real-ciphertext"

    page = console.post(REVOKE_TOKEN, {"token": pasted})

    assert page.status_code == 200
    html = page.content.decode()
    assert "Not an access token of this server (wrong key)." in html
    assert pasted not in html
    assert not Revocation.objects.exists()


def test_the_revocations_list_links_to_the_revoke_token_page(console):
    page = console.get("/admin/clients/revocation/")

    assert f'href="{REVOKE_TOKEN}"' in page.content.decode()
    assert console.get(REVOKE_TOKEN).status_code == 200


def test_staff_who_may_only_view_clients_cannot_revoke(client, staff_user, app_with_tokens):
    app, first, _ = app_with_tokens
    staff_user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_client", "view_revocation"])
    )
    client.force_login(staff_user)

    listing = client.get(LIST)
    action = client.post(LIST, {"action": "revoke_tokens", "_selected_action": [app.pk]})
    page = client.get(REVOKE_TOKEN)
    posted = client.post(REVOKE_TOKEN, {"token": first})

    assert "revoke_tokens" not in listing.content.decode()
    assert action.status_code in (200, 302)
    assert page.status_code == posted.status_code == 403
    assert bearer(first).get("/api/realm").status_code == 200


def test_a_revocation_cannot_be_deleted_from_the_console(console, app_with_tokens):
    # Deleting the row would quietly make the revoked token valid again.
    app, first, _ = app_with_tokens
    console.post(REVOKE_TOKEN, {"token": first})
    revocation = Revocation.objects.get()

    page = console.post(f"/admin/clients/revocation/{revocation.pk}/delete/", {"post": "yes"})

    assert page.status_code == 403
    assert Revocation.objects.filter(pk=revocation.pk).exists()
    assert bearer(first).get("/api/realm").status_code == 401
