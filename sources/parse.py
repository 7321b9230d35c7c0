"""Feed bytes -> normalised articles, with feedparser doing the parsing."""
from __future__ import annotations

import calendar
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import feedparser

from sources.normalize import canonical_url, content_hash, fold, guess_language, html_to_text

# A date further ahead than this is treated as wrong and clamped to the fetch time.
FUTURE_TOLERANCE = timedelta(minutes=15)


class FeedError(ValueError):
    """The bytes are not a feed we can read (with a one-line reason)."""


@dataclass
class Article:
    article_id: str
    source_id: str
    guid: str | None
    url: str | None
    canonical_url: str | None
    title: str
    summary: str
    lang: str
    published_at: str  # ISO 8601, UTC
    published_flag: str | None
    fetched_at: str  # ISO 8601, UTC
    title_folded: str
    text_folded: str
    content_hash: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)  # flat fields: no need for asdict's deep copy


def article_id(source_id: str, key: str) -> str:
    return hashlib.sha1(f"{source_id}\x1f{key}".encode("utf-8")).hexdigest()


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat()


def _published(entry, fetched_at: datetime) -> tuple[datetime, str | None]:
    raw = entry.get("published") or entry.get("updated") or entry.get("created")
    parsed = entry.get("published_parsed") or entry.get("updated_parsed") or entry.get("created_parsed")
    if parsed is None:
        return fetched_at, ("unparseable" if raw else "missing")
    try:
        dt = datetime.fromtimestamp(calendar.timegm(parsed), tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        return fetched_at, "unparseable"
    if dt > fetched_at + FUTURE_TOLERANCE:
        return fetched_at, "future"
    return dt, None


def make_article(
    source_id: str,
    lang: str | None,
    title: str,
    summary: str,
    url: str | None,
    guid: str | None,
    published_at: datetime,
    published_flag: str | None,
    fetched_at: datetime,
) -> Article:
    """The one place an Article is built (feeds, replay input and tests all come here)."""
    title = html_to_text(title)
    summary = html_to_text(summary)
    canon = canonical_url(url) or None
    key = guid or canon or f"{title}\x1f{published_at.isoformat()}"
    title_folded, summary_folded = fold(title), fold(summary)
    return Article(
        article_id=article_id(source_id, key),
        source_id=source_id,
        guid=guid,
        url=url,
        canonical_url=canon,
        title=title,
        summary=summary,
        lang=guess_language(f"{title} {summary}", lang),
        published_at=_iso(published_at),
        published_flag=published_flag,
        fetched_at=_iso(fetched_at),
        title_folded=title_folded,
        text_folded=f"{title_folded} {summary_folded}".strip(),  # == fold(title + " . " + summary)
        content_hash=content_hash(title, summary, (title_folded, summary_folded)),
    )


@dataclass
class ParsedFeed:
    articles: list[Article]
    title: str | None
    lang: str | None
    bozo: str | None  # feedparser's complaint about ill-formed input, if any
    version: str | None


def parse_feed(
    data: bytes,
    source_id: str,
    lang: str | None = None,
    fetched_at: datetime | None = None,
    content_type: str | None = None,
) -> ParsedFeed:
    """Parse feed bytes. Raises FeedError when the input is not a feed at all."""
    fetched_at = fetched_at or datetime.now(timezone.utc)
    headers = {"content-type": content_type} if content_type else {}
    try:
        d = feedparser.parse(data, response_headers=headers, sanitize_html=True, resolve_relative_uris=True)
    except Exception as exc:  # feedparser is lenient, but never let it crash a poll
        raise FeedError(f"feedparser failed: {type(exc).__name__}: {exc}") from None
    bozo = str(d.get("bozo_exception")) if d.get("bozo") else None
    if not d.get("version") and not d.entries:
        reason = bozo or "no RSS, Atom or RDF feed found"
        raise FeedError(f"not a feed: {reason}")
    feed_lang = lang or d.feed.get("language")
    articles = []
    for entry in d.entries:
        title = entry.get("title") or ""
        summary = entry.get("summary") or ""
        if not summary and entry.get("content"):
            summary = entry.content[0].get("value", "")
        link = entry.get("link")
        guid = entry.get("id") or None
        if not (title.strip() or summary.strip()):
            continue  # nothing to read or match
        published, flag = _published(entry, fetched_at)
        articles.append(
            make_article(source_id, entry.get("language") or feed_lang, title, summary, link, guid, published, flag, fetched_at)
        )
    return ParsedFeed(articles, d.feed.get("title"), feed_lang, bozo, d.get("version") or None)
