"""A fast parse path (lxml) for the feed shapes where it gives exactly what feedparser gives.

feedparser stays the reference: it reads every odd feed (illformed XML, wrong charsets, CDF,
RSS 0.9x, Atom 0.3, xhtml and base64 content, entities from a DOCTYPE). Most real feeds are
plain well-formed UTF-8 RSS 2.0 or Atom 1.0, and for those feedparser's SAX handlers cost
more than the rest of ingest. ``parse_fast`` reads such a feed with lxml and returns the fields
``sources.parse`` reads from feedparser's result, computed as feedparser computes them (the
same date parser, the same URI join, the same text clean-ups), or None when the feed is not
one of the shapes proven equal; the caller then parses it with feedparser.

It is a whitelist, decided before anything is trusted:

* the bytes: UTF-8 (a BOM allowed), an XML declaration (if any) that says UTF-8 or nothing, a
  content type that lets the declaration stand, no DOCTYPE, no entity declaration;
* the XML: well-formed (lxml without recovery: any error falls back), root ``<rss
  version="2.0">`` in no namespace with one ``<channel>``, or an Atom 1.0 ``<feed>`` (the
  Atom namespace as the default, nothing else), namespaces declared on the root only;
* every element and attribute in a table of known ones (``_ITEM_TEXT``, ``_ITEM_OTHER``,
  ``_CHANNEL_TEXT``, ``_CHANNEL_OTHER``, ``_ATTRS`` and the ``_ATOM_`` tables):
  an element feedparser handles in a way this module does not copy (``media:title`` sets
  the title, ``dc:language`` the language, an ``xml:lang`` or ``xml:base`` attribute, a
  second ``<title>``, mixed content) sends the whole feed to feedparser.

``tests/test_fastparse.py`` runs both paths over feedparser's whole corpus and generated
variations of the accepted shapes, and asserts every stored field is identical.
"""
from __future__ import annotations

import re
from functools import lru_cache

from feedparser.datetimes import _parse_date as _feedparser_date
from feedparser.html import _cp1252
from feedparser.urls import _urljoin
from lxml import etree

# feedparser's date parser (it tries its formats one after another), remembered per string: a
# feed re-serves the same entries poll after poll, and its struct_time results are immutable.
_parse_date = lru_cache(maxsize=16384)(_feedparser_date)

_NS_DC = "http://purl.org/dc/elements/1.1/"
_NS_CONTENT = "http://purl.org/rss/1.0/modules/content/"
_NS_ATOM = "http://www.w3.org/2005/Atom"
_NS_MEDIA = "http://search.yahoo.com/mrss/"
_NS_SY = "http://purl.org/rss/1.0/modules/syndication/"
_NS_SLASH = "http://purl.org/rss/1.0/modules/slash/"
_NS_WFW = "http://wellformedweb.org/CommentAPI/"
# WordPress (Jetpack, WordPress.com) adds <post-id> and <site> declaring this namespace on themselves.
_NS_WP = "com-wordpress:feed-additions:1"
# The namespaces an RSS 2.0 feed may declare (on its root) and still take the fast path:
# only these URIs, spelt exactly so (feedparser maps each to its own prefix).
_NAMESPACES = {_NS_DC, _NS_CONTENT, _NS_ATOM, _NS_MEDIA, _NS_SY, _NS_SLASH, _NS_WFW}

