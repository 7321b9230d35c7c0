"""What a feed URL or a feed body may do to us: the rules that keep polling safe.

* Only ``http`` and ``https`` URLs are fetched, on the first request and after every redirect.
* A feed URL must resolve to public addresses only. Private, loopback, link-local,
  shared (CGNAT), reserved and multicast addresses are refused, so a feed (or a redirect)
  cannot make Marsad probe the network it runs in. ``MARSAD_ALLOW_PRIVATE_FEEDS`` opts in:
  ``1`` allows every address, or a comma-separated list of networks
  (``127.0.0.1/32,10.1.0.0/16``) allows just those.
  The check resolves the host itself; httpx resolves it again when it connects, so a DNS
  answer that changes within those milliseconds (rebinding) is not caught.
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
from dataclasses import dataclass
from urllib.parse import urlsplit

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
            ip = ip.ipv4_mapped
        if ip.is_global and not ip.is_multicast:
            return True
        return self.allow_all_private or any(ip in net for net in self.allowed if net.version == ip.version)


def check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeURL(f"refused {url[:200]!r}: only http and https URLs are fetched (scheme {scheme or 'missing'!r})")


async def check_address(url: str, policy: AddressPolicy) -> None:
    """Resolve the URL's host and refuse it unless every address is allowed."""
    host = urlsplit(url).hostname
    if not host:
        raise UnsafeURL(f"refused {url[:200]!r}: no host")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UnsafeURL(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for ip in addresses:
        if not policy.permits(ip):
            raise UnsafeURL(
                f"refused {host!r}: it resolves to the non-public address {ip} (set {ALLOW_PRIVATE_ENV} to allow it)"
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
