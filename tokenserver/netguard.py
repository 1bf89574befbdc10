"""
Where the upstream client may connect (server-side request forgery guard).

- only http and https;
- link-local and cloud metadata addresses are always refused
  (169.254.0.0/16, fe80::/10, fd00:ec2::/32, 100.100.100.200, …);
- every address that is not globally routable (loopback, private, shared
  100.64.0.0/10, reserved, …) is refused unless listed in
  TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS (CIDRs);
- IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo, NAT64) are
  judged by that address too.

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


NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip) -> list:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in NAT64:
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [address for address in embedded if address is not None]


def address_refusal(address: str) -> str | None:
    """Why an IP address is refused, or None when it is allowed."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    for candidate in (ip, *_embedded_ipv4(ip)):
        if any(
            candidate.version == network.version and candidate in network
            for network in ALWAYS_REFUSED
        ):
            return f"{ip} is a link-local or cloud metadata address"
    if any(ip.version == network.version and ip in network for network in _allowed_networks()):
        return None
    for candidate in (ip, *_embedded_ipv4(ip)):
        if not candidate.is_global:
            return (
                f"{ip} is a loopback, private or otherwise non-public address "
                "(allow it with TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS)"
            )
    return None


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
