"""The console: secret values are write-only; tokens and the fetch log are read-only."""

import pytest
from django.utils import timezone

from secret_store.models import Secret
from tests.factories import RealmFactory, SecretFactory
from tokens.models import FetchLog, StoredToken

pytestmark = pytest.mark.django_db

VALUE_1 = "wx1234567890abcdef"
VALUE_2 = "0123456789abcdef0123456789abcdef"


def test_secret_change_page_never_shows_the_values(console):
    secret = SecretFactory(key_1=VALUE_1, key_2=VALUE_2, token="FIXED-TOKEN-VALUE")

    page = console.get(f"/admin/secrets/secret/{secret.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'type="password"' in html
    for value in (VALUE_1, VALUE_2, "FIXED-TOKEN-VALUE"):
        assert value not in html
    assert "Stored (leave blank to keep)." in html


def _form(secret, **changes):
    data = {
        "realm": secret.realm_id,
        "name": secret.name,
        "key_1": "",
        "key_2": "",
        "key_3": "",
        "key_4": "",
        "key_5": "",
        "token": "",
        "token_expires_at_0": "",
        "token_expires_at_1": "",
        "enabled": "on",
        "comment": "",
    }
    data.update(changes)
    return data


def test_blank_keeps_the_stored_value_and_a_new_one_replaces_it(console):
    secret = SecretFactory(key_1=VALUE_1, key_2=VALUE_2)

    response = console.post(
        f"/admin/secrets/secret/{secret.pk}/change/", _form(secret, key_2="replaced-value")
    )

    assert response.status_code == 302
    secret.refresh_from_db()
    assert (secret.key_1, secret.key_2) == (VALUE_1, "replaced-value")


def test_clear_empties_a_value(console):
    secret = SecretFactory(key_1=VALUE_1, key_2=VALUE_2)

    console.post(f"/admin/secrets/secret/{secret.pk}/change/", _form(secret, clear=["key_2"]))

    secret.refresh_from_db()
    assert (secret.key_1, secret.key_2) == (VALUE_1, "")


def test_add_secret_in_the_console(console):
    realm = RealmFactory(id="wxgzh")

    response = console.post(
        "/admin/secrets/secret/add/",
        {**_form(Secret(realm=realm, name="app")), "key_1": VALUE_1},
    )

    assert response.status_code == 302
    assert Secret.objects.get(name="app").key_1 == VALUE_1


def test_realm_console_with_arguments_inline(console):
    realm = RealmFactory(id="wxgzh")

    page = console.get(f"/admin/realms/realm/{realm.pk}/change/")

    assert page.status_code == 200
    assert "arguments-TOTAL_FORMS" in page.content.decode()


def test_stored_token_page_never_shows_the_token(console):
    secret = SecretFactory()
    now = timezone.now()
    StoredToken.objects.create(
        secret=secret, token="ACCESS-TOKEN-SHOWN?", expires_at=now, fetched_at=now
    )

    listing = console.get("/admin/tokens/storedtoken/")
    detail = console.get(f"/admin/tokens/storedtoken/{secret.pk}/change/")

    assert listing.status_code == detail.status_code == 200
    for page in (listing, detail):
        assert "ACCESS-TOKEN-SHOWN?" not in page.content.decode()


def test_fetch_log_cannot_be_added_changed_or_deleted(console):
    log = FetchLog.objects.create(realm="r", key="k", trigger="request", outcome="ok")

    assert console.get("/admin/tokens/fetchlog/").status_code == 200
    assert console.get("/admin/tokens/fetchlog/add/").status_code == 403
    assert (
        console.post(f"/admin/tokens/fetchlog/{log.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    console.post(f"/admin/tokens/fetchlog/{log.pk}/change/", {"outcome": "timeout"})
    log.refresh_from_db()
    assert log.outcome == "ok"
