"""The fast parse path (sources/fastparse.py) loses nothing: every field Marsad stores is the
same as with feedparser alone, on feedparser's whole corpus and on generated variations of
the RSS 2.0 and Atom 1.0 shapes the fast path accepts, and the errors are the same too."""
from __future__ import annotations

import random
import re
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from bench.feeds import CAMPAIGN_SHARE, feed_xml
from conftest import CORPORA
from sources.fastparse import parse_fast
from sources.parse import FeedError, parse_feed

CORPUS = CORPORA / "feedparser"
FETCHED = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
_HEADER = re.compile(rb"^Header:\s*Content-type:\s*(.+?)\s*$", re.I | re.M)


def _outcome(data: bytes, content_type: str | None, fast: bool):
    """Everything parse_feed returns (every Article field, feed title, language, bozo note,
    version, duplicates), or the error it raises."""
    try:
        return asdict(parse_feed(data, "src", None, FETCHED, content_type, fast=fast))
    except FeedError as exc:
        return ("FeedError", str(exc), exc.feed_links)


def _compare(data: bytes, content_type: str | None, name: str) -> bool:
    """Asserts both paths agree; returns whether the fast path took the feed."""
    fast, reference = _outcome(data, content_type, True), _outcome(data, content_type, False)
    if fast != reference:
        if isinstance(fast, dict) and isinstance(reference, dict):
            for key in fast:
                if key != "articles":
                    assert fast[key] == reference[key], f"{name}: {key}"
            assert len(fast["articles"]) == len(reference["articles"]), f"{name}: number of articles"
            for i, (a, b) in enumerate(zip(fast["articles"], reference["articles"])):
                for key in a:
                    assert a[key] == b[key], f"{name}: article {i}: {key}: {a[key]!r} != {b[key]!r}"
        assert fast == reference, name
    return parse_fast(data, content_type) is not None


def _corpus_files() -> list[Path]:
    assert CORPUS.is_dir(), f"feedparser's corpus is not at {CORPUS} (../shared/corpora beside the clone)"
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix in (".xml", ".json"))


def test_fast_path_equals_feedparser_on_its_whole_corpus():
    files = _corpus_files()
    assert len(files) > 2000
    took = 0
    for path in files:
        data = path.read_bytes()
        header = _HEADER.search(data[:2048])
        content_type = header.group(1).decode("latin-1") if header else None
        took += _compare(data, content_type, str(path.relative_to(CORPUS)))
    share = took / len(files)
    print(f"\nfast path took {took} of {len(files)} corpus files ({share:.0%}); feedparser read the rest")
    # The corpus is mostly odd feeds (each file tests one feedparser feature), but its plain
    # RSS 2.0 files must go the fast way, or this test proves nothing about it.
    assert took >= 150, took


def test_generated_and_bench_feeds_take_the_fast_path():
    for i in range(6):
        for share in (0.05, CAMPAIGN_SHARE):
            data = feed_xml(i, attack_share=share)
            assert parse_fast(data, "application/rss+xml; charset=utf-8") is not None
            assert _compare(data, "application/rss+xml; charset=utf-8", f"bench feed {i}")


# Pieces of RSS 2.0 that real feeds carry, in many spellings; the generator combines them.
_TEXTS = [
    "Drone attack on Ain al-Asad", "  spaced   title\n", "هجوم بطائرة مسيّرة على قاعدة", "",
    "Fish &amp; chips &lt;b&gt;bold&lt;/b&gt;", "<![CDATA[<p>Para <b>one</b></p> & more]]>",
    "caf\u00c3\u00a9 (UTF-8 read as Latin-1)", "\u0080\u0093quoted\u0094 C1 controls", "&#1575;&#x644; numeric",
    "<![CDATA[]]>", "tab\tand\r\nnewline", "Ã", "x &#160; nbsp", "«guillemets» — dash",
]
_LINKS = [
    "https://example.com/a?x=1&amp;utm_source=rss", "/relative/path", "http://example.com/a&amp;amp;b=2",
    " https://example.com/space ", "", "https://example.com/q?a=1&amp;b&amp;c;d", "javascript:alert(1)",
    "https://EXAMPLE.com:443/Path#frag", "example.com/no-scheme", "https://example.com/&amp;lt;", "https:///triple.example/a",
    "http:////four.example/?a=1&amp;b=2", "a&amp;b:///x",
]
_DATES = [
    "Sun, 01 Mar 2026 10:00:00 GMT", "Sun, 01 Mar 2026 10:00:00 +0300", "2026-03-01T10:00:00Z",
    "2026-03-01", "not a date", "", "Sun, 01 Mar 2099 10:00:00 GMT", "01 Mar 2026 10:00 EST", "Mon, 32 Feb 2026 99:00:00 GMT",
]
_GUIDS = ["abc-123", "https://example.com/g/1", "/rel/guid", "", "urn:uuid:1", "https:///g.example/2"]
_NS = {
    "dc": "http://purl.org/dc/elements/1.1/", "content": "http://purl.org/rss/1.0/modules/content/",
    "atom": "http://www.w3.org/2005/Atom", "media": "http://search.yahoo.com/mrss/",
    "sy": "http://purl.org/rss/1.0/modules/syndication/", "slash": "http://purl.org/rss/1.0/modules/slash/",
    "wfw": "http://wellformedweb.org/CommentAPI/",
}
_DECLS = ['<?xml version="1.0" encoding="utf-8"?>', "<?xml version='1.0' encoding='UTF-8'?>", '<?xml version="1.0"?>',
          '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>', '<?xml version="1.0" encoding="iso-8859-1"?>', ""]