# Elements whose text feedparser keeps, in an item and in the channel: tag -> field. Each may
# occur once, with text only (no child element, comment or processing instruction).
_ITEM_TEXT = {
    "title": "title",
    "link": "link",
    "guid": "id",
    "description": "summary",
    "pubDate": "published",
    f"{{{_NS_DC}}}date": "updated",
    f"{{{_NS_CONTENT}}}encoded": "content",
}
# Elements feedparser reads into fields Marsad never reads (author, tags, comments,
# enclosures, thumbnails): text only (or empty), and they may repeat.
_ITEM_OTHER = {
    "category", "author", "comments", "enclosure", "source",
    f"{{{_NS_DC}}}creator", f"{{{_NS_DC}}}subject", f"{{{_NS_DC}}}rights", f"{{{_NS_DC}}}publisher",
    f"{{{_NS_MEDIA}}}thumbnail", f"{{{_NS_MEDIA}}}content",
    f"{{{_NS_SLASH}}}comments", f"{{{_NS_WFW}}}commentRss", f"{{{_NS_WP}}}post-id",
}
# What a <media:content> may hold (its title, description or text would become the entry's).
_MEDIA_CONTENT_CHILDREN = {f"{{{_NS_MEDIA}}}credit", f"{{{_NS_MEDIA}}}category", f"{{{_NS_MEDIA}}}thumbnail"}
_CHANNEL_TEXT = {"title": "title", "language": "language"}
_CHANNEL_OTHER = {
    "link", "description", "copyright", "managingEditor", "webMaster", "pubDate", "lastBuildDate",
    "category", "generator", "docs", "ttl", "cloud", f"{{{_NS_ATOM}}}link",
    f"{{{_NS_SY}}}updatePeriod", f"{{{_NS_SY}}}updateFrequency", f"{{{_NS_WP}}}site",
}
_IMAGE_CHILDREN = {"url", "title", "link", "width", "height", "description"}
# Attributes allowed per element; none elsewhere. ``lang`` and ``base`` (with or without
# the xml: namespace) change what feedparser reports, so they are never on these lists.
_ATTRS = {
    "rss": {"version"},
    "guid": {"isPermaLink"},
    "category": {"domain"},
    "enclosure": {"url", "length", "type"},
    "source": {"url"},
    "cloud": {"domain", "port", "path", "registerProcedure", "protocol"},
    f"{{{_NS_ATOM}}}link": {"href", "rel", "type"},
    f"{{{_NS_MEDIA}}}thumbnail": {"url", "width", "height"},
    f"{{{_NS_MEDIA}}}content": {"url", "type", "medium", "width", "height", "fileSize", "duration"},
    f"{{{_NS_MEDIA}}}credit": {"role", "scheme"},
    f"{{{_NS_MEDIA}}}category": {"scheme", "label"},
}
_NO_ATTRS: frozenset = frozenset()
# Elements that must stay empty (their content would be read by feedparser as something else).
_EMPTY = {"enclosure", "cloud", f"{{{_NS_ATOM}}}link", f"{{{_NS_MEDIA}}}thumbnail", f"{{{_NS_MEDIA}}}content"}

# <?xml version="1.0" encoding="utf-8"?> (or no encoding, or no declaration): anything else
# (another charset, a declaration feedparser might read differently) goes to feedparser.
_DECLARATION = re.compile(
    rb"""<\?xml\s+version\s*=\s*(["'])1\.0\1(?:\s+encoding\s*=\s*(["'])[Uu][Tt][Ff]-8\2)?"""
    rb"""(?:\s+standalone\s*=\s*(["'])(?:yes|no)\3)?\s*\?>"""
)
_MEDIA_TYPES = {"application/rss+xml", "application/xml", "application/atom+xml", "application/rdf+xml", "text/xml"}


class _NotExact(Exception):
    """The feed is outside the shapes this module copies feedparser on."""


def _content_type_ok(content_type: str | None) -> bool:
    """A content type under which feedparser trusts a UTF-8 XML declaration: none at all,
    an XML media type with charset=utf-8, or an application/ XML type without a charset
    (text/xml without one means US-ASCII to feedparser, RFC 3023)."""
    if not content_type:
        return True
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media not in _MEDIA_TYPES:
        return False
    charset = None
    for part in params.split(";"):
        key, eq, value = part.partition("=")
        if not eq:
            if part.strip():
                return False
            continue
        if key.strip().lower() != "charset" or charset is not None:
            return False
        charset = value.strip().strip("\"'").lower()
    if charset is None:
        return media.startswith("application/")
    return charset == "utf-8"


def _bytes_ok(data: bytes) -> bool:
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    if body.startswith(b"<?xml") and _DECLARATION.match(body) is None:
        return False  # a declaration, but not one that says UTF-8 (or nothing) plainly
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data or b"<!doctype" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _text(value: str) -> str:
    """What feedparser's ``pop`` makes of an element's text (strict parser, UTF-8, no
    sanitising): stripped, a UTF-8-read-as-Latin-1 string repaired, C1 controls mapped to
    their windows-1252 characters."""
    value = value.strip()
    if value.isascii():
        return value
    if _LATIN1_ONLY.fullmatch(value):  # else encoding it as Latin-1 fails, as it does in feedparser
        try:
            value = value.encode("iso-8859-1").decode("utf-8")
        except UnicodeDecodeError:
            pass
    return value.translate(_cp1252) if _C1.search(value) else value  # _cp1252 maps C1 controls only


