"""A small populated warehouse for the analyst tests: our own Arabic and English reports,
fetched from loopback feeds and run through the real pipeline (load, evaluate, publish)."""
import threading
from datetime import datetime, timedelta, timezone

import pytest

from conftest import FeedServer, rss, write_feeds_yaml

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def pub(minutes_ago: int) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%a, %d %b %Y %H:%M:%S +0000")


DAY = 24 * 60
AR = [
    {"title": "هجوم بطائرة مسيّرة على قاعدة عين الأسد غربي العراق", "link": "https://ar.example/n/1", "guid": "ar-1",
     "description": "استهدفت طائرة مسيرة قاعدة عين الأسد التي تضم قوات أمريكية", "pubDate": pub(2 * DAY)},
    {"title": "سقوط صواريخ بعَيْن الأَسَد الجوية", "link": "https://ar.example/n/3", "guid": "ar-3",
     "description": "قالت مصادر أمنية إن صاروخين سقطا دون إصابات", "pubDate": pub(3 * DAY)},
    {"title": "مصادر: استهداف قاعدة عيـــن الأســد بالصواريخ", "link": "https://ar.example/n/5", "guid": "ar-5",
     "description": "والقوات الأمريكية تستنفر", "pubDate": pub(DAY)},
    {"title": "قصف قاعدة عين الاسد والقوات الأمريكية ترد", "link": "https://ar.example/n/4", "guid": "ar-4",
     "description": "تقرير قديم", "pubDate": pub(40 * DAY)},
    {"title": "الرئيس بشار الأسد يستقبل وفداً", "link": "https://ar.example/n/6", "guid": "ar-6",
     "description": "زيارة رسمية", "pubDate": pub(DAY)},
    {"title": "افتتاح معرض الكتاب في بغداد", "link": "https://ar.example/n/2", "guid": "ar-2",
     "description": "معرض", "pubDate": pub(60)},
]
HARIR = {"title": "Rockets target US forces at Harir base in Iraq's Kurdistan region",
         "description": "No group claimed the attack on the base hosting US troops."}
EN = [
    dict(HARIR, link="https://en.example/a/1", guid="en-1", pubDate=pub(90)),
    {"title": "Drone attacked Ain al-Asad air base, US officials say", "link": "https://en.example/a/4", "guid": "en-4",
     "description": "A drone struck the base in Anbar province hosting US forces.", "pubDate": pub(2 * DAY + 30)},
    {"title": "Football results", "link": "https://en.example/a/2", "guid": "en-2", "description": "scores", "pubDate": pub(20)},
]
# A second outlet carrying the Harir report 25 minutes later (the same event).
EN2 = [dict(HARIR, link="https://wire.example/harir", guid="w-1", pubDate=pub(65))]


def populate(settings, feed_server, tmp_path) -> None:
    from marsad import pipeline

    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [
        {"id": "test-ar", "name": "Test Arabic", "lang": "ar", "url": feed_server.serve("/ar.xml", rss(AR, "ar")), "interval": "5m"},
        {"id": "test-en", "name": "Test English", "lang": "en", "url": feed_server.serve("/en.xml", rss(EN)), "interval": "5m"},
        {"id": "test-wire", "name": "Test Wire", "lang": "en", "url": feed_server.serve("/wire.xml", rss(EN2)), "interval": "5m"},
    ])
    now = datetime.now(timezone.utc)
    pipeline.fetch_stage(settings, pipeline.due_sources(settings, now))
    pipeline.load(settings, now)
    pipeline.evaluate(settings, now)
    pipeline.deliver(settings)
    pipeline.publish_read_copy(settings)  # after delivery, as the evaluate DAG does: analysts see sent notifications


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One populated warehouse (per test module) for the tests that only read it."""
    from marsad import pipeline

    srv = FeedServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tmp = tmp_path_factory.mktemp("analyst")
    settings = pipeline.Settings.from_env(tmp / "wh.duckdb")
    settings.staging = tmp / "staging"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MARSAD_ALLOW_PRIVATE_FEEDS", "127.0.0.1/32")  # the feeds are on loopback
        populate(settings, srv, tmp)
    yield settings
    srv.shutdown()
    srv.server_close()
