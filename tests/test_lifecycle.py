"""The alert lifecycle against the local Slack Web API server: fire, thread, resolve (edit the
parent), repeat, silences, acknowledgements, routing, and the daily digest with its chart."""
from datetime import datetime, timedelta, timezone

import pytest

from alerts.delivery import SlackSink, deliver, slack_client
from alerts.evaluate import evaluate
from alerts.lifecycle import LifecycleError, ack, add_silence, expire_silence
from alert_data import add_event as _add_event, watched_source
from alerts.rules import Rule, RuleDefaults, RulePack
from warehouse import db
from warehouse.events import EVENT_COLUMNS
from warehouse.load import bulk_insert

T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)


@pytest.fixture
def con(tmp_path):
    with db.connect(tmp_path / "wh.duckdb") as c:
        watched_source(c, T0, lang="ar")
        yield c


def add_event(con, eid, t, indicator="ind", title="هجوم بطائرة مسيرة على قاعدة حرير"):
    _add_event(con, eid, t, indicator, title, lang="ar")


def pack(severity="high", routes=None, **kw):
    return RulePack(defaults=RuleDefaults(routes=routes or {}), rules=[Rule(id="r1", indicator="ind", rationale="a rule for the test", severity=severity, **kw)])


def cycle(con, p, t, sink):
    evaluate(con, p, t)
    return deliver(con, sink)


@pytest.fixture
def sink(slack):
    return SlackSink(slack_client(slack.state.token, slack.base_url, timeout=2), run_url="http://127.0.0.1:8080/dags/marsad_evaluate/runs/r1")


def test_fire_thread_resolve_edits_the_parent(con, slack, sink):
    p = pack(kind="tripwire", window="6h")
    add_event(con, "e1", T0 + timedelta(hours=1))
    cycle(con, p, T0 + timedelta(hours=1), sink)
    add_event(con, "e2", T0 + timedelta(hours=2))
    cycle(con, p, T0 + timedelta(hours=2), sink)
    cycle(con, p, T0 + timedelta(hours=9), sink)  # both events out of the 6 h window
    msgs = slack.state.messages["C0ALERTS"]
    parent, update, resolved = msgs
    assert parent["thread_ts"] is None and update["thread_ts"] == parent["ts"] and resolved["thread_ts"] == parent["ts"]
    assert "هجوم بطائرة مسيرة" in str(update["blocks"])  # new evidence, Arabic as written
    (edit,) = slack.calls("chat.update")
    assert edit.params["ts"] == parent["ts"] and edit.params["channel"] == "C0ALERTS"
    assert parent.get("edited") and parent["blocks"][0]["text"]["text"].startswith("RESOLVED")
    assert "dags/marsad_evaluate/runs/r1" in str(slack.posts()[0]["blocks"][-1])  # context line links the Airflow run
    assert con.execute("SELECT state FROM alerts").fetchone()[0] == "resolved"


def test_fields_show_rule_window_count_and_days_since_previous(con, slack, sink):
    add_event(con, "old", T0 + timedelta(hours=1))
    add_event(con, "e1", T0 + timedelta(days=5))
    add_event(con, "e2", T0 + timedelta(days=5, hours=1))
    cycle(con, pack(kind="threshold", count=2, window="24h"), T0 + timedelta(days=5, hours=2), sink)
    fields = " ".join(f["text"] for f in slack.posts()[0]["blocks"][2]["fields"])
    for expected in ("*Rule*\nr1 (threshold)", "*Window*\n1d", "*Events*\n2", "*Threshold*\n2", "*Days since previous*\n5.0", "*Corroboration*\n2 report(s) from 1 outlet(s), ar"):
        assert expected in fields, fields
    assert "reliability B" in str(slack.posts()[0]["blocks"])


def test_routing_by_severity(con, slack, sink):
    add_event(con, "e1", T0 + timedelta(hours=1))
    cycle(con, pack(kind="tripwire", severity="critical", routes={"critical": "#marsad-ops"}), T0 + timedelta(hours=1), sink)
    assert slack.posts()[0]["channel"] == "#marsad-ops"
    assert "C0OPS" in slack.state.messages