_LATIN1_ONLY = re.compile("[\x00-\xff]*")
_C1 = re.compile("[\x80-\x9f]")


def _only_text(el) -> str:
    """The text of an element that may hold text only; _NotExact for anything else."""
    if len(el):
        raise _NotExact(f"{el.tag} has children")
    return el.text or ""


def _check_attrs(el, tag) -> None:
    attrib = el.attrib
    if attrib and not set(attrib.keys()) <= _ATTRS.get(tag, _NO_ATTRS):
        raise _NotExact(f"attributes on {tag}")


_COMMENT_OR_PI = (etree._Comment, etree._ProcessingInstruction)


def _elements(container):
    """Child elements of a container (channel, item, image), skipping comments and
    processing instructions between them, which feedparser ignores too. Text beside them
    other than whitespace is not a shape proven equal."""
    text = container.text
    if text and not text.isspace():
        raise _NotExact(f"text in {container.tag}")
    for child in container:
        tail = child.tail
        if tail and not tail.isspace():
            raise _NotExact(f"text in {container.tag}")
        if isinstance(child, _COMMENT_OR_PI):
            continue
        if isinstance(child, etree._Entity):
            raise _NotExact("entity reference")
        yield child


def _item(item) -> dict:
    if item.attrib:
        raise _NotExact("attributes on item")
    found: dict[str, str] = {}
    guid_is_link = False
    for el in _elements(item):
        tag = el.tag
        field = _ITEM_TEXT.get(tag)
        if field is not None:
            if field in found:
                raise _NotExact(f"a second {tag}")
            _check_attrs(el, tag)
            found[field] = _text(_only_text(el))
            if tag == "guid":
                guid_is_link = el.get("isPermaLink", "true") == "true"
        elif tag in _ITEM_OTHER:
            _check_attrs(el, tag)
            if tag == _MEDIA_CONTENT and len(el):
                _media_content(el)
            elif tag in _EMPTY:
                if len(el) or (el.text or "").strip():
                    raise _NotExact(f"{tag} is not empty")
            else:
                _only_text(el)
        else:
            raise _NotExact(f"item element {tag}")
    entry: dict = {}
    if "title" in found:
        entry["title"] = found["title"]
    guid = found.get("id")
    if guid is not None:
        if guid_is_link and guid:
            guid = _join(guid)
        entry["id"] = guid
    if "link" in found:
        link = found["link"]
        link = _join(link)  # in feedparser's order: the URI join, then the "&amp;" repairs
        if "&" in link:
            link = link.replace("&amp;", "&")
            link = _AMP_REF.sub(r"&\g<1>", link)
        entry["link"] = link
    elif guid is not None and guid_is_link:
        entry["link"] = guid
    content = found.get("content")
    if content is not None:
        entry["content"] = [{"value": content}]
    if "summary" in found:
        entry["summary"] = found["summary"]
    elif content is not None:
        entry["summary"] = content
    if "published" in found:
        entry["published"] = found["published"]
        entry["published_parsed"] = _parse_date(found["published"])
    if "updated" in found:
        entry["updated"] = found["updated"]
        entry["updated_parsed"] = _parse_date(found["updated"])
    return entry


_AMP_REF = re.compile("&([A-Za-z0-9_]+);")
_MEDIA_CONTENT = f"{{{_NS_MEDIA}}}content"


def _media_content(el) -> None:
    if (el.text or "").strip():
        raise _NotExact("text in media:content")
    for child in _elements(el):
        tag = child.tag
        if tag not in _MEDIA_CONTENT_CHILDREN:
            raise _NotExact(f"media:content holds {tag}")
        _check_attrs(child, tag)
        if tag in _EMPTY:
            if len(child) or (child.text or "").strip():
                raise _NotExact(f"{tag} is not empty")
        else:
            _only_text(child)


def _join(uri: str) -> str:
    """feedparser's resolve_uri with no base URI: ``_urljoin("", uri)``, which changes only
    a URI with slashes after "scheme://" (urljoin with an empty base returns the URI)."""
    return _urljoin("", uri) if ":///" in uri else uri


