"""
Chained realms (issue 14, item 1): a token made from another secret's token.
WeChat's JS-SDK ticket is fetched with the access token; the child's fetch gets
its parent's token first (single flight), a refused parent token is refreshed
once and the call made once more, never in a loop, and a parent's new token
refreshes its children ahead, outside the parent's request path.

Against the real local fake (tokens.testing.FakeUpstream) speaking WeChat's wire
format for both endpoints: `cgi-bin/token` and `cgi-bin/ticket/getticket`, whose
errors come inside HTTP 200 (`{"errcode": 40001, "errmsg": "invalid credential,
access_token is invalid or not latest"}`). The child realms are made from the
ticket presets. Data is committed (transaction=True): the threads and the
gunicorn workers use their own database connections; the tests run on whichever
configuration the suite runs on (SQLite + local memory, or MariaDB + Redis).
"""

import itertools
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from rest_framework.test import APIClient

from realms.models import Realm
from realms.presets import realm_from_preset
from realms.services import realm_upsert
from secret_store.models import Secret
from tests.factories import SecretFactory, stored_token
from tests.helpers import run_at_once, wait_until
from tokens import single_flight
from tokens.background import tokens_refresh_due, wait_for_background_refreshes
from tokens.cache import entries_evict
from tokens.models import FetchLog, StoredToken, fingerprint
from tokens.services import token_get, token_test_fetch
from tokenserver.errors import QuotaExhausted, UpstreamError, UpstreamUnavailable

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN_PATH = "/cgi-bin/token"
TICKET_PATH = "/cgi-bin/ticket/getticket"
KEY = "wxgzh_secret"
INVALID = {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}


class WeChat:
    """
    WeChat's access token and ticket endpoints on the fake, in WeChat's format.
    Each token fetch issues a new token (ACCESS-1, ACCESS-2, …), which getticket
    accepts from then on (unless `accept_new` is off: WeChat refusing it); any
    other token gets errcode 40001, as WeChat answers for an invalidated token.
    `same_token` makes the token endpoint hand back one token (as WeCom does while
    it is valid); `ticket_gate`, an Event getticket waits for before answering.
    """

    def __init__(self, upstream):
        self.upstream = upstream
        self.accepted = set()
        self.accept_new = True
        self.same_token = False
        self.ticket_gate = None
        self.ticket_delay = 0.0
        self.echo = False  # getticket's error quotes the token it got (a hostile upstream)
        self._lock = threading.Lock()
        self._tokens = 0
        self._tickets = 0
        upstream.reply_with(TOKEN_PATH, self._token)
        upstream.reply_with(TICKET_PATH, self._ticket)

    def _token(self, number):
        with self._lock:
            if not (self.same_token and self._tokens):
                self._tokens += 1
            token = f"ACCESS-{self._tokens}"
            if self.accept_new:
                self.accepted.add(token)
        return 200, {"access_token": token, "expires_in": 7200}, 0.0

    def _ticket(self, number):
        # The fake records requests in the order it numbers them.
        query = self.upstream.requests[number - 1]["query"]
        if self.ticket_gate is not None:
            self.ticket_gate.wait(10)
        access_token = query.get("access_token")
        if query.get("type") not in ("jsapi", "wx_card") or access_token not in self.accepted:
            answer = dict(INVALID)
            if self.echo:
                answer["errmsg"] += f" (got {access_token})"
            return 200, answer, self.ticket_delay
        with self._lock:
            self._tickets += 1
            ticket = f"TICKET-{self._tickets}"
        answer = {"errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": 7200}
        return 200, answer, self.ticket_delay

    def token_calls(self):
        return self.upstream.calls(TOKEN_PATH)

    def ticket_calls(self):
        return self.upstream.calls(TICKET_PATH)

    def tickets_asked_with(self):
        return [call["query"]["access_token"] for call in self.ticket_calls()]


@pytest.fixture
def wechat(upstream):
    return WeChat(upstream)


@pytest.fixture
def parent(wechat, wechat_realm, wechat_secret):
    """The seed's WeChat realm wxgzh and its secret: the parent."""
    wechat_realm.max_retries = 0
    wechat_realm.save()
    return wechat_secret


