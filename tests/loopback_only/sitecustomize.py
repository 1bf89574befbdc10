"""
Test-only: a process started with this directory on PYTHONPATH resolves no name
but localhost and connects to loopback addresses only. The schema-driven fuzzing
(tokenserver/tests/test_schemathesis.py) makes the production server save realms
and fetch tokens at whatever URLs it invents: the upstream guard refuses private
addresses, but public ones are the point of it, and a name would be resolved
through the network's DNS server. Here, nothing leaves 127.0.0.1.
"""

import ipaddress
import socket

_getaddrinfo = socket.getaddrinfo
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _loopback(host) -> bool:
    name = host.decode() if isinstance(host, bytes) else host
    if name is None or name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def getaddrinfo(host, *args, **kwargs):
    if not _loopback(host):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (loopback only)")
    return _getaddrinfo(host, *args, **kwargs)


def _refuse(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        raise ConnectionRefusedError(f"{address[0]} is not loopback (loopback only)")


def connect(self, address):
    _refuse(self, address)
    return _connect(self, address)


def connect_ex(self, address):
    _refuse(self, address)
    return _connect_ex(self, address)


socket.getaddrinfo = getaddrinfo
socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
