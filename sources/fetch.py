"""Fetching feeds over HTTP with httpx: async, bounded, conditional, size-capped."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx

USER_AGENT = "Marsad/0.1 (+https://github.com/marsad-osint/marsad; OSINT feed monitor)"
ACCEPT = "application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
MAX_BYTES = 5 * 1024 * 1024  # a feed larger than this (after decompression) is refused


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


class TooLarge(Exception):
    pass


def _now() -> datetime:
    return datetime.now(timezone.utc)


def default_timeout() -> httpx.Timeout:
    return httpx.Timeout(connect=10.0, read=20.0, write=10.0, pool=30.0)


async def fetch_one(
    client: httpx.AsyncClient, req: FetchRequest, max_bytes: int = MAX_BYTES, total_timeout: float = 60.0
) -> FetchResult:
    """Fetch one feed. Never raises: every failure becomes a FetchResult with status 'error'."""
    started = _now()
    headers = {}
    if req.etag:
        headers["If-None-Match"] = req.etag
    if req.last_modified:
        headers["If-Modified-Since"] = req.last_modified

    async def _go() -> FetchResult:
        async with client.stream("GET", req.url, headers=headers) as resp:
            info = dict(
                source_id=req.source_id,
                url=req.url,
                started_at=started,
                http_status=resp.status_code,
                headers={k.lower(): v for k, v in resp.headers.items()},
                final_url=str(resp.url),
            )
            if resp.status_code == 304:
                return FetchResult(
                    status="not_modified", finished_at=_now(), etag=req.etag, last_modified=req.last_modified, **info
                )
            if resp.status_code >= 400:
                return FetchResult(status="error", finished_at=_now(), error=f"HTTP {resp.status_code}", **info)
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise TooLarge(f"Content-Length {declared} exceeds the {max_bytes}-byte cap")
            chunks = []
            size = 0
            # aiter_bytes yields *decoded* bytes: the cap also stops gzip/deflate bombs.
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"body exceeds the {max_bytes}-byte cap")
                chunks.append(chunk)
            return FetchResult(
                status="ok",
                finished_at=_now(),
                body=b"".join(chunks),
                etag=resp.headers.get("etag"),
                last_modified=resp.headers.get("last-modified"),
                **info,
            )

    try:
        return await asyncio.wait_for(_go(), timeout=total_timeout)
    except TooLarge as exc:
        err = str(exc)
    except asyncio.TimeoutError:
        err = f"timed out after {total_timeout:.0f}s in total"
    except httpx.TimeoutException as exc:
        err = f"timeout: {type(exc).__name__}"
    except httpx.TooManyRedirects:
        err = "too many redirects"
    except httpx.HTTPError as exc:
        err = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a broken source must never break the poll
        err = f"{type(exc).__name__}: {exc}"
    return FetchResult(req.source_id, req.url, "error", started, _now(), error=err)


def make_client(max_connections: int = 16) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=default_timeout(),
        follow_redirects=True,
        max_redirects=5,
        headers={"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"},
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        trust_env=False,
    )


async def fetch_many(reqs: list[FetchRequest], concurrency: int = 8, per_host: int = 2, **kw) -> list[FetchResult]:
    """Fetch many feeds at once: at most ``concurrency`` in flight, ``per_host`` per host.

    A slow or failing source only occupies its own slot; results come back in input order.
    """
    total = asyncio.Semaphore(concurrency)
    hosts: dict[str, asyncio.Semaphore] = {}

    async with make_client(max_connections=concurrency) as client:

        async def one(req: FetchRequest) -> FetchResult:
            host = (urlsplit(req.url).hostname or "").lower()
            sem = hosts.setdefault(host, asyncio.Semaphore(per_host))
            async with total, sem:
                return await fetch_one(client, req, **kw)

        return list(await asyncio.gather(*(one(r) for r in reqs)))


def fetch_sync(reqs: list[FetchRequest], **kw) -> list[FetchResult]:
    return asyncio.run(fetch_many(reqs, **kw))
