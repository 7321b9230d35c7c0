"""Text and URL normalisation shared by ingest, dedupe and classification.

Two kinds of text live side by side:

* the *display* text (``title``, ``summary``): HTML stripped, whitespace collapsed,
  otherwise exactly what the outlet wrote (Arabic diacritics and all);
* the *folded* text (``fold()``): a matching key. Case, Arabic diacritics, tatweel,
  alef/hamza variants, alef maqsura, taa marbuta and Arabic-Indic digits are folded,
  punctuation becomes a space. Rules, dedupe and search run on folded text only.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import urlsplit, urlunsplit

from pyarabic import araby
from w3lib.html import remove_tags, remove_tags_with_content, replace_entities
from w3lib.url import canonicalize_url, url_query_cleaner

_WS = re.compile(r"\s+")
_BLOCK = re.compile(r"<\s*/?\s*(?:p|br|div|li|ul|ol|h[1-6]|tr|td|th|table|blockquote|section|article)\b[^>]*>", re.I)
_ARABIC_LETTER = re.compile(r"[\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF]")
_LATIN_LETTER = re.compile(r"[A-Za-z]")

# Diacritics (harakat, tanwin, shadda, sukun) and tatweel, as pyarabic defines them, deleted
# in one str.translate (pyarabic's own strip functions walk the text a character at a time).
# U+FFFD (a byte the feed's charset could not decode, see sources.parse) goes too: a stray byte
# inside a word must not split it in two and hide it from the rules.
_STRIP = {ord(c): None for c in (*araby.TASHKEEL, araby.TATWEEL, "\u0670", "\ufffd")}
_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")
# Letters folded to one form for matching (the originals are kept for display).
_LETTERS = str.maketrans(
    {
        "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا",  # alef variants
        "ؤ": "و", "ئ": "ي",  # hamza carried on waw / yeh
        "ى": "ي",  # alef maqsura
        "ة": "ه",  # taa marbuta
        "ک": "ك", "ی": "ي", "ڤ": "ف", "گ": "ك", "پ": "ب", "چ": "ج",  # Persian/Kurdish forms
    }
)


def html_to_text(html: str | None) -> str:
    """Plain text of an HTML fragment (feed summaries are often HTML), whitespace collapsed.

    w3lib's tag and entity removal (fast, regex-based) handles the fragments feeds carry;
    block-level tags become spaces so words on either side do not run together."""
    if not html:
        return ""
    if "<" in html:
        html = remove_tags_with_content(html, which_ones=("script", "style", "noscript"))
        html = _BLOCK.sub(" ", html)
        html = remove_tags(html)
    if "&" in html:
        html = replace_entities(html)
    return " ".join(html.split())  # == _WS.sub(" ", html).strip(): str.split and \s agree on whitespace


# The three tables above as one, applied in a single pass: no table maps a character into
# another table's domain, so one pass equals the three in turn.
_FOLD = {**_DIGITS, **_LETTERS, **_STRIP}
# Everything that is not a letter or a digit (any script) separates words: a run of them
# ("_" included) becomes one space.
_SEPARATORS = re.compile(r"[\W_]+", re.UNICODE)
# The words between separators: joining them with one space is _SEPARATORS.sub(" ", ...).strip()
# (whitespace is a separator), in one pass.
_WORDS = re.compile(r"[^\W_]+", re.UNICODE)


def fold(text: str | None) -> str:
    """Matching key for text in Arabic or English (see module docstring)."""
    if not text:
        return ""
    if text.isascii():
        # NFKC and the Arabic tables leave ASCII as it is (NFKC changes no ASCII character).
        return " ".join(_WORDS.findall(text.lower()))
    text = unicodedata.normalize("NFKC", text).translate(_FOLD).lower()
    return " ".join(_WORDS.findall(text))


def content_hash(title: str, summary: str = "", folded: tuple[str, str] | None = None) -> str:
    """Hash of the folded title and summary: equal for copies that differ only in form.
    ``folded``: the two already folded, when the caller has them."""
    ft, fs = folded or (fold(title), fold(summary))
    key = ft + "\x1f" + fs
    if "\ufffd" in title or "\ufffd" in summary:
        # fold() drops the replacement character, but a copy with undecodable bytes is not the same
        # content as the well-formed one: when that one arrives, the stored article is corrected.
        key += "\x1f\ufffd"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


def guess_language(text: str, declared: str | None = None) -> str:
    """'ar' or 'en' (Marsad's two languages) from the script of the text.

    A declared language ("ar", "ar-IQ", "en-us") wins when it is one of ours; otherwise
    the share of Arabic letters decides. Marsad's two languages use different scripts, so
    this is exact where statistical detectors are not: langdetect is random unless seeded
    and unreliable on headline-length text, and fastText-based detectors need a model file.
    """
    if declared:
        primary = declared.strip().lower().replace("_", "-").split("-")[0]
        if primary in ("ar", "en"):
            return primary
    arabic = len(_ARABIC_LETTER.findall(text or ""))
    latin = len(_LATIN_LETTER.findall(text or ""))
    return "ar" if arabic > latin else "en"


# Query parameters that identify a campaign or a reader, never the article.
TRACKING_PARAMS = (
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id",
    "utm_name", "utm_brand", "utm_social", "utm_social-type",
    "fbclid", "gclid", "dclid", "msclkid", "yclid", "igshid", "mc_cid", "mc_eid",
    "_ga", "_gl", "ocid", "cmpid", "ito", "traffic_source", "at_medium", "at_campaign",
    "rss", "feed", "from", "ref", "ref_src", "smid", "partner", "ns_source", "ns_mchannel",
)
_TRACKING = frozenset(TRACKING_PARAMS)


# A plain URL, whose canonical form can be written down without w3lib: http(s), a lower-case
# ASCII host name (no port, no user, no IDNA label, no IP address), a path and a query of
# unreserved characters only (nothing to percent-encode or decode, no "." or ".." segment, no
# empty segment), each query parameter non-empty with at most one "=", and any fragment
# (dropped). w3lib gives these the same canonical form (tests/test_normalize.py compares
# the two on generated and real URLs); every other URL goes to w3lib.
_LABEL = r"(?!xn--)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_UNRESERVED = r"[A-Za-z0-9._~-]"
_PLAIN_URL = re.compile(
    rf"(https?)://((?:{_LABEL}\.)*(?=[a-z0-9-]*[a-z])(?:{_LABEL}))"
    rf"((?:/{_UNRESERVED}+)*/?)"
    rf"(?:\?({_UNRESERVED}+(?:={_UNRESERVED}*)?(?:&{_UNRESERVED}+(?:={_UNRESERVED}*)?)*))?"
    r"(?:#[!-~]*)?"
)


def _canonical_plain(m: re.Match) -> str | None:
    scheme, host, path, query = m.groups()
    if len(host) > 253 or any(seg in (".", "..") for seg in path.split("/")):
        return None
    out = f"{scheme}://{host}{path or '/'}"
    if query:
        seen: set[str] = set()
        pairs = []
        for param in query.split("&"):  # url_query_cleaner: the first of each key, trackers out
            key, _, value = param.partition("=")
            if key in seen:
                continue
            seen.add(key)
            if key not in _TRACKING:
                pairs.append((key, value))
        if pairs:
            pairs.sort()  # canonicalize_url: sorted by key, then value; a bare key gets "="
            out += "?" + "&".join(f"{k}={v}" for k, v in pairs)
    return out


def canonical_url(url: str | None) -> str:
    """Canonical form of an article URL: tracking parameters stripped, scheme and host
    lower-cased, default port and fragment dropped, query sorted (w3lib)."""
    if not url:
        return ""
    url = url.strip()
    m = _PLAIN_URL.fullmatch(url)
    if m is not None:
        plain = _canonical_plain(m)
        if plain is not None:
            return plain
    return _canonical_url_w3lib(url)


def _canonical_url_w3lib(url: str) -> str:
    """canonical_url for any URL, with w3lib (``url`` already stripped)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return url
    cleaned = url_query_cleaner(url, parameterlist=TRACKING_PARAMS, remove=True, keep_fragments=False)
    canon = canonicalize_url(cleaned, keep_fragments=False)
    parts = urlsplit(canon)
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port in (None, 80, 443) else f"{host}:{port}"
    path = parts.path or "/"
    return urlunsplit((parts.scheme.lower(), netloc, path, parts.query, ""))
