"""
Failed sign-ins are limited alike on the console's login page, for staff
HTTP Basic and for the client credentials exchange (issue 11, item 7): past
TOKENSERVER_AUTH_FAILURE_RATE failures of one username (or client id) from one
address, that username is refused from that address, the right password
too, until the window ends; past TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE
failures from one address, whatever the usernames, the whole address is.
Until then another user behind the same address (a shared NAT) signs in.
"""

import base64

import pytest
from django.test import Client as BrowserClient
from rest_framework.test import APIClient

from clients.services import client_create
from tests.factories import STAFF_PASSWORD
from tests.helpers import wait_until

pytestmark = pytest.mark.django_db

LOCKED_ACCOUNT = (
    "Too many failed sign-ins for this account from your address; try again in 1 minute."
)
LOCKED_ADDRESS = "Too many failed sign-ins from your address; try again in 1 minute."


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.TOKENSERVER_AUTH_FAILURE_RATE = "3/min"
    settings.TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE = "50/min"


def console_sign_in(browser, username, password, address="127.0.0.1"):
    return browser.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


def signed_in(browser) -> bool:
    return "_auth_user_id" in browser.session


def basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def staff_call(username, password, address="127.0.0.1"):
    return APIClient().get(
        "/api/realm", HTTP_AUTHORIZATION=basic(username, password), REMOTE_ADDR=address
    )


def exchange(client_id, secret, address="127.0.0.1"):
    return APIClient().post(
        "/api/auth/token",
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        format="json",
        REMOTE_ADDR=address,
    )


# --- The console's login page -------------------------------------------------------------


def test_console_refuses_even_the_right_password_after_too_many_wrong_ones(
    client, staff_user, settings
):
    # Issue 11, item 7: 15 wrong passwords were 15 × 200, then the right one signed in.
    settings.TOKENSERVER_AUTH_FAILURE_RATE = "10/min"

    wrong = [console_sign_in(client, "operator", "wrong").status_code for _ in range(15)]
    right = console_sign_in(client, "operator", STAFF_PASSWORD)

    assert wrong == [200] * 10 + [429] * 5
    assert right.status_code == 429
    assert LOCKED_ACCOUNT in right.content.decode()
    assert 0 < int(right["Retry-After"]) <= 60
    assert not signed_in(client)


def test_console_lockout_of_one_account_leaves_another_at_the_same_address(
    client, staff_user, other_staff_user
):
    for _ in range(3):
        console_sign_in(client, "operator", "wrong")

    locked = console_sign_in(client, "operator", STAFF_PASSWORD)
    other = BrowserClient()
    response = console_sign_in(other, "auditor", STAFF_PASSWORD)

    assert locked.status_code == 429
    assert response.status_code == 302
    assert signed_in(other)


def test_one_address_trying_many_usernames_is_stopped(client, staff_user, settings):
    settings.TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE = "5/min"

    sprayed = [console_sign_in(client, f"user{n}", "guess").status_code for n in range(5)]
    refused = console_sign_in(client, "operator", STAFF_PASSWORD)
    elsewhere = BrowserClient()
    from_elsewhere = console_sign_in(elsewhere, "operator", STAFF_PASSWORD, address="10.0.0.2")

    assert sprayed == [200] * 5
    assert refused.status_code == 429
    assert LOCKED_ADDRESS in refused.content.decode()
    assert from_elsewhere.status_code == 302  # a lockout holds for its address only
    assert signed_in(elsewhere)


def test_the_lockout_says_the_same_whether_the_account_exists(client, staff_user):
    for username in ("operator", "nobody"):
        for _ in range(3):
            console_sign_in(client, username, "wrong")

    existing = console_sign_in(client, "operator", "wrong")
    missing = console_sign_in(client, "nobody", "wrong")

    assert existing.status_code == missing.status_code == 429
    errors = [r.context["form"].non_field_errors() for r in (existing, missing)]
    assert errors[0] == errors[1] == [LOCKED_ACCOUNT]


def test_a_lockout_ends_with_its_window(client, staff_user, settings):
    settings.TOKENSERVER_AUTH_FAILURE_RATE = "2/s"
    for _ in range(2):
        console_sign_in(client, "operator", "wrong")
    assert console_sign_in(client, "operator", STAFF_PASSWORD).status_code == 429

    # Refused attempts do not count: the window ends, and the right password signs in.
    wait_until(
        lambda: console_sign_in(client, "operator", STAFF_PASSWORD).status_code == 302,
        timeout=5,
        interval=0.1,
    )

    assert signed_in(client)


# --- Staff HTTP Basic, and both ways in together -------------------------------------------


def test_basic_lockout_of_one_user_leaves_another_user_at_the_same_address(
    staff_user, other_staff_user
):
    wrong = [staff_call("operator", "wrong").status_code for _ in range(3)]
    locked = staff_call("operator", STAFF_PASSWORD)
    other = staff_call("auditor", STAFF_PASSWORD)

    assert wrong == [401, 401, 401]
    assert locked.status_code == 429
    assert locked.json()["detail"] == LOCKED_ACCOUNT
    assert 0 < int(locked["Retry-After"]) <= 60
    assert other.status_code == 200


def test_console_and_basic_failures_count_together(client, staff_user, settings):
    settings.TOKENSERVER_AUTH_FAILURE_RATE = "4/min"
    console_sign_in(client, "operator", "wrong")
    console_sign_in(client, "operator", "wrong")
    staff_call("operator", "wrong")
    staff_call("operator", "wrong")

    assert console_sign_in(client, "operator", STAFF_PASSWORD).status_code == 429
    assert staff_call("operator", STAFF_PASSWORD).status_code == 429


# --- The client credentials exchange ---------------------------------------------------------


def test_exchange_lockout_of_one_client_leaves_another_at_the_same_address():
    locked_out, secret = client_create("locked-out", scopes=["token:read"])
    other, other_secret = client_create("other", scopes=["token:read"])

    wrong = [exchange(locked_out.client_id, "wrong").status_code for _ in range(3)]
    refused = exchange(locked_out.client_id, secret)
    from_elsewhere = exchange(locked_out.client_id, secret, address="10.0.0.2")
    neighbour = exchange(other.client_id, other_secret)

    assert wrong == [401, 401, 401]
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_failures"
    assert from_elsewhere.status_code == 200
    assert neighbour.status_code == 200


def test_exchange_from_an_address_trying_many_client_ids_is_stopped(settings):
    settings.TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE = "5/min"
    app, secret = client_create("app", scopes=["token:read"])

    sprayed = [exchange(f"ts_guess{n}", "guess").status_code for n in range(5)]
    refused = exchange(app.client_id, secret)

    assert sprayed == [401] * 5
    assert refused.status_code == 429
    assert "from your address" in refused.json()["detail"]


# --- Behind a trusted proxy ------------------------------------------------------------------


def test_behind_a_proxy_the_limits_count_the_forwarded_address(staff_user, settings):
    # Every request comes from the proxy's address; without the forwarded address one
    # attacker's failures would lock everyone out of the per-address limit.
    settings.TOKENSERVER_BEHIND_PROXY = True
    settings.TOKENSERVER_AUTH_FAILURE_RATE = "2/min"

    def call(forwarded, password):
        return APIClient().get(
            "/api/realm",
            HTTP_AUTHORIZATION=basic("operator", password),
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_FORWARDED_FOR=forwarded,
        )

    attacker = [call("203.0.113.9", "wrong").status_code for _ in range(3)]
    operator = call("198.51.100.7", STAFF_PASSWORD)

    assert attacker == [401, 401, 429]
    assert operator.status_code == 200
