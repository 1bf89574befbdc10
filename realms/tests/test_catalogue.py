"""
Issue 14, item 6: the catalogue of providers as data. Every preset file in
realms/presets/ validates against docs/presets.schema.json, and every one (the
tests are parametrized over the directory, so a new file is covered at once)
fetches a token from a fake of its provider (tests/providers.py), a real
local HTTP server that speaks the provider's wire format and checks what the
provider requires of a request. The provider's answer to a wrong secret ends as
the documented 502 (remembered when its code is one of the preset's permanent
codes); its answer to too many calls makes the realm back off.
"""

import json
import subprocess
import sys
from urllib.parse import urlsplit

import jsonschema
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils.html import escape

from realms.models import Realm
from realms.presets import (
    PRESET_FIELDS,
    PRESETS_DIR,
    PresetFileError,
    catalogue_table,
    is_chained,
    presets,
)
from realms.services import CONFIG_FIELDS, realm_upsert
from secret_store.services import secret_upsert
from tests.helpers import child_env
from tests.providers import FAKES, PayPalFake, WeChatStableFake, preset_on_fake
from tokens.models import FetchLog
from tokens.services import token_get
from tokenserver.errors import UpstreamError, UpstreamUnavailable

pytestmark = pytest.mark.django_db

#: Every preset file, by name: what the parametrized tests run over.
PRESET_NAMES = sorted(path.stem for path in PRESETS_DIR.glob("*.json"))

SCHEMA_FILE = settings.BASE_DIR / "docs" / "presets.schema.json"

#: Tickets fetched with another preset's token (chained realms): their "wrong secret" is a
#: refused parent token, which refreshes the parent and retries once instead of ending at
#: once; tokens/tests/test_chains.py tells those stories, with each ticket preset's answers.
CHAINED = sorted(name for name in PRESET_NAMES if is_chained(presets()[name]))
UNCHAINED = [name for name in PRESET_NAMES if name not in CHAINED]

#: Presets that are a protocol, not a provider (their URL is auth.example.com's).
GENERIC = {"oauth2_client_credentials", "oauth2_jwt_bearer", "oauth2_private_key_jwt"}


@pytest.fixture(scope="module")
def schema():
    return json.loads(SCHEMA_FILE.read_text())


# --- The files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_file_validates_against_the_schema(schema, name):
    preset = json.loads((PRESETS_DIR / f"{name}.json").read_text())

    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(preset)]

    assert errors == []
    assert set(PRESET_FIELDS) <= set(preset)  # every catalogue field, null or not
    assert set(preset["values"]) == {f"key_{n}" for n in range(1, len(preset["values"]) + 1)}, (
        "values name key_1 … key_n without a gap"
    )


def test_the_schema_is_a_valid_json_schema_describing_every_realm_field(schema):
    jsonschema.Draft202012Validator.check_schema(schema)

    assert set(schema["required"]) == set(PRESET_FIELDS)
    described = set(schema["$defs"]["config"]["properties"])
    assert described == {*CONFIG_FIELDS, "arguments"}


def test_the_catalogue_holds_at_least_20_application_level_providers():
    providers = [name for name in presets() if name not in GENERIC]

    assert len(providers) >= 20, providers
    for name in GENERIC:
        assert urlsplit(presets()[name]["realm"]["config"]["url"]).hostname == "auth.example.com"


def test_every_preset_has_a_fake_speaking_its_wire_format():
    assert sorted(FAKES) == PRESET_NAMES, "add the new preset's fake to tests/providers.py"


def test_a_broken_preset_file_is_refused_naming_itself(tmp_path, monkeypatch):
    (tmp_path / "broken.json").write_text('{"title": "x", "realm": {}}')
    monkeypatch.setattr("realms.presets.PRESETS_DIR", tmp_path)
    presets.cache_clear()
    try:
        with pytest.raises(PresetFileError, match=r"broken.json lacks help, docs, values"):
            presets()
    finally:
        presets.cache_clear()


