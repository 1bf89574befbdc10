"""
Same-token answers understood (issue 14, item 5): Feishu hands back the token
it issued while more than 30 minutes of it remain, with the lifetime it has
left. A refresh that returns the token already held is recorded
(FetchLog.same_token), the next refresh is scheduled from the provider's real
expiry and waits for its re-issue window (what the answers showed, or the
realm's reissue_window), so the seed's 1-hour margin costs a call or two once,
never a loop; the console warns when a realm's margin is wider than its
provider's answers show the window to be.

The provider is a real local fake speaking Feishu's wire format
(`POST /open-apis/auth/v3/tenant_access_token/internal` →
`{"code": 0, "msg": "ok", "tenant_access_token": "t-…", "expire": 7140}`) on a
clock the test moves: `advance(seconds)` moves it, and moves the stored token's
times back by as much (our side of the same passage of time).
"""

import json
import time
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from realms.models import Realm
from realms.presets import realm_from_preset
from realms.services import realm_upsert
from tests.factories import SecretFactory
from tokens.background import tokens_refresh_due
from tokens.cache import entries_evict
from tokens.models import FetchLog, StoredToken
from tokens.services import token_get

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/open-apis/auth/v3/tenant_access_token/internal"
APP_ID, APP_SECRET = "cli_a1b2c3d4e5f6", "feishu-app-secret-0123456789"

#: The refresher's schedule: a pass every 30 s, looking 1.5 passes ahead.
INTERVAL, LOOKAHEAD = 30, 45


class Feishu:
    """
    Feishu's tenant_access_token/internal: a token lives 7,200 s; asked while
    more than `window` seconds of it remain, it is handed back with what is left
    (`expire`); asked later, a new one is issued. Wrong credentials: code 10014.
    Its clock is the real one plus `offset`, which `advance` moves.
    """

    LIFETIME = 7200

    def __init__(self, upstream, window=1800):
        self.upstream, self.window = upstream, window
        self.offset = 0.0
        self.token, self.issued_at, self.issued = None, None, 0
        upstream.reply_with(PATH, self.answer)

    def answer(self, number):
        request = self.upstream.requests[number - 1]
        body = json.loads(request["body"] or b"{}")
        if (body.get("app_id"), body.get("app_secret")) != (APP_ID, APP_SECRET):
            return 200, {"code": 10014, "msg": "app secret invalid"}, 0.0
        now = time.time() + self.offset
        left = None if self.token is None else self.issued_at + self.LIFETIME - now
        if left is None or left < self.window:
            self.issued += 1
            self.token, self.issued_at, left = f"t-g1044{self.issued:04d}abcdef", now, self.LIFETIME
        return (
            200,
            {"code": 0, "msg": "ok", "tenant_access_token": self.token, "expire": round(left)},
            0.0,
        )

    def advance(self, seconds):
        """`seconds` pass: on the provider's clock, and for the token stored here."""
        self.offset += seconds
        shift = timedelta(seconds=seconds)
        StoredToken.objects.update(
            expires_at=F("expires_at") - shift,
            fetched_at=F("fetched_at") - shift,
            issued_at=F("issued_at") - shift,
        )
        entries_evict([("feishu", "app")])  # the entry's times are absolute

    def calls(self):
        return len(self.upstream.calls(PATH))


@pytest.fixture
def feishu_realm(upstream):
    """
    The Feishu preset, pointed at the fake, with the seed's 1-hour margin and without
    the preset's reissue_window (1800): what its answers show is learnt.
    """
    realm_from_preset("feishu_tenant", "feishu", url=upstream.url(PATH))
    realm_upsert(
        "feishu", {"config": {"refresh_margin": 3600, "reissue_window": None}}, partial=True
    )
    return Realm.objects.get(pk="feishu")


@pytest.fixture
def feishu_secret(feishu_realm):
    return SecretFactory(realm=feishu_realm, name="app", key_1=APP_ID, key_2=APP_SECRET)


def _run_refresher(feishu, hours):
    """The refresher's passes over `hours` of the fake's time; the token never expires."""
    for _ in range(int(hours * 3600 / INTERVAL)):
        feishu.advance(INTERVAL)
        tokens_refresh_due(lookahead=LOOKAHEAD, workers=1)
        stored = StoredToken.objects.get()
        assert stored.expires_at > timezone.now(), "the token expired between passes"


def _same_token_rows():
    return FetchLog.objects.filter(same_token=True).count()


def test_a_same_token_answer_is_recorded_with_the_lifetime_it_had_left(upstream, feishu_secret):
    feishu = Feishu(upstream)
    first = token_get("feishu", "app")
    feishu.advance(3000)

    again = token_get("feishu", "app", flush=True)

    assert again.token == first.token
    assert 4190 <= again.expires_in_ms() / 1000 <= 4200  # the provider's real expiry
    rows = list(FetchLog.objects.order_by("created_at", "id").values_list("same_token", "lifetime"))
    assert [same for same, _ in rows] == [False, True]
    assert rows[0][1] == 7200 and 4199 <= rows[1][1] <= 4200  # whole seconds the answer said
    stored = StoredToken.objects.get()
    assert stored.same_token_left == rows[1][1]
    assert stored.lifetime() == pytest.approx(7200, abs=2)  # issued when it was first fetched