@pytest.fixture
def child(upstream, parent):
    """
    The JS-SDK ticket realm wx_jsapi from its preset, parent wxgzh, pointed at the
    fake; its secret has the parent's key (the preset's parent_key is blank).
    """
    realm_from_preset("wechat_jsapi_ticket", "wx_jsapi", parent="wxgzh")
    realm_upsert("wx_jsapi", {"config": {"url": upstream.url(TICKET_PATH)}}, partial=True)
    return Secret.objects.create(realm=Realm.objects.get(pk="wx_jsapi"), name=KEY)


@pytest.fixture(autouse=True)
def _background_done():
    """Refreshes ahead run in background threads: done before the database goes."""
    yield
    wait_for_background_refreshes()


def _ticket(**kwargs):
    return token_get("wx_jsapi", KEY, **kwargs)


def _rows():
    """The fetch log, oldest first: (realm, trigger, outcome, error code)."""
    return [
        (row.realm, row.trigger, row.outcome, row.error_code)
        for row in FetchLog.objects.order_by("created_at", "id")
    ]


# --- Fetching a child: the parent's token first -----------------------------------


def test_a_cold_ticket_asked_by_30_threads_costs_one_token_call_and_one_ticket_call(wechat, child):
    # Issue 14: the parent's token is fetched (single flight) for the child.
    wechat.ticket_delay = 0.2  # the others wait on the one call in flight

    results = run_at_once(30, _ticket)

    assert [r for r in results if isinstance(r, Exception)] == []
    assert {r.token for r in results} == {"TICKET-1"}
    assert len(wechat.token_calls()) == 1
    assert len(wechat.ticket_calls()) == 1
    assert wechat.ticket_calls()[0]["query"] == {"access_token": "ACCESS-1", "type": "jsapi"}
    assert _rows() == [
        ("wxgzh", "chain", "ok", ""),
        ("wx_jsapi", "request", "ok", ""),
    ]
    # The ticket remembers which access token it was made with.
    stored = StoredToken.objects.get(secret=child)
    assert stored.parent_fingerprint == fingerprint("ACCESS-1")


def test_a_valid_parent_token_is_reused(wechat, parent, child):
    assert token_get("wxgzh", KEY).token == "ACCESS-1"

    assert _ticket().token == "TICKET-1"

    assert len(wechat.token_calls()) == 1
    assert wechat.tickets_asked_with() == ["ACCESS-1"]


def test_a_parent_secret_named_in_parent_key_serves_every_child_secret(wechat, parent, child):
    realm_upsert("wx_jsapi", {"config": {"parent_key": KEY}}, partial=True)
    SecretFactory(realm_id="wx_jsapi", name="page-a")
    SecretFactory(realm_id="wx_jsapi", name="page-b")

    tickets = {token_get("wx_jsapi", name).token for name in ("page-a", "page-b")}

    assert tickets == {"TICKET-1", "TICKET-2"}
    assert len(wechat.token_calls()) == 1
    assert wechat.tickets_asked_with() == ["ACCESS-1", "ACCESS-1"]


# --- The child's upstream refuses the parent token: once, never a loop ------------


def test_a_refused_parent_token_costs_exactly_one_parent_call_and_one_child_retry(
    wechat, parent, child
):
    # Issue 14's number: a ticket refresh after its parent was rejected.
    # The stored access token was invalidated (another fetch of the same AppID
    # elsewhere): WeChat answers 40001 to it.
    stored_token(parent, token="INVALIDATED", age=600)
    wechat.ticket_delay = 0.1

    results = run_at_once(20, _ticket)

    assert [r for r in results if isinstance(r, Exception)] == []
    assert {r.token for r in results} == {"TICKET-1"}
    assert len(wechat.token_calls()) == 1  # the parent, refreshed once
    assert wechat.tickets_asked_with() == ["INVALIDATED", "ACCESS-1"]  # the child, retried once
    # A fetch-log row for each: the refused call, the parent's refresh, the retry.
    assert _rows() == [
        ("wx_jsapi", "request", "upstream_error", "40001"),
        ("wxgzh", "chain", "ok", ""),
        ("wx_jsapi", "request", "ok", ""),
    ]
    assert StoredToken.objects.get(secret=parent).token == "ACCESS-1"


