"""Feed bytes -> normalised articles: lxml for the shapes proven to read exactly as feedparser
reads them (sources.fastparse), feedparser for every other feed."""
from __future__ import annotations

import calendar
import codecs
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from urllib.parse import urljoin

import feedparser
from bs4 import BeautifulSoup
from charset_normalizer import from_bytes

from sources.fastparse import parse_fast
from sources.normalize import canonical_url, content_hash, fold, guess_language, html_to_text
from sources.safety import refuse_entity_declarations

# A date further ahead than this is treated as wrong and clamped to the fetch time.
FUTURE_TOLERANCE = timedelta(minutes=15)


class FeedError(ValueError):
    """The bytes are not a feed we can read (with a one-line reason).

    ``feed_links`` lists the feeds an HTML page advertises, when the bytes were such a page.
    """

    def __init__(self, message: str, feed_links: list[str] | None = None):
        super().__init__(message)
        self.feed_links = feed_links or []


FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/rdf+xml", "application/feed+json")


def discover_feed_links(data: bytes, base_url: str | None = None) -> list[str]:
    """Feeds an HTML page advertises with <link rel="alternate" type="application/rss+xml" href=...>."""
    soup = BeautifulSoup(data, "html.parser")
    links = []
    for tag in soup.find_all("link", href=True):
        rel = [r.lower() for r in (tag.get("rel") or [])]
        if "alternate" in rel and (tag.get("type") or "").split(";")[0].strip().lower() in FEED_TYPES:
            href = urljoin(base_url, tag["href"].strip()) if base_url else tag["href"].strip()
            if href not in links:
                links.append(href)
    return links