def test_six_hours_of_refresher_passes_with_a_1_hour_margin_cost_one_wasted_call(
    upstream, feishu_secret
):
    # The seed's 1-hour margin against Feishu: the first refresh of the first token
    # comes 60 min before expiry and gets the same token back; from then on each
    # refresh waits until the provider re-issues.
    feishu = Feishu(upstream)
    token_get("feishu", "app")

    _run_refresher(feishu, hours=6)

    same, calls, issued = _same_token_rows(), feishu.calls(), feishu.issued
    assert same == 1, (same, calls, issued)
    assert calls == issued + same
    # A token lives 7,200 s and is refreshed within its last 1,800: at least
    # 5,400 s apart, so 6 hours hold the first token and at most 4 more.
    assert 4 <= issued <= 5, (calls, issued)
    stored = StoredToken.objects.get()
    assert stored.reissued_left is not None and stored.reissued_left < 1800


def test_with_the_reissue_window_configured_no_call_is_wasted(
    upstream, feishu_secret, feishu_realm
):
    feishu_realm.reissue_window = 1800
    feishu_realm.save()
    feishu = Feishu(upstream)
    token_get("feishu", "app")

    _run_refresher(feishu, hours=6)

    assert _same_token_rows() == 0
    assert feishu.calls() == feishu.issued
    assert 4 <= feishu.issued <= 5


def test_a_provider_that_re_issues_only_at_the_last_minute_costs_a_few_calls_not_a_loop(
    upstream, feishu_secret
):
    # Same token until under 2 minutes remain: each same-token answer halves the wait.
    feishu = Feishu(upstream, window=120)
    token_get("feishu", "app")

    _run_refresher(feishu, hours=6)

    same, calls, issued = _same_token_rows(), feishu.calls(), feishu.issued
    assert calls == issued + same
    # log2(3,600 / 120) ≈ 5 halvings for the first token, none afterwards.
    assert same <= 7, (same, calls, issued)
    assert 3 <= issued <= 4


def test_a_window_of_0_asks_once_the_token_expired_and_never_before(
    upstream, feishu_secret, feishu_realm
):
    # WeCom and DingTalk hand back the same token until it expires (the catalogue's 0).
    feishu_realm.reissue_window = 0
    feishu_realm.save()
    feishu = Feishu(upstream, window=0)
    token_get("feishu", "app")

    for _ in range(int(24 * 3600 / INTERVAL)):
        feishu.advance(INTERVAL)
        tokens_refresh_due(lookahead=LOOKAHEAD, workers=1)

    assert _same_token_rows() == 0
    assert feishu.calls() == feishu.issued == 13  # one per 7,200 s (and a pass), from the first


def test_a_provider_that_always_issues_a_new_token_is_scheduled_as_before(upstream, feishu_secret):
    # WeChat's way: every call a new token; nothing is learnt, the margin rules.
    feishu = Feishu(upstream, window=Feishu.LIFETIME + 1)
    token_get("feishu", "app")
    feishu.advance(3000)
    token_get("feishu", "app", flush=True)

    stored = StoredToken.objects.get()
    assert feishu.issued == 2
    assert (stored.same_token_left, stored.reissued_left) == (None, None)
    assert stored.effective_margin(3600) == pytest.approx(3600, abs=1)  # half its lifetime
    assert not FetchLog.objects.filter(same_token=True).exists()


# --- What operators see ------------------------------------------------------------------


@pytest.fixture
def same_token_seen(upstream, feishu_secret):
    """A provider that re-issues under 1,500 s: asked with 1,700 s left, it hands the token back."""
    feishu = Feishu(upstream, window=1500)
    token_get("feishu", "app")
    feishu.advance(7200 - 1700)
    token_get("feishu", "app", flush=True)
    return FetchLog.objects.get(same_token=True)


def test_the_realm_page_and_the_dashboard_warn_when_the_margin_is_wider_than_the_window_seen(
    same_token_seen, console
):
    page = console.get("/admin/realms/realm/feishu/change/")
    index = console.get("/admin/").content.decode()

    [warning] = [str(message) for message in page.context["messages"]]
    assert "handed back the same token with 1700 s left, but the refresh margin is 3600 s" in (
        warning
    )
    assert "set refresh_margin below 1700 s, or reissue_window" in warning
    assert "Realms refreshing before their provider re-issues (1)" in index
    assert "same token with 1700 s left" in index


def test_a_reissue_window_narrower_than_the_margin_is_said_too(feishu_realm, console):
    realm_upsert("feishu", {"config": {"reissue_window": 1800}}, partial=True)

    page = console.get("/admin/realms/realm/feishu/change/")

    [warning] = [str(message) for message in page.context["messages"]]
    assert "the refresh margin (3600 s) is wider than its reissue_window (1800 s)" in warning


def test_no_warning_once_the_margin_is_inside_the_window(same_token_seen, console, feishu_realm):
    realm_upsert("feishu", {"config": {"refresh_margin": 1500}}, partial=True)

    page = console.get("/admin/realms/realm/feishu/change/")

    assert [str(m) for m in page.context["messages"]] == []
    assert "the refresh margin (1500 s) is within that" in page.content.decode()


def test_the_fetch_log_shows_and_filters_same_token_answers(same_token_seen, console, api):
    listing = console.get("/admin/tokens/fetchlog/?same_token__exact=1").content.decode()
    exported = console.get("/admin/tokens/fetchlog/export.csv").getvalue().decode()
    only_same = api.get("/api/fetchlog", {"same_token": "true"}).json()["data"]
    others = api.get("/api/fetchlog", {"same_token": "false"}).json()["data"]

    assert "Same token" in listing
    header, *rows = exported.splitlines()
    assert header.endswith(",same_token")
    assert sorted(row.rsplit(",", 1)[1] for row in rows) == ["False", "True"]
    assert only_same["total"] == 1 and only_same["list"][0]["same_token"] is True
    assert others["total"] == 1 and others["list"][0]["same_token"] is False