def test_ack_stops_repeats_but_not_resolution(con, slack, sink):
    p = pack(kind="tripwire", window="3d", repeat="12h")
    add_event(con, "e1", T0 + timedelta(hours=1))
    cycle(con, p, T0 + timedelta(hours=1), sink)
    cycle(con, p, T0 + timedelta(hours=13), sink)
    assert [m.get("thread_ts") is not None for m in slack.state.messages["C0ALERTS"]] == [False, True]  # one repeat
    alert_id = con.execute("SELECT alert_id FROM alerts").fetchone()[0]
    ack(con, alert_id, "ops-oncall", "looking into it", T0 + timedelta(hours=14))
    cycle(con, p, T0 + timedelta(hours=25), sink)
    cycle(con, p, T0 + timedelta(hours=37), sink)
    assert len(slack.state.messages["C0ALERTS"]) == 2  # no more repeats
    cycle(con, p, T0 + timedelta(hours=74), sink)
    assert len(slack.state.messages["C0ALERTS"]) == 3  # the resolution still posts
    with pytest.raises(LifecycleError, match="resolved, not firing"):
        ack(con, alert_id, "x", None, T0 + timedelta(hours=75))


def test_silence_holds_back_and_keeps_the_record(con, slack, sink):
    p = pack(kind="tripwire", window="6h")
    sid = add_silence(con, "indicator", "ind", 4 * 3600, "planned exercise", "analyst", T0)
    add_event(con, "e1", T0 + timedelta(hours=1))
    rep = cycle(con, p, T0 + timedelta(hours=1), sink)
    assert rep.silenced == 1 and slack.posts() == []
    # After the silence: new evidence for the same alert is posted as the first message
    add_event(con, "e2", T0 + timedelta(hours=5))
    cycle(con, p, T0 + timedelta(hours=5), sink)
    (post,) = slack.posts()
    assert post.get("thread_ts") is None
    assert dict(con.execute("SELECT seq, status FROM notifications").fetchall()) == {1: "silenced", 2: "sent"}
    with pytest.raises(LifecycleError):
        expire_silence(con, sid, T0 + timedelta(hours=6))  # already over


def test_fully_silenced_alert_does_not_post_a_lone_resolution(con, slack, sink):
    p = pack(kind="tripwire", window="2h")
    add_silence(con, "rule", "r1", 10 * 3600, "noisy source being fixed", "admin", T0)
    add_event(con, "e1", T0 + timedelta(hours=1))
    cycle(con, p, T0 + timedelta(hours=1), sink)
    cycle(con, p, T0 + timedelta(hours=12), sink)  # resolves after the silence ended
    assert slack.posts() == []
    assert {r[0] for r in con.execute("SELECT status FROM notifications").fetchall()} == {"silenced"}


def test_daily_digest_posts_counts_unhealthy_sources_and_a_chart(con, slack, sink, tmp_path):
    from marsad.pipeline import Settings, queue_digest

    add_event(con, "e1", T0 + timedelta(hours=20), indicator="militia_attack_us_forces")
    con.execute("INSERT INTO sources (source_id, name, lang, url, interval_s, reliability, enabled, updated_at) VALUES ('s2', 'Dead Outlet', 'en', 'http://y', 900, 'C', true, ?)", [T0])
    con.execute("INSERT INTO source_state (source_id, last_status, consecutive_failures, last_error) VALUES ('s2', 'error', 7, 'HTTP 503')")
    con.close()
    settings = Settings.from_env(tmp_path / "wh.duckdb")
    now = T0 + timedelta(hours=23)
    queue_digest(settings, now)
    queue_digest(settings, now + timedelta(minutes=5))  # the same day: nothing new is queued
    with db.connect(settings.warehouse) as c:
        rep = deliver(c, sink)
    assert rep.sent == 1
    (post,) = slack.posts()
    body = str(post["blocks"])
    assert "*Militia attack on US forces (Iraq, Syria, Jordan)* 1 event(s)" in body and "Dead Outlet" in body and "HTTP 503" in body
    (upload,) = slack.state.uploads.values()
    assert upload["data"][:8] == b"\x89PNG\r\n\x1a\n" and upload["filename"].endswith(".png")
    chart_msg = slack.state.messages["C0ALERTS"][-1]
    assert chart_msg["files"] and chart_msg["thread_ts"] == slack.state.messages["C0ALERTS"][0]["ts"]
    assert [c.method for c in slack.state.requests if c.method.startswith(("files.", "upload"))] == [
        "files.getUploadURLExternal", "upload", "files.completeUploadExternal"]


