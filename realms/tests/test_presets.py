"""
Presets against local fakes that speak each provider's real wire format:
the request it must send, its success answer and its error answers.
"""

import base64
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from realms.models import Realm
from realms.presets import is_chained, presets, realm_from_preset
from realms.services import realm_upsert
from tests.factories import SecretFactory
from tokens.models import FetchLog
from tokens.services import token_get
from tokenserver.errors import Conflict, NotFound, UpstreamError

pytestmark = pytest.mark.django_db


def preset_realm(name, upstream, path):
    """The preset's realm, pointed at the fake instead of the provider."""
    realm = realm_from_preset(name)
    realm_upsert(realm.id, {"config": {"url": upstream.url(path)}}, partial=True)
    return Realm.objects.get(pk=realm.id)


def fetch_error(realm, secret):
    with pytest.raises(UpstreamError) as raised:
        token_get(realm.id, secret.name, flush=True)
    return raised.value.detail


def test_every_preset_is_a_valid_realm():
    def check_id(name):
        return f"check-{name}".replace("_", "-")

    # Chained presets (issue 14) after the presets of their parents, which they name.
    for name in sorted(presets(), key=lambda name: is_chained(presets()[name])):
        parent = presets()[name]["realm"]["config"].get("parent")
        realm = realm_from_preset(name, check_id(name), parent=parent and check_id(parent))
        realm.full_clean()
        assert realm.arguments.exists()


# --- WeChat Official Account ---------------------------------------------------


@pytest.fixture
def wechat(upstream):
    realm = preset_realm("wechat_official_account", upstream, "/cgi-bin/token")
    return realm, SecretFactory(
        realm=realm, name="app", key_1="wx1234567890abcdef", key_2="appsecret0123"
    )


def test_wechat_request_and_success(upstream, wechat):
    realm, secret = wechat
    upstream.reply("/cgi-bin/token", {"access_token": "ACCESS_TOKEN", "expires_in": 7200})

    result = token_get(realm.id, secret.name)

    assert (result.token, result.source) == ("ACCESS_TOKEN", "upstream")
    call = upstream.calls("/cgi-bin/token")[0]
    assert call["method"] == "GET"
    assert call["query"] == {
        "grant_type": "client_credential",
        "appid": "wx1234567890abcdef",
        "secret": "appsecret0123",
    }


@pytest.mark.parametrize(
    ("errcode", "errmsg"),
    [
        (40013, "invalid appid"),
        (40001, "invalid credential, access_token is invalid or not latest"),
        (45009, "reach max api daily quota limit"),
    ],
)
def test_wechat_errors_inside_http_200(upstream, wechat, errcode, errmsg):
    realm, secret = wechat
    upstream.reply("/cgi-bin/token", {"errcode": errcode, "errmsg": errmsg})

    detail = fetch_error(realm, secret)

    assert detail.startswith(f"upstream answered HTTP 200 with errcode {errcode}: {errmsg}")
    log = FetchLog.objects.get()
    assert (log.outcome, log.error_code) == ("upstream_error", str(errcode))


def test_wechat_errcode_zero_with_a_token_is_success(upstream, wechat):
    realm, secret = wechat
    upstream.reply("/cgi-bin/token", {"errcode": 0, "access_token": "T", "expires_in": 7200})

    assert token_get(realm.id, secret.name).token == "T"


# --- WeCom --------------------------------------------------------------------


@pytest.fixture
def wecom(upstream):
    realm = preset_realm("wecom", upstream, "/cgi-bin/gettoken")
    return realm, SecretFactory(realm=realm, name="app", key_1="ww0123456789", key_2="corpsecret-x")


def test_wecom_request_and_success(upstream, wecom):
    realm, secret = wecom
    upstream.reply(
        "/cgi-bin/gettoken",
        {"errcode": 0, "errmsg": "ok", "access_token": "WECOM_TOKEN", "expires_in": 7200},
    )

    assert token_get(realm.id, secret.name).token == "WECOM_TOKEN"
    assert upstream.calls("/cgi-bin/gettoken")[0]["query"] == {
        "corpid": "ww0123456789",
        "corpsecret": "corpsecret-x",
    }


