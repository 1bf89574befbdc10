"""
Issue 12: the console's address allow-list, and its external sign-in (SSO)
through a user service (the fake upstream, on a real socket).
"""

import json
import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core.checks import Error
from django.core.management import CommandError, call_command

from clients.checks import console_allow_list_check, console_sso_check
from clients.sso import SESSION_UID
from clients.tests.conftest import VALID
from tests.helpers import wait_until

TICKET = "TICKET-s3cr3t-0123456789"

pytestmark = pytest.mark.django_db


def signed_in_as(client):
    """The username the client's session belongs to (None: nobody)."""
    session = client.session
    user_id = session.get("_auth_user_id")
    if user_id is None:
        return None
    return get_user_model().objects.get(pk=user_id).username


def login_redirect_target(response):
    """Where a 307 to the user service's login page sends the browser back to."""
    assert response.status_code == 307
    parts = urlsplit(response["Location"])
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://login.example.com/login"
    query = parse_qs(parts.query)
    assert query["app"] == ["tokenserver"]  # the login URL's own query is kept
    return query["redirect_url"][0]


def sent(upstream):
    """The JSON bodies POSTed to the user service."""
    return [json.loads(call["body"]) for call in upstream.calls("/validate")]


# --- IP allow-list -----------------------------------------------------------------


@pytest.fixture
def allow_list(settings):
    settings.TOKENSERVER_CONSOLE_ALLOWED_IPS = ["10.0.0.0/8", "192.0.2.7"]


