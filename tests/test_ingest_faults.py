"""Ingest under faults (issue 14): concurrent loaders, a full disk, feeds that rotate their
GUIDs, one bad byte in an Arabic feed, broken config files. Real feed server on loopback,
real DuckDB files, real processes; nothing of ours is mocked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import REPO, rss, write_feeds_yaml
from marsad import pipeline
from warehouse import db


def _pub(minutes_ago: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).strftime("%a, %d %b %Y %H:%M:%S +0000")


def _items(n: int, prefix: str = "item", text: str = "") -> list[dict]:
    return [
        {"title": f"{prefix} headline number {i}", "link": f"https://news.example/{prefix}/{i}", "guid": f"{prefix}-{i}",
         "description": f"{prefix} story {i}. {text}", "pubDate": _pub(60 - i % 60)}
        for i in range(n)
    ]


def _count(settings, sql: str, params=()) -> int:
    with db.connect(settings.warehouse, read_only=True) as con:
        return con.execute(sql, list(params)).fetchone()[0]


# ----------------------------------------------------------------------------- concurrent loaders

# A loader process. The profile hook is instrumentation, not a stand-in: it tells the test, by
# a marker file, that the process has called time.sleep, i.e. it is waiting for the warehouse
# lock that the test holds.
LOADER = """
import json, sys, time
from pathlib import Path
marker = Path(sys.argv[3])
from marsad import pipeline
s = pipeline.Settings(warehouse=Path(sys.argv[1]), staging=Path(sys.argv[2]))
classifier = s.classifier()
def _hook(frame, event, arg):
    if event == "c_call" and arg is time.sleep:
        marker.write_text("waiting for the lock")
        sys.setprofile(None)
