"""
Where the upstream client may connect (server-side request forgery guard).

- only http and https;
- link-local and cloud metadata addresses are always refused
  (169.254.0.0/16, fe80::/10, fd00:ec2::/32, 100.100.100.200, …);
- every address that is not globally routable (loopback, private, shared
  100.64.0.0/10, reserved, site-local fec0::/10, …) is refused unless listed
  in TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS (CIDRs);
- an IPv6 address that carries an IPv4 address (IPv4-compatible ::/96,
  mapped ::ffff:0:0/96, translated ::ffff:0:0:0/96, NAT64 64:ff9b::/96 and
  64:ff9b:1::/48, 6to4 2002::/16, Teredo 2001::/32) is refused unless that
  IPv4 address is allowed; Teredo and local-use NAT64 addresses must, besides,
  be listed themselves (see EMBEDDINGS).

The check runs on the *resolved* address: at save time (`check_url`, called
by the realm service and the console's realm form) and at fetch time inside
the upstream client's connection itself (tokens.upstream), which connects to
the very address `resolve_checked` returned, so a DNS answer that changes in
between (rebinding) cannot slip past it. TLS still verifies the hostname.
"""

import ipaddress
import socket
import threading
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed

ALWAYS_REFUSED = [
    ipaddress.ip_network(network)
    for network in (
        "169.254.0.0/16",  # link-local, cloud metadata (AWS, GCP, Azure, …)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::/32",  # AWS IMDS over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "0.0.0.0/8",
        "::/128",
        "224.0.0.0/4",  # multicast
        "ff00::/8",
    )
]


class RefusedDestination(OSError):
    """The upstream's address is not one tokenserver may connect to."""


@lru_cache(maxsize=1)
def _allowed_networks():
    return [
        ipaddress.ip_network(network.strip(), strict=False)
        for network in settings.TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS
        if network.strip()
    ]


def _reset(*, setting, **kwargs):
    if setting == "TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS":
        _allowed_networks.cache_clear()


setting_changed.connect(_reset)


def _low32(ip) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def _compatible(ip):
    # :: and ::1 are judged as themselves (unspecified, loopback), as before.
    return [] if int(ip) <= 1 else [_low32(ip)]


def _teredo(ip):
    server, client = ip.teredo  # client = last 32 bits XOR 0xffffffff
    return [server, client]


# IPv6 ranges that carry an IPv4 address: (range, name, where the IPv4 sits,
# whether the IPv4 alone decides where the packets go). When it does, the
# address is judged by its IPv4 address only (::ffff:127.0.0.1 is allowed
# where 127.0.0.0/8 is). When unsure, the IPv4 may refuse but not allow, and
# the IPv6 address must pass on its own too (both ranges count as not global):
# - Teredo: packets go through a relay to a NAT's mapping, not simply to the
#   embedded addresses;
# - local-use NAT64: the site's translator may use a prefix shorter than /96
#   (RFC 6052), putting the IPv4 address elsewhere than the last 32 bits.
EMBEDDINGS = [
    (ipaddress.ip_network("::ffff:0:0/96"), "IPv4-mapped", lambda ip: [_low32(ip)], True),
    (ipaddress.ip_network("::ffff:0:0:0/96"), "IPv4-translated", lambda ip: [_low32(ip)], True),
    (ipaddress.ip_network("::/96"), "IPv4-compatible", _compatible, True),
    (ipaddress.ip_network("64:ff9b::/96"), "NAT64", lambda ip: [_low32(ip)], True),
    (ipaddress.ip_network("64:ff9b:1::/48"), "local-use NAT64", lambda ip: [_low32(ip)], False),
    (ipaddress.ip_network("2002::/16"), "6to4", lambda ip: [ip.sixtofour], True),
    (ipaddress.ip_network("2001::/32"), "Teredo", _teredo, False),
]

# Not public although Python's ipaddress counts them global: the deprecated
# site-local range (RFC 3879) and the embeddings above that cannot allow.
NOT_GLOBAL = [ipaddress.ip_network("fec0::/10")]
NOT_GLOBAL += [network for network, _, _, decides in EMBEDDINGS if not decides]