def test_wecom_error_and_missing_errcode(upstream, wecom):
    realm, secret = wecom
    upstream.reply("/cgi-bin/gettoken", {"errcode": 40091, "errmsg": "secret is invalid"})
    assert fetch_error(realm, secret).startswith(
        "upstream answered HTTP 200 with errcode 40091: secret is invalid"
    )

    # WeCom always says errcode; an answer without it does not pass.
    upstream.reply("/cgi-bin/gettoken", {"access_token": "T", "expires_in": 7200})
    assert "success condition errcode == 0 does not hold" in fetch_error(realm, secret)


# --- Feishu ---------------------------------------------------------------------


@pytest.fixture
def feishu(upstream):
    path = "/open-apis/auth/v3/tenant_access_token/internal"
    realm = preset_realm("feishu_tenant", upstream, path)
    return (
        realm,
        SecretFactory(realm=realm, name="app", key_1="cli_a1b2c3", key_2="feishu-secret"),
        path,
    )


def test_feishu_request_and_success(upstream, feishu):
    realm, secret, path = feishu
    upstream.reply(path, {"code": 0, "msg": "ok", "tenant_access_token": "t-g1044", "expire": 7140})

    result = token_get(realm.id, secret.name)

    assert result.token == "t-g1044"
    assert 7_130_000 < result.expires_in_ms() <= 7_140_000
    call = upstream.calls(path)[0]
    assert call["method"] == "POST"
    assert call["headers"]["Content-Type"] == "application/json"
    assert json.loads(call["body"]) == {"app_id": "cli_a1b2c3", "app_secret": "feishu-secret"}
    # Feishu hands back the same token until 30 minutes remain: the margin must be smaller.
    assert realm.refresh_margin < 1800


@pytest.mark.parametrize("status", [200, 400])
def test_feishu_errors(upstream, feishu, status):
    realm, secret, path = feishu
    upstream.reply(path, {"code": 10014, "msg": "app secret invalid"}, status=status)

    assert fetch_error(realm, secret).startswith(
        f"upstream answered HTTP {status} with code 10014: app secret invalid"
    )


# --- DingTalk -------------------------------------------------------------------


@pytest.fixture
def dingtalk(upstream):
    realm = preset_realm("dingtalk", upstream, "/v1.0/oauth2/accessToken")
    return realm, SecretFactory(realm=realm, name="app", key_1="dingappkey", key_2="dingsecret")


def test_dingtalk_request_and_success(upstream, dingtalk):
    realm, secret = dingtalk
    upstream.reply(
        "/v1.0/oauth2/accessToken", {"accessToken": "fw8ef8we8f76e6f7s8df8s", "expireIn": 7200}
    )

    assert token_get(realm.id, secret.name).token == "fw8ef8we8f76e6f7s8df8s"
    call = upstream.calls("/v1.0/oauth2/accessToken")[0]
    assert json.loads(call["body"]) == {"appKey": "dingappkey", "appSecret": "dingsecret"}


def test_dingtalk_error_is_http_400(upstream, dingtalk):
    realm, secret = dingtalk
    upstream.reply(
        "/v1.0/oauth2/accessToken",
        {
            "code": "invalidClientIdOrSecret",
            "message": "无效的clientId或者clientSecret",
            "requestid": "A1",
        },
        status=400,
    )

    assert fetch_error(realm, secret) == (
        "upstream answered HTTP 400 with code invalidClientIdOrSecret: "
        "无效的clientId或者clientSecret"
    )


# --- OAuth 2.0 client credentials -------------------------------------------------


@pytest.fixture
def oauth2(upstream):
    realm = preset_realm("oauth2_client_credentials", upstream, "/oauth2/token")
    return realm


