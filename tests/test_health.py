"""Per-source health in the warehouse, and ops alerts through the indicator alert path."""
import json
import time
from datetime import datetime, timedelta, timezone

import yaml

from conftest import rss
from marsad import pipeline
from marsad.cli import main
from sources.health import source_health
from sources.parse import make_article
from sources.registry import HealthSettings
from warehouse import db

GOOD = rss([{"title": "Hello", "link": "https://e.example/1", "guid": "1", "description": "x"}])


def feeds_file(tmp_path, feeds, health=None):
    data = {"feeds": feeds}
    if health:
        data["health"] = health
    path = tmp_path / "feeds.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def poll(settings, t):
    pipeline.fetch_stage(settings, pipeline.due_sources(settings, t))
    pipeline.load(settings, t)


def ops_notifications(settings):
    with db.connect(settings.warehouse, read_only=True) as con:
        rows = con.execute(
            """SELECT n.state, n.channel, a.rule_id, a.indicator, a.state, n.payload FROM notifications n
               JOIN alerts a USING (alert_id) WHERE a.indicator = 'source_health' ORDER BY n.created_at, n.seq"""
        ).fetchall()
    return [(s, ch, rule, ind, astate, json.loads(p)) for s, ch, rule, ind, astate, p in rows]


def test_a_source_down_longer_than_configured_pages_ops_and_resolves(tmp_path, feed_server, settings):
    settings.feeds = feeds_file(tmp_path, [
        {"id": "good", "name": "Good", "lang": "en", "url": feed_server.serve("/good.xml", GOOD), "interval": "5m"},
        {"id": "gone", "name": "Gone", "lang": "en", "url": feed_server.url("/gone.xml"), "interval": "5m"},
    ], health={"down_after": "2h", "channel": "#ops-test", "repeat": "1d"})
    t0 = datetime.now(timezone.utc)
    poll(settings, t0)

    # Failing, but not for long enough yet.
    assert pipeline.evaluate(settings, t0 + timedelta(hours=1)) == []
    queued = pipeline.evaluate(settings, t0 + timedelta(hours=3))
    assert [(q["rule"], q["state"], q["indicator"], q["severity"]) for q in queued] == [("source-down:gone", "firing", "source_health", "high")]
    assert "HTTP 404" in queued[0]["summary"] and "Gone (gone) is down" in queued[0]["summary"]
    # Evaluated again: nothing new until the repeat interval; then a repeat.
    assert pipeline.evaluate(settings, t0 + timedelta(hours=4)) == []
    assert [q["state"] for q in pipeline.evaluate(settings, t0 + timedelta(hours=27))] == ["repeat"]

    # The feed comes back: the next evaluation resolves the alert.
    feed_server.serve("/gone.xml", GOOD)
    pipeline.fetch_stage(settings, [{"source_id": "gone", "url": feed_server.url("/gone.xml"), "lang": "en"}])
    pipeline.load(settings, t0 + timedelta(hours=28))
    assert [q["state"] for q in pipeline.evaluate(settings, t0 + timedelta(hours=28))] == ["resolved"]

    got = [(s, ch, rule, astate) for s, ch, rule, _, astate, _ in ops_notifications(settings)]
    assert got == [("firing", "#ops-test", "source-down:gone", "resolved"), ("repeat", "#ops-test", "source-down:gone", "resolved"),
                   ("resolved", "#ops-test", "source-down:gone", "resolved")]
    # Delivered like any alert (the local sink when Slack is not configured).
    report = pipeline.deliver(settings)
    assert report.as_dict()["sent"] == 3


