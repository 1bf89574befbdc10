"""Fixtures of the clients tests: the console's external sign-in (issue 12)."""

import pytest

#: The user service's answer for a valid ticket, meeting `sso`'s match rules.
VALID = {"code": 0, "data": {"result": True, "name": "Op Erator"}}


@pytest.fixture
def sso(settings, upstream):
    """
    External console sign-in on, its user service played by the fake upstream:
    POST /validate answers VALID until a test says otherwise.
    """
    settings.TOKENSERVER_SSO_LOGIN_URL = "https://login.example.com/login?app=tokenserver"
    settings.TOKENSERVER_SSO_VALIDATE_URL = upstream.url("/validate")
    settings.TOKENSERVER_SSO_LOGOUT_URL = ""
    settings.TOKENSERVER_SSO_MATCH = [["code", 0], ["data.result", True]]
    settings.TOKENSERVER_SSO_COOKIE_DOMAIN = ".example.com"
    settings.TOKENSERVER_SSO_CACHE_TTL = 60
    settings.TOKENSERVER_SSO_TIMEOUT = 2.0
    upstream.reply("/validate", VALID)
    return upstream


@pytest.fixture
def sso_cookies(client, staff_user):
    """The browser carries the user service's cookies for `staff_user` (operator)."""
    client.cookies["uid"] = staff_user.username
    client.cookies["ticket"] = "TICKET-s3cr3t-0123456789"
    return client
