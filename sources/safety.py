"""What a feed URL or a feed body may do to us: the rules that keep polling safe.

* Only ``http`` and ``https`` URLs are fetched, on the first request and after every redirect.
* A feed URL must resolve to public addresses only. Private, loopback, link-local,
  shared (CGNAT), reserved and multicast addresses are refused, so a feed (or a redirect)
  cannot make Marsad probe the network it runs in. ``MARSAD_ALLOW_PRIVATE_FEEDS`` opts in:
  ``1`` allows every address, or a comma-separated list of networks
  (``127.0.0.1/32,10.1.0.0/16``) allows just those.
  IPv6 addresses that embed an IPv4 address (NAT64 ``64:ff9b::/96``, IPv4-compatible
  ``::a.b.c.d``, 6to4 ``2002::/16``, Teredo, IPv4-mapped) are judged by the address inside
  too. The connection itself makes the check (``PinnedTransport``): each host is resolved
  once, every address checked, and the socket connects to a checked address, so a DNS
  answer that changes between check and connect (rebinding) cannot redirect it.
* XML entity declarations are refused before any parser sees the body: feedparser does
  not expand them today (it strips the DOCTYPE), and this keeps billion-laughs and
  external-entity (XXE) documents out even if that changes.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx

ALLOW_PRIVATE_ENV = "MARSAD_ALLOW_PRIVATE_FEEDS"
SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeURL(ValueError):
    """A URL we refuse to fetch (with the reason)."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which non-public addresses a feed may resolve to (by default: none)."""

    allow_all_private: bool = False
    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_env(cls, value: str | None = None) -> "AddressPolicy":
        raw = (os.environ.get(ALLOW_PRIVATE_ENV, "") if value is None else value).strip()
        if raw.lower() in ("", "0", "false", "no", "off"):
            return cls()
        if raw.lower() in ("1", "true", "yes", "on", "all"):
            return cls(allow_all_private=True)
        nets = []
        for part in raw.split(","):
            try:
                nets.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"{ALLOW_PRIVATE_ENV}={raw!r}: {part.strip()!r} is not 1 or an IP network like 127.0.0.1/32"
                ) from None
        return cls(allowed=tuple(nets))

    def permits(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped  # the socket connects to the IPv4 address itself
        if _public(ip) and all(_public(v4) for v4 in embedded_ipv4(ip)):
            return True
        return self.allow_all_private or any(ip in net for net in self.allowed if net.version == ip.version)


# IPv6 forms that carry an IPv4 address: a translator or relay forwards to that address,
# so they are as public as the address inside (64:ff9b::10.0.0.1 reaches 10.0.0.1).
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052, well-known prefix
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215, local-use: a network's own translator
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address embeds (NAT64, IPv4-compatible, 6to4, Teredo)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    out = []
    if ip.ipv4_mapped:
        out.append(ip.ipv4_mapped)
    if ip in NAT64 or ip in IPV4_COMPATIBLE:
        out.append(low32)
    if ip.sixtofour:
        out.append(ip.sixtofour)
    if ip.teredo:
        out.extend(ip.teredo)  # (server, client): the client is the host behind the tunnel
    return out


def _public(ip: IPAddress) -> bool:
    return ip.is_global and not ip.is_multicast and ip not in NAT64_LOCAL


def check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeURL(f"refused {url[:200]!r}: only http and https URLs are fetched (scheme {scheme or 'missing'!r})")


async def check_address(url: str, policy: AddressPolicy) -> None:
    """Resolve the URL's host and refuse it unless every address is allowed."""
    host = urlsplit(url).hostname
    if not host:
        raise UnsafeURL(f"refused {url[:200]!r}: no host")
    await resolve_checked(host, policy)


async def resolve_checked(host: str, policy: AddressPolicy, port: int | None = None) -> list[IPAddress]:
    """The addresses ``host`` resolves to, once; UnsafeURL unless every one of them is allowed."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UnsafeURL(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    for ip in addresses:
        if not policy.permits(ip):
            raise UnsafeURL(
                f"refused {host!r}: it resolves to the non-public address {ip} (set {ALLOW_PRIVATE_ENV} to allow it)"
            )
    return addresses


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, but a host is resolved once, every address is checked
    against the policy, and the connection goes to a checked address. A DNS answer that
    changes between the check and the connection (rebinding) cannot redirect it. TLS and
    the Host header still use the host name: httpcore takes them from the URL, not from
    the address connected to."""

    def __init__(self, policy: AddressPolicy | None = None, inner: httpcore.AsyncNetworkBackend | None = None):
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options=None) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(host, self.policy or AddressPolicy.from_env(), port)
        for i, ip in enumerate(addresses):
            try:
                return await self.inner.connect_tcp(str(ip), port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                if i == len(addresses) - 1:
                    raise
        raise UnsafeURL(f"cannot resolve {host!r}: no address")

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise UnsafeURL("refused: feeds are fetched over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over ``PinnedBackend``: every connection is checked at connect time."""

    def __init__(self, policy: AddressPolicy | None = None, limits: httpx.Limits = httpx.Limits(),
                 verify: ssl.SSLContext | bool = True):
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(  # httpx builds the same pool, without a way to pass a backend
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(policy),
        )


# A DOCTYPE whose internal subset declares an entity, found by a linear scan: a regex
# such as <!DOCTYPE[^\[>]*\[.*?<!ENTITY retries from every "<!DOCTYPE" to the end of the
# body, and a body of repeated "<!DOCTYPE a[" (5 MB is 10 KB gzipped) costs hours of CPU.
# The probe drops NUL bytes so that UTF-16 and UTF-32 documents are caught too.
_DOCTYPE = re.compile(rb"<!DOCTYPE\b", re.IGNORECASE)
_SUBSET_OR_END = re.compile(rb"[\[>]")
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)


def declares_entities(data: bytes) -> bool:
    """Whether a DOCTYPE opens an internal subset (``<!DOCTYPE x [``) with ``<!ENTITY`` after it.

    Each byte is looked at a bounded number of times: a DOCTYPE that closes (``>``) before
    any ``[`` ends at that ``>``, and so does every DOCTYPE that starts before it, so the
    scan resumes after it; the first subset found decides."""
    pos = 0
    while (doctype := _DOCTYPE.search(data, pos)) is not None:
        delimiter = _SUBSET_OR_END.search(data, doctype.end())
        if delimiter is None:
            return False  # no "[" after this DOCTYPE, so none after any later one either
        if delimiter.group() == b"[":
            return _ENTITY.search(data, delimiter.end()) is not None
        pos = delimiter.end()
    return False


def refuse_entity_declarations(data: bytes) -> None:
    """Raise ValueError when the document declares XML entities (never expanded, never resolved)."""
    probe = data.replace(b"\x00", b"") if b"\x00" in data[:4096] else data
    if declares_entities(probe):
        raise ValueError("the DOCTYPE declares XML entities; refused (entity expansion and external entities are never processed)")