def test_a_child_refused_again_after_the_retry_is_a_502_and_no_loop(wechat, parent, child):
    stored_token(parent, token="INVALIDATED", age=600)
    wechat.accept_new = False  # WeChat refuses the new access token too

    with pytest.raises(UpstreamError) as raised:
        _ticket()

    assert raised.value.status_code == 502
    assert raised.value.detail.startswith("upstream answered HTTP 200 with errcode 40001")
    assert len(wechat.token_calls()) == 1
    assert wechat.tickets_asked_with() == ["INVALIDATED", "ACCESS-1"]
    assert [row[2:] for row in _rows()] == [
        ("upstream_error", "40001"),
        ("ok", ""),
        ("upstream_error", "40001"),
    ]

    # Asked again at once: one more ticket call, and the parent, fetched just now,
    # is not refreshed again (its realm's min_flush_interval): 502 with Retry-After.
    with pytest.raises(UpstreamError) as again:
        _ticket()

    assert "may be refreshed again in" in again.value.detail
    assert 1 <= again.value.retry_after <= 30
    assert len(wechat.token_calls()) == 1
    assert len(wechat.ticket_calls()) == 3


def test_the_realms_own_codes_count_as_a_refused_parent_token(wechat, upstream, parent, child):
    realm_upsert("wx_jsapi", {"config": {"parent_rejected_codes": [41001]}}, partial=True)
    stored_token(parent, token="INVALIDATED", age=600)
    answers = iter([(200, {"errcode": 41001, "errmsg": "access_token missing"}, 0.0)])

    def ticket(number):
        return next(answers, None) or wechat._ticket(number)

    upstream.reply_with(TICKET_PATH, ticket)

    assert _ticket().token == "TICKET-1"
    assert len(wechat.token_calls()) == 1
    assert len(wechat.ticket_calls()) == 2


def test_a_refused_parent_token_is_never_remembered_as_a_permanent_error(wechat, parent, child):
    # An operator listed 40001 as permanent on the child: the parent's refresh wins.
    realm_upsert("wx_jsapi", {"config": {"permanent_error_codes": [40001]}}, partial=True)
    stored_token(parent, token="INVALIDATED", age=600)

    assert _ticket().token == "TICKET-1"


# --- A parent's new token refreshes its children ahead ----------------------------


def _new_parent_token(realm_id="wxgzh"):
    """The parent flushed (its realm's min_flush_interval off): a new token."""
    Realm.objects.filter(pk=realm_id).update(min_flush_interval=0)
    return token_get(realm_id, KEY, flush=True)


def test_a_parent_refresh_refreshes_its_children_ahead_outside_its_request(wechat, child):
    assert _ticket().token == "TICKET-1"  # made with ACCESS-1
    wechat.ticket_gate = gate = threading.Event()

    flushed = _new_parent_token()

    # The flush has its answer while the child's refresh still waits on getticket.
    assert flushed.token == "ACCESS-2"
    wait_until(lambda: len(wechat.ticket_calls()) == 2, message="the ticket refreshed ahead")
    assert StoredToken.objects.get(secret=child).token == "TICKET-1"
    gate.set()
    wait_for_background_refreshes()

    assert wechat.tickets_asked_with() == ["ACCESS-1", "ACCESS-2"]
    stored = StoredToken.objects.get(secret=child)
    assert (stored.token, stored.parent_fingerprint) == ("TICKET-2", fingerprint("ACCESS-2"))
    assert _ticket().token == "TICKET-2"
    assert _rows()[-1] == ("wx_jsapi", "chain", "ok", "")


def test_a_refresh_ahead_and_the_refresher_share_one_call(wechat, child, monkeypatch):
    # Single flight per child: the refresher finds the ticket behind its parent
    # while the refresh ahead is in flight, waits for it and keeps its result.
    waiting = threading.Event()
    wait_for_holder = single_flight._wait_for_holder

    def spy(*args, **kwargs):  # calls through; tells the test the refresher waits
        waiting.set()
        return wait_for_holder(*args, **kwargs)

    monkeypatch.setattr(single_flight, "_wait_for_holder", spy)
    _ticket()
    wechat.ticket_gate = gate = threading.Event()
    _new_parent_token()
    wait_until(lambda: len(wechat.ticket_calls()) == 2, message="the refresh ahead in flight")

    passes = []
    refresher = threading.Thread(target=lambda: passes.append(tokens_refresh_due(lookahead=60)))
    refresher.start()
    wait_until(waiting.is_set, timeout=10, message="the refresher waiting for the ticket's lock")
    gate.set()
    refresher.join(30)
    wait_for_background_refreshes()

    assert len(wechat.ticket_calls()) == 2
    assert (passes[0].due, passes[0].refreshed, passes[0].failed) == (1, 0, 0)
    assert StoredToken.objects.get(secret=child).token == "TICKET-2"