def _channel(channel) -> tuple[dict, list[dict]]:
    if channel.attrib:
        raise _NotExact("attributes on channel")
    feed: dict = {}
    entries = []
    for el in _elements(channel):
        tag = el.tag
        if tag == "item":
            entries.append(_item(el))
        elif tag in _CHANNEL_TEXT:
            field = _CHANNEL_TEXT[tag]
            if field in feed:
                raise _NotExact(f"a second channel {tag}")
            if el.attrib:
                raise _NotExact(f"attributes on {tag}")
            feed[field] = _text(_only_text(el))
        elif tag == "image":
            if el.attrib:
                raise _NotExact("attributes on image")
            for child in _elements(el):
                if child.tag not in _IMAGE_CHILDREN or child.attrib:
                    raise _NotExact(f"image element {child.tag}")
                _only_text(child)
        elif tag in _CHANNEL_OTHER:
            _check_attrs(el, tag)
            if tag in _EMPTY:
                if len(el) or (el.text or "").strip():
                    raise _NotExact(f"{tag} is not empty")
            else:
                _only_text(el)
        else:
            raise _NotExact(f"channel element {tag}")
    return feed, entries


class FastResult:
    """The part of feedparser's result that ``sources.parse`` reads, from the fast path."""

    __slots__ = ("feed", "entries", "version")

    def __init__(self, feed: dict, entries: list[dict], version: str):
        self.feed, self.entries, self.version = feed, entries, version

    def get(self, key, default=None):
        if key == "version":
            return self.version
        if key in ("bozo", "bozo_exception"):
            return None
        return default


def _parser() -> etree.XMLParser:
    # No entities resolved, no DTD, no network, no recovery: a document lxml would have to
    # repair is one feedparser may read otherwise, so it goes to feedparser.
    return etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, recover=False,
                           huge_tree=False, remove_blank_text=False, strip_cdata=True)


def parse_fast(data: bytes, content_type: str | None = None) -> FastResult | None:
    """The feed as feedparser would report it, or None when it is not a shape proven equal."""
    if not _content_type_ok(content_type) or not _bytes_ok(data):
        return None
    try:
        root = etree.fromstring(data, _parser())
    except (etree.XMLSyntaxError, ValueError):
        return None
    try:
        if root.tag == _ATOM_FEED:
            return _atom(root, data)
        return _rss20(root, data)
    except _NotExact:
        return None


def _rss20(root, data: bytes) -> FastResult | None:
    if root.tag != "rss" or root.get("version") != "2.0":
        return None
    _check_attrs(root, "rss")
    nsmap = root.nsmap
    if None in nsmap or not set(nsmap.values()) <= _NAMESPACES:
        return None
    channels = list(_elements(root))
    if len(channels) != 1 or channels[0].tag != "channel":
        return None
    feed, entries = _channel(channels[0])
    # Namespaces are declared on the root, and by WordPress's elements on themselves; any other
    # declaration below the root (or "xmlns" in the text) is a shape not proven.
    wordpress = 0
    for el in root.iter(f"{{{_NS_WP}}}*"):
        if el.nsmap.get(None) != _NS_WP or len(el.nsmap) != len(nsmap) + 1:
            return None
        wordpress += 1
    if data.count(b"xmlns") != len(nsmap) + wordpress:
        return None
    return FastResult(feed, entries, "rss20")


# Atom 1.0: every element in the Atom namespace (declared as the default namespace on the
# root, and nowhere else), text constructs of type text or html (xhtml, base64 and src=
# content go to feedparser), an xml:lang on the root only.
_A = f"{{{_NS_ATOM}}}"
_ATOM_FEED = _A + "feed"
_ATOM_TEXT = {_A + "title": "title", _A + "summary": "summary", _A + "content": "content", _A + "id": "id",
              _A + "published": "published", _A + "updated": "updated"}
_ATOM_TEXT_TYPES = {None, "text", "html"}
_ATOM_PERSON = {_A + "author", _A + "contributor"}
_ATOM_PERSON_PARTS = {_A + "name", _A + "email", _A + "uri"}
_ATOM_LINK_ATTRS = {"href", "rel", "type", "title", "hreflang", "length"}
_ATOM_FEED_OTHER = {_A + "subtitle", _A + "id", _A + "updated", _A + "icon", _A + "logo", _A + "rights", _A + "generator"}
_ATOM_ATTRS = {_A + "category": {"term", "scheme", "label"}, _A + "generator": {"uri", "version"}}
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_HTML_TYPES = {"application/xhtml+xml", "text/html"}


