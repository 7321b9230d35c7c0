"""OPML in and out of the feed registry (``marsad sources import`` / ``export``).

Reading uses defusedxml (no entity expansion, no external entities, no DTD fetching).
Import *appends* YAML text for the new feeds to the end of the ``feeds:`` list, so the
admin's file, comments and layout included, stays as it was; the result is validated
like any edit before it replaces the file. Export writes OPML 2.0 (``text``, ``title``,
``xmlUrl``, ``htmlUrl``, ``language``).
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import parse as safe_parse

from sources.configfile import ConfigError
from sources.normalize import guess_language
from sources.registry import Registry, load_registry


class OpmlError(ValueError):
    """An OPML file we cannot read, or a registry we cannot append to (one-line reason)."""


@dataclass
class OpmlFeed:
    text: str
    url: str
    html_url: str | None
    language: str | None
    line: int | None = None


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _attr(el: ET.Element, name: str) -> str | None:
    for k, v in el.attrib.items():
        if k.lower() == name.lower():
            return v.strip() or None
    return None


def read_opml(path: str | Path) -> list[OpmlFeed]:
    """Every outline with an ``xmlUrl``, at any depth (categories are folders)."""
    path = Path(path)
    try:
        root = safe_parse(str(path)).getroot()
    except OSError as exc:
        raise OpmlError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ET.ParseError as exc:
        raise OpmlError(f"{path}:{exc.position[0]}: not well-formed XML: {exc}") from None
    except DefusedXmlException as exc:
        raise OpmlError(f"{path}: refused: {exc}") from None
    if root.tag.lower() != "opml":
        raise OpmlError(f"{path}: not OPML (the root element is <{root.tag}>)")
    feeds = []
    for el in root.iter():
        if el.tag.lower() != "outline" or not _attr(el, "xmlUrl"):
            continue
        text = _attr(el, "text") or _attr(el, "title") or _attr(el, "xmlUrl")
        feeds.append(OpmlFeed(text, _attr(el, "xmlUrl"), _attr(el, "htmlUrl"), _attr(el, "language")))
    return feeds


def export_opml(registry: Registry, include_disabled: bool = False, now: datetime | None = None) -> str:
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = "Marsad sources"
    ET.SubElement(head, "dateCreated").text = format_datetime(now or datetime.now(timezone.utc), usegmt=True)
    body = ET.SubElement(root, "body")
    for f in registry.feeds:
        if not (f.enabled or include_disabled):
            continue
        attrs = {"type": "rss", "text": f.name, "title": f.name, "xmlUrl": f.url}
        if f.homepage:
            attrs["htmlUrl"] = f.homepage
        attrs["language"] = f.lang
        ET.SubElement(body, "outline", attrs)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].strip("-")


def _new_id(feed: OpmlFeed, taken: set[str]) -> str:
    base = _slug(feed.text)
    if len(base) < 2:  # e.g. an Arabic title: name it after the host
        host = (urlsplit(feed.url).hostname or "feed").removeprefix("www.")
        base = _slug(host) or "feed"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _feeds_list(text: str, path: Path) -> tuple[int, int]:
    """Where to append to the ``feeds:`` block list: (character offset, column of its dashes)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise OpmlError(f"{path}: not valid YAML: {exc}") from None
    node = None
    if isinstance(root, yaml.MappingNode):
        node = next((v for k, v in root.value if k.value == "feeds"), None)
    if not isinstance(node, yaml.SequenceNode) or node.flow_style or not node.value:
        raise OpmlError(f"{path}: 'feeds' must be a block list (- id: ...) with at least one feed to append to")
    first = text.splitlines()[node.value[0].start_mark.line]
    column = len(first) - len(first.lstrip())
    return node.end_mark.index, column


def import_opml(opml_path: str | Path, feeds_path: str | Path, lang: str | None = None,
                now: datetime | None = None) -> ImportReport:
    """Append the OPML file's feeds that the registry does not have yet; validate; replace."""
    feeds_path = Path(feeds_path)
    registry = load_registry(feeds_path)
    known = {f.url.rstrip("/").lower(): f.id for f in registry.feeds}
    taken = {f.id for f in registry.feeds}
    report, entries = ImportReport(), []
    for f in read_opml(opml_path):
        key = f.url.rstrip("/").lower()
        if key in known:
            report.skipped.append(f"{f.url}: already registered as {known[key]}")
            continue
        declared = (f.language or "").lower().replace("_", "-").split("-")[0] or None
        feed_lang = lang or (declared if declared in ("ar", "en") else None)
        if feed_lang is None and declared:
            report.skipped.append(f"{f.url}: language {f.language!r} is neither ar nor en")
            continue
        entry = {"id": _new_id(f, taken), "name": f.text, "lang": feed_lang or guess_language(f.text), "url": f.url}
        if f.html_url:
            entry["homepage"] = f.html_url
        known[key] = entry["id"]
        entries.append(entry)
        report.added.append(entry["id"])
    if not entries:
        return report
    text = feeds_path.read_text(encoding="utf-8")
    at, column = _feeds_list(text, feeds_path)
    when = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d")
    block = f"\n# imported from {Path(opml_path).name} on {when} (marsad sources import)\n"
    block += yaml.safe_dump(entries, allow_unicode=True, sort_keys=False, width=4096)
    block = "".join((" " * column + line if line.strip() else line) for line in block.splitlines(keepends=True))
    head = text[:at]
    new_text = head + ("" if head.endswith("\n") else "\n") + block + text[at:]
    tmp = feeds_path.with_name(feeds_path.name + ".import-tmp")
    tmp.write_text(new_text, encoding="utf-8")
    try:
        load_registry(tmp)
    except ConfigError as exc:
        tmp.unlink()
        raise ConfigError([p.replace(str(tmp), str(feeds_path)) for p in exc.problems]) from None
    os.replace(tmp, feeds_path)
    return report
