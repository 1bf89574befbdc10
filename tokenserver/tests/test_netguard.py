"""
Upstream destinations. Refused at save time and, on the resolved
address, at fetch time (a DNS answer that changes in between cannot pass).
DNS answers for made-up names are faked: name resolution leaves the process.
"""

import socket

import pytest

from realms.models import Realm
from tests.factories import ArgumentFactory, RealmFactory, SecretFactory
from tokens.models import FetchLog
from tokens.services import token_get
from tokenserver import netguard
from tokenserver.errors import UpstreamError

pytestmark = pytest.mark.django_db


@pytest.fixture
def dns(monkeypatch):
    """Answers for made-up hostnames; everything else resolves as it did."""
    answers = {}
    resolve = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            address = answers[host]
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (address, port))]
        return resolve(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def no_private_networks(settings):
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/api/token",
        "http://100.100.100.200/latest/meta-data/",
        "http://[fe80::1]/token",
    ],
)
def test_metadata_and_link_local_addresses_are_always_refused(api, url, settings):
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = ["0.0.0.0/0", "::/0"]

    response = api.post("/api/realm", {"id": "evil", "config": {"url": url}}, format="json")

    assert response.status_code == 400
    assert "link-local or cloud metadata" in response.json()["fields"]["config.url"][0]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/token",
        "http://10.0.0.5/token",
        "http://192.168.1.1/t",
        "http://[::1]/t",
    ],
)
def test_loopback_and_private_networks_are_refused_unless_allowed(api, url, no_private_networks):
    response = api.post("/api/realm", {"id": "internal", "config": {"url": url}}, format="json")

    assert response.status_code == 400
    assert "TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS" in response.json()["detail"]


def test_allowed_networks_open_a_private_range(api, settings):
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    response = api.post(
        "/api/realm", {"id": "internal", "config": {"url": "http://10.0.0.5/token"}}, format="json"
    )

    assert response.status_code == 201


def test_hostname_resolving_to_loopback_is_refused(api, no_private_networks):
    # localhost resolves to 127.0.0.1 (or ::1) for real.
    response = api.post(
        "/api/realm", {"id": "local", "config": {"url": "http://localhost:9/token"}}, format="json"
    )

    assert response.status_code == 400


def test_hostname_resolving_to_the_metadata_address_is_refused(api, dns):
    dns["metadata.example.test"] = "169.254.169.254"

    response = api.post(
        "/api/realm",
        {"id": "evil", "config": {"url": "http://metadata.example.test/latest"}},
        format="json",
    )

    assert response.status_code == 400


def test_code_url_is_checked_too(api, no_private_networks):
    response = api.post(
        "/api/realm", {"id": "fn", "logic_code": "http://127.0.0.1:9/fn"}, format="json"
    )

    assert response.status_code == 400
    assert "config.code_url" in response.json()["fields"]


def test_dns_rebinding_at_fetch_time_is_refused(dns, upstream, settings):
    # Saved while the name pointed at a public address ...
    dns["rebind.example.test"] = "93.184.216.34"
    realm = RealmFactory(url=f"http://rebind.example.test:{upstream.port}/token")
    realm.full_clean()
    ArgumentFactory(realm=realm, name="secret", value="$key_2")
    secret = SecretFactory(realm=realm)
    # ... then it answers with the loopback, where a private service listens.
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = []
    dns["rebind.example.test"] = "127.0.0.1"

    with pytest.raises(UpstreamError) as raised:
        token_get(realm.id, secret.name)

    assert "127.0.0.1 is a loopback, private or otherwise non-public address" in raised.value.detail
    assert upstream.requests == []  # nothing was sent there
    log = FetchLog.objects.get()
    assert log.outcome == "rejected"


def test_fetch_to_a_metadata_address_saved_before_the_rules_is_refused(dns, upstream):
    realm = RealmFactory(url="http://169.254.169.254/latest")  # bypasses clean(), as old data would

    with pytest.raises(UpstreamError) as raised:
        token_get(realm.id, SecretFactory(realm=realm).name)

    assert "link-local or cloud metadata" in raised.value.detail


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "::ffff:169.254.169.254",  # IPv4-mapped
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "172.16.0.1",
        "100.64.0.1",  # shared address space (CGNAT)
        "198.18.0.1",  # benchmarking
    ],
)
def test_address_refusal_rules(address, no_private_networks):
    # Review of issue 5: shared space, 6to4 and NAT64 forms were let through.
    assert netguard.address_refusal(address)


def test_public_addresses_are_allowed():
    assert netguard.address_refusal("8.8.8.8") is None
    assert netguard.address_refusal("2001:4860:4860::8888") is None


