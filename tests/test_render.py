"""Alert messages list events (newest first, with every report), name the indicator, stay
inside Slack's limits, and carry the buttons of the Slack interaction contract."""
import re

from alerts.render import (ACK, BLOCKS_MAX, HEADER_MAX, NOT_EVENT, SECTION_MAX, SILENCE_6H, SILENCE_24H, MessageState, render)

AR = "هجوم بطائرة مسيرة على قاعدة عين الأسد غرب العراق"
EN = "Drone attack on Ain al-Asad air base in western Iraq"


def report(event, i, at, lang="en", title=None, source=None, url=None):
    return {"event_id": event, "article_id": f"{event}-a{i}", "guid": f"g{event}{i}", "source_id": f"s{i}",
            "source": source or f"Outlet {i}", "reliability": "B", "lang": lang, "title": title or (AR if lang == "ar" else EN),
            "url": url or f"https://news{i}.example/{event}/{i}", "published_at": at}


def payload(evidence, kind="threshold", state="firing", alert_id="al1", **kw):
    events = sorted({e["event_id"] for e in evidence})
    return {"alert_id": alert_id, "indicator": "militia_attack_us_forces", "indicator_name": "Militia attack on US forces",
            "rule": "militia-attack-campaign", "kind": kind, "state": state, "at": "2026-03-01T12:00:00+00:00", "severity": "high",
            "summary": f"Militia attack on US forces: {len(events)} events in 3d (threshold 3)", "rationale": "three attacks in three days",
            "facts": {"window": "3d", "events": len(events), "threshold": 3}, "events": events,
            "corroboration": {"articles": len(evidence), "outlets": 2, "languages": ["ar", "en"],
                              "events": [{"event_id": e, "place": "Ain al-Asad", "actor": "Islamic Resistance in Iraq", "weapon": "drone"}
                                         for e in events]},
            "evidence": evidence, **kw}


def sections(blocks):
    return [b for b in blocks if b.get("block_id", "").startswith("marsad_event:")]


def test_one_line_per_event_newest_first_with_every_report_and_the_indicator_name():
    # Three reports of one base attack (two outlets, two languages) and a later attack elsewhere.
    ev = [report("e1", 1, "2026-02-27T08:00:00+00:00", "ar"), report("e1", 2, "2026-02-27T08:30:00+00:00"),
          report("e1", 3, "2026-02-27T09:00:00+00:00", "ar", source="Outlet 1"),
          report("e2", 4, "2026-02-28T20:00:00+00:00", title="Rocket attack on Harir base")]
    text, blocks = render(payload(ev))
    assert blocks[0]["text"]["text"] == "Militia attack on US forces · high"
    secs = sections(blocks)
    assert [s["block_id"] for s in secs] == ["marsad_event:e2", "marsad_event:e1"]  # events, newest first
    e1 = secs[1]["text"]["text"]
    assert e1.startswith("*2026-02-27 08:00 UTC* · <https://news1.example/e1/1|" + AR + ">")  # first report
    assert "where: Ain al-Asad · who: Islamic Resistance in Iraq · weapon: drone" in e1
    assert "3 reports from 2 outlets: Outlet 1, Outlet 2 · ar, en" in e1
    for i in (1, 2, 3):
        assert f"<https://news{i}.example/e1/{i}|" in e1  # a link to each report
    # The fallback says the same: the name, the events newest first.
    assert "Militia attack on US forces" in text
    assert text.index("Rocket attack on Harir base") < text.index(AR)


def test_buttons_of_a_rule_alert_follow_the_contract():
    ev = [report("e1", 1, "2026-02-27T08:00:00+00:00"), report("e2", 2, "2026-02-28T08:00:00+00:00")]
    _, blocks = render(payload(ev))
    (actions,) = [b for b in blocks if b["type"] == "actions"]
    assert actions["block_id"] == "marsad_actions:al1"
    assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [(ACK, "al1"), (SILENCE_6H, "al1"), (SILENCE_24H, "al1")]
    assert [(s["accessory"]["action_id"], s["accessory"]["value"]) for s in sections(blocks)] == [(NOT_EVENT, "al1|e2"), (NOT_EVENT, "al1|e1")]
    # Follow-ups in the thread: Not an event on each event they tell, Acknowledge and Silence
    # only on the first message.
    for state in ("update", "repeat"):
        _, b = render(payload(ev, state=state))
        assert not [x for x in b if x["type"] == "actions"], state
        assert [(s["accessory"]["action_id"], s["accessory"]["value"]) for s in sections(b)] == [(NOT_EVENT, "al1|e2"), (NOT_EVENT, "al1|e1")]
    # Resolved messages, digests and deadline notices: no buttons.
    for p, kw in ((payload(ev), {"resolved_at": "2026-03-02T00:00:00+00:00"}), (payload(ev, state="resolved"), {}),
                  (payload([], kind="deadline"), {}), (payload(ev, alert_id=None), {})):
        _, b = render(p, **kw)
        assert not [x for x in b if x["type"] == "actions"] and not [s for s in sections(b) if "accessory" in s], (p["state"], kw)
    # Source health and config errors: Acknowledge and Silence, no Not-an-event.
    _, b = render(payload(ev, kind="source_down"))
    assert [e["action_id"] for e in b[-2]["elements"]] == [ACK, SILENCE_6H, SILENCE_24H]
    assert not [s for s in sections(b) if "accessory" in s]