def test_loading_the_presets_needs_nothing_beyond_the_standard_library():
    # jsonschema is the tests' (pinned as drf-spectacular's dependency): a worker
    # loading the presets imports neither it nor the schema machinery.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tokenserver.wsgi import application; "
            "from realms.presets import presets; assert len(presets()) >= 20; "
            "print(sorted(m for m in ('jsonschema', 'drf_spectacular.plumbing') "
            "if m in sys.modules))",
        ],
        cwd=settings.BASE_DIR,
        env=child_env(DEBUG="off", LOG_LEVEL="WARNING"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.split("\n")[-2] == "[]"


# --- Each preset against its provider's fake -----------------------------------------------


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_the_preset_fetches_a_token_from_its_providers_fake(upstream, name):
    realm, fake = preset_on_fake(name, upstream)

    result = token_get(realm.id, "app")

    assert fake.request_problems() == []
    assert len(fake.received) == 1
    assert (result.token, result.source) == (fake.issued[-1], "upstream")
    assert result.expires_in_ms() > 60_000
    # The margin leaves most of the token's life to use.
    assert realm.refresh_margin < result.lifetime / 2


@pytest.mark.parametrize("name", UNCHAINED)
def test_the_providers_credential_error_is_the_documented_502(upstream, name):
    realm, fake = preset_on_fake(name, upstream, mode="credentials")
    status, body = fake.credential_error()[:2]
    code = str(body[realm.error_code_path])

    with pytest.raises(UpstreamError) as first:
        token_get(realm.id, "app")

    error = first.value
    assert (error.status_code, error.code) == (502, "upstream_error")
    assert error.detail.startswith(
        f"upstream answered HTTP {status} with {realm.error_code_path} {code}: "
        f"{body[realm.error_message_path]}"
    )
    log = FetchLog.objects.get(realm=realm.id)
    assert (log.outcome, log.error_code) == ("upstream_error", code)
    assert fake.request_problems() == []

    # Asked again: a permanent code is answered from memory, anything else asks again.
    with pytest.raises(UpstreamError) as again:
        token_get(realm.id, "app", flush=True)
    permanent = code in {str(c) for c in realm.permanent_error_codes}
    assert again.value.detail == error.detail
    assert bool(again.value.context.get("remembered")) is permanent
    assert len(fake.received) == (1 if permanent else 2)


@pytest.mark.parametrize("name", UNCHAINED)
def test_the_providers_rate_limit_error_makes_the_realm_back_off(upstream, name):
    realm, fake = preset_on_fake(name, upstream, mode="rate_limited")
    secret_upsert(realm.id, "other", fake.values)

    with pytest.raises(UpstreamError):
        token_get(realm.id, "app")
    # The realm backs off: no call for this secret or any other, 503 with Retry-After.
    for key in ("app", "other"):
        with pytest.raises(UpstreamUnavailable) as refused:
            token_get(realm.id, key, flush=True)
        assert "asked to slow down" in refused.value.detail
        assert refused.value.retry_after > 0

    assert len(fake.received) == 1
    assert fake.request_problems() == []
    assert not realm.secrets.filter(remembered_error__isnull=False).exists()


# --- A fake refuses what its provider refuses -----------------------------------------------


def test_a_string_force_refresh_is_refused_by_the_stable_token_fake(upstream):
    realm, fake = preset_on_fake("wechat_official_account_stable", upstream)
    arguments = [
        {"name": a.name, "place": a.place, "value": a.value} for a in realm.arguments.all()
    ]
    for argument in arguments:
        if argument["name"] == "force_refresh":
            argument["value"] = "false"  # the text "false", not the boolean
    realm_upsert(realm.id, {"config": {"arguments": arguments}}, partial=True)

    with pytest.raises(UpstreamError, match="force_refresh is 'false', not a JSON boolean"):
        token_get(realm.id, "app")
    assert isinstance(fake, WeChatStableFake) and fake.issued == []


def test_client_credentials_in_the_body_are_refused_by_the_paypal_fake(upstream):
    realm, fake = preset_on_fake("paypal", upstream)
    realm_upsert(
        realm.id,
        {
            "config": {
                "arguments": [
                    {"name": "grant_type", "place": "body", "value": "client_credentials"},
                    {"name": "client_id", "place": "body", "value": "$key_1"},
                    {"name": "client_secret", "place": "body", "value": "$key_2"},
                ]
            }
        },
        partial=True,
    )

    with pytest.raises(UpstreamError, match="HTTP Basic credentials None"):
        token_get(realm.id, "app")
    assert isinstance(fake, PayPalFake) and fake.issued == []


# --- Showing the catalogue ----------------------------------------------------------------


def test_the_readme_catalogue_table_is_the_files():
    readme = (settings.BASE_DIR / "README.md").read_text()
    start = readme.index("<!-- catalogue:start")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- catalogue:end -->")

    assert readme[start:end].strip() == catalogue_table(), (
        "README's catalogue table is stale: paste `manage.py loadpreset --markdown` between "
        "its catalogue markers"
    )


def test_loadpreset_list_shows_each_title_and_markdown_prints_the_table(capsys):
    call_command("loadpreset", "--list")
    listed = capsys.readouterr().out
    call_command("loadpreset", "--markdown")
    table = capsys.readouterr().out

    for name, preset in presets().items():
        line = next(line for line in listed.splitlines() if line.startswith(name + " "))
        assert preset["title"] in line
    assert table.strip() == catalogue_table()


def test_loadpreset_takes_the_token_endpoint_and_shows_the_help(capsys):
    url = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"

    call_command("loadpreset", "microsoft_entra_client_credentials", "--id", "graph", "--url", url)

    assert Realm.objects.get(pk="graph").url == url
    out = capsys.readouterr().out
    assert presets()["microsoft_entra_client_credentials"]["help"] in out
    with pytest.raises(CommandError, match="Invalid realm"):
        call_command("loadpreset", "okta", "--url", "ftp://okta.example.com/token")


def test_the_console_shows_each_presets_help_and_docs_link(console):
    page = console.get("/admin/realms/realm/add-from-preset/").content.decode()

    for name, preset in presets().items():
        row = page[page.index(f'id="preset-{name}"') :]
        row = row[: row.index("</tr>")]
        assert escape(preset["help"]) in row
        assert f'href="{preset["docs"]}"' in row
    assert "2,000 calls a day (from 00:00 UTC+08:00)" in page


def test_the_console_creates_a_realm_with_the_token_endpoint_given(console):
    url = "https://keycloak.internal.example.com/realms/billing/protocol/openid-connect/token"

    created = console.post(
        "/admin/realms/realm/add-from-preset/",
        {"preset": "keycloak", "realm_id": "kc", "url": url},
    )

    assert created.status_code == 302
    assert Realm.objects.get(pk="kc").url == url