_TYPES = [None, "application/rss+xml; charset=utf-8", "application/xml", "text/xml", "text/xml; charset=UTF-8",
          "text/html; charset=utf-8", "application/rss+xml; charset=windows-1256"]


def _item(rng: random.Random) -> str:
    parts = []
    if rng.random() < 0.9:
        parts.append(f"<title>{rng.choice(_TEXTS)}</title>")
    if rng.random() < 0.7:
        parts.append(f"<link>{rng.choice(_LINKS)}</link>")
    if rng.random() < 0.7:
        attr = rng.choice(["", ' isPermaLink="false"', ' isPermaLink="true"', ' isPermaLink="False"', ' isPermaLink="True"'])
        parts.append(f"<guid{attr}>{rng.choice(_GUIDS)}</guid>")
    if rng.random() < 0.7:
        parts.append(f"<description>{rng.choice(_TEXTS)}</description>")
    if rng.random() < 0.3:
        parts.append(f"<content:encoded>{rng.choice(_TEXTS)}</content:encoded>")
    if rng.random() < 0.7:
        parts.append(f"<pubDate>{rng.choice(_DATES)}</pubDate>")
    if rng.random() < 0.3:
        parts.append(f"<dc:date>{rng.choice(_DATES)}</dc:date>")
    extras = ["<category>News</category>", '<category domain="x">Iraq</category>', "<author>a@example.com (A)</author>",
              "<dc:creator>Reporter</dc:creator>", '<enclosure url="https://example.com/a.mp3" length="1" type="audio/mpeg"/>',
              '<media:thumbnail url="https://example.com/t.jpg" width="1" height="1"/>', "<comments>https://example.com/c</comments>",
              '<media:content url="https://example.com/v.mp4" type="video/mp4"/>', "<slash:comments>3</slash:comments>",
              "<!-- a comment -->", "stray text", '<source url="https://other.example/feed">Other</source>', "<wfw:commentRss>/c</wfw:commentRss>",
              '<post-id xmlns="com-wordpress:feed-additions:1">123</post-id>', "<dc:subject>Iraq</dc:subject>", "<dc:rights>(c)</dc:rights>",
              '<media:content url="https://example.com/p.jpg" medium="image"><media:credit role="author">AP</media:credit>'
              '<media:category scheme="s">news</media:category><media:thumbnail url="https://example.com/t.jpg"/></media:content>']
    # Shapes the fast path must refuse (feedparser reads them into Marsad's fields).
    odd = ["<media:title>Media title</media:title>", "<dc:language>ar</dc:language>", "<title>second title</title>",
           '<description xml:lang="ar">x</description>', "<summary>s</summary>", "<title>a <b>b</b></title>",
           '<link xml:base="https://base.example/">rel</link>', "<language>ar</language>", "<PubDate>Sun, 01 Mar 2026 10:00:00 GMT</PubDate>",
           '<media:content url="u"><media:description>d</media:description></media:content>', "<atom:link href='https://x.example/' rel='alternate'/>",
           '<media:content url="u"><media:title>Media title</media:title></media:content>', '<post-id xmlns="urn:other">1</post-id>',
           '<dc:subject xmlns:dc="http://purl.org/dc/elements/1.1/">x</dc:subject>']
    parts += rng.sample(extras, rng.randrange(0, 4))
    if rng.random() < 0.1:
        parts.append(rng.choice(odd))
    rng.shuffle(parts)
    return "<item>" + "\n ".join(parts) + "</item>"


