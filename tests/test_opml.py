"""OPML import/export of the feed registry: round trip, appending text, validation."""
import subprocess
import sys

import pytest

from sources.configfile import ConfigError
from sources.opml import OpmlError, export_opml, import_opml, read_opml
from sources.registry import DEFAULT_FEEDS, load_registry

EXISTING = """# Our feeds. Admins: keep this comment.
defaults:
  interval: 15m

feeds:
  # the first one
  - id: existing-en
    name: Existing English
    lang: en
    url: https://existing.example/rss   # trailing comment
    interval: 5m
"""


def registry_file(tmp_path, text=EXISTING):
    p = tmp_path / "feeds.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_export_then_import_round_trips_the_registry(tmp_path):
    original = load_registry(DEFAULT_FEEDS)
    opml = tmp_path / "all.opml"
    opml.write_text(export_opml(original, include_disabled=True), encoding="utf-8")
    feeds = registry_file(tmp_path)
    report = import_opml(opml, feeds)
    assert len(report.added) == len(original.feeds) and report.skipped == []
    text = feeds.read_text(encoding="utf-8")
    assert text.startswith(EXISTING)  # appended: the admin's file, comments and all, is untouched
    merged = load_registry(feeds)
    got = {(f.name, f.url, f.lang, f.homepage) for f in merged.feeds if f.id != "existing-en"}
    assert got == {(f.name, f.url, f.lang, f.homepage) for f in original.feeds}
    # Importing the same file again adds nothing.
    again = import_opml(opml, feeds)
    assert again.added == [] and len(again.skipped) == len(original.feeds)
    assert all("already registered as" in s for s in again.skipped)
    assert feeds.read_text(encoding="utf-8") == text


def test_export_is_opml_2_with_the_feed_attributes(tmp_path):
    reg = load_registry(DEFAULT_FEEDS)
    text = export_opml(reg)
    (tmp_path / "out.opml").write_text(text, encoding="utf-8")
    feeds = read_opml(tmp_path / "out.opml")
    enabled = [f for f in reg.feeds if f.enabled]
    assert text.splitlines()[1] == '<opml version="2.0">'
    assert [(f.text, f.url, f.html_url, f.language) for f in feeds] == [(f.name, f.url, f.homepage, f.lang) for f in enabled]


SUBSCRIPTIONS = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="1.0"><head><title>subs</title></head><body>
  <outline text="Iraq">
    <outline text="شفق نيوز" type="rss" xmlUrl="https://shafaq.example/ar/rss" htmlUrl="https://shafaq.example/ar"/>
    <outline text="Rudaw English" title="Rudaw" type="rss" xmlUrl="https://rudaw.example/rss" language="en-US"/>
    <outline text="Persian service" type="rss" xmlUrl="https://fa.example/rss" language="fa"/>
  </outline>
  <outline title="Existing again" type="rss" xmlUrl="https://EXISTING.example/rss/"/>
  <outline text="Rudaw English" type="rss" xmlUrl="https://rudaw.example/other-rss"/>
</body></opml>"""


def test_import_nested_arabic_and_skipped_outlines(tmp_path):
    opml = tmp_path / "subs.opml"
    opml.write_text(SUBSCRIPTIONS, encoding="utf-8")
    feeds = registry_file(tmp_path)
    report = import_opml(opml, feeds)
    assert report.added == ["shafaq-example", "rudaw-english", "rudaw-english-2"]
    assert report.skipped == [
        "https://fa.example/rss: language 'fa' is neither ar nor en",
        "https://EXISTING.example/rss/: already registered as existing-en",
    ]
    reg = load_registry(feeds)
    shafaq = reg.get("shafaq-example")
    assert (shafaq.name, shafaq.lang, shafaq.homepage) == ("شفق نيوز", "ar", "https://shafaq.example/ar")
    assert reg.get("rudaw-english").lang == "en" and reg.get("rudaw-english").interval == 900  # registry defaults apply
    assert "# imported from subs.opml on " in feeds.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "content, message",
    [
        ("<opml><body><outline xmlUrl='x'></body></opml>", ":1: not well-formed XML"),
        ("<rss version='2.0'/>", "not OPML (the root element is <rss>)"),
        ('<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><opml><body/></opml>', "refused: EntitiesForbidden"),
    ],
)
def test_bad_opml_is_a_clean_error_and_changes_nothing(tmp_path, content, message):
    opml = tmp_path / "bad.opml"
    opml.write_text(content, encoding="utf-8")
    feeds = registry_file(tmp_path)
    with pytest.raises(OpmlError) as exc:
        import_opml(opml, feeds)
    assert message in str(exc.value) and str(opml) in str(exc.value)
    assert feeds.read_text(encoding="utf-8") == EXISTING


def test_import_that_would_break_the_registry_names_file_line_and_field(tmp_path):
    opml = tmp_path / "ftp.opml"
    opml.write_text('<opml version="2.0"><body><outline text="Old FTP" xmlUrl="ftp://old.example/feed.xml"/></body></opml>')
    feeds = registry_file(tmp_path)
    with pytest.raises(ConfigError) as exc:
        import_opml(opml, feeds)
    # 11 lines, a blank line, the import comment, then the entry: its url is on line 17
    assert exc.value.problems == [f"{feeds}:17: feeds.1.url: must be an http:// or https:// URL"]
    assert feeds.read_text(encoding="utf-8") == EXISTING
    assert not list(tmp_path.glob("*.import-tmp"))


def test_cli_import_and_export(tmp_path):
    opml = tmp_path / "subs.opml"
    opml.write_text(SUBSCRIPTIONS, encoding="utf-8")
    feeds = registry_file(tmp_path)
    env = {**__import__("os").environ, "MARSAD_FEEDS": str(feeds)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "marsad.cli", *a], capture_output=True, text=True, env=env)  # noqa: E731
    res = run("sources", "import", str(opml))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == f"added 3 feed(s) to {feeds}: shafaq-example, rudaw-english, rudaw-english-2"
    res = run("sources", "export", "-o", str(tmp_path / "out.opml"))
    assert res.returncode == 0, res.stderr
    assert [f.url for f in read_opml(tmp_path / "out.opml")] == [
        "https://existing.example/rss", "https://shafaq.example/ar/rss", "https://rudaw.example/rss", "https://rudaw.example/other-rss"]
    bad = tmp_path / "bad.opml"
    bad.write_text("<opml>")
    res = run("sources", "import", str(bad))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
