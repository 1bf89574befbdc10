"""
A realm's daily budget and re-issue window (issue 14, items 3 and 5):
`daily_budget`, `budget_alert_percent`, `budget_day_starts` and `reissue_window`
in the API and the console, their validation, and the provider's day
(Realm.provider_day). What the token path does with them is in
tokens/tests/test_quota.py and tokens/tests/test_same_token.py.
"""

from datetime import UTC, datetime

import pytest

from realms.models import Realm
from realms.presets import presets, realm_from_preset
from realms.tests.test_url_checks import _realm_form

pytestmark = pytest.mark.django_db

CONFIG = {"url": "https://api.weixin.qq.com/cgi-bin/token"}


def _moment(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_the_api_round_trips_the_fields(api):
    config = {
        **CONFIG,
        "daily_budget": 2000,
        "budget_alert_percent": 90,
        "budget_day_starts": "+08:00",
        "reissue_window": 1800,
    }

    created = api.post("/api/realm", {"id": "wx", "config": config}, format="json")
    patched = api.patch(
        "/api/realm/wx", {"config": {"daily_budget": None, "reissue_window": None}}, format="json"
    ).json()
    read = api.get("/api/realm/wx").json()

    assert created.status_code == 201
    saved = created.json()["data"]["config"]
    assert (saved["daily_budget"], saved["budget_alert_percent"]) == (2000, 90)
    assert (saved["budget_day_starts"], saved["reissue_window"]) == ("+08:00", 1800)
    assert patched["config"]["daily_budget"] is None
    assert patched["config"]["reissue_window"] is None
    assert read["config"]["budget_day_starts"] == "+08:00"


def test_the_defaults_are_no_budget_80_percent_utc_and_no_window(api):
    realm = api.post("/api/realm", {"id": "wx", "config": CONFIG}, format="json").json()["data"]

    assert realm["config"]["daily_budget"] is None
    assert realm["config"]["budget_alert_percent"] == 80
    assert realm["config"]["budget_day_starts"] == "UTC"
    assert realm["config"]["reissue_window"] is None


@pytest.mark.parametrize("day_starts", ["UTC", "+08:00", "-05:30", "+00:00", "Asia/Shanghai"])
def test_day_boundaries_accepted(api, day_starts):
    config = {**CONFIG, "daily_budget": 10, "budget_day_starts": day_starts}

    response = api.post("/api/realm", {"id": "wx", "config": config}, format="json")

    assert response.status_code == 201, response.json()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"daily_budget": 0}, "config.daily_budget"),
        ({"daily_budget": -5}, "config.daily_budget"),
        ({"daily_budget": "many"}, "config.daily_budget"),
        ({"budget_alert_percent": 0}, "config.budget_alert_percent"),
        ({"budget_alert_percent": 101}, "config.budget_alert_percent"),
        ({"budget_day_starts": "+8"}, "config.budget_day_starts"),
        ({"budget_day_starts": "+15:00"}, "config.budget_day_starts"),
        ({"budget_day_starts": "+08:60"}, "config.budget_day_starts"),
        ({"budget_day_starts": "Mars/Olympus_Mons"}, "config.budget_day_starts"),
        ({"budget_day_starts": "../../etc/passwd"}, "config.budget_day_starts"),
        ({"budget_day_starts": ""}, "config.budget_day_starts"),
        ({"reissue_window": -1}, "config.reissue_window"),
    ],
)
def test_bad_values_are_a_400_naming_the_field(api, config, field):
    response = api.post("/api/realm", {"id": "bad", "config": {**CONFIG, **config}}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid"
    assert field in body["fields"], body
    assert not Realm.objects.filter(pk="bad").exists()


def test_a_bad_day_boundary_says_what_to_write(api):
    config = {**CONFIG, "budget_day_starts": "China"}

    body = api.post("/api/realm", {"id": "bad", "config": config}, format="json").json()

    assert "a UTC offset such as +08:00" in body["fields"]["config.budget_day_starts"][0]


def test_the_console_form_has_the_fields_and_saves_them(console):
    page = console.get("/admin/realms/realm/add/").content.decode()
    for name in ("daily_budget", "budget_alert_percent", "budget_day_starts", "reissue_window"):
        assert f'name="{name}"' in page

    saved = console.post(
        "/admin/realms/realm/add/",
        _realm_form(
            url="https://8.8.8.8/token",
            daily_budget="2000",
            budget_day_starts="+08:00",
            reissue_window="1800",
        ),
    )

    assert saved.status_code == 302
    realm = Realm.objects.get(pk="wx")
    assert (realm.daily_budget, realm.budget_day_starts, realm.reissue_window) == (
        2000,
        "+08:00",
        1800,
    )


def test_the_console_refuses_a_bad_day_boundary_on_the_field(console):
    page = console.post(
        "/admin/realms/realm/add/",
        _realm_form(url="https://8.8.8.8/token", budget_day_starts="tomorrow"),
    )

    assert page.status_code == 200  # the form again
    html = page.content.decode()
    assert "is not a day boundary" in html[html.index("field-budget_day_starts") :]
    assert not Realm.objects.filter(pk="wx").exists()


# --- Presets ------------------------------------------------------------------------------


def test_a_preset_gives_its_realm_the_providers_quota_and_reissue_window():
    # The catalogue's metadata (docs/presets.md) becomes the realm's settings.
    wechat = realm_from_preset("wechat_official_account", "wx")
    feishu = realm_from_preset("feishu_tenant", "fs")
    wecom = realm_from_preset("wecom", "wc")

    assert (wechat.daily_budget, wechat.budget_day_starts, wechat.reissue_window) == (
        2000,
        "+08:00",
        None,
    )
    assert (feishu.daily_budget, feishu.reissue_window) == (None, 1800)
    assert wecom.reissue_window == presets()["wecom"]["reissue_window"] == 0


def test_every_preset_loads_with_its_quota_and_window():
    for name, preset in presets().items():
        realm_id = name.replace("_", "-")[:50]
        parent = None
        if preset["realm"].get("config", {}).get("parent"):
            parent = preset["realm"]["config"]["parent"]
            if not Realm.objects.filter(pk=parent).exists():
                realm_from_preset(parent)
        realm = realm_from_preset(name, realm_id, parent=parent)
        quota = preset["quota"] or {}
        assert realm.daily_budget == quota.get("daily_calls"), name
        assert realm.reissue_window == preset["reissue_window"], name


# --- The provider's day ---------------------------------------------------------------


def test_wechats_day_starts_at_midnight_in_china():
    realm = Realm(budget_day_starts="+08:00")

    # 15:59:59 UTC is 23:59:59 in China: the day of the 3rd there, ending a second later.
    day = realm.provider_day(_moment("2026-12-03T15:59:59+00:00"))
    next_day = realm.provider_day(_moment("2026-12-03T16:00:00+00:00"))

    assert day.date.isoformat() == "2026-12-03"
    assert day.ends_at == _moment("2026-12-04T00:00:00+08:00")
    assert day.seconds_left(_moment("2026-12-03T15:59:59+00:00")) == 1
    assert next_day.date.isoformat() == "2026-12-04"
    assert next_day.starts_at == day.ends_at


def test_the_default_day_is_utcs():
    day = Realm().provider_day(_moment("2026-12-03T23:30:00+00:00"))

    assert (day.date.isoformat(), day.ends_at - day.starts_at) == ("2026-12-03", 86400)
    assert datetime.fromtimestamp(day.ends_at, UTC).isoformat() == "2026-12-04T00:00:00+00:00"


def test_a_zones_day_follows_its_daylight_saving_time():
    # Berlin moves its clocks forward on 2026-03-29: that day lasts 23 hours.
    realm = Realm(budget_day_starts="Europe/Berlin")

    day = realm.provider_day(_moment("2026-03-29T12:00:00+00:00"))

    assert day.ends_at - day.starts_at == 23 * 3600
    assert day.starts_at == _moment("2026-03-29T00:00:00+01:00")


def test_the_alert_threshold_rounds_up():
    assert Realm(daily_budget=2000).budget_alert_calls() == 1600
    assert Realm(daily_budget=7, budget_alert_percent=50).budget_alert_calls() == 4
    assert Realm(daily_budget=None).budget_alert_calls() is None