def _feed(rng: random.Random) -> tuple[bytes, str | None]:
    ns = " ".join(f'xmlns:{p}="{u}"' for p, u in _NS.items() if rng.random() < 0.7 or p in ("dc", "content", "media", "slash", "wfw"))
    channel = []
    if rng.random() < 0.9:
        channel.append(f"<title>{rng.choice(_TEXTS)}</title>")
    if rng.random() < 0.6:
        channel.append(f"<language>{rng.choice(['ar', 'en-us', 'ar_IQ', '', 'fr'])}</language>")
    channel += rng.sample(["<link>https://example.com/</link>", "<description>About</description>",
                           "<lastBuildDate>Sun, 01 Mar 2026 10:00:00 GMT</lastBuildDate>", "<ttl>5</ttl>",
                           "<image><url>https://example.com/i.png</url><title>Image title</title><link>https://example.com/</link></image>",
                           "<generator>gen</generator>", "<sy:updatePeriod>hourly</sy:updatePeriod>",
                           '<site xmlns="com-wordpress:feed-additions:1">42</site>'], rng.randrange(0, 4))
    if "atom" in ns:
        channel.append('<atom:link href="https://example.com/feed" rel="self" type="application/rss+xml"/>')
    channel += [_item(rng) for _ in range(rng.randrange(0, 6))]
    rng.shuffle(channel)
    version = rng.choice(['version="2.0"'] * 8 + ['version="0.92"', 'version="2.01"'])
    decl = rng.choice(_DECLS[:4] * 3 + _DECLS[4:])
    body = f'{decl}\n<rss {version} {ns}>\n<channel>\n{"".join(channel)}\n</channel></rss>\n'
    data = body.encode("utf-8")
    if rng.random() < 0.1:
        data = b"\xef\xbb\xbf" + data
    return data, rng.choice(_TYPES[:2] * 4 + _TYPES[2:])


def test_fast_path_equals_feedparser_on_generated_rss():
    rng = random.Random(17)
    took = 0
    n = 1500
    for i in range(n):
        data, content_type = _feed(rng)
        took += _compare(data, content_type, f"generated feed {i}: {content_type}\n{data.decode('utf-8', 'replace')}")
    # Most generated feeds are plain shapes the fast path accepts; the rest test its refusals.
    assert took > n // 3, took


# canonical_url writes plain URLs' canonical form itself and hands every other URL to w3lib;
# the two must agree on every URL.
_URL_PARTS = dict(
    scheme=["https", "http", "HTTPS", "ftp", "https", "http"],
    host=["www.aljazeera.com", "example.com", "EXAMPLE.com", "a-b.example", "xn--mgbh0fb.example", "1.2.3.4", "localhost",
          "example.com:443", "example.com:8080", "user@example.com", "-bad.example", "a..b", "ex_ample.com", "", "[::1]", "sub.ex-ample.co.uk"],
    path=["", "/", "/news/2024/10/17/a-story", "/a/./b", "/a/../b", "/a//b", "/%7Euser", "/r%C3%A9sum%C3%A9", "/résumé", "/a b", "/.",
          "/..", "/a.html", "/~user/", "/a;p=1", "/A/B/C", "/x/", "/ab-_.~", "/%2f"],
    query=["", "?", "?a=1", "?b=2&a=1", "?utm_source=rss", "?traffic_source=rss", "?id=5&utm_source=rss&ref=x", "?a=1&a=2", "?a&b=",
           "?a=1&&b=2", "?a=1&", "?a=b=c", "?q=a+b", "?q=%20", "?q=é", "?utm_source=x&utm_source=y&a=1", "?b&a", "?A=1&a=1",
           "?z=1&y=2&x", "?a=1;b=2", "?from=rss&id=9"],
    fragment=["", "#top", "#", "#a b", "#x?y=1"],
)


