"""Fetching feeds over HTTP with httpx: async, bounded, conditional, size-capped."""
from __future__ import annotations

import asyncio
import re
import ssl
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpx

from sources.safety import AddressPolicy, PinnedTransport, UnsafeURL, check_address, check_scheme

USER_AGENT = "Marsad/0.1 (+https://github.com/marsad-osint/marsad; OSINT feed monitor)"
ACCEPT = "application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
MAX_BYTES = 5 * 1024 * 1024  # a feed larger than this (on the wire or decompressed) is refused
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_WAIT_HINT_S = 6 * 3600  # the longest Retry-After / max-age we honour


@dataclass
class FetchRequest:
    source_id: str
    url: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class FetchResult:
    source_id: str
    url: str
    status: str  # ok | not_modified | error
    started_at: datetime
    finished_at: datetime
    http_status: int | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    final_url: str | None = None
    error: str | None = None

    @property
    def elapsed_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class Refused(Exception):
    """One of our rules stopped the fetch (redirects, encoding, size)."""


class TooLarge(Refused):
    pass


def _now() -> datetime:
    return datetime.now(timezone.utc)


def default_timeout() -> httpx.Timeout:
    return httpx.Timeout(connect=10.0, read=20.0, write=10.0, pool=30.0)


async def fetch_one(
    client: httpx.AsyncClient,
    req: FetchRequest,
    max_bytes: int = MAX_BYTES,
    total_timeout: float = 60.0,
    policy: AddressPolicy | None = None,
    max_redirects: int = MAX_REDIRECTS,
) -> FetchResult:
    """Fetch one feed. Never raises: every failure becomes a FetchResult with status 'error'.

    Redirects are followed here, hop by hop, so that every hop passes the same checks
    (scheme, resolved addresses, loop, limit) as the first request. The addresses are
    checked by the client's transport (``make_client``) when it connects, on the very
    addresses it connects to.
    """
    started = _now()
    headers = {}
    if req.etag:
        headers["If-None-Match"] = req.etag
    if req.last_modified:
        headers["If-Modified-Since"] = req.last_modified
    try:
        policy = policy or AddressPolicy.from_env()
    except ValueError as exc:
        return FetchResult(req.source_id, req.url, "error", started, _now(), error=str(exc))

    async def _go() -> FetchResult:
        url, chain = req.url, [req.url]
        while True:
            check_scheme(url)
            if not isinstance(getattr(client, "_transport", None), PinnedTransport):
                await check_address(url, policy)  # a client of another kind: at least check before connecting
            async with client.stream("GET", url, headers=headers) as resp:
                location = resp.headers.get("location")
                if resp.status_code in REDIRECT_STATUSES and location:
                    url = urljoin(url, location.strip())
                    if url in chain:
                        raise Refused(f"redirect loop: {' -> '.join(chain + [url])}")
                    chain.append(url)
                    if len(chain) > max_redirects + 1:
                        raise Refused(f"too many redirects (more than {max_redirects})")
                    continue
                return await _response(resp, req, started, max_bytes)

    try:
        return await asyncio.wait_for(_go(), timeout=total_timeout)
    except (Refused, UnsafeURL) as exc:
        err = str(exc)
    except asyncio.TimeoutError:
        err = f"timed out after {total_timeout:g}s in total"
    except httpx.TimeoutException as exc:
        err = f"timeout: {type(exc).__name__}"
    except httpx.HTTPError as exc:
        err = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a broken source must never break the poll
        err = f"{type(exc).__name__}: {exc}"
    return FetchResult(req.source_id, req.url, "error", started, _now(), error=err)


async def _response(resp: httpx.Response, req: FetchRequest, started: datetime, max_bytes: int) -> FetchResult:
    info = dict(
        source_id=req.source_id,
        url=req.url,
        started_at=started,
        http_status=resp.status_code,
        headers={k.lower(): v for k, v in resp.headers.items()},
        final_url=str(resp.url),
    )
    if resp.status_code == 304:
        # A 304 has no body (RFC 9110), but until h11 has seen the message's end the pool
        # closes the connection instead of keeping it: an all-304 poll connected once per feed.
        async for _ in resp.aiter_raw():
            pass
        return FetchResult(status="not_modified", finished_at=_now(), etag=req.etag, last_modified=req.last_modified, **info)
    if resp.status_code >= 300:
        return FetchResult(status="error", finished_at=_now(), error=f"HTTP {resp.status_code}", **info)
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"Content-Length {declared} exceeds the {max_bytes}-byte cap")
    decoder = BoundedDecoder(resp.headers.get("content-encoding"), max_bytes)
    chunks = []
    raw = 0
    # Raw bytes off the wire, capped; then decoded by us, capped again (gzip/deflate bombs).
    async for chunk in resp.aiter_raw():
        raw += len(chunk)
        if raw > max_bytes:
            raise TooLarge(f"body exceeds the {max_bytes}-byte cap while streaming")
        chunks.append(decoder.decode(chunk))
    chunks.append(decoder.flush())
    return FetchResult(
        status="ok",
        finished_at=_now(),
        body=b"".join(chunks),
        etag=resp.headers.get("etag"),
        last_modified=resp.headers.get("last-modified"),
        **info,
    )


