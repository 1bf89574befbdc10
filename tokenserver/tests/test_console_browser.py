"""
The console as a person uses it (issue 12): Debian's Chromium, driven by Playwright,
against the production command (`serve.py`, DEBUG off) on the test database.

Every page visited must have its stylesheets applied, log no browser console error,
and show no secret value. Screenshots go to `test-artefacts/` (ignored by git).
Chromium missing is a failure with the command that installs it, never a skip:
`make test` installs it.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import sync_playwright

from tests.factories import STAFF_PASSWORD, ArgumentFactory, RealmFactory, SecretFactory
from tests.helpers import production_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
ARTEFACTS = Path(settings.BASE_DIR) / "test-artefacts"
SECRET_VALUES = ["wx-browser-app-id-1", "browser-app-secret-value-2"]


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(
            f"{CHROMIUM} is missing: the console's browser tests need Debian's Chromium "
            "(`apt-get install chromium`; `make test` installs it)."
        )
    # Playwright's sync API runs an event loop in this thread, which Django takes for
    # an async context and refuses database calls in; the test's own database calls
    # are synchronous, so the check is lifted while the browser runs (this module only).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def operator_and_a_secret(django_user_model):
    operator = django_user_model.objects.create_superuser("operator")
    # The tests hash with MD5 (conftest, for speed); the server knows only its own
    # hashers, so this password is hashed the server's way (few iterations: fast).
    operator.password = PBKDF2PasswordHasher().encode(STAFF_PASSWORD, "browsertest", 1000)
    operator.save()
    realm = RealmFactory(id="wxgzh")
    ArgumentFactory(realm=realm, name="appid", value="$key_1")
    SecretFactory(realm=realm, name="app", key_1=SECRET_VALUES[0], key_2=SECRET_VALUES[1])


def console_server(tmp_path, **env):
    """serve.py with DEBUG off on the test database (use it with `with`)."""
    return production_server([sys.executable, "serve.py"], tmp_path, **env)


@pytest.fixture
def live_console(tmp_path, django_user_model):
    """serve.py with DEBUG off, an operator to sign in as, and a secret to look at."""
    operator_and_a_secret(django_user_model)
    with console_server(tmp_path) as server:
        yield server.base


class Visit:
    """
    A browser page that records, as it goes, console errors, page errors and failed
    or 4xx/5xx requests of tokenserver's own pages (not of another site it visits,
    such as a user service's login page).
    """

    def __init__(self, browser, base):
        self.base = base
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        # A request the browser aborted itself (the page moved on) is no failure.
        self.page.on(
            "requestfailed",
            lambda r: "ERR_ABORTED" not in (r.failure or "") and self._record(r.url, "failed"),
        )
        self.page.on("response", lambda r: r.status >= 400 and self._record(r.url, r.status))

    def _record(self, url, what):
        if url.startswith(self.base):
            self.errors.append(f"{what}: {url}")

    def _console(self, message):
        if message.type == "error":
            self._record(message.location.get("url", ""), f"console: {message.text}")

    def open(self, path, *, screenshot=None):
        self.page.goto(f"{self.base}{path}")
        self.check(screenshot)

    def check(self, screenshot=None):
        html = self.page.content()
        assert self.errors == [], self.errors
        # The admin's stylesheet is loaded and applied (not only linked).
        sheets = self.page.evaluate("Array.from(document.styleSheets).map(s => s.href || '')")
        assert any(sheet.endswith("/static/admin/css/base.css") for sheet in sheets), sheets
        font = self.page.evaluate("getComputedStyle(document.body).fontFamily")
        assert "Times" not in font, font  # the browser's default means no CSS
        for value in SECRET_VALUES:
            assert value not in html
        if screenshot:
            ARTEFACTS.mkdir(exist_ok=True)
            self.page.screenshot(path=ARTEFACTS / f"{screenshot}.png", full_page=True)


def test_an_operator_signs_in_and_looks_around(chromium, live_console):
    visit = Visit(chromium, live_console)

    visit.open("/admin/login/", screenshot="login")
    visit.page.fill("#id_username", "operator")
    visit.page.fill("#id_password", STAFF_PASSWORD)
    visit.page.click("input[type=submit]")
    visit.page.wait_for_url(f"{live_console}/admin/")
    visit.check(screenshot="dashboard")
    # Every link in the header leads somewhere: the console's pages, and "View site"
    # the landing page (issue 13; it was left out while / was a 404).
    for link in visit.page.locator("#user-tools a").all():
        href = link.get_attribute("href")
        assert href.startswith("/admin/") or href == "/", href

    visit.open("/admin/secrets/secret/", screenshot="secret-list")
    assert "app" in visit.page.inner_text("#result_list")
    visit.page.click("#result_list a:text-is('app')")
    visit.page.wait_for_url("**/change/")
    visit.check(screenshot="secret")

    visit.open("/admin/tokens/fetchlog/", screenshot="fetch-log")


@pytest.fixture
def signed_in(chromium, live_console):
    visit = Visit(chromium, live_console)
    visit.open("/admin/login/")
    visit.page.fill("#id_username", "operator")
    visit.page.fill("#id_password", STAFF_PASSWORD)
    visit.page.click("input[type=submit]")
    visit.page.wait_for_url(f"{live_console}/admin/")
    return visit


def test_from_a_preset_to_a_token_in_the_fetch_log(signed_in, live_console, upstream):
    visit, page = signed_in, signed_in.page
    upstream.reply("/cgi-bin/token", {"access_token": "BROWSER-TOKEN-1", "expires_in": 7200})

    # A realm from the WeChat preset, pointed at the fake upstream.
    visit.open("/admin/realms/realm/add-from-preset/", screenshot="preset")
    page.select_option("#id_preset", "wechat_official_account")
    page.fill("#id_realm_id", "wxtest")
    page.click("input[type=submit]")
    page.wait_for_url("**/realms/realm/wxtest/change/")
    visit.check()
    page.fill("#id_url", upstream.url("/cgi-bin/token"))
    page.click("input[name=_save]")
    page.wait_for_url("**/realms/realm/")
    visit.check()

    # A secret with the preset's values (AppID, AppSecret).
    visit.open("/admin/secrets/secret/add/")
    page.select_option("#id_realm", "wxtest")
    page.fill("#id_name", "browser-app")
    page.fill("#id_key_1", SECRET_VALUES[0])
    page.fill("#id_key_2", SECRET_VALUES[1])
    page.click("input[name=_save]")
    page.wait_for_url("**/secrets/secret/")
    visit.check()

    # Refresh it from the list: the message says what the upstream granted.
    row = page.locator("#result_list tr", has_text="browser-app")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "test_fetch")
    page.click("button[name=index]")
    page.wait_for_load_state()
    visit.check(screenshot="refreshed")
    assert "7200" in page.inner_text(".messagelist")
    assert "valid" in page.locator("#result_list tr", has_text="browser-app").inner_text()
    assert "BROWSER-TOKEN-1" not in page.content()

    # The fetch log has the row, and exports it.
    visit.open("/admin/tokens/fetchlog/?realm=wxtest")
    assert "browser-app" in page.inner_text("#result_list")
    with page.expect_download() as download:
        page.click("text=Export CSV")
    exported = Path(download.value.path()).read_text()
    assert "wxtest" in exported and "browser-app" in exported
    assert "BROWSER-TOKEN-1" not in exported

    # The dashboard counts the fetch and draws it (the README's screenshot).
    visit.open("/admin/", screenshot="dashboard-after-fetch")
    assert visit.page.locator("svg rect").count() >= 1


def test_a_new_client_secret_is_shown_once(signed_in):
    visit, page = signed_in, signed_in.page

    visit.open("/admin/clients/client/add/")
    page.fill("#id_name", "browser-client")
    page.check("input[name=scopes][value='token:read']")
    page.fill("#id_allow", "wxgzh/*")
    page.click("input[name=_save]")
    page.wait_for_url("**/secret/")
    visit.check(screenshot="client-secret")
    secret = page.inner_text("#client-secret")
    page.reload()
    visit.check()

    assert len(secret) >= 20
    assert page.locator("#client-secret").count() == 0
    assert secret not in page.content()


def test_sign_in_through_the_user_service(chromium, tmp_path, django_user_model, upstream):
    # The fake user service: its login page, and a validation that accepts one ticket.
    operator_and_a_secret(django_user_model)
    upstream.reply("/login", {"page": "the user service's login page"})
    upstream.reply_with(
        "/validate",
        lambda number: (200, {"code": 0, "data": {"result": True, "uid": "operator"}}, 0),
    )
    sso = {
        "TOKENSERVER_SSO_LOGIN_URL": upstream.url("/login"),
        "TOKENSERVER_SSO_VALIDATE_URL": upstream.url("/validate"),
        "TOKENSERVER_SSO_MATCH": '[["code", 0], ["data.result", true]]',
    }

    with console_server(tmp_path, **sso) as server:
        visit = Visit(chromium, server.base)
        # Without the cookies: off to the user service, with the way back.
        visit.page.goto(f"{server.base}/admin/")
        assert visit.page.url.startswith(upstream.url("/login"))
        assert "redirect_url=" in visit.page.url
        # With them (as the user service sets them after its sign-in): in.
        visit.page.context.add_cookies(
            [
                {"name": "uid", "value": "operator", "url": server.base},
                {"name": "ticket", "value": "T-123", "url": server.base},
            ]
        )
        visit.open("/admin/", screenshot="dashboard-sso")

        assert "operator" in visit.page.inner_text("#user-tools").lower()
        # The dashboard's chart is drawn (inline SVG, no script).
        assert visit.page.locator("svg").count() >= 1
        # The first request, cookie-less, asked with the service's "absent" value.
        sent = [json.loads(call["body"]) for call in upstream.calls("/validate")]
        assert sent[0] == {"uid": "undefined", "ticket": "undefined"}
        assert {"uid": "operator", "ticket": "T-123"} in sent


# --- The landing page and the API's docs (issue 13) ---------------------------------------


def test_the_landing_page_leads_to_the_api_docs_which_render_offline(chromium, tmp_path):
    # serve.py with DEBUG off, whitenoise serving the collected files: the docs' scripts
    # come from tokenserver (drf-spectacular-sidecar), the page renders every operation,
    # and nothing fails or logs an error in the browser.
    with console_server(tmp_path) as server:
        visit = Visit(chromium, server.base)
        elsewhere = []
        visit.page.on(
            "request",
            lambda r: not r.url.startswith(("data:", server.base)) and elsewhere.append(r.url),
        )

        visit.page.goto(f"{server.base}/")
        links = visit.page.locator("a").evaluate_all("links => links.map(a => a.pathname)")
        visit.page.click("text=API docs")
        visit.page.wait_for_url(f"{server.base}/api/docs/")
        visit.page.wait_for_selector("#operations-tokens-token_get", timeout=30_000)
        operations = visit.page.locator(".opblock").count()

    assert {"/admin/", "/api/docs/", "/api/schema/", "/healthz", "/readyz"} <= set(links)
    assert operations >= 17
    assert visit.errors == []
    assert elsewhere == []  # no CDN, no fonts, no validator: loopback only