def test_oauth2_basic_auth_form_body_and_optional_scope(upstream, oauth2):
    upstream.reply(
        "/oauth2/token",
        {"access_token": "2YotnFZFEjr1zCsicMWpAA", "token_type": "Bearer", "expires_in": 3600},
    )
    scoped = SecretFactory(
        realm=oauth2,
        name="scoped",
        key_1="s6BhdRkqt3",
        key_2="7Fjfp0ZBr1KtDRbnfVdmIw",
        key_3="read write",
    )
    plain = SecretFactory(
        realm=oauth2, name="plain", key_1="s6BhdRkqt3", key_2="7Fjfp0ZBr1KtDRbnfVdmIw"
    )

    assert token_get(oauth2.id, scoped.name).token == "2YotnFZFEjr1zCsicMWpAA"
    token_get(oauth2.id, plain.name)

    first, second = upstream.calls("/oauth2/token")
    expected_auth = "Basic " + base64.b64encode(b"s6BhdRkqt3:7Fjfp0ZBr1KtDRbnfVdmIw").decode()
    assert first["headers"]["Authorization"] == expected_auth
    assert first["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert first["body"] == b"grant_type=client_credentials&scope=read+write"
    assert second["body"] == b"grant_type=client_credentials"  # no scope: not sent at all


def test_oauth2_invalid_client_is_401(upstream, oauth2):
    secret = SecretFactory(realm=oauth2, name="app", key_1="id", key_2="wrong")
    upstream.reply(
        "/oauth2/token",
        {"error": "invalid_client", "error_description": "Client authentication failed"},
        status=401,
    )

    assert fetch_error(oauth2, secret) == (
        "upstream answered HTTP 401 with error invalid_client: Client authentication failed"
    )


# --- Loading presets -------------------------------------------------------------


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(NotFound, match="Unknown preset .nope.; known presets: auth0, .*dingtalk"):
        realm_from_preset("nope")


def test_existing_realm_is_not_overwritten_unless_asked():
    realm_from_preset("wecom")
    realm_upsert("wecom", {"comment": "mine"}, partial=True)

    with pytest.raises(Conflict):
        realm_from_preset("wecom")
    assert Realm.objects.get(pk="wecom").comment == "mine"

    realm_from_preset("wecom", replace=True)
    assert Realm.objects.get(pk="wecom").comment != "mine"


def test_loadpreset_command(capsys):
    call_command("loadpreset", "feishu_tenant", "--id", "feishu")

    realm = Realm.objects.get(pk="feishu")
    assert realm.token_path == "tenant_access_token"
    assert "key_1 = app_id" in capsys.readouterr().out


def test_loadpreset_command_errors():
    with pytest.raises(CommandError, match="Unknown preset"):
        call_command("loadpreset", "nope")
    call_command("loadpreset", "wecom")
    # Issue 13: the refusal names the flags that get past it.
    with pytest.raises(CommandError, match="'wecom' exists: .* --id, or .* --replace"):
        call_command("loadpreset", "wecom")
    call_command("loadpreset", "wecom", "--replace")
    with pytest.raises(CommandError, match="slug"):
        call_command("loadpreset", "wecom", "--id", "not a slug")


def test_loadpreset_list(capsys):
    call_command("loadpreset", "--list")

    out = capsys.readouterr().out
    for name in presets():
        assert name in out


def test_add_realm_from_preset_in_the_console(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)

    page = client.get("/admin/realms/realm/add-from-preset/")
    created = client.post(
        "/admin/realms/realm/add-from-preset/", {"preset": "dingtalk", "realm_id": "ding"}
    )
    again = client.post(
        "/admin/realms/realm/add-from-preset/", {"preset": "dingtalk", "realm_id": "ding"}
    )

    assert page.status_code == 200
    assert "wechat_official_account" in page.content.decode()
    assert created.status_code == 302
    assert Realm.objects.get(pk="ding").url == "https://api.dingtalk.com/v1.0/oauth2/accessToken"
    assert again.status_code == 200
    assert "exists" in again.content.decode()
    assert "Add realm from preset" in client.get("/admin/realms/realm/").content.decode()