def _atom_text(el) -> str:
    attrib = el.attrib
    if attrib and (set(attrib.keys()) != {"type"} or attrib["type"] not in _ATOM_TEXT_TYPES):
        raise _NotExact(f"{el.tag} attributes")
    return _text(_only_text(el))


def _atom_link(el) -> str | None:
    """The href an Atom link sets as the entry's link, or None when it sets none."""
    attrib = el.attrib
    if len(el) or (el.text or "").strip() or "href" not in attrib or not set(attrib.keys()) <= _ATOM_LINK_ATTRS:
        raise _NotExact("an Atom link feedparser reads otherwise")
    rel = attrib.get("rel", "alternate").lower()
    kind = attrib.get("type", "text/html").lower()
    kind = {"text": "text/plain", "plain": "text/plain", "html": "text/html", "xhtml": "application/xhtml+xml"}.get(kind, kind)
    return _join(attrib["href"]) if rel == "alternate" and kind in _HTML_TYPES else None


def _atom_other(el) -> None:
    """Feed and entry elements feedparser keeps in fields Marsad does not read."""
    tag = el.tag
    if tag in _ATOM_PERSON:
        if el.attrib:
            raise _NotExact("attributes on a person")
        for part in _elements(el):
            if part.tag not in _ATOM_PERSON_PARTS or part.attrib:
                raise _NotExact(f"person element {part.tag}")
            _only_text(part)
    elif tag == _A + "category":
        if el.attrib and not set(el.attrib.keys()) <= _ATOM_ATTRS[tag]:
            raise _NotExact("category attributes")
        if len(el) or (el.text or "").strip():
            raise _NotExact("category content")
    elif tag == _A + "link":
        _atom_link(el)
    elif tag == _A + "rights":
        _atom_text(el)
    else:
        raise _NotExact(f"element {tag}")


def _atom_entry(entry_el) -> dict:
    if entry_el.attrib:
        raise _NotExact("attributes on entry")
    found: dict[str, str] = {}
    link = None
    for el in _elements(entry_el):
        tag = el.tag
        field = _ATOM_TEXT.get(tag)
        if field is not None:
            if field in found:
                raise _NotExact(f"a second {tag}")
            if field in ("title", "summary", "content"):
                found[field] = _atom_text(el)
            else:
                if el.attrib:
                    raise _NotExact(f"attributes on {tag}")
                found[field] = _text(_only_text(el))
        elif tag == _A + "link":
            href = _atom_link(el)
            if href is not None:
                link = href  # the last alternate HTML link wins, as in feedparser
        else:
            _atom_other(el)
    entry: dict = {}
    if "title" in found:
        entry["title"] = found["title"]
    if "id" in found:
        guid = found["id"]
        entry["id"] = _join(guid) if guid else guid
        entry["link"] = entry["id"]  # an Atom id acts as the link until an alternate link is seen
    if link is not None:
        entry["link"] = link
    content = found.get("content")
    if content is not None:
        entry["content"] = [{"value": content}]
    if "summary" in found:
        entry["summary"] = found["summary"]
    elif content is not None:
        entry["summary"] = content
    for key in ("published", "updated"):
        if key in found:
            entry[key] = found[key]
            entry[key + "_parsed"] = _parse_date(found[key])
    return entry


def _atom(root, data: bytes) -> FastResult | None:
    nsmap = root.nsmap
    if nsmap.get(None) != _NS_ATOM or len(nsmap) != 1 or data.count(b"xmlns") != 1:
        return None
    attrib = root.attrib
    feed: dict = {}
    if attrib:
        if set(attrib.keys()) != {_XML_LANG}:
            return None
        lang = attrib[_XML_LANG]
        if lang:
            feed["language"] = lang.replace("_", "-")
    entries = []
    for el in _elements(root):
        tag = el.tag
        if tag == _A + "entry":
            entries.append(_atom_entry(el))
        elif tag == _A + "title":
            if "title" in feed:
                raise _NotExact("a second feed title")
            feed["title"] = _atom_text(el)
        elif tag in _ATOM_FEED_OTHER:
            if tag == _A + "generator":
                if el.attrib and not set(el.attrib.keys()) <= _ATOM_ATTRS[tag]:
                    raise _NotExact("generator attributes")
            elif tag in (_A + "subtitle", _A + "rights"):
                _atom_text(el)
                continue
            elif el.attrib:
                raise _NotExact(f"attributes on {tag}")
            _only_text(el)
        else:
            _atom_other(el)
    return FastResult(feed, entries, "atom10")