def test_daily_digest_counts_stored_events_while_the_indicator_pack_is_broken(con, slack, sink, tmp_path):
    # No valid indicator pack (and no last good copy): the digest still lists the indicators the
    # warehouse holds events of, a quiet one with its 0, rather than only the day's.
    import dataclasses

    from marsad.pipeline import Settings, queue_digest

    add_event(con, "e0", T0 - timedelta(days=3), indicator="us_strike_militia")
    add_event(con, "e1", T0 + timedelta(hours=20), indicator="militia_attack_us_forces")
    con.close()
    broken = tmp_path / "indicators"
    broken.mkdir()
    (broken / "militia_attack_us_forces.yaml").write_text("id: [unclosed\n")
    settings = dataclasses.replace(Settings.from_env(tmp_path / "wh.duckdb"), indicators=broken)
    assert settings.guarded_classifier(settings.guard()) is None
    result = queue_digest(settings, T0 + timedelta(hours=23))
    counts = {k: v["events"] for k, v in result["payload"]["counts"].items()}
    assert counts == {"militia_attack_us_forces": 1, "us_strike_militia": 0}
    with db.connect(settings.warehouse) as c:
        deliver(c, sink)
    bodies = [str(p.get("blocks")) + str(p.get("text")) for p in slack.posts()]
    assert any("config error" in b and "militia_attack_us_forces.yaml:2" in b for b in bodies)  # ops hear why
    (digest,) = [b for b in bodies if "event(s)" in b]
    assert "militia_attack_us_forces* 1 event(s)" in digest


def test_timeout_after_slack_posted_is_recovered_not_reposted(con, slack):
    add_event(con, "e1", T0 + timedelta(hours=1))
    evaluate(con, pack(kind="tripwire"), T0 + timedelta(hours=1))
    slow = SlackSink(slack_client(slack.state.token, slack.base_url, timeout=1))
    slack.fail_next("chat.postMessage", ("stall", 2))
    rep = deliver(con, slow, backoff_s=0.01)
    assert rep.recovered == 1 and rep.sent == 0
    assert len(slack.state.messages["C0ALERTS"]) == 1 and len(slack.calls("chat.postMessage")) == 1
    assert len(slack.calls("conversations.history")) == 1


def add_report(con, eid, aid, source, lang, t, title, entities=(), frame=None, indicator="militia_attack_us_forces"):
    con.execute("INSERT INTO articles (article_id, source_id, guid, url, canonical_url, title, summary, lang, published_at, fetched_at, title_folded, text_folded, content_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, '', ?, ?, ?, '', '', ?)", [aid, source, aid, f"https://{source}.example/{aid}", None, title, lang, t, t, aid])
    con.execute("INSERT INTO event_articles VALUES (?, ?, ?, ?)", [eid, aid, "first" if aid.endswith("-1") else "same_content", t])
    con.execute("INSERT INTO article_indicators (article_id, indicator, frame, article_published_at) VALUES (?, ?, ?, ?)", [aid, indicator, frame, t])
    for gazetteer, entity, kind, role in entities:
        con.execute("INSERT INTO article_entities VALUES (?, ?, ?, ?, ?, ?)", [aid, gazetteer, entity, kind, role, t])