@pytest.mark.parametrize("path", ["/admin/", "/admin/login/", "/admin/realms/realm/"])
def test_console_from_an_address_outside_the_allow_list_is_refused(client, allow_list, path):
    response = client.get(path, REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 403
    assert b"not reachable from your network address" in response.content


@pytest.mark.parametrize("address", ["10.20.30.40", "192.0.2.7", "::ffff:10.1.2.3"])
def test_console_from_an_allowed_address_or_network_is_served(client, allow_list, address):
    response = client.get("/admin/login/", REMOTE_ADDR=address)

    assert response.status_code == 200


def test_the_allow_list_refuses_before_the_sign_in(client, staff_user, allow_list, sso, settings):
    client.cookies["uid"], client.cookies["ticket"] = staff_user.username, TICKET

    response = client.get("/admin/", REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 403
    assert sso.calls("/validate") == []  # the user service was not asked
    assert signed_in_as(client) is None


def test_the_allow_list_leaves_the_api_and_health_probes_alone(client, allow_list):
    assert client.get("/api/token", REMOTE_ADDR="203.0.113.9").status_code == 401
    assert client.get("/healthz", REMOTE_ADDR="203.0.113.9").status_code == 200


def test_forwarded_for_counts_behind_a_trusted_proxy(client, allow_list, settings):
    settings.TOKENSERVER_BEHIND_PROXY = True

    # The proxy (10.0.0.2) appends the address it saw: the last entry.
    outside = client.get(
        "/admin/login/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.9"
    )
    inside = client.get(
        "/admin/login/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.9, 10.5.5.5"
    )
    # An entry the client wrote itself, before the proxy's, is no pass.
    spoofed = client.get(
        "/admin/login/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="10.5.5.5, 203.0.113.9"
    )

    assert (outside.status_code, inside.status_code, spoofed.status_code) == (403, 200, 403)


def test_forwarded_for_is_ignored_without_a_trusted_proxy(client, allow_list, settings):
    settings.TOKENSERVER_BEHIND_PROXY = False

    response = client.get(
        "/admin/login/", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="10.5.5.5"
    )

    assert response.status_code == 403


def test_a_malformed_allow_list_entry_stops_the_start_up(settings):
    settings.TOKENSERVER_CONSOLE_ALLOWED_IPS = ["10.0.0.0/8", "10.0.0.300/24"]

    errors = console_allow_list_check(None)

    assert [error.id for error in errors] == ["clients.E001"]
    assert "entry 2" in errors[0].msg
    with pytest.raises(CommandError, match="clients.E001"):
        call_command("check")


# --- External sign-in: accepted ------------------------------------------------------


def test_no_cookies_redirect_to_the_login_page_with_the_original_url(client, sso, settings):
    settings.TOKENSERVER_SSO_MISSING_COOKIE_REDIRECTS = True

    response = client.get("/admin/realms/realm/?o=1")

    assert login_redirect_target(response) == "http://testserver/admin/realms/realm/?o=1"
    assert sso.calls("/validate") == []


def test_the_redirect_parameter_name_is_configurable(client, sso, settings):
    settings.TOKENSERVER_SSO_MISSING_COOKIE_REDIRECTS = True
    settings.TOKENSERVER_SSO_REDIRECT_PARAM = "back"

    response = client.get("/admin/")

    assert parse_qs(urlsplit(response["Location"]).query)["back"] == ["http://testserver/admin/"]


def test_a_missing_cookie_is_sent_as_the_absent_value_and_signs_nobody_in(client, staff_user, sso):
    client.cookies["uid"] = staff_user.username
    sso.reply("/validate", {"code": 401, "data": {"result": False}})

    response = client.get("/admin/")

    assert login_redirect_target(response) == "http://testserver/admin/"
    assert sent(sso) == [{"uid": "operator", "ticket": "undefined"}]
    assert signed_in_as(client) is None


def test_valid_cookies_sign_the_staff_user_in(sso_cookies, sso):
    response = sso_cookies.get("/admin/")

    assert response.status_code == 200
    assert signed_in_as(sso_cookies) == "operator"
    assert sso_cookies.session[SESSION_UID] == "operator"
    assert sent(sso) == [{"uid": "operator", "ticket": TICKET}]


def test_cookie_and_field_names_are_configurable(client, staff_user, sso, settings):
    settings.TOKENSERVER_SSO_UID_COOKIE, settings.TOKENSERVER_SSO_TICKET_COOKIE = "sid", "st"
    settings.TOKENSERVER_SSO_UID_FIELD, settings.TOKENSERVER_SSO_TICKET_FIELD = "userId", "t"
    client.cookies["sid"], client.cookies["st"] = staff_user.username, TICKET

    response = client.get("/admin/")

    assert response.status_code == 200
    assert sent(sso) == [{"userId": "operator", "t": TICKET}]


# --- External sign-in: refused -----------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        {"code": 1, "data": {"result": True}},  # the first rule fails
        {"code": 0, "data": {"result": False}},  # the second rule fails
        {"code": 0},  # the second rule's field is missing
        {"code": "0", "data": {"result": "no"}},
        [],  # not an object at all
    ],
)
def test_an_answer_failing_any_match_rule_signs_nobody_in(sso_cookies, sso, answer, caplog):
    sso.reply("/validate", answer)

    with caplog.at_level(logging.INFO, logger="clients.sso"):
        response = sso_cookies.get("/admin/")

    assert login_redirect_target(response) == "http://testserver/admin/"
    assert signed_in_as(sso_cookies) is None
    assert "console sign-in refused" in caplog.text
    assert TICKET not in caplog.text


@pytest.mark.parametrize(
    ("reply", "cause"),
    [
        ({"payload": VALID, "delay": 2.0}, "did not answer within 0.3 s"),
        ({"payload": {"code": 0}, "status": 502}, "answered HTTP 502"),
        ({"payload": b"<html>Bad gateway</html>"}, "not JSON"),
    ],
    ids=["timeout", "5xx", "not-json"],
)
def test_a_failing_user_service_gets_a_clear_page_and_signs_nobody_in(
    sso_cookies, sso, settings, reply, cause, caplog
):
    settings.TOKENSERVER_SSO_TIMEOUT = 0.3
    sso.reply("/validate", **reply)

    with caplog.at_level(logging.WARNING, logger="clients.sso"):
        response = sso_cookies.get("/admin/")

    assert response.status_code == 503
    assert b"Sign-in service unavailable" in response.content
    assert signed_in_as(sso_cookies) is None
    assert cause in caplog.text
    assert TICKET not in caplog.text
    assert TICKET.encode() not in response.content


