"""
Where realm URLs are checked against the upstream guard: in the service and
the console's form, which may resolve hostnames, never in Realm.clean(),
which validates without network I/O (issue 9). Name resolution leaves the
process, so it is the one thing faked here.
"""

import socket

import pytest
from django.core.exceptions import ValidationError

from realms.models import Realm
from realms.services import realm_upsert
from tests.factories import RealmFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def resolver(monkeypatch):
    """Records every lookup; made-up names resolve to the cloud metadata address."""
    looked_up = []

    def getaddrinfo(host, port, *args, **kwargs):
        looked_up.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


def test_realm_validation_does_no_network_io(resolver):
    realm = Realm(id="wx", url="https://api.weixin.example/cgi-bin/token")

    realm.full_clean()

    assert resolver == []


def test_the_service_refuses_a_host_resolving_to_the_metadata_address(resolver):
    with pytest.raises(ValidationError) as raised:
        realm_upsert("wx", {"config": {"url": "https://api.weixin.example/cgi-bin/token"}})

    assert "metadata" in str(raised.value.message_dict["config.url"])
    assert resolver == ["api.weixin.example"]
    assert not Realm.objects.filter(pk="wx").exists()


def _realm_form(**changes):
    data = {
        "id": "wx",
        "kind": "config",
        "url": "https://api.weixin.example/cgi-bin/token",
        "method": "GET",
        "content_type": "json",
        "token_path": "access_token",
        "expires_in_path": "expires_in",
        "expires_in_unit": "s",
        "success_conditions": "[]",
        "rate_limit_codes": "[]",
        "permanent_error_codes": "[]",
        "permanent_error_ttl": "600",
        "timeout": "5",
        "max_concurrency": "4",
        "min_flush_interval": "30",
        "max_retries": "2",
        "breaker_threshold": "5",
        "breaker_cooldown": "30",
        "refresh_margin": "300",
        "default_ttl": "7200",
        "budget_alert_percent": "80",
        "budget_day_starts": "UTC",
        "arguments-TOTAL_FORMS": "0",
        "arguments-INITIAL_FORMS": "0",
    }
    return data | changes


def test_the_console_form_refuses_a_host_resolving_to_the_metadata_address(console, resolver):
    page = console.post("/admin/realms/realm/add/", _realm_form())

    assert page.status_code == 200  # the form again, with the error
    assert "metadata" in page.content.decode()
    assert not Realm.objects.filter(pk="wx").exists()


def test_the_console_form_checks_the_url_as_typed_on_change(console, resolver, settings):
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = []
    RealmFactory(id="wx", url="https://203.0.113.10/token")

    page = console.post("/admin/realms/realm/wx/change/", _realm_form(url="http://127.0.0.1/token"))

    assert page.status_code == 200
    assert "loopback" in page.content.decode()
    assert Realm.objects.get(pk="wx").url == "https://203.0.113.10/token"


def test_the_console_form_saves_a_public_address(console, resolver):
    # An address literal: checked without a lookup, and never connected to here.
    page = console.post("/admin/realms/realm/add/", _realm_form(url="https://8.8.8.8/token"))

    assert page.status_code == 302
    assert Realm.objects.get(pk="wx").url == "https://8.8.8.8/token"