def test_a_parent_answering_the_same_token_leaves_its_children_alone(wechat, child):
    # WeCom hands back the token it holds while it is valid: the tickets made with
    # it are still good.
    wechat.same_token = True
    _ticket()

    assert _new_parent_token().token == "ACCESS-1"
    wait_for_background_refreshes()

    assert len(wechat.token_calls()) == 2
    assert len(wechat.ticket_calls()) == 1


def test_a_child_never_fetched_is_left_to_its_first_request(wechat, parent, child):
    _new_parent_token()
    wait_for_background_refreshes()

    assert wechat.ticket_calls() == []


# --- The refresher: parents first ---------------------------------------------------


def test_the_refresher_refreshes_the_parent_first_then_its_children(wechat, parent, child):
    stored_token(parent, token="ACCESS-0", age=7000, left=100)  # due
    stored = stored_token(child, token="TICKET-0", age=7000, left=100)  # due as well
    StoredToken.objects.filter(pk=stored.pk).update(parent_fingerprint=fingerprint("ACCESS-0"))
    wechat.accepted.add("ACCESS-0")

    report = tokens_refresh_due(lookahead=45, workers=4)
    wait_for_background_refreshes()

    assert (report.checked, report.due, report.failed) == (2, 2, 0)
    assert len(wechat.token_calls()) == 1
    # One ticket call (the refresh ahead and the child's wave share it), after the
    # parent's and with its new token.
    assert wechat.tickets_asked_with() == ["ACCESS-1"]
    assert wechat.ticket_calls()[0]["at"] > wechat.token_calls()[0]["at"]
    assert StoredToken.objects.get(secret=child).parent_fingerprint == fingerprint("ACCESS-1")


def test_the_refresher_catches_up_with_a_ticket_behind_its_parent(wechat, parent, child):
    # The parent's token was replaced by a process that died before refreshing the
    # ticket ahead: the ticket is not due by its time, but behind its parent.
    stored_token(parent, token="ACCESS-5", age=60)
    wechat.accepted.add("ACCESS-5")
    stored = stored_token(child, token="TICKET-0", age=60)
    StoredToken.objects.filter(pk=stored.pk).update(parent_fingerprint=fingerprint("ACCESS-4"))

    report = tokens_refresh_due(lookahead=45, workers=4)

    assert (report.due, report.refreshed) == (1, 1)
    assert wechat.token_calls() == []
    assert wechat.tickets_asked_with() == ["ACCESS-5"]
    assert _rows() == [("wx_jsapi", "refresher", "ok", "")]


# --- When the parent has no token to give -----------------------------------------


def test_a_disabled_parent_is_a_502_naming_it(wechat, parent, child):
    Secret.objects.filter(pk=parent.pk).update(enabled=False)

    with pytest.raises(UpstreamError) as raised:
        _ticket()

    assert raised.value.detail == (
        f"The parent token of wx_jsapi/{KEY} (wxgzh/{KEY}) is not to be had: "
        f"Secret wxgzh/{KEY} is disabled."
    )
    assert wechat.ticket_calls() == []
    assert _rows() == [("wx_jsapi", "request", "rejected", "parent")]


def test_a_parent_refused_by_its_upstream_is_the_childs_502(wechat, upstream, parent, child):
    upstream.reply(TOKEN_PATH, {"errcode": 40013, "errmsg": "invalid appid"})

    with pytest.raises(UpstreamError) as raised:
        _ticket()

    assert "errcode 40013: invalid appid" in raised.value.detail
    assert wechat.ticket_calls() == []
    assert _rows() == [
        ("wxgzh", "chain", "upstream_error", "40013"),
        ("wx_jsapi", "request", "rejected", "parent"),
    ]