def test_health_table_and_a_silent_source(tmp_path, settings, feed_server):
    """48 hourly items, then nothing: silent after max(silent_min, 8 x the 1 h usual gap)."""
    settings.feeds = feeds_file(tmp_path, [{"id": "wire", "name": "Wire", "lang": "en", "url": feed_server.url("/w.xml")}])
    start = datetime(2026, 2, 1, tzinfo=timezone.utc)
    pipeline.due_sources(settings, start)  # registers the source
    for i in range(48):
        t = start + timedelta(hours=i)
        art = make_article("wire", "en", f"Story {i}", "text", f"https://w.example/{i}", f"g{i}", t - timedelta(minutes=10), None, t)
        pipeline.stage(settings, dict(source_id="wire", url="u", status="ok", http_status=200, started_at=t.isoformat(), finished_at=t.isoformat()), [art])
    last = start + timedelta(hours=47)
    pipeline.load(settings, last)

    with db.connect(settings.warehouse) as con:
        (h,) = source_health(con, last + timedelta(hours=1), HealthSettings())
        assert (h.items_24h, h.items_7d, h.items_30d, h.median_lag_s, h.consecutive_failures) == (23, 48, 48, 600.0, 0)
        assert h.usual_gap == timedelta(hours=1) and h.problem is None
        (h,) = source_health(con, last + timedelta(hours=13), HealthSettings())
        assert h.problem == "silent" and h.detail == "nothing new for 13h; it usually brings an item every 1.0h"
        # a stricter setting: silent after 3 quiet hours
        (h,) = source_health(con, last + timedelta(hours=4), HealthSettings(silent_min=3600, silent_factor=3))
        assert h.problem == "silent"
        # the view answers the same numbers as of now
        assert con.execute("SELECT items_30d FROM source_health").fetchone() == (0,)  # all older than 30 days by now

    assert [q for q in pipeline.evaluate(settings, last + timedelta(hours=11)) if q["indicator"] == "source_health"] == []
    queued = [q for q in pipeline.evaluate(settings, last + timedelta(hours=13)) if q["indicator"] == "source_health"]
    assert [(q["rule"], q["state"], q["severity"]) for q in queued] == [("source-silent:wire", "firing", "medium")]