def test_messages_list_events_newest_first_with_place_actor_weapon_and_every_report(con, slack, sink):
    """Three reports of one drone attack (two outlets, Arabic and English) are one event line,
    not three; the later rocket attack comes first; the header names the indicator."""
    import json

    ind = "militia_attack_us_forces"
    con.execute("INSERT INTO sources (source_id, name, lang, url, interval_s, reliability, enabled, updated_at) VALUES ('s2', 'Wire Two', 'en', 'http://y', 900, 'A', true, ?)", [T0])
    t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(hours=5)
    for eid, t, title in (("e1", t1, "هجوم بطائرة مسيرة على قاعدة عين الأسد"), ("e2", t2, "Rockets hit Harir base")):
        bulk_insert(con, "events", [dict(event_id=eid, indicator=ind, first_report_at=t, first_seen_at=t, title=title, created_at=t)], EVENT_COLUMNS)
    drone = [("places", "ain_al_asad", "us_base", "target"), ("places", "zummar", "district", "launch"),
             ("actors", "us_forces", "us_military", None), ("actors", "kataib_hezbollah", "militia", None), ("weapons", "drone", "weapon", None)]
    add_report(con, "e1", "e1-1", "s1", "ar", t1, "هجوم بطائرة مسيرة على قاعدة عين الأسد", drone)
    add_report(con, "e1", "e1-2", "s2", "en", t1 + timedelta(minutes=20), "Drone attack on Ain al-Asad air base", drone[:1] + drone[2:3])
    add_report(con, "e1", "e1-3", "s1", "ar", t1 + timedelta(minutes=40), "الهجوم على عين الأسد", drone[:1])
    add_report(con, "e2", "e2-1", "s2", "en", t2, "Rockets hit Harir base", [("places", "harir", "us_base", "target"), ("weapons", "rocket_missile", "weapon", None)],
               frame=json.dumps({"actor_entity": "islamic_resistance_iraq"}))
    p = RulePack(defaults=RuleDefaults(), rules=[Rule(id="campaign", indicator=ind, kind="threshold", count=2, window="24h", severity="high", rationale="two in a day")])
    cycle(con, p, T0 + timedelta(hours=6), sink)
    (post,) = slack.posts()
    header = post["blocks"][0]["text"]["text"]
    assert header == "Militia attack on US forces (Iraq, Syria, Jordan) · high" and ind not in header
    events = [b for b in post["blocks"] if b.get("block_id", "").startswith("marsad_event:")]
    assert [b["block_id"] for b in events] == ["marsad_event:e2", "marsad_event:e1"]  # one line per event, newest first
    e2, e1 = (b["text"]["text"] for b in events)
    assert "where: Harir · who: Islamic Resistance in Iraq" in e2 and "weapon: rocket" in e2  # the frame's attacker
    assert "where: Ain al-Asad · who: Kataib Hezbollah · weapon: drone" in e1  # not the launch place, not the target's forces
    assert "3 reports from 2 outlets: Outlet One, Wire Two · ar, en" in e1
    assert all(f"https://{s}.example/{a}|" in e1 for s, a in (("s1", "e1-1"), ("s2", "e1-2"), ("s1", "e1-3")))
    assert e1.startswith("*2026-06-01 01:00 UTC* · <https://s1.example/e1-1|هجوم بطائرة مسيرة على قاعدة عين الأسد>")
    assert post["text"].index("Rockets hit Harir base") < post["text"].index("هجوم بطائرة مسيرة")
    assert "Militia attack on US forces (Iraq, Syria, Jordan): 2 events in 1d" in post["text"]
    alert_id = con.execute("SELECT alert_id FROM alerts").fetchone()[0]
    assert [b["accessory"]["value"] for b in events] == [f"{alert_id}|e2", f"{alert_id}|e1"]