def _embedded_ipv4(ip) -> tuple[str | None, list, bool]:
    """The IPv4 addresses an IPv6 address carries: (form, addresses, they alone decide)."""
    if isinstance(ip, ipaddress.IPv6Address):
        for network, form, extract, decides in EMBEDDINGS:
            if ip in network and (addresses := extract(ip)):
                return form, addresses, decides
    return None, [], False


def _within(ip, networks) -> bool:
    return any(ip.version == network.version and ip in network for network in networks)


def _is_public(ip) -> bool:
    return ip.is_global and not _within(ip, NOT_GLOBAL)


def address_refusal(address: str) -> str | None:
    """
    Why an IP address is refused, or None when it is allowed.

    In order: link-local and metadata addresses are refused, also when carried
    inside an IPv6 address, whatever the allow-list says; then an address in
    an allowed network passes; then an IPv6 address carrying an IPv4 address
    is refused unless that IPv4 address is allowed (public or in an allowed
    network); then a non-public address is refused.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    form, embedded, decides = _embedded_ipv4(ip)
    if _within(ip, ALWAYS_REFUSED):
        return f"{ip} is a link-local or cloud metadata address"
    for ipv4 in embedded:
        if _within(ipv4, ALWAYS_REFUSED):
            return f"{ip} ({form}) embeds {ipv4}, a link-local or cloud metadata address"
    if _within(ip, _allowed_networks()):
        return None
    for ipv4 in embedded:
        if not (_is_public(ipv4) or _within(ipv4, _allowed_networks())):
            return (
                f"{ip} ({form}) embeds {ipv4}, a loopback, private or otherwise non-public "
                "address (allow it with TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS in .env or the "
                "environment, then restart the server)"
            )
    if decides or _is_public(ip):
        return None
    return (
        f"{ip} is a loopback, private or otherwise non-public address "
        "(allow it with TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS in .env or the environment, "
        "then restart the server)"
    )


def _getaddrinfo(host: str, port: int, timeout: float | None):
    """socket.getaddrinfo, abandoned after `timeout` seconds (a resolver can hang)."""
    if timeout is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    answer = {}

    def lookup():
        try:
            answer["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            answer["error"] = error

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(max(0.0, timeout))
    if worker.is_alive():
        raise TimeoutError(f"resolving {host} took too long")
    if "error" in answer:
        raise answer["error"]
    return answer["infos"]


def resolve_checked(host: str, port: int, *, timeout: float | None = None) -> str:
    """
    Resolve `host` (within `timeout` seconds, if given) and return an address
    to connect to; every address it resolves to must be allowed.
    """
    try:
        infos = _getaddrinfo(host, port, timeout)
    except socket.gaierror as error:
        raise OSError(f"cannot resolve {host}: {error.strerror}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            raise RefusedDestination(f"upstream {host} refused: {reason}")
    return addresses[0]


def check_url(url: str, *, resolve: bool = True) -> None:
    """
    Raise RefusedDestination if `url` may not be fetched. A hostname that does
    not resolve now passes (it is checked again when fetched).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefusedDestination("only http and https upstreams are allowed")
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not resolve:
            return
        try:
            resolve_checked(host, parts.port or (443 if parts.scheme == "https" else 80))
        except RefusedDestination:
            raise
        except OSError:
            return
        return
    reason = address_refusal(host)
    if reason:
        raise RefusedDestination(f"upstream {host} refused: {reason}")


def find_refusal(error: BaseException, depth: int = 0) -> RefusedDestination | None:
    """The RefusedDestination inside a requests/urllib3 error chain, if any."""
    if isinstance(error, RefusedDestination):
        return error
    if depth > 8 or error is None:
        return None
    nested = [error.__cause__, error.__context__, getattr(error, "reason", None)]
    nested += [arg for arg in getattr(error, "args", ()) if isinstance(arg, BaseException)]
    for inner in nested:
        if isinstance(inner, BaseException):
            found = find_refusal(inner, depth + 1)
            if found:
                return found
    return None
