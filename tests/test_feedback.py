"""Analyst feedback counts: an event flagged "not an event" leaves every rule's counts (the
alert it made resolves, saying why, in its Slack thread), undo brings it back, the history is
kept, and the flagged reports become labelled test data that ``marsad eval`` scores."""
import json
import shutil
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from alerts import feedback
from alerts.delivery import SlackSink, deliver, slack_client
from alerts.digest import build as build_digest
from alerts.evaluate import evaluate
from alerts.rules import Rule, RuleDefaults, RulePack
from conftest import CORPORA, REPO
from marsad import cli
from warehouse import db
from warehouse.events import EVENT_COLUMNS
from warehouse.load import bulk_insert

T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)
ANALYST = "U0ANALYST1"


@pytest.fixture
def con(tmp_path):
    with db.connect(tmp_path / "wh.duckdb") as c:
        c.execute("INSERT INTO fetch_log (fetch_id, source_id, started_at, finished_at, status) VALUES ('f0', 's1', ?, ?, 'ok')", [T0, T0])
        c.execute("INSERT INTO sources VALUES ('s1', 'Outlet One', 'en', 'http://x', 900, 'B', true, ?)", [T0])
        yield c


def add_event(con, eid, t, indicator="ind", title="Drone attack on a base"):
    bulk_insert(con, "events", [dict(event_id=eid, indicator=indicator, first_report_at=t, first_seen_at=t, title=title, created_at=t)], EVENT_COLUMNS)
    con.execute("INSERT INTO articles (article_id, source_id, guid, url, canonical_url, title, summary, lang, published_at, fetched_at, title_folded, text_folded, content_hash) "
                "VALUES (?, 's1', ?, ?, ?, ?, '', 'en', ?, ?, '', '', ?)", [eid + "-a", eid, f"https://o.example/{eid}", f"https://o.example/{eid}", title, t, t, eid])
    con.execute("INSERT INTO event_articles VALUES (?, ?, 'first')", [eid, eid + "-a"])


def threshold_pack():
    return RulePack(defaults=RuleDefaults(), rules=[
        Rule(id="campaign", indicator="ind", kind="threshold", count=3, window="72h", rationale="three in three days is a campaign"),
        Rule(id="any", indicator="ind", kind="tripwire", window="72h", rationale="any event of the indicator"),
    ])


@pytest.fixture
def sink(slack):
    return SlackSink(slack_client(slack.state.token, slack.base_url, timeout=2))


def alert_states(con):
    return con.execute("SELECT rule_id, state, summary FROM alerts ORDER BY started_at, rule_id").fetchall()


def test_a_flagged_event_leaves_the_counts_and_the_alert_resolves_saying_why(con, slack, sink):
    p = threshold_pack()
    for i, h in enumerate((1, 2, 3), 1):
        add_event(con, f"e{i}", T0 + timedelta(hours=h))
    now = T0 + timedelta(hours=4)
    evaluate(con, p, now)
    deliver(con, sink)
    (campaign,) = con.execute("SELECT alert_id FROM alerts WHERE rule_id = 'campaign' AND state = 'firing'").fetchone()

    assert feedback.flag_not_event(con, "e2", campaign, ANALYST, now + timedelta(minutes=5), note="a drill, not an attack")
    assert not feedback.flag_not_event(con, "e2", campaign, "U0OTHER", now + timedelta(minutes=6))  # a second press changes nothing
    assert feedback.flagged(con) == {"e2": ANALYST}

    queued = evaluate(con, p, now + timedelta(minutes=10))
    deliver(con, sink)
    # The threshold no longer holds (2 of 3): it resolves, and says it was feedback; the
    # tripwire still holds on e1 and e3 and stays firing, quietly.
    assert [(q["rule"], q["state"]) for q in queued] == [("campaign", "resolved")]
    assert queued[0]["summary"].endswith(f"cleared: 1 event flagged not an event by <@{ANALYST}>")
    states = {r: s for r, s, _ in alert_states(con)}
    assert states == {"campaign": "resolved", "any": "firing"}
    parent = next(m for m in slack.state.messages["C0ALERTS"] if m["thread_ts"] is None and "campaign" in str(m["blocks"]))
    reply = [m for m in slack.state.messages["C0ALERTS"] if m["thread_ts"] == parent["ts"]]
    assert len(reply) == 1 and "flagged not an event by" in reply[0]["text"] and ANALYST in reply[0]["text"]

    # Undo: the event counts again, and the next evaluation fires the threshold anew.
    assert feedback.undo(con, "e2", "U0LEAD", now + timedelta(minutes=20))
    assert not feedback.undo(con, "e2", "U0LEAD", now + timedelta(minutes=21))
    assert feedback.flagged(con) == {}
    queued = evaluate(con, p, now + timedelta(minutes=30))
    assert [(q["rule"], q["state"], q["facts"]["events"]) for q in queued] == [("campaign", "firing", 3)]
    # The history is kept: one row, stamped undone, with who and when.
    (row,) = feedback.list_feedback(con, include_undone=True)
    assert (row["event_id"], row["flagged_by"], row["undone_by"], row["note"]) == ("e2", ANALYST, "U0LEAD", "a drill, not an attack")
    assert feedback.list_feedback(con) == []


def test_a_flagged_event_never_fires_and_reflagging_keeps_the_history(con):
    p = threshold_pack()
    add_event(con, "e1", T0 + timedelta(hours=1))
    feedback.flag_not_event(con, "e1", None, "alice", T0 + timedelta(hours=1, minutes=1))
    assert evaluate(con, p, T0 + timedelta(hours=2)) == []
    feedback.undo(con, "e1", "bob", T0 + timedelta(hours=3))
    feedback.flag_not_event(con, "e1", None, "carol", T0 + timedelta(hours=4))
    assert evaluate(con, p, T0 + timedelta(hours=5)) == []
    hist = feedback.list_feedback(con, include_undone=True)
    assert [(h["flagged_by"], h["undone_by"]) for h in hist] == [("carol", None), ("alice", "bob")]
    with pytest.raises(feedback.FeedbackError, match="no event 'nope'"):
        feedback.flag_not_event(con, "nope", None, "alice", T0)


def test_the_event_before_a_resumption_skips_flagged_events(con):
    """A flagged event neither breaks a quiet spell nor counts as the event before it."""
    p = RulePack(defaults=RuleDefaults(), rules=[
        Rule(id="resume", indicator="ind", kind="resumption", quiet="14d", rationale="first event after two quiet weeks")])
    add_event(con, "old", T0 + timedelta(days=1))
    add_event(con, "noise", T0 + timedelta(days=20))
    add_event(con, "new", T0 + timedelta(days=30))
    assert evaluate(con, p, T0 + timedelta(days=30, hours=1)) == []  # noise was 10 days before: no resumption
    feedback.flag_not_event(con, "noise", None, "alice", T0 + timedelta(days=30, hours=2))
    (q,) = evaluate(con, p, T0 + timedelta(days=30, hours=3))
    assert q["state"] == "firing" and q["facts"]["days_since_previous"] == 29.0 and q["events"] == ["new"]


def test_the_digest_leaves_flagged_events_out(con):
    add_event(con, "e1", T0 + timedelta(hours=1))
    add_event(con, "e2", T0 + timedelta(hours=2), title="Fireworks at a wedding")
    feedback.flag_not_event(con, "e2", None, "alice", T0 + timedelta(hours=3))
    d = build_digest(con, T0 + timedelta(hours=4), ["ind"])
    assert "Fireworks" not in json.dumps(d) and "Drone attack" in json.dumps(d)