def test_an_unknown_uid_is_refused_unless_users_are_created(client, sso, settings):
    settings.TOKENSERVER_SSO_CREATE_USERS = False
    client.cookies["uid"], client.cookies["ticket"] = "newcomer", TICKET

    response = client.get("/admin/")

    assert response.status_code == 403
    assert b"may not use the console" in response.content
    assert not get_user_model().objects.filter(username="newcomer").exists()


def test_an_unknown_uid_becomes_a_staff_user_in_the_configured_group(client, sso, settings):
    settings.TOKENSERVER_SSO_CREATE_USERS = True
    settings.TOKENSERVER_SSO_GROUP = "operators"
    client.cookies["uid"], client.cookies["ticket"] = "newcomer", TICKET

    response = client.get("/admin/")

    assert response.status_code == 200
    user = get_user_model().objects.get(username="newcomer")
    assert user.is_staff and not user.is_superuser
    assert not user.has_usable_password()
    assert list(user.groups.values_list("name", flat=True)) == ["operators"]


def test_a_non_staff_account_is_refused(client, sso, django_user_model):
    django_user_model.objects.create_user("visitor", password="x-Long-enough-1")
    client.cookies["uid"], client.cookies["ticket"] = "visitor", TICKET

    response = client.get("/admin/")

    assert response.status_code == 403
    assert signed_in_as(client) is None


# --- Cache -----------------------------------------------------------------------------


def test_a_validation_is_cached_for_its_ttl_then_asked_again(sso_cookies, sso, settings):
    settings.TOKENSERVER_SSO_CACHE_TTL = 0.5

    first = sso_cookies.get("/admin/")
    second = sso_cookies.get("/admin/")

    assert (first.status_code, second.status_code) == (200, 200)
    assert len(sso.calls("/validate")) == 1  # the second click was answered from the cache

    def asked_again():
        assert sso_cookies.get("/admin/").status_code == 200
        return len(sso.calls("/validate")) == 2

    wait_until(asked_again, timeout=5, interval=0.1, message="the cached validation expired")


@pytest.mark.parametrize(
    "first_reply",
    [{"payload": {"code": 1}}, {"payload": {"code": 0}, "status": 503}],
    ids=["rejected", "erroring"],
)
def test_a_failed_validation_is_never_cached(sso_cookies, sso, first_reply):
    sso.reply("/validate", **first_reply)
    refused = sso_cookies.get("/admin/")
    sso.reply("/validate", VALID)

    accepted = sso_cookies.get("/admin/")

    assert refused.status_code in (307, 503)
    assert accepted.status_code == 200
    assert len(sso.calls("/validate")) == 2


def test_a_ticket_the_service_stops_vouching_for_ends_the_session(sso_cookies, sso, settings):
    settings.TOKENSERVER_SSO_CACHE_TTL = 0.2
    assert sso_cookies.get("/admin/").status_code == 200
    sso.reply("/validate", {"code": 40101, "data": {"result": False}})

    def refused():
        return sso_cookies.get("/admin/").status_code == 307

    wait_until(refused, timeout=5, interval=0.05, message="the expired ticket was refused")
    assert signed_in_as(sso_cookies) is None


def test_other_cookies_sign_the_other_user_in(sso_cookies, sso, other_staff_user):
    assert sso_cookies.get("/admin/").status_code == 200

    sso_cookies.cookies["uid"] = other_staff_user.username
    response = sso_cookies.get("/admin/")

    assert response.status_code == 200
    assert signed_in_as(sso_cookies) == "auditor"


# --- Sign-out ---------------------------------------------------------------------------


def test_sign_out_clears_the_cookies_on_their_domain_and_goes_to_the_logout_url(
    sso_cookies, sso, settings
):
    settings.TOKENSERVER_SSO_LOGOUT_URL = "https://login.example.com/logout"
    assert sso_cookies.get("/admin/").status_code == 200

    response = sso_cookies.post("/admin/logout/")

    assert response.status_code == 302
    assert response["Location"] == "https://login.example.com/logout"
    for name in ("uid", "ticket"):
        cookie = response.cookies[name]
        assert cookie.value == "" and cookie["max-age"] == 0
        assert cookie["domain"] == ".example.com"
    assert signed_in_as(sso_cookies) is None