class BoundedDecoder:
    """Content-Encoding (identity, gzip, deflate) decoding that never holds more than ``cap``
    decoded bytes: zlib is asked for at most the room left, so a bomb stops at the cap."""

    def __init__(self, encoding: str | None, cap: int):
        self.encoding = (encoding or "identity").strip().lower()
        if self.encoding not in ("identity", "gzip", "x-gzip", "deflate"):
            raise Refused(f"unsupported Content-Encoding {encoding!r}")
        self.cap = cap
        self.size = 0
        self._z = None

    def _new(self, first: bytes):
        if self.encoding == "deflate" and not (len(first) >= 2 and first[0] & 0x0F == 8 and int.from_bytes(first[:2], "big") % 31 == 0):
            return zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send it
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header

    def _count(self, piece: bytes) -> bytes:
        self.size += len(piece)
        if self.size > self.cap:
            raise TooLarge(f"body exceeds the {self.cap}-byte cap after {self.encoding} decoding")
        return piece

    def decode(self, data: bytes) -> bytes:
        if self.encoding == "identity":
            return self._count(data)
        out = []
        while data:
            if self._z is None:
                self._z = self._new(data)
            try:
                out.append(self._count(self._z.decompress(data, self.cap - self.size + 1)))
            except zlib.error as exc:
                raise Refused(f"corrupt {self.encoding} body: {exc}") from None
            data = self._z.unconsumed_tail
            if not data and self._z.eof and self._z.unused_data:
                data, self._z = self._z.unused_data, None  # a further gzip member
        return b"".join(out)

    def flush(self) -> bytes:
        return self._count(self._z.flush()) if self._z is not None else b""


def wait_hint(res: FetchResult) -> int | None:
    """Seconds the server asked us to wait before the next poll, if any: Retry-After on 429
    and 503, Cache-Control max-age on a fresh response; capped at ``MAX_WAIT_HINT_S``."""
    h = res.headers
    seconds: float | None = None
    if res.http_status in (429, 503) and h.get("retry-after"):
        value = h["retry-after"].strip()
        if value.isdigit():
            seconds = int(value)
        else:
            try:
                seconds = (parsedate_to_datetime(value) - res.finished_at).total_seconds()
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
    elif res.status in ("ok", "not_modified") and h.get("cache-control"):
        cc = h["cache-control"].lower()
        m = re.search(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", cc)
        if m and "no-cache" not in cc and "no-store" not in cc:
            seconds = int(m.group(1))
    if seconds is None or seconds <= 0:
        return None
    return int(min(seconds, MAX_WAIT_HINT_S))


def make_client(max_connections: int = 16, timeout: httpx.Timeout | None = None, policy: AddressPolicy | None = None,
                verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """The feed client: every connection resolves its host once, checks the addresses against
    ``policy`` (default: ``MARSAD_ALLOW_PRIVATE_FEEDS``) and connects to a checked one."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(
        transport=PinnedTransport(policy, limits=limits, verify=verify),
        timeout=timeout or default_timeout(),
        follow_redirects=False,  # fetch_one follows them, checking every hop
        headers={"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"},
        trust_env=False,
    )


async def fetch_many(
    reqs: list[FetchRequest], concurrency: int = 8, per_host: int = 2, timeout: httpx.Timeout | None = None, **kw
) -> list[FetchResult]:
    """Fetch many feeds at once: at most ``concurrency`` in flight, ``per_host`` per host.

    A slow or failing source only occupies its own slot; results come back in input order.
    """
    total = asyncio.Semaphore(concurrency)
    hosts: dict[str, asyncio.Semaphore] = {}

    async with make_client(max_connections=concurrency, timeout=timeout, policy=kw.get("policy")) as client:

        async def one(req: FetchRequest) -> FetchResult:
            host = (urlsplit(req.url).hostname or "").lower()
            sem = hosts.setdefault(host, asyncio.Semaphore(per_host))
            async with total, sem:
                return await fetch_one(client, req, **kw)

        return list(await asyncio.gather(*(one(r) for r in reqs)))


def fetch_sync(reqs: list[FetchRequest], **kw) -> list[FetchResult]:
    return asyncio.run(fetch_many(reqs, **kw))