def test_nat64_of_a_metadata_address_is_refused_even_when_nat64_is_allowed(settings):
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = ["64:ff9b::/96"]

    assert "metadata" in netguard.address_refusal("64:ff9b::a9fe:a9fe")


# Issue 11, item 8: IPv6 forms that embed an IPv4 address the guard did not
# recognise (IPv4-compatible, IPv4-translated, local-use NAT64) and the
# deprecated site-local range were saved as public.
EMBEDDED_OR_SITE_LOCAL = [
    "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
    "64:ff9b:1::7f00:1",  # local-use NAT64 of 127.0.0.1
    "fec0::1",  # site-local
]


@pytest.mark.parametrize("address", EMBEDDED_OR_SITE_LOCAL)
def test_ipv6_literal_embedding_a_refused_ipv4_is_refused(api, address, no_private_networks):
    url = f"http://[{address}]/token"

    response = api.post("/api/realm", {"id": "evil", "config": {"url": url}}, format="json")

    assert response.status_code == 400
    assert not Realm.objects.filter(pk="evil").exists()


@pytest.mark.parametrize("address", EMBEDDED_OR_SITE_LOCAL)
def test_hostname_answering_an_ipv6_embedding_a_refused_ipv4_is_refused(
    api, dns, address, no_private_networks
):
    dns["sneaky.example.test"] = address

    response = api.post(
        "/api/realm",
        {"id": "evil", "config": {"url": "http://sneaky.example.test/token"}},
        format="json",
    )

    assert response.status_code == 400
    assert not Realm.objects.filter(pk="evil").exists()


@pytest.mark.parametrize("address", EMBEDDED_OR_SITE_LOCAL)
def test_fetch_to_an_ipv6_embedding_a_refused_ipv4_is_refused(
    dns, upstream, address, no_private_networks
):
    # Saved before the rules (bypasses clean(), as old data would); the name
    # answers with the IPv6 form at fetch time.
    dns["sneaky.example.test"] = address
    realm = RealmFactory(url=f"http://sneaky.example.test:{upstream.port}/token")

    with pytest.raises(UpstreamError) as raised:
        token_get(realm.id, SecretFactory(realm=realm).name)

    assert f"{address} " in raised.value.detail
    assert upstream.requests == []
    assert FetchLog.objects.get().outcome == "rejected"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("::a9fe:a9fe", "(IPv4-compatible) embeds 169.254.169.254, a link-local or cloud metadata"),
        ("::7f00:1", "(IPv4-compatible) embeds 127.0.0.1, a loopback, private or otherwise"),
        ("::ffff:0:7f00:1", "(IPv4-translated) embeds 127.0.0.1, a loopback, private"),
        ("64:ff9b:1::7f00:1", "(local-use NAT64) embeds 127.0.0.1, a loopback, private"),
        ("2002:a00:1::", "(6to4) embeds 10.0.0.1, a loopback, private"),
        ("2001:0:808:808::3fff:fdd2", "(Teredo) embeds 192.0.2.45, a loopback, private"),
        ("fec0::1", "fec0::1 is a loopback, private or otherwise non-public address"),
    ],
)
def test_refusal_names_the_embedded_address_and_why(address, reason, no_private_networks):
    assert reason in netguard.address_refusal(address)


@pytest.mark.parametrize(
    "address",
    ["::7f00:1", "::ffff:127.0.0.1", "::ffff:0:7f00:1", "64:ff9b::7f00:1", "2002:7f00:1::"],
)
def test_an_embedded_address_in_an_allowed_network_is_allowed(address, settings):
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.0/8"]

    assert netguard.address_refusal(address) is None


@pytest.mark.parametrize(
    "address",
    ["::ffff:8.8.8.8", "::808:808", "::ffff:0:808:808", "64:ff9b::808:808", "2002:808:808::"],
)
def test_an_ipv6_form_of_a_public_ipv4_address_is_allowed(address, no_private_networks):
    assert netguard.address_refusal(address) is None


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("64:ff9b:1::808:808", "64:ff9b:1::/48"),  # local-use NAT64 of 8.8.8.8
        ("2001:0:808:808::fefe:fefe", "2001::/32"),  # Teredo, server 8.8.8.8, client 1.1.1.1
    ],
)
def test_teredo_and_local_use_nat64_pass_only_when_their_range_is_allowed(
    address, network, settings
):
    # Where the embedded IPv4 address may not be where the packets go, a
    # public one is not enough.
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = []
    refused = netguard.address_refusal(address)
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = [network]
    allowed = netguard.address_refusal(address)

    assert "non-public" in refused
    assert allowed is None


def test_site_local_and_ipv6_loopback_pass_when_listed(settings):
    settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS = ["fec0::/10", "::1/128"]

    assert netguard.address_refusal("fec0::1") is None
    assert netguard.address_refusal("::1") is None