def test_sign_out_drops_the_cached_validation(sso_cookies, sso):
    assert sso_cookies.get("/admin/").status_code == 200
    sso_cookies.post("/admin/logout/")
    sso_cookies.cookies["uid"], sso_cookies.cookies["ticket"] = "operator", TICKET

    sso_cookies.get("/admin/")

    assert len(sso.calls("/validate")) == 2  # asked again, not taken from the cache


# --- Password sign-in beside SSO, exclusive SSO, ignored paths -------------------------------


def test_a_password_session_stays_valid_unless_sso_is_exclusive(console, sso, settings):
    assert console.get("/admin/").status_code == 200
    assert sso.calls("/validate") == []

    settings.TOKENSERVER_SSO_EXCLUSIVE = True
    settings.TOKENSERVER_SSO_MISSING_COOKIE_REDIRECTS = True
    response = console.get("/admin/")

    assert login_redirect_target(response) == "http://testserver/admin/"


def test_the_password_page_stays_reachable_unless_sso_is_exclusive(client, sso, settings):
    settings.TOKENSERVER_SSO_MISSING_COOKIE_REDIRECTS = True
    assert client.get("/admin/login/").status_code == 200

    settings.TOKENSERVER_SSO_EXCLUSIVE = True
    response = client.get("/admin/login/?next=/admin/realms/realm/")

    assert login_redirect_target(response).startswith("http://testserver/admin/login/")


def test_the_password_page_is_served_while_the_user_service_fails(sso_cookies, sso):
    sso.reply("/validate", {"code": 0}, status=500)
    assert sso_cookies.get("/admin/").status_code == 503  # links to the password page

    response = sso_cookies.get("/admin/login/")

    assert response.status_code == 200
    assert b'name="password"' in response.content


def test_exclusive_sso_on_the_login_page_goes_on_to_next(sso_cookies, sso, settings):
    settings.TOKENSERVER_SSO_EXCLUSIVE = True

    response = sso_cookies.get("/admin/login/?next=/admin/realms/realm/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/realms/realm/"
    assert signed_in_as(sso_cookies) == "operator"


def test_ignored_prefixes_need_no_sign_in(client, sso, settings):
    settings.TOKENSERVER_SSO_IGNORE_PATHS = ["/admin/jsi18n/"]
    settings.TOKENSERVER_SSO_MISSING_COOKIE_REDIRECTS = True

    assert client.get("/admin/jsi18n/").status_code != 307
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/token").status_code == 401
    assert sso.calls("/validate") == []


# --- Configuration checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error_id"),
    [
        ({"TOKENSERVER_SSO_VALIDATE_URL": ""}, "clients.E004"),
        ({"TOKENSERVER_SSO_VALIDATE_URL": "ftp://users/validate"}, "clients.E003"),
        ({"TOKENSERVER_SSO_MATCH": [["code"]]}, "clients.E005"),
        ({"TOKENSERVER_SSO_MATCH": [["code ==", 0]]}, "clients.E005"),
        ({"TOKENSERVER_SSO_MATCH": [["$.code * 2", 0]]}, "clients.E005"),
        ({"TOKENSERVER_SSO_MATCH": []}, "clients.E005"),
        ({"TOKENSERVER_SSO_TIMEOUT": 0}, "clients.E006"),
    ],
)
def test_an_sso_configuration_error_stops_the_start_up(sso, settings, changes, error_id):
    for name, value in changes.items():
        setattr(settings, name, value)

    errors = console_sso_check(None)

    assert [error.id for error in errors] == [error_id]
    assert all(isinstance(error, Error) for error in errors)
    with pytest.raises(CommandError, match=error_id):
        call_command("check")


def test_exclusive_sso_without_a_login_url_stops_the_start_up(settings):
    settings.TOKENSERVER_SSO_LOGIN_URL = ""
    settings.TOKENSERVER_SSO_EXCLUSIVE = True

    assert [error.id for error in console_sso_check(None)] == ["clients.E002"]


def test_a_complete_sso_configuration_passes_the_checks(sso):
    assert console_sso_check(None) == []
    call_command("check")