def test_a_parent_out_of_its_daily_budget_is_the_childs_429(wechat, parent, child):
    # Issue 14 (items 1 and 3 together): the parent's budget is used up and its token
    # has expired, so the ticket cannot be made until the parent provider's day turns.
    # The child answers the parent's 429 quota_exhausted, Retry-After and all: a 502
    # would tell apps the upstream failed and invite retries.
    Realm.objects.filter(pk="wxgzh").update(daily_budget=1)
    assert _ticket().token == "TICKET-1"  # the parent's one call of the day
    StoredToken.objects.update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    entries_evict([("wxgzh", KEY), ("wx_jsapi", KEY)])

    with pytest.raises(QuotaExhausted) as raised:
        _ticket()

    assert raised.value.status_code == 429 and raised.value.code == "quota_exhausted"
    assert "wxgzh/wxgzh_secret" in raised.value.detail
    assert 0 < raised.value.retry_after <= 86400
    assert len(wechat.token_calls()) == 1 and len(wechat.ticket_calls()) == 1


def test_a_parent_out_of_reach_is_the_childs_503(wechat, parent, child):
    Realm.objects.filter(pk="wxgzh").update(url="http://127.0.0.1:9/cgi-bin/token")

    with pytest.raises(UpstreamUnavailable) as raised:
        _ticket()

    assert raised.value.status_code == 503
    assert raised.value.retry_after
    assert wechat.ticket_calls() == []


def test_a_cycle_made_behind_the_checks_is_refused_at_once(wechat, parent, child):
    # Two saves racing could close a cycle the checks refuse one at a time.
    Realm.objects.filter(pk="wxgzh").update(parent_id="wx_jsapi")
    started = time.monotonic()

    with pytest.raises(UpstreamError) as raised:
        _ticket()

    assert "goes round" in raised.value.detail
    assert time.monotonic() - started < 2  # no wait on its own lock
    assert wechat.token_calls() == wechat.ticket_calls() == []


def test_the_test_fetch_of_a_child_fetches_its_parent_first(wechat, parent, child):
    outcome = token_test_fetch("wx_jsapi", KEY, client="operator")

    assert outcome["ok"] and outcome["source"] == "upstream"
    assert outcome["token"] == "TICKET…"
    assert wechat.tickets_asked_with() == ["ACCESS-1"]


# --- Never a token in a log line, the fetch log or an error body -------------------


def test_no_token_or_ticket_in_logs_fetch_log_or_error_bodies(wechat, parent, child, api, caplog):
    caplog.set_level(logging.DEBUG)
    stored_token(parent, token="INVALIDATED-ACCESS", age=600)
    wechat.echo = True  # the upstream quotes the token it refused
    wechat.accept_new = False

    first = api.get("/api/token", {"realm": "wx_jsapi", "key": KEY})
    wechat.accept_new = True
    wechat.accepted.add("ACCESS-1")
    Realm.objects.filter(pk="wxgzh").update(min_flush_interval=0)
    second = api.get("/api/token", {"realm": "wx_jsapi", "key": KEY})
    _new_parent_token()
    wait_for_background_refreshes()

    assert first.status_code == 502
    assert second.status_code == 200
    secrets = ["INVALIDATED-ACCESS", "ACCESS-1", "ACCESS-2", "ACCESS-3", "TICKET-1", "TICKET-2"]
    bodies = first.content.decode()
    rows = json.dumps(list(FetchLog.objects.values()), default=str)
    lines = "\n".join(
        record.getMessage() + json.dumps(record.__dict__, default=str) for record in caplog.records
    )
    for secret in secrets:
        assert secret not in bodies
        assert secret not in rows
        assert secret not in lines
    assert "(got ***)" in rows  # the echo was cut out


# --- Several processes ----------------------------------------------------------------


def test_a_cold_ticket_asked_across_4_processes_costs_one_call_each(
    wechat, parent, child, staff_user, gunicorn_server
):
    client = APIClient()
    client.force_login(staff_user)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    for _ in range(8):  # warm every worker's connections first
        requests.get(f"{gunicorn_server}/api/realm/wx_jsapi", cookies=cookies, timeout=10)
    wechat.ticket_delay = 0.3

    def get():
        response = requests.get(
            f"{gunicorn_server}/api/token?realm=wx_jsapi&key={KEY}", cookies=cookies, timeout=30
        )
        return response.status_code, response.json().get("token")

    results = run_at_once(100, get)

    assert set(results) == {(200, "TICKET-1")}
    assert len(wechat.token_calls()) == 1
    assert len(wechat.ticket_calls()) == 1