def test_state_draws_ack_silence_and_flagged_events():
    ev = [report("e1", 1, "2026-02-27T08:00:00+00:00"), report("e2", 2, "2026-02-28T08:00:00+00:00")]
    state = MessageState(acked_by="U0ALICE", acked_at="2026-03-01T12:05:00+00:00")
    text, blocks = render(payload(ev), state=state)
    (actions,) = [b for b in blocks if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == [SILENCE_6H, SILENCE_24H]
    assert "Acknowledged by <@U0ALICE>" in str(blocks) and "Acknowledged by <@U0ALICE>" in text
    state = MessageState(acked_by="U0ALICE", silenced_until="2026-03-01T18:05:00+00:00", silenced_by="U0BOB", not_events={"e1": "U0BOB"})
    text, blocks = render(payload(ev), state=state)
    assert not [b for b in blocks if b["type"] == "actions"]  # nothing left to press
    assert "Silenced until 2026-03-01 18:05 UTC by <@U0BOB>" in str(blocks)
    e2, e1 = sections(blocks)
    assert "accessory" in e2 and "accessory" not in e1
    assert e1["text"]["text"].startswith("~*2026-02-27 08:00 UTC* · <https://news1.example/e1/1|") and "flagged not an event by <@U0BOB>" in e1["text"]["text"]
    # A user name that is not a Slack id (the CLI's) cannot become a mention.
    _, blocks = render(payload(ev), state=MessageState(acked_by="<!channel>"))
    assert "<!channel>" not in str(blocks) and "&lt;!channel&gt;" in str(blocks)


def test_many_events_and_long_titles_stay_within_slack_limits_and_links_stay_whole():
    long_ar, long_en = "ع" * 4000, "x" * 5000
    ev = []
    for k in range(60):  # 60 events, some with 40 reports, long titles, long urls
        for i in range(40 if k % 7 == 0 else 2):
            ev.append(report(f"e{k:02d}", i, f"2026-02-{1 + k % 27:02d}T{k % 24:02d}:{i % 60:02d}:00+00:00", "ar" if i % 2 else "en",
                             title=long_ar if i % 2 else long_en, url=f"https://n{i}.example/" + "p" * (k * 10)))
    p = payload(ev)
    p["indicator_name"] = "N" * 400
    text, blocks = render(p, run_url="http://127.0.0.1:8080/dags/marsad_evaluate/runs/r1")
    assert len(blocks) <= BLOCKS_MAX and len(blocks[0]["text"]["text"]) <= HEADER_MAX
    for b in blocks:
        texts = [b["text"]["text"]] if b.get("text", {}).get("type") == "mrkdwn" else []
        texts += [e["text"] for e in b.get("elements", []) if e.get("type") == "mrkdwn"] + [f["text"] for f in b.get("fields", [])]
        for t in texts:
            assert len(t) <= SECTION_MAX
            assert "<" not in re.sub(r"<[^<>]*>", "", t), "a link cut open"
    assert "and 50 more event(s)" in str(blocks) and "and 50 more event(s)" in text
    assert re.search(r"\+\d+ more", str(sections(blocks)))  # reports that did not fit are counted
    assert len(text) <= 3000 and "<" not in re.sub(r"<[^<>]*>", "", text)


def test_the_deadline_notice_is_a_notice_drawn_by_the_same_renderer_and_held_by_silences(tmp_path):
    from datetime import datetime, timedelta, timezone

    from alerts.lifecycle import add_silence, deadline_notice, expire_silence, silenced_in_read_copy
    from warehouse import db
    from warehouse.publish import publish

    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    notice = deadline_notice("marsad_ingest", "manual__1", "10m", "12:00:00 UTC", "running", now)
    text, blocks = render(notice, "http://127.0.0.1:8080/dags/marsad_ingest/runs/manual__1")
    assert "marsad_ingest run manual__1 has not finished 10m after it was queued" in text
    assert "<http://127.0.0.1:8080/dags/marsad_ingest/runs/manual__1|Airflow run>" in text
    assert blocks[0]["text"]["text"] == "Marsad pipeline · medium · deadline" and not [b for b in blocks if b["type"] == "actions"]

    wh, copy = tmp_path / "wh.duckdb", tmp_path / "read.duckdb"
    assert silenced_in_read_copy(notice, str(copy), now) is None  # no copy yet: post
    with db.connect(wh) as con:
        sid = add_silence(con, "rule", "ingest-deadline", 3600, "planned backfill", "ops", now - timedelta(minutes=5))
    publish(wh, copy)
    assert silenced_in_read_copy(notice, str(copy), now) is True
    assert silenced_in_read_copy(notice, str(copy), now + timedelta(hours=2)) is False  # the silence is over
    with db.connect(wh) as con:
        expire_silence(con, sid, now - timedelta(minutes=1))
    publish(wh, copy)
    assert silenced_in_read_copy(notice, str(copy), now) is False