def _urls(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        p = {k: rng.choice(v) for k, v in _URL_PARTS.items()}
        out.append(f"{p['scheme']}://{p['host']}{p['path']}{p['query']}{p['fragment']}")
    out += [" https://example.com/a ", "https://example.com", "example.com/a", "/relative", "mailto:x@example.com", "https:///a"]
    return out


def test_canonical_url_equals_w3lib_on_generated_and_real_urls():
    from sources.normalize import _PLAIN_URL, _canonical_url_w3lib, canonical_url

    urls = _urls(random.Random(7), 6000)
    captures = CORPORA / "rss-captures" / "items.jsonl"
    if captures.is_file():
        import json

        urls += [json.loads(line)["url"] for line in captures.read_text(encoding="utf-8").splitlines() if line.strip()]
    plain = 0
    for url in urls:
        assert canonical_url(url) == _canonical_url_w3lib(url.strip()), url
        plain += _PLAIN_URL.fullmatch(url.strip()) is not None
    assert plain > len(urls) // 10, plain  # the plain shape is common, and tested


def _atom_text(rng: random.Random, tag: str) -> str:
    kind = rng.choice(["", ' type="text"', ' type="html"'] * 10 + [' type="xhtml"', ' type="HTML"', ' type="text/html"'])
    body = rng.choice(_TEXTS)
    if "xhtml" in kind:
        body = '<div xmlns="http://www.w3.org/1999/xhtml">x <b>y</b></div>'
    return f"<{tag}{kind}>{body}</{tag}>"


def _atom_entry(rng: random.Random) -> str:
    parts = []
    if rng.random() < 0.9:
        parts.append(_atom_text(rng, "title"))
    if rng.random() < 0.8:
        parts.append(f"<id>{rng.choice(_GUIDS + ['tag:example.com,2026:1'])}</id>")
    for _ in range(rng.randrange(0, 3)):
        rel = rng.choice(["", ' rel="alternate"', ' rel="self"', ' rel="enclosure"', ' rel="ALTERNATE"', ' rel="related"'])
        kind = rng.choice(["", ' type="text/html"', ' type="application/atom+xml"', ' type="TEXT/HTML"', ' type="html"', ' type="application/xhtml+xml"'])
        parts.append(f'<link{rel}{kind} href="{rng.choice(_LINKS)}"/>')
    if rng.random() < 0.6:
        parts.append(_atom_text(rng, "summary"))
    if rng.random() < 0.4:
        parts.append(_atom_text(rng, "content"))
    for tag in ("published", "updated"):
        if rng.random() < 0.6:
            parts.append(f"<{tag}>{rng.choice(_DATES)}</{tag}>")
    parts += rng.sample(["<author><name>A</name><email>a@example.com</email></author>", '<category term="iraq"/>',
                         "<contributor><name>B</name></contributor>", "<!-- c -->", "<rights>(c)</rights>"], rng.randrange(0, 3))
    if rng.random() < 0.1:
        parts.append(rng.choice(['<content src="https://example.com/x"/>', '<content type="text/plain" mode="base64">aGk=</content>',
                                 "<source><title>S</title></source>", "<dc:language>ar</dc:language>", "<title>second</title>",
                                 '<link href="https://x.example/"><b/></link>']))
    rng.shuffle(parts)
    return "<entry>" + "".join(parts) + "</entry>"


def _atom_feed(rng: random.Random) -> tuple[bytes, str | None]:
    lang = rng.choice(["", ' xml:lang="ar"', ' xml:lang="en_US"', ' xml:lang=""', ' xml:lang="fr"', ' xml:lang="AR-iq"'])
    extra_ns = ' xmlns:dc="http://purl.org/dc/elements/1.1/"' if rng.random() < 0.15 else ""
    parts = [_atom_text(rng, "title")] if rng.random() < 0.9 else []
    parts += rng.sample(["<id>urn:feed</id>", "<updated>2026-03-01T10:00:00Z</updated>", '<link rel="self" href="https://example.com/feed"/>',
                         "<subtitle>Sub</subtitle>", '<generator uri="https://g.example/" version="1">G</generator>', "<icon>/i.png</icon>",
                         "<author><name>A</name></author>"], rng.randrange(0, 5))
    parts += [_atom_entry(rng) for _ in range(rng.randrange(0, 6))]
    rng.shuffle(parts)
    decl = rng.choice(_DECLS[:4] * 3 + _DECLS[4:])
    data = f'{decl}<feed xmlns="http://www.w3.org/2005/Atom"{extra_ns}{lang}>{"".join(parts)}</feed>'.encode("utf-8")
    return data, rng.choice([None, "application/atom+xml; charset=utf-8", "application/atom+xml"] * 3 + ["text/xml"])


def test_fast_path_equals_feedparser_on_generated_atom():
    rng = random.Random(1017)
    took = 0
    n = 1200
    for i in range(n):
        data, content_type = _atom_feed(rng)
        took += _compare(data, content_type, f"generated Atom feed {i}: {content_type}\n{data.decode('utf-8', 'replace')}")
    assert took > n // 3, took


def test_fold_equals_the_three_pass_definition():
    """fold() applies its tables in one pass and skips them for ASCII; the result is the
    definition's: NFKC, strip, letters, digits (in turn), lower case, separators to spaces."""
    import unicodedata

    from sources import normalize as n

    def reference(text: str) -> str:
        text = unicodedata.normalize("NFKC", text).translate(n._STRIP).translate(n._LETTERS).translate(n._DIGITS).lower()
        return re.sub(r"\s+", " ", re.sub(r"[^\w]+|_", " ", text)).strip()

    rng = random.Random(3)
    alphabet = [chr(c) for c in [*range(0, 0x250), *range(0x600, 0x700), *range(0x2000, 0x2070), *range(0xFB50, 0xFE00),
                                 *range(0xFE70, 0xFF00), 0xFFFD, 0x130, 0x1E9E]]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30))) for _ in range(20000)]
    texts += ["Drone attack on Ain al-Asad__base", "هجومٌ بطائرةٍ مسيّرة على قاعدة عين الأسد ١٢٣", "İstanbul ǅ ﷺ ﻻ"]
    for text in texts:
        assert n.fold(text) == reference(text), repr(text)