def _looks_like_html(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head


# feedparser falls back to these when the declared charset does not decode the bytes.
_FALLBACK_ENCODINGS = ("windows-1252", "iso-8859-2")


def _redetect_charset(data: bytes, d) -> str | None:
    """A better charset when feedparser had to fall back (e.g. cp1256 or ISO-8859-6 Arabic
    served with a wrong or missing charset), detected by charset_normalizer."""
    if not d.get("bozo") or type(d.get("bozo_exception")).__name__ not in ("CharacterEncodingOverride", "CharacterEncodingUnknown"):
        return None
    if (d.get("encoding") or "").lower() not in _FALLBACK_ENCODINGS:
        return None
    best = from_bytes(data).best()
    if best is None or best.encoding.replace("_", "-").lower() in ("cp1252", "windows-1252", "iso8859-2", "iso-8859-2"):
        return None
    return best.encoding


# A declared charset that fails on at most this share of the text (invalid sequences per
# character it decodes beyond ASCII) is right: the bad bytes are damage, replaced with U+FFFD.
# Beyond it the declaration is wrong (a cp1256 feed labelled UTF-8) and the charset is detected.
MAX_INVALID_SHARE = 0.02
_XML_ENCODING = re.compile(rb"""^(\xef\xbb\xbf)?(\s*<\?xml[^>]*?\bencoding\s*=\s*)(["'])([A-Za-z0-9._:-]+)(\3)""")
_ARABIC_LETTERS = re.compile(r"[\u0621-\u064A\u0671-\u06D3]")


def _declared_charset(data: bytes, content_type: str | None) -> str:
    """The charset the feed declares: the HTTP charset, else the XML declaration, else UTF-8
    (XML's default; a BOM says UTF-8 too)."""
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip("\"'"):
            return value.strip().strip("\"'")
    m = _XML_ENCODING.match(data[:512])
    return m.group(4).decode("ascii") if m else "utf-8"


def _invalid_sequences(data: bytes, text: str, encoding: str) -> int:
    """U+FFFD in ``text`` (``data`` decoded with errors="replace") that stand for bad bytes."""
    try:
        already = data.count(b"\xef\xbf\xbd") if codecs.lookup(encoding).name == "utf-8" else 0
    except LookupError:
        already = 0
    return text.count("\ufffd") - already


def _decoded_as_declared(data: bytes, declared: str, content_type: str | None) -> tuple[bytes, str, str]:
    """The feed decoded with ``declared``, bad bytes replaced by U+FFFD, re-encoded as UTF-8 (with
    its XML declaration saying so), the content type to parse it with, and a note saying so."""
    text = data.decode(declared, errors="replace")
    invalid = _invalid_sequences(data, text, declared)
    fixed = _XML_ENCODING.sub(lambda m: (m.group(1) or b"") + m.group(2) + m.group(3) + b"utf-8" + m.group(5), text.encode("utf-8"), count=1)
    media = (content_type or "application/xml").split(";")[0].strip() or "application/xml"
    return fixed, f"{media}; charset=utf-8", f"charset: {invalid} invalid byte sequence(s) in the declared {declared} replaced with U+FFFD"


def _replace_invalid(data: bytes, content_type: str | None) -> tuple[bytes, str, str] | None:
    """When the declared charset decodes all but a few bytes (one bad byte in an Arabic UTF-8
    feed): ``_decoded_as_declared``. None when the declaration decodes cleanly, is unknown, or
    fails widely (then it is wrong, and the charset is detected instead)."""
    declared = _declared_charset(data, content_type)
    try:
        data.decode(declared)
        return None
    except LookupError:
        return None
    except UnicodeDecodeError:
        pass
    text = data.decode(declared, errors="replace")
    invalid = _invalid_sequences(data, text, declared)
    decoded = sum(1 for ch in text if ord(ch) > 127 and ch != "\ufffd")
    if invalid <= 0 or invalid > MAX_INVALID_SHARE * decoded:
        return None
    return _decoded_as_declared(data, declared, content_type)


def _arabic_letters(data: bytes, encoding: str) -> int:
    try:
        return len(_ARABIC_LETTERS.findall(data.decode(encoding, errors="replace")))
    except LookupError:
        return 0


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


@lru_cache(maxsize=4096)  # a feed's entries share the fetch time, and dates repeat poll after poll
def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat()  # equal instants give equal strings: a safe cache key


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
    bozo: str | None  # feedparser's complaint about ill-formed input (or a charset fix), if any
    version: str | None
    duplicates: int = 0  # entries dropped because their GUID/URL repeated an earlier entry


def parse_feed(
    data: bytes,
    source_id: str,
    lang: str | None = None,
    fetched_at: datetime | None = None,
    content_type: str | None = None,
    base_url: str | None = None,
    *,
    fast: bool = True,
) -> ParsedFeed:
    """Parse feed bytes. Raises FeedError when the input is not a feed at all.

    ``fast=False`` parses with feedparser alone: the reference the fast path is tested against."""
    fetched_at = fetched_at or datetime.now(timezone.utc)
    try:
        refuse_entity_declarations(data)
    except ValueError as exc:
        raise FeedError(f"not a feed we read: {exc}") from None
    quick = parse_fast(data, content_type) if fast else None
    if quick is not None:
        # Well-formed UTF-8 RSS 2.0 of a shape proven to read as feedparser reads it: no
        # charset to repair, nothing for feedparser to add (tests/test_fastparse.py).
        return _articles(quick, source_id, lang, fetched_at, None)
    charset_note = None
    repaired = _replace_invalid(data, content_type)
    if repaired:
        # The declared charset is right and a few bytes are damaged: decode as declared with
        # those bytes replaced. Re-detecting the whole feed turned valid Arabic into Latin mojibake.
        data, content_type, charset_note = repaired
    d = _feedparser(data, content_type)
    detected = None if repaired else _redetect_charset(data, d)
    if not repaired and d.get("bozo") and type(d.get("bozo_exception")).__name__ == "CharacterEncodingOverride":
        # Never let a fallback or detected charset read fewer Arabic letters than the declared one
        # does with its bad bytes replaced (Arabic UTF-8 with wide damage is still Arabic).
        declared = _declared_charset(data, content_type)
        if _arabic_letters(data, declared) > _arabic_letters(data, detected or d.get("encoding") or "utf-8"):
            data, content_type, charset_note = _decoded_as_declared(data, declared, content_type)
            detected = None
            d = _feedparser(data, content_type)
    if detected:
        media = (content_type or "application/xml").split(";")[0].strip()
        if not media.endswith("xml"):
            media = "application/xml"
        charset_note = f"charset: the declared or default charset did not decode; detected {detected}"
        d = _feedparser(data, f"{media}; charset={detected}")
    bozo = str(d.get("bozo_exception")) if d.get("bozo") else None
    if charset_note:
        bozo = charset_note
    if not d.get("version") and not d.entries:
        if _looks_like_html(data):
            links = discover_feed_links(data, base_url)
            hint = f"; it advertises a feed at {links[0]}" if links else "; it advertises no feed"
            raise FeedError(f"not a feed: an HTML page{hint}", links)
        reason = bozo or "no RSS, Atom or RDF feed found"
        raise FeedError(f"not a feed: {reason}")
    return _articles(d, source_id, lang, fetched_at, bozo)


def _articles(d, source_id: str, lang: str | None, fetched_at: datetime, bozo: str | None) -> ParsedFeed:
    """Articles from a parse result: feedparser's, or the fast path's copy of its fields."""
    feed_lang = lang or d.feed.get("language")
    articles = []
    seen: set[str] = set()
    duplicates = 0
    for entry in d.entries:
        title = entry.get("title") or ""
        summary = entry.get("summary") or ""
        if not summary and entry.get("content"):
            summary = entry["content"][0].get("value", "")
        link = entry.get("link")
        guid = entry.get("id") or None
        if not (title.strip() or summary.strip()):
            continue  # nothing to read or match
        published, flag = _published(entry, fetched_at)
        article = make_article(source_id, entry.get("language") or feed_lang, title, summary, link, guid, published, flag, fetched_at)
        if not (article.title or article.summary):
            continue  # only markup: nothing left to read or match once HTML is stripped
        if article.article_id in seen:
            duplicates += 1  # the same GUID (or URL) twice in one feed: the first one counts
            continue
        seen.add(article.article_id)
        articles.append(article)
    return ParsedFeed(articles, d.feed.get("title"), feed_lang, bozo, d.get("version") or None, duplicates)


def _feedparser(data: bytes, content_type: str | None):
    headers = {"content-type": content_type} if content_type else {}
    try:
        # No sanitising or URI rewriting inside entry HTML: html_to_text strips every tag (script and
        # style with their content) and the text is all Marsad keeps, so that work was thrown away.
        return feedparser.parse(data, response_headers=headers, sanitize_html=False, resolve_relative_uris=False)
    except Exception as exc:  # feedparser is lenient, but never let it crash a poll
        raise FeedError(f"feedparser failed: {type(exc).__name__}: {exc}") from None