# --- The ticket presets, each against its provider's wire format ----------------------

TICKET_PRESETS = [
    ("wechat_jsapi_ticket", "wechat_official_account", "/cgi-bin/token", TICKET_PATH, "jsapi"),
    ("wechat_card_ticket", "wechat_official_account", "/cgi-bin/token", TICKET_PATH, "wx_card"),
    ("wecom_jsapi_ticket", "wecom", "/cgi-bin/gettoken", "/cgi-bin/get_jsapi_ticket", None),
    ("wecom_agent_ticket", "wecom", "/cgi-bin/gettoken", "/cgi-bin/ticket/get", "agent_config"),
]


@pytest.mark.parametrize(
    ("preset", "parent_preset", "token_path", "ticket_path", "kind"),
    TICKET_PRESETS,
    ids=[preset for preset, *_ in TICKET_PRESETS],
)
def test_each_ticket_preset_speaks_its_providers_format(
    upstream, preset, parent_preset, token_path, ticket_path, kind
):
    # The parent from its own preset; both pointed at the fake; flushes not held back.
    for realm_id, path in (("parent", token_path), ("child", ticket_path)):
        if realm_id == "parent":
            realm_from_preset(parent_preset, "parent")
        else:
            realm_from_preset(preset, "child", parent="parent")
        config = {"url": upstream.url(path), "min_flush_interval": 0}
        realm_upsert(realm_id, {"config": config}, partial=True)
    SecretFactory(realm_id="parent", name="app", key_1="ww0123456789", key_2="appsecret-0123")
    Secret.objects.create(realm_id="child", name="app")
    issued = itertools.count(1)  # the fake numbers calls across paths: its own count
    upstream.reply_with(
        token_path,
        lambda number: (
            200,
            {
                "errcode": 0,
                "errmsg": "ok",
                "access_token": f"ACCESS-{next(issued)}",
                "expires_in": 7200,
            },
            0.0,
        ),
    )
    ok = {"errcode": 0, "errmsg": "ok", "ticket": "TICKET-1", "expires_in": 7200}
    query = {"access_token": "ACCESS-1"} | ({"type": kind} if kind else {})

    # Its success answer.
    upstream.reply(ticket_path, ok)
    result = token_get("child", "app")
    assert result.token == "TICKET-1"
    assert 7190_000 < result.expires_in_ms() <= 7200_000
    assert upstream.calls(ticket_path)[0]["method"] == "GET"
    assert upstream.calls(ticket_path)[0]["query"] == query

    # Its answer to an invalid access token (WeCom: 40014; WeChat: 40001, 42001 alike):
    # the parent refreshed once, the ticket asked once more with the new token.
    answers = iter([{"errcode": 40014, "errmsg": "invalid access_token"}])
    upstream.reply_with(
        ticket_path, lambda number: (200, next(answers, {**ok, "ticket": "TICKET-2"}), 0.0)
    )
    assert token_get("child", "app", flush=True).token == "TICKET-2"
    assert len(upstream.calls(token_path)) == 2
    asked = [call["query"]["access_token"] for call in upstream.calls(ticket_path)]
    assert asked == ["ACCESS-1", "ACCESS-1", "ACCESS-2"]

    # Its rate limit (45009, the daily quota): a 502, then the realm backs off (503,
    # no call) while the ticket it holds is still served.
    upstream.reply(ticket_path, {"errcode": 45009, "errmsg": "reach max api daily quota limit"})
    with pytest.raises(UpstreamError):
        token_get("child", "app", flush=True)
    with pytest.raises(UpstreamUnavailable):
        token_get("child", "app", flush=True)
    assert len(upstream.calls(ticket_path)) == 4
    assert token_get("child", "app").token == "TICKET-2"


def test_a_fixed_token_may_be_the_parent(wechat, upstream, child):
    Realm.objects.filter(pk="wxgzh").update(kind=Realm.Kind.FIXED)
    Secret.objects.filter(realm_id="wxgzh").update(token="FIXED-ACCESS")
    wechat.accepted.add("FIXED-ACCESS")

    assert _ticket().token == "TICKET-1"
    assert wechat.token_calls() == []
    assert wechat.tickets_asked_with() == ["FIXED-ACCESS"]