def test_sources_status_marks_unhealthy_sources(tmp_path, feed_server, settings, monkeypatch, capsys):
    settings.feeds = feeds_file(tmp_path, [
        {"id": "good", "name": "Good", "lang": "en", "url": feed_server.serve("/good.xml", GOOD)},
        {"id": "gone", "name": "Gone", "lang": "en", "url": feed_server.url("/gone.xml")},
        {"id": "off", "name": "Off", "lang": "ar", "url": feed_server.url("/off.xml"), "enabled": False},
    ], health={"down_after": "1s"})
    poll(settings, datetime.now(timezone.utc))
    time.sleep(1.2)  # let the failing source pass its 1 s down_after on the real clock
    monkeypatch.setenv("MARSAD_FEEDS", str(settings.feeds))
    assert main(["sources", "status", "--db", str(settings.warehouse)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[1]: line for line in out[1:-1]}
    assert rows["gone"].startswith("!!") and "DOWN: every poll has failed" in rows["gone"] and "HTTP 404" in rows["gone"]
    assert rows["good"].startswith("ok ") and " ok " in rows["good"] and "DOWN" not in rows["good"]
    assert rows["off"].startswith("--") and "disabled" in rows["off"]
    assert out[-1] == "3 source(s): 1 failing, 1 ok, 1 disabled; 1 unhealthy (marked !!)"


def test_health_settings_are_validated_with_file_and_line(tmp_path):
    from sources.configfile import ConfigError
    from sources.registry import load_registry

    path = tmp_path / "feeds.yaml"
    path.write_text("health:\n  down_after: soon\n  chanel: '#x'\nfeeds:\n  - id: a1\n    name: A\n    lang: en\n    url: https://a.example/f\n")
    try:
        load_registry(path)
    except ConfigError as exc:
        problems = exc.problems
    assert f"{path}:2: health.down_after: 'soon' is not a duration like 15m, 72h or 14d" in problems
    assert f"{path}:3: health.chanel: unknown field (check the spelling)" in problems


def _status(settings, monkeypatch, capsys) -> tuple[dict[str, str], str]:
    monkeypatch.setenv("MARSAD_FEEDS", str(settings.feeds))
    assert main(["sources", "status", "--db", str(settings.warehouse)]) == 0
    out = capsys.readouterr().out.splitlines()
    return {line.split()[1]: line for line in out[1:-1]}, out[-1]


def test_a_feed_that_never_answered_is_failing_not_ok_even_before_it_counts_as_down(tmp_path, feed_server, settings, monkeypatch, capsys):
    settings.feeds = feeds_file(tmp_path, [
        {"id": "nope1", "name": "Nope", "lang": "en", "url": feed_server.url("/missing1.xml")},
        {"id": "nope2", "name": "Nope", "lang": "ar", "url": feed_server.url("/missing2.xml")},
    ], health={"down_after": "2h"})
    poll(settings, datetime.now(timezone.utc))
    rows, summary = _status(settings, monkeypatch, capsys)
    for sid in ("nope1", "nope2"):
        assert rows[sid].startswith("!!") and " failing " in rows[sid], rows[sid]
        assert "has never succeeded" in rows[sid] and "HTTP 404" in rows[sid]
    assert summary == "2 source(s): 2 failing; 2 unhealthy (marked !!)"


def test_a_feed_id_given_a_new_url_starts_afresh(tmp_path, feed_server, settings, monkeypatch, capsys):
    settings.feeds = feeds_file(tmp_path, [{"id": "wire", "name": "Wire", "lang": "en", "url": feed_server.url("/old.xml"), "interval": "15m"}])
    t0 = datetime.now(timezone.utc)
    for k in range(3):  # three failures (polled now, on the real clock): the backoff reaches 15m * 2^2 * (0.8..1.2)
        poll(settings, t0 + timedelta(hours=k))
    t1 = t0 + timedelta(minutes=10)
    assert pipeline.due_sources(settings, t1) == []  # backing off
    settings.feeds = feeds_file(tmp_path, [{"id": "wire", "name": "Wire", "lang": "en", "url": feed_server.serve("/new.xml", GOOD), "interval": "15m"}])
    due = pipeline.due_sources(settings, t1)
    assert [(d["source_id"], d["url"], d["etag"]) for d in due] == [("wire", feed_server.url("/new.xml"), None)]  # due now, no old validators
    with db.connect(settings.warehouse, read_only=True) as con:
        (h,) = source_health(con, t1)
    assert (h.consecutive_failures, h.last_error, h.failing_since) == (0, None, None)
    pipeline.fetch_stage(settings, due)
    pipeline.load(settings, t1)
    with db.connect(settings.warehouse, read_only=True) as con:
        (h,) = source_health(con, t1 + timedelta(minutes=1))
    assert (h.last_status, h.consecutive_failures) == ("ok", 0)


def test_feeds_removed_from_the_registry_leave_status_and_come_back_when_re_added(tmp_path, feed_server, settings, monkeypatch, capsys):
    feeds = [{"id": f"f{i}", "name": f"F{i}", "lang": "en", "url": feed_server.serve(f"/f{i}.xml", GOOD)} for i in range(3)]
    settings.feeds = feeds_file(tmp_path, feeds)
    poll(settings, datetime.now(timezone.utc))
    settings.feeds = feeds_file(tmp_path, feeds[:1])
    rows, summary = _status(settings, monkeypatch, capsys)
    assert list(rows) == ["f0"]
    assert summary.endswith("; 2 removed from the feeds file not shown (their articles are kept)")
    with db.connect(settings.warehouse, read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT source_id) FROM articles").fetchone()[0] == 3
    settings.feeds = feeds_file(tmp_path, feeds[:2])
    rows, summary = _status(settings, monkeypatch, capsys)
    assert sorted(rows) == ["f0", "f1"] and "1 removed" in summary


def test_an_acknowledged_source_down_alert_does_not_repeat_but_still_resolves(tmp_path, feed_server, settings, slack):
    """The bug of three lifecycles: `marsad ack` promised no more repeats, but source health
    queued its own repeat regardless. One lifecycle: acked, no repeat; recovery still told."""
    from alerts.delivery import SlackSink, slack_client
    from alerts.lifecycle import ack

    sink = SlackSink(slack_client(slack.state.token, slack.base_url, timeout=2))
    settings.feeds = feeds_file(tmp_path, [
        {"id": "gone", "name": "Gone", "lang": "en", "url": feed_server.url("/gone.xml"), "interval": "5m"},
    ], health={"down_after": "2h", "channel": "#marsad-ops", "repeat": "6h"})
    t0 = datetime.now(timezone.utc)
    poll(settings, t0)
    (fired,) = pipeline.evaluate(settings, t0 + timedelta(hours=3))
    assert fired["state"] == "firing" and fired["alert_id"]
    pipeline.deliver(settings, sink)
    (root,) = slack.state.messages["C0OPS"]
    (actions,) = [b for b in root["blocks"] if b["type"] == "actions"]
    assert actions["block_id"] == f"marsad_actions:{fired['alert_id']}"
    assert [e["action_id"] for e in actions["elements"]] == ["marsad_ack", "marsad_silence_6h", "marsad_silence_24h"]
    assert root["blocks"][0]["text"]["text"].startswith("Source health · high")

    with db.connect(settings.warehouse) as con:
        ack(con, fired["alert_id"], "U0OPS", "looking at it", t0 + timedelta(hours=4))
    # Far past the 6 h repeat interval, still down: nothing queued, nothing posted.
    for hours in (10, 16, 40):
        assert pipeline.evaluate(settings, t0 + timedelta(hours=hours)) == []
    pipeline.deliver(settings, sink)
    assert len(slack.state.messages["C0OPS"]) == 1

    # Unacknowledged, the same source repeats (the interval is honoured, not just ignored).
    with db.connect(settings.warehouse) as con:
        con.execute("UPDATE alerts SET acked_at = NULL, acked_by = NULL")
    assert [q["state"] for q in pipeline.evaluate(settings, t0 + timedelta(hours=41))] == ["repeat"]
    with db.connect(settings.warehouse) as con:
        ack(con, fired["alert_id"], "U0OPS", None, t0 + timedelta(hours=41))

    # It recovers: the resolution is told, acked or not, in the alert's thread.
    feed_server.serve("/gone.xml", GOOD)
    pipeline.fetch_stage(settings, [{"source_id": "gone", "url": feed_server.url("/gone.xml"), "lang": "en"}])
    pipeline.load(settings, t0 + timedelta(hours=42))
    assert [q["state"] for q in pipeline.evaluate(settings, t0 + timedelta(hours=42))] == ["resolved"]
    pipeline.deliver(settings, sink)
    msgs = slack.state.messages["C0OPS"]
    assert [m.get("thread_ts") for m in msgs[1:]] == [root["ts"], root["ts"]]  # the repeat, the resolution
    assert msgs[0].get("edited") and msgs[0]["blocks"][0]["text"]["text"].startswith("RESOLVED · Source health")


def test_the_view_says_silent_where_ops_were_paged_and_ok_once_a_new_item_arrives(tmp_path, settings, feed_server):
    """The warehouse alone cannot judge silence (its thresholds are in feeds.yaml): the view
    reads what the last evaluation judged, until an item newer than that verdict arrives."""
    settings.feeds = feeds_file(tmp_path, [{"id": "wire", "name": "Wire", "lang": "en", "url": feed_server.url("/w.xml")}])
    now = datetime.now(timezone.utc)
    start = now - timedelta(hours=72)
    pipeline.due_sources(settings, start)

    def item(i, t):
        art = make_article("wire", "en", f"Story {i}", "text", f"https://w.example/{i}", f"g{i}", t - timedelta(minutes=10), None, t)
        pipeline.stage(settings, dict(source_id="wire", url="u", status="ok", http_status=200, started_at=t.isoformat(), finished_at=t.isoformat()), [art])

    for i in range(48):  # hourly, then 25 quiet hours
        item(i, start + timedelta(hours=i))
    pipeline.load(settings, start + timedelta(hours=47))

    def view():
        with db.connect(settings.warehouse, read_only=True) as con:
            return con.execute("SELECT health, judged_problem, judged_detail FROM source_health").fetchone()

    assert view() == ("stale", None, None)  # no success for 3 intervals, and nothing judged yet
    queued = [q for q in pipeline.evaluate(settings, now) if q["indicator"] == "source_health"]
    assert [(q["rule"], q["state"]) for q in queued] == [("source-silent:wire", "firing")]
    health, problem, detail = view()
    assert (health, problem) == ("silent", "silent") and detail.startswith("nothing new for 1.0d")

    time.sleep(0.01)
    later = datetime.now(timezone.utc)  # after the verdict, and not in the future (the view reads as of now())
    item(48, later)
    pipeline.load(settings, later)
    assert view()[0] == "ok"  # the new item is newer than the verdict
    queued = [q for q in pipeline.evaluate(settings, later) if q["indicator"] == "source_health"]
    assert [(q["rule"], q["state"]) for q in queued] == [("source-silent:wire", "resolved")]
    assert view() == ("ok", None, "")
