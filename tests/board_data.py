"""A warehouse for the indicator board tests, filled by the real pipeline from loopback feeds:
a firing indicator (three militia attacks in three days, after 38 quiet days since an
earlier attack), a resolved one (a US strike that fired its tripwire and left the window), a
quiet one with an old event (nuclear talks 20 days ago), a healthy source and a failing one
(its feed answers 404). A second fetch brings an earlier report of the Ain al-Asad attack
from an outlet added later: the event's time moves to that report. Alerts are delivered to
the Slack stand-in (``tests/slack_server.py``), so they have threads."""
from datetime import datetime, timedelta, timezone

from conftest import rss, write_feeds_yaml


def _pub(dt: datetime) -> str:
    return dt.strftime("%a, %d %b %Y %H:%M:%S +0000")


def items(t0: datetime, resolve_after: timedelta) -> tuple[list[dict], list[dict]]:
    """(English wire items, Arabic outlet items), published relative to ``t0``. The US strike is
    published so that it is inside the 24 h tripwire window at ``t0`` and outside it at
    ``t0 + resolve_after``."""
    en = [
        {"title": "Drone attack targets US forces at Harir air base in northern Iraq", "link": "https://en.example/harir", "guid": "a1",
         "description": "Officials said the drone was shot down near the base hosting US troops.", "pubDate": _pub(t0 - timedelta(hours=30))},
        {"title": "Rockets fired at US base at al-Tanf garrison in Syria", "link": "https://en.example/tanf", "guid": "a2",
         "description": "Rockets were launched at the base where US forces are stationed.", "pubDate": _pub(t0 - timedelta(hours=20))},
        {"title": "US strikes Kataib Hezbollah facilities in Iraq after attacks on troops", "link": "https://en.example/strike", "guid": "s1",
         "description": "American warplanes hit command centres and weapons storage sites used by the group, the Pentagon said.",
         "pubDate": _pub(t0 - timedelta(hours=24) + resolve_after - timedelta(seconds=1))},
        {"title": "Iran and US conclude fourth round of indirect nuclear talks in Oman", "link": "https://en.example/talks", "guid": "n1",
         "description": "Both sides described the talks as constructive and agreed to meet again.", "pubDate": _pub(t0 - timedelta(days=20))},
        {"title": "Drone attack on US forces at Erbil air base foiled, officials say", "link": "https://en.example/erbil",
         "guid": "a0", "description": "A drone launched at the base hosting US troops was shot down.",
         "pubDate": _pub(t0 - timedelta(days=40))},
        {"title": "Football results", "link": "https://en.example/football", "guid": "f1", "description": "scores", "pubDate": _pub(t0)},
    ]
    ar = [
        {"title": "هجوم بطائرة مسيّرة على قاعدة عين الأسد التي تضم قوات أمريكية", "link": "https://ar.example/asad", "guid": "a3",
         "description": "أفادت مصادر أمنية بسقوط طائرة مسيرة داخل القاعدة.", "pubDate": _pub(t0 - timedelta(hours=2))},
    ]
    return en, ar


# Reported first (an hour before Outlet AR) by an outlet whose feed is added after the event opened.
LATE_AR = {"title": "سقوط طائرة مسيرة داخل قاعدة عين الأسد الجوية غرب العراق حيث تتمركز قوات أمريكية",
           "link": "https://late.example/asad", "guid": "l1",
           "description": "قالت مصادر أمنية إن طائرة مسيرة استهدفت قاعدة عين الأسد التي تضم قوات أمريكية."}

# A second outlet carrying the Ain al-Asad attack: the event is corroborated by two outlets.
WIRE = {"title": "Drone attacked Ain al-Asad air base hosting US forces, officials say", "link": "https://wire.example/asad", "guid": "w1",
        "description": "A drone struck the base in Anbar province hosting US forces."}


def populate(settings, feed_server, tmp_path, resolve_after: timedelta = timedelta(hours=2), slack=None) -> dict:
    """Fetch, load, fetch a feed added later and load again, evaluate (now, then
    ``resolve_after`` later), deliver (to ``slack``, a ``SlackServer``, if given) and publish
    the read copy. Returns the times used: items are published relative to ``t0`` (just
    before the first fetch)."""
    from alerts.delivery import SlackSink, slack_client
    from marsad import pipeline

    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    en, ar = items(t0, resolve_after)
    wire = [dict(WIRE, pubDate=_pub(t0 - timedelta(hours=1)))]
    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [
        {"id": "wire-en", "name": "Wire EN", "lang": "en", "url": feed_server.serve("/en.xml", rss(en)), "reliability": "B"},
        {"id": "outlet-ar", "name": "Outlet AR", "lang": "ar", "url": feed_server.serve("/ar.xml", rss(ar, "ar"))},
        {"id": "second-wire", "name": "Second Wire", "lang": "en", "url": feed_server.serve("/wire.xml", rss(wire))},
        {"id": "broken", "name": "Broken Feed", "lang": "en", "url": feed_server.url("/gone.xml")},
    ])
    pipeline.fetch_stage(settings, pipeline.due_sources(settings, t0))
    pipeline.load(settings, datetime.now(timezone.utc))
    feeds = yaml_feeds(settings.feeds)
    feeds.append({"id": "late-ar", "name": "Late AR", "lang": "ar",
                  "url": feed_server.serve("/late.xml", rss([dict(LATE_AR, pubDate=_pub(t0 - timedelta(hours=3)))], "ar"))})
    write_feeds_yaml(settings.feeds, feeds)
    due = pipeline.due_sources(settings, datetime.now(timezone.utc))
    pipeline.fetch_stage(settings, due)
    t1 = datetime.now(timezone.utc)  # after the fetches: the events are seen from here on
    pipeline.load(settings, t1)
    pipeline.evaluate(settings, t1)
    pipeline.evaluate(settings, t1 + resolve_after)  # the US strike has left its 24 h window: resolved
    if slack is not None:
        pipeline.deliver(settings, SlackSink(slack_client(slack.state.token, slack.base_url)))
    pipeline.publish_read_copy(settings)
    return {"t0": t0, "evaluated_at": t1, "resolved_at": t1 + resolve_after, "old_attack": t0 - timedelta(days=40),
            "late_report": t0 - timedelta(hours=3)}


def yaml_feeds(path) -> list[dict]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))["feeds"]
