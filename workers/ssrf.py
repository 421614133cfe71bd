"""The SSRF guard: scanning a URL must never make a worker reach into its own network.

A URL given to a scanner can come from anyone, and a worker usually sits inside a network with
metadata services (169.254.169.254), databases and admin panels. So, unless
`Settings.allow_private_urls` is set, a URL whose host resolves to a private, loopback,
link-local, shared, reserved or multicast address (or an IPv6 form embedding one: NAT64, 6to4,
Teredo, IPv4-mapped or -compatible) is refused, on every redirect hop
(`check_host`, called by `workers.fetch`).

Checking the name alone leaves a gap: a hostile DNS server can answer the check with a public
address and the connection a moment later with a private one (DNS rebinding). Sessions from
`make_http_session` close it by checking the address each new connection actually reached,
before anything is sent. They ignore proxy settings from the environment (`trust_env=False`),
since through a proxy the connected address would be the proxy's.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from scanner.errors import PermanentError, TransientError
from scanner.settings import Settings
from workers.cutoff import WatchedHTTPConnection, WatchedHTTPSConnection

USER_AGENT = "deepscan/0.1 (+media scanner)"
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix: the IPv4 address in the last 32 bits
NAT64_LOCAL_PREFIX = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215 local-use translation: never public
IPV4_TRANSLATED_PREFIX = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 SIIT ::ffff:0:a.b.c.d
# Never a media server, yet "global" in the tables of the Python versions we run on (they lag the IANA
# registries): judged here, not left to `is_global`.
NOT_PUBLIC_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.IPv4Network("192.0.0.0/24"),  # IETF protocol assignments (192.0.0.8: the dummy address)
    ipaddress.IPv6Network("fec0::/10"),  # site-local: deprecated, still routed inside some networks
    ipaddress.IPv6Network("3fff::/20"),  # documentation (RFC 9637)
    ipaddress.IPv6Network("5f00::/16"),  # SRv6 segment identifiers (RFC 9602)
)


def check_host(host: str, port: int) -> None:
    """Refuse `host` if any address it resolves to is not public (PermanentError; TransientError if DNS is down)."""
    for address in _resolve(host, port):
        refuse_if_private(address)


def _resolve(host: str, port: int) -> list[str]:
    """The IP addresses `host` resolves to (a seam tests replace to simulate public hosts)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise TransientError(f"DNS lookup of {host} failed") from None
        raise PermanentError(f"unknown host {host}") from None
    return [str(info[4][0]) for info in infos]


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses; False for private, loopback, link-local, reserved...

    An IPv6 address that carries an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, IPv4-translated
    ::ffff:0:a.b.c.d, IPv4-compatible
    ::a.b.c.d, NAT64 64:ff9b::a.b.c.d, 6to4 2002:aabb:ccdd::, Teredo's client) can reach that
    IPv4 host through a translator or tunnel, so it is public only if the IPv4 address is too.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if any(ip in network for network in NOT_PUBLIC_NETWORKS if network.version == ip.version):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL_PREFIX:
            return False
        embedded = embedded_ipv4(ip)
        if embedded is not None and not is_public_address(str(embedded)):
            return False
        if ip.ipv4_mapped is not None:  # Python judges ::ffff:8.8.8.8 itself non-global; its IPv4 decides
            return True
    return ip.is_global and not ip.is_multicast


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that embed one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in IPV4_TRANSLATED_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # (server, client): the client is where packets end up
    if ip in NAT64_PREFIX or int(ip) >> 32 == 0:  # NAT64, or IPv4-compatible ::a.b.c.d (and ::, ::1)
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refuse_if_private(address: str) -> None:
    """PermanentError naming `address` unless it is public."""
    if not is_public_address(address):
        raise PermanentError(
            f"refused: host resolves to private address {address} (set DEEPSCAN_ALLOW_PRIVATE_URLS=1 to allow)"
        )


def _guard_socket(sock: socket.socket) -> socket.socket:
    """Check the address a new connection actually reached (defeats DNS rebinding after `_resolve`)."""
    try:
        refuse_if_private(str(sock.getpeername()[0]))
    except PermanentError:
        sock.close()
        raise
    return sock


class _GuardedHTTPConnection(WatchedHTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _guard_socket(super()._new_conn())


class _GuardedHTTPSConnection(WatchedHTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _guard_socket(super()._new_conn())


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections refuse non-public peers (PermanentError passes through requests)
    and are cut off at their item's deadline (workers/cutoff.py)."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """Connections to any address (DEEPSCAN_ALLOW_PRIVATE_URLS), still cut off at their item's deadline."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def make_http_session(settings: Settings) -> requests.Session:
    """A session for `fetch`: connection pooling, the SSRF guard on every connection it opens, and
    connections a fetch's deadline can cut off."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    adapter: HTTPAdapter = _WatchedAdapter(pool_maxsize=max(10, settings.fetch_threads))
    if not settings.allow_private_urls:
        session.trust_env = False  # no proxies from the environment: the guard must see the real peer
        adapter = _GuardedAdapter(pool_maxsize=max(10, settings.fetch_threads))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