sys.setprofile(_hook)
print(json.dumps(pipeline.load(s, classifier=classifier).as_dict()))
"""


def test_concurrent_loaders_waiting_on_the_lock_never_crash_on_files_the_winner_removed(tmp_path, feed_server, settings):
    feeds = [
        {"id": f"f{i}", "name": f"F{i}", "lang": "en", "url": feed_server.serve(f"/f{i}.xml", rss(_items(5, f"f{i}")))}
        for i in range(3)
    ]
    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", feeds)
    pipeline.fetch_stage(settings, pipeline.due_sources(settings))
    assert len(list(settings.staging.glob("*.json"))) == 3

    holder = db.open_db(settings.warehouse)  # the lock another `marsad run-once` would hold
    procs, markers = [], []
    try:
        for i in range(2):
            marker = tmp_path / f"waiting-{i}"
            markers.append(marker)
            procs.append(subprocess.Popen(
                [sys.executable, "-c", LOADER, str(settings.warehouse), str(settings.staging), str(marker)],
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
        deadline = time.monotonic() + 60
        while not all(m.exists() for m in markers):
            assert time.monotonic() < deadline, "the loaders never reached the lock"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
    finally:
        holder.close()
    results = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert sorted(r["fetches"] for r in reports) == [0, 3]  # one loaded everything, the other found nothing left
    assert _count(settings, "SELECT count(*) FROM articles") == 15
    assert _count(settings, "SELECT count(*) FROM fetch_log") == 3
    assert list(settings.staging.iterdir()) == []


# ----------------------------------------------------------------------------- full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KiB tmpfs (root can mount one): writes past it fail with ENOSPC."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs for the full-disk test: {r.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_names_the_staged_file_and_leaves_no_partial_file(tmp_path, feed_server, tiny_disk, settings):
    big = _items(300, "big", "x" * 400)  # ~150 KB of staged JSON: more than the disk holds
    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [
        {"id": "big", "name": "Big", "lang": "en", "url": feed_server.serve("/big.xml", rss(big))},
    ])
    settings.staging = tiny_disk
    with pytest.raises(OSError) as exc:
        pipeline.fetch_stage(settings, pipeline.due_sources(settings))
    assert exc.value.errno == 28
    assert str(tiny_disk) in str(exc.value) and ".jsonl" in str(exc.value), str(exc.value)
    assert sorted(p.name for p in tiny_disk.iterdir()) == []  # nothing half-written stays behind

    # The disk has room again for a normal feed: the same source stages and loads as usual.
    feed_server.serve("/big.xml", rss(big[:5]))
    pipeline.fetch_stage(settings, pipeline.due_sources(settings))
    assert pipeline.load(settings).new_articles == 5
    assert list(tiny_disk.iterdir()) == []


# ----------------------------------------------------------------------------- one bad byte in an Arabic feed

AR_ATTACKS = [  # four attacks on four bases: four events, and the 3-in-72h campaign rule fires
    ("هجوم بطائرة مسيرة على قاعدة عين الأسد غربي العراق", "https://ar.example/n/1"),
    ("قصف صاروخي يستهدف قاعدة حرير التي تضم قوات أمريكية في أربيل", "https://ar.example/n/2"),
    ("هجوم بطائرات مسيرة على قاعدة التنف في سوريا حيث تتمركز القوات الأمريكية", "https://ar.example/n/3"),
    ("صواريخ كاتيوشا تستهدف قاعدة فكتوريا قرب مطار بغداد الدولي", "https://ar.example/n/4"),
]
AR_DETAIL = "تفاصيل الخبر كما أوردتها مصادر محلية وشهود عيان في المنطقة"


def _ar_feed() -> bytes:
    items = [{"title": t, "link": u, "guid": u, "description": AR_DETAIL, "pubDate": _pub(50 - 10 * i)} for i, (t, u) in enumerate(AR_ATTACKS)]
    return rss(items, "ar", title="أخبار العراق").encode("utf-8")


def _cycle(settings, now=None) -> list[dict]:
    """One ingest and evaluation as the DAGs run it; the notifications delivered, in order."""
    from alerts.delivery import LocalSink

    now = now or datetime.now(timezone.utc)
    pipeline.fetch_stage(settings, pipeline.due_sources(settings, now))
    pipeline.load(settings)
    pipeline.evaluate(settings)
    pipeline.deliver(settings, LocalSink())
    with db.connect(settings.warehouse, read_only=True) as con:
        rows = con.execute("SELECT payload, status FROM notifications ORDER BY created_at, notification_id").fetchall()
    assert all(status == "sent" for _, status in rows)
    return [json.loads(p) for p, _ in rows]


def _alert_shape(payloads: list[dict]) -> list[tuple]:
    """What an alert says, less the display text: rule, state, events and the articles cited."""
    return [
        (p["indicator"], p["rule"], p["state"], json.dumps(p.get("facts"), sort_keys=True),
         sorted((e.get("url"), e.get("source"), e.get("lang")) for e in p.get("evidence", [])))
        for p in payloads
    ]


def _second_warehouse(settings, tmp_path, name: str):
    return pipeline.Settings(warehouse=tmp_path / f"{name}.duckdb", staging=tmp_path / f"{name}-staging",
                             feeds=settings.feeds, rules=settings.rules, indicators=settings.indicators, read_copy=None)


def test_one_stray_byte_in_an_arabic_utf8_feed_alerts_exactly_as_the_clean_feed(tmp_path, feed_server, settings):
    clean = _ar_feed()
    word = "الأسد".encode("utf-8")
    at = clean.index(word) + 2  # between two letters of the first item's base name
    damaged = clean[:at] + b"\xff" + clean[at:]
    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [
        {"id": "ar-clean", "name": "Arabic clean", "lang": "ar", "url": feed_server.serve("/clean.xml", clean)},
    ])
    clean_alerts = _cycle(settings)
    bad = _second_warehouse(settings, tmp_path, "bad")
    bad.feeds = write_feeds_yaml(tmp_path / "feeds-bad.yaml", [
        {"id": "ar-clean", "name": "Arabic clean", "lang": "ar", "url": feed_server.serve("/bad.xml", damaged)},
    ])
    bad_alerts = _cycle(bad)

    assert [p["rule"] for p in clean_alerts] == ["militia-attack-campaign"]
    assert _alert_shape(bad_alerts) == _alert_shape(clean_alerts)
    with db.connect(bad.warehouse, read_only=True) as con:
        titles = [r[0] for r in con.execute("SELECT title FROM articles ORDER BY url").fetchall()]
    # Stored as declared (UTF-8), the bad byte shown as U+FFFD; no Latin mojibake anywhere.
    assert titles == [AR_ATTACKS[0][0].replace("الأسد", "ا\ufffdلأسد")] + [t for t, _ in AR_ATTACKS[1:]]
    assert not any(ch in "".join(titles) for ch in "ØÙÃ")


def test_a_stored_article_is_corrected_when_its_entry_arrives_well_formed(tmp_path, feed_server, settings):
    clean = _ar_feed()
    damaged = clean
    for word in ("فكتوريا", "مطار"):  # the fourth attack's place names lose a letter each: it matches nothing
        b = word.encode("utf-8")
        damaged = damaged.replace(b, b[:2] + b"\xff" + b[4:])
    url = feed_server.serve("/ar.xml", damaged)
    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [{"id": "ar", "name": "Arabic", "lang": "ar", "url": url, "interval": "5m"}])
    first = _cycle(settings)
    assert [(p["rule"], p["state"]) for p in first] == [("militia-attack-campaign", "firing")]
    assert _count(settings, "SELECT count(*) FROM events") == 3

    feed_server.serve("/ar.xml", clean)  # the outlet fixes its feed; same GUIDs
    later = _cycle(settings, datetime.now(timezone.utc) + timedelta(minutes=6))
    assert _count(settings, "SELECT count(*) FROM articles") == 4
    with db.connect(settings.warehouse, read_only=True) as con:
        title = con.execute("SELECT title FROM articles WHERE url = ?", [AR_ATTACKS[3][1]]).fetchone()[0]
        linked = con.execute(
            """SELECT count(*) FROM event_articles ea JOIN articles a USING (article_id) WHERE a.url = ?""", [AR_ATTACKS[3][1]]
        ).fetchone()[0]
    assert title == AR_ATTACKS[3][0]  # corrected in place
    assert linked == 1  # re-classified and assigned to an event
    assert _count(settings, "SELECT count(*) FROM events") == 4
    new = later[len(first):]
    assert [(p["rule"], p["state"]) for p in new] == [("militia-attack-campaign", "update")]
    assert AR_ATTACKS[3][1] in json.dumps(new[0]["evidence"])


# ----------------------------------------------------------------------------- feeds that re-issue their entries


def test_a_feed_that_changes_every_guid_each_poll_adds_no_articles_and_no_corroboration(tmp_path, feed_server, settings):
    section = [  # distinct entries that all link to one section page: the URL identifies none of them
        {"title": "افتتاح معرض الكتاب في بغداد", "link": "https://ar.example/news", "description": "ثقافة"},
        {"title": "نتائج مباريات الدوري العراقي", "link": "https://ar.example/news", "description": "رياضة"},
    ]

    def poll(n: int, link, summary=AR_DETAIL):
        items = [{"title": t, "link": link(i, u), "guid": f"poll{n}-{i}", "description": summary, "pubDate": _pub(50 - 10 * i)}
                 for i, (t, u) in enumerate(AR_ATTACKS[:3])]
        items += [dict(it, guid=f"poll{n}-s{i}", pubDate=_pub(5)) for i, it in enumerate(section)]
        feed_server.serve("/rot.xml", rss(items, "ar"))
        pipeline.fetch_stage(settings, pipeline.due_sources(settings, datetime.now(timezone.utc) + timedelta(minutes=6 * n)))
        return pipeline.load(settings)

    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [
        {"id": "rot", "name": "Rotating", "lang": "ar", "url": feed_server.url("/rot.xml"), "interval": "5m"},
    ])
    assert poll(0, lambda i, u: u).new_articles == 5
    # New GUIDs, same articles (tracking parameters differ): same canonical URL and content.
    assert poll(1, lambda i, u: f"{u}?utm_source=rss&utm_campaign=p1").new_articles == 0
    # New GUIDs and new URLs, same text: same content hash.
    assert poll(2, lambda i, u: f"{u}-amp").new_articles == 0
    # New GUIDs, same URLs, the summary reworded: same canonical URL.
    assert poll(3, lambda i, u: u, summary=AR_DETAIL + " (محدث)").new_articles == 0

    assert _count(settings, "SELECT count(*) FROM articles") == 5
    assert _count(settings, "SELECT sum(new_articles) FROM fetch_log") == 5
    assert _count(settings, "SELECT count(*) FROM events") == 3
    assert _count(settings, "SELECT max(n_articles) FROM events_v") == 1  # corroboration not inflated


def test_a_correction_that_still_matches_keeps_its_event_and_alerts_nothing_new(tmp_path, feed_server, settings):
    clean = _ar_feed()
    at = clean.index("الأسد".encode("utf-8")) + 2
    url = feed_server.serve("/ar.xml", clean[:at] + b"\xff" + clean[at:])
    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [{"id": "ar", "name": "Arabic", "lang": "ar", "url": url, "interval": "5m"}])
    first = _cycle(settings)
    with db.connect(settings.warehouse, read_only=True) as con:
        links = sorted(con.execute("SELECT event_id, article_id FROM event_articles").fetchall())
    feed_server.serve("/ar.xml", clean)
    later = _cycle(settings, datetime.now(timezone.utc) + timedelta(minutes=6))
    with db.connect(settings.warehouse, read_only=True) as con:
        assert con.execute("SELECT title FROM articles WHERE url = ?", [AR_ATTACKS[0][1]]).fetchone()[0] == AR_ATTACKS[0][0]
        assert sorted(con.execute("SELECT event_id, article_id FROM event_articles").fetchall()) == links
    assert later == first  # the same alert, nothing more to say


# ----------------------------------------------------------------------------- broken config files


def _run_once(settings, now):
    from alerts.delivery import LocalSink

    return pipeline.run_once(settings, LocalSink(), now)


def _notifications(settings) -> list[tuple]:
    with db.connect(settings.warehouse, read_only=True) as con:
        rows = con.execute("SELECT payload, status, channel FROM notifications ORDER BY created_at, notification_id").fetchall()
    return [(json.loads(p), status, channel) for p, status, channel in rows]


def _truncate(path: Path, marker: bytes, keep: int = 0) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: data.index(marker) + keep])


@pytest.mark.parametrize("broken", ["feeds", "rules", "indicator"])
def test_a_truncated_config_file_keeps_the_last_good_one_tells_ops_once_and_delivers(tmp_path, feed_server, settings, broken):
    import shutil

    alerts_dir = tmp_path / "alerts"
    shutil.copytree(REPO / "alerts" / "indicators", alerts_dir / "indicators")
    shutil.copytree(REPO / "alerts" / "gazetteers", alerts_dir / "gazetteers")
    shutil.copy(REPO / "alerts" / "rules.yaml", alerts_dir / "rules.yaml")
    settings.indicators, settings.rules = alerts_dir / "indicators", alerts_dir / "rules.yaml"
    settings.read_copy = None
    items = [{"title": t, "link": u, "guid": u, "description": AR_DETAIL, "pubDate": _pub(50 - 10 * i)} for i, (t, u) in enumerate(AR_ATTACKS)]
    url = feed_server.serve("/ar.xml", rss(items[:3], "ar"))
    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [{"id": "ar", "name": "Arabic", "lang": "ar", "url": url, "interval": "5m"}])
    t0 = datetime.now(timezone.utc)
    _run_once(settings, t0)
    assert [(p["rule"], p["state"], s) for p, s, _ in _notifications(settings)] == [("militia-attack-campaign", "firing", "sent")]

    target = {"feeds": settings.feeds, "rules": settings.rules, "indicator": settings.indicators / "militia_attack_us_forces.yaml"}[broken]
    good = target.read_bytes()
    if broken == "feeds":
        _truncate(target, b"  lang:")  # the feed loses its lang, url and interval
    elif broken == "rules":
        _truncate(target, b"kind: threshold")  # cut inside the campaign rule
    else:
        _truncate(target, "قاعدة".encode("utf-8"), 1)  # cut inside an Arabic letter
    errors = {"feeds": "feeds.yaml:", "rules": "rules.yaml:", "indicator": "militia_attack_us_forces.yaml:"}[broken]
    feed_server.serve("/ar.xml", rss(items, "ar"))  # a fourth attack comes in meanwhile

    _run_once(settings, t0 + timedelta(minutes=6))  # used to raise ConfigError: no load, no delivery
    sent = _notifications(settings)
    assert all(s == "sent" for _, s, _ in sent)
    assert [(p["rule"], p["state"]) for p, _, _ in sent if p["indicator"] != "config"] == [
        ("militia-attack-campaign", "firing"), ("militia-attack-campaign", "update")]
    config = [(p, ch) for p, _, ch in sent if p["indicator"] == "config"]
    assert len(config) == 1, config
    payload, channel = config[0]
    assert channel == settings.ops_channel and payload["state"] == "firing"
    assert errors in payload["summary"] and f"{errors}0:" not in payload["summary"], payload["summary"]
    line = int(payload["summary"].split(errors, 1)[1].split(":", 1)[0])
    assert line >= 1
    assert "last good copy" in payload["summary"]

    _run_once(settings, t0 + timedelta(minutes=12))  # still broken: ops are not told again
    assert len([p for p, _, _ in _notifications(settings) if p["indicator"] == "config"]) == 1

    target.write_bytes(good)
    _run_once(settings, t0 + timedelta(minutes=18))
    config = [p for p, s, _ in _notifications(settings) if p["indicator"] == "config"]
    assert [p["state"] for p in config] == ["firing", "resolved"]


def test_a_broken_rule_pack_with_no_last_good_copy_still_delivers_what_is_queued(tmp_path, feed_server, settings):
    items = [{"title": t, "link": u, "guid": u, "description": AR_DETAIL, "pubDate": _pub(50 - 10 * i)} for i, (t, u) in enumerate(AR_ATTACKS)]
    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [{"id": "ar", "name": "Arabic", "lang": "ar", "url": feed_server.serve("/ar.xml", rss(items, "ar"))}])
    settings.read_copy = None
    pipeline.fetch_stage(settings, pipeline.due_sources(settings))
    pipeline.load(settings)
    pipeline.evaluate(settings)  # queued; the run stopped before delivery
    broken_rules = tmp_path / "rules.yaml"
    broken_rules.write_text((REPO / "alerts" / "rules.yaml").read_text(encoding="utf-8")[:700], encoding="utf-8")
    settings.rules = broken_rules  # broken ...
    import shutil

    shutil.rmtree(settings.warehouse.parent / "last-good" / "rules", ignore_errors=True)  # ... and no good copy kept yet
    _run_once(settings, datetime.now(timezone.utc) + timedelta(minutes=20))
    sent = _notifications(settings)
    assert [(p["rule"], s) for p, s, _ in sent if p["indicator"] != "config"] == [("militia-attack-campaign", "sent")]
    (config,) = [p for p, _, _ in sent if p["indicator"] == "config"]
    assert "rules.yaml:" in config["summary"] and "no rule is evaluated" in config["summary"]


def test_an_arabic_utf8_feed_with_wide_damage_is_never_read_as_latin_mojibake():
    """Past the share of bad bytes that is repaired silently, the charset is detected, but a
    detection that reads fewer Arabic letters than the declared UTF-8 does loses."""
    from sources.parse import parse_feed

    data = _ar_feed()
    damaged = bytearray(data)
    body = data.index(b"<item>")
    for i in range(body, len(damaged), 40):  # about one byte in 40 (5 % of the Arabic text)
        if damaged[i] >= 0x80:
            damaged[i] = 0xFF
    feed = parse_feed(bytes(damaged), "s", "ar")
    text = " ".join(a.title + " " + a.summary for a in feed.articles)
    assert len(feed.articles) == 4
    assert not any(ch in text for ch in "ØÙÃ"), text[:200]
    assert sum("\u0621" <= ch <= "\u064a" for ch in text) > 200
    assert feed.bozo.startswith("charset: ") and "replaced" in feed.bozo