def test_config_errors_and_the_digest_follow_the_same_lifecycle(con, slack, sink):
    """A broken file fires once, a different error in it is an update in the same thread, it
    resolves when the file validates; a silence of ``digest`` holds the digest back."""
    from types import SimpleNamespace

    from alerts.digest import queue
    from alerts.ops import report_config_errors

    def broken(error):
        return [SimpleNamespace(file="alerts/rules.yaml", error=error, fallback="the last good rule pack is used")]

    t = T0 + timedelta(hours=1)
    assert [q["state"] for q in report_config_errors(con, t, broken("rules.yaml:3: rules.0.kind: bad"), set(), "#marsad-ops")] == ["firing"]
    assert report_config_errors(con, t + timedelta(hours=1), broken("rules.yaml:3: rules.0.kind: bad"), set(), "#marsad-ops") == []
    (upd,) = report_config_errors(con, t + timedelta(hours=2), broken("rules.yaml:9: rules.2.window: bad"), set(), "#marsad-ops")
    assert upd["state"] == "update" and "rules.yaml:9" in upd["summary"]
    (res,) = report_config_errors(con, t + timedelta(hours=3), [], {"alerts/rules.yaml"}, "#marsad-ops")
    assert res["state"] == "resolved"
    assert con.execute("SELECT count(*), count(DISTINCT alert_id) FROM notifications").fetchone() == (3, 1)  # one alert, one thread
    deliver(con, sink)
    root, *replies = slack.state.messages["C0OPS"]
    assert [r["thread_ts"] for r in replies] == [root["ts"], root["ts"]] and root["blocks"][0]["text"]["text"].startswith("RESOLVED · Configuration")

    add_silence(con, "indicator", "digest", 86400, "holiday", "ops", T0 + timedelta(hours=20))
    queued = queue(con, T0 + timedelta(hours=23), ["ind"], "#marsad-alerts")
    assert queued["status"] == "queued" and queued["payload"]["state"] == "digest" and queued["payload"]["alert_id"] is None
    assert queue(con, T0 + timedelta(hours=23, minutes=5), ["ind"], "#marsad-alerts")["status"] == "already"
    assert con.execute("SELECT count(*) FROM notifications WHERE alert_id LIKE 'digest:%'").fetchone()[0] == 1  # once a day
    rep = deliver(con, sink)
    assert rep.silenced == 1 and "C0ALERTS" not in slack.state.messages


def test_what_ops_do_outside_slack_reaches_the_message_at_the_next_delivery(con, slack, sink):
    """An acknowledgement and a silence from the CLI (not a press), then the silence expired: each
    delivery run edits the first message once to show the state as it is, and not again."""
    from alerts.lifecycle import Notice, expire_silence

    add_event(con, "e1", T0 + timedelta(hours=1))
    (queued,) = evaluate(con, pack(kind="tripwire"), T0 + timedelta(hours=1))
    alert_id = queued["alert_id"]
    assert Notice.from_payload(queued).to_payload() == queued  # the outbox payload is the typed Notice
    assert deliver(con, sink).redrawn == 0  # just posted: nothing to redraw
    (root,) = slack.posts()
    assert [e["action_id"] for e in root["blocks"][-2]["elements"]] == ["marsad_ack", "marsad_silence_6h", "marsad_silence_24h"]

    def message():
        return slack.state.messages["C0ALERTS"][0]["blocks"]

    before = message()
    assert deliver(con, sink).redrawn == 0 and message() == before  # nothing done: nothing edited
    now = datetime.now(timezone.utc)
    ack(con, alert_id, "U0ALICE", None, now)
    sid = add_silence(con, "rule", "r1", 6 * 3600, "maintenance", "U0BOB", now)
    assert deliver(con, sink).redrawn == 1
    blocks = message()
    assert not [b for b in blocks if b["type"] == "actions"]
    assert "Acknowledged by <@U0ALICE>" in str(blocks) and "Silenced until" in str(blocks) and "<@U0BOB>" in str(blocks)
    assert deliver(con, sink).redrawn == 0  # drawn once
    expire_silence(con, sid, datetime.now(timezone.utc))
    assert deliver(con, sink).redrawn == 1  # the silence is over: its buttons are back
    assert [e["action_id"] for e in [b for b in message() if b["type"] == "actions"][0]["elements"]] == [
        "marsad_silence_6h", "marsad_silence_24h"]
    assert "Silenced until" not in str(message())
