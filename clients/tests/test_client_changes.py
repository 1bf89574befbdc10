"""
Changing or deleting a client revokes the access tokens it holds: they carry
the rights they were issued with and verify without the database. The
revocation is the service's work (clients.services), so the console, the
commands and the API all get it, and a bare model save has no hidden effect.
"""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from clients.access_tokens import (
    InvalidAccessToken,
    access_token_issue,
    access_token_verify,
    revocations,
)
from clients.models import Client, Revocation
from clients.services import client_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_revocations():
    revocations.invalidate()
    yield
    revocations.invalidate()


@pytest.fixture
def app_with_token():
    app, _ = client_create("app", scopes=["token:read", "realm:read"], allow=["wxgzh/*"])
    token, _ = access_token_issue(app.client_id, app.scopes, allow=app.allow)
    return app, token


def change_in_console(console, app, **fields):
    form = {"name": app.name, "enabled": "on", "scopes": app.scopes, "allow": "\n".join(app.allow)}
    return console.post(f"/admin/clients/client/{app.pk}/change/", form | fields)


def assert_revoked(token):
    revocations.invalidate()
    with pytest.raises(InvalidAccessToken, match="revoked"):
        access_token_verify(token)


def test_narrowing_scopes_in_the_console_revokes_the_clients_tokens(
    console, app_with_token, django_capture_on_commit_callbacks
):
    app, token = app_with_token

    with django_capture_on_commit_callbacks(execute=True):
        page = change_in_console(console, app, scopes=["token:read"])

    assert page.status_code == 302
    assert Client.objects.get(pk=app.pk).scopes == ["token:read"]
    assert_revoked(token)


def test_saving_the_console_form_unchanged_keeps_the_tokens(
    console, app_with_token, django_capture_on_commit_callbacks
):
    app, token = app_with_token

    with django_capture_on_commit_callbacks(execute=True):
        page = change_in_console(console, app, name="renamed")

    assert page.status_code == 302
    revocations.invalidate()
    assert access_token_verify(token).client_id == app.client_id


def test_deleting_a_client_in_the_console_revokes_its_tokens(console, app_with_token):
    app, token = app_with_token

    page = console.post(f"/admin/clients/client/{app.pk}/delete/", {"post": "yes"})

    assert page.status_code == 302
    assert not Client.objects.filter(pk=app.pk).exists()
    assert_revoked(token)


def test_deleting_clients_with_the_console_action_revokes_their_tokens(console, app_with_token):
    app, token = app_with_token

    page = console.post(
        "/admin/clients/client/",
        {"action": "delete_selected", "_selected_action": [app.pk], "post": "yes"},
    )

    assert page.status_code == 302
    assert_revoked(token)


def test_a_bare_model_save_has_no_hidden_side_effect(app_with_token):
    # Side effects belong to services; the model only records the change.
    app, token = app_with_token
    app.scopes = ["token:read"]

    app.save()

    assert not Revocation.objects.exists()


def test_revokeclient_disable_revokes_and_disables(app_with_token):
    app, token = app_with_token

    call_command("revokeclient", app.client_id, "--disable", stdout=None)

    assert not Client.objects.get(pk=app.pk).enabled
    assert_revoked(token)


def test_the_refresher_drops_revocations_whose_tokens_have_all_expired():
    now = timezone.now()
    Revocation.objects.create(
        kind="token", value="old", revoked_at=now - timedelta(days=2), expires_at=now
    )
    Revocation.objects.create(
        kind="token", value="live", revoked_at=now, expires_at=now + timedelta(hours=1)
    )

    call_command("refresh_tokens")

    assert list(Revocation.objects.values_list("value", flat=True)) == ["live"]
