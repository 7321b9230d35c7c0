"""Rules say when they are armed: per rule, whether it can fire now and why not, from the
evaluator's own counts (flagged events left out), in ``marsad rules status`` and ``marsad alerts``."""
from datetime import datetime, timedelta, timezone

import pytest

from alerts import feedback
from alerts.armed import format_table, not_armed, rule_status
from alerts.evaluate import evaluate
from alerts.lifecycle import add_silence
from alerts.rules import Rule, RuleDefaults, RulePack
from marsad import cli
from warehouse import db
from warehouse.events import EVENT_COLUMNS
from warehouse.load import bulk_insert

T0 = datetime(2026, 11, 20, 6, tzinfo=timezone.utc)


def add_event(con, eid, t, indicator="ind"):
    bulk_insert(con, "events", [dict(event_id=eid, indicator=indicator, first_report_at=t, first_seen_at=t, title=eid, created_at=t)], EVENT_COLUMNS)


def watched_since(con, t):
    con.execute("INSERT INTO fetch_log (fetch_id, source_id, started_at, finished_at, status) VALUES (?, 's1', ?, ?, 'ok')", [f"f{t}", t, t])


def pack():
    return RulePack(defaults=RuleDefaults(), rules=[
        Rule(id="resume", indicator="ind", kind="resumption", quiet="14d", rationale="first event after two quiet weeks"),
        Rule(id="campaign", indicator="ind", kind="threshold", count=3, window="72h", rationale="three in three days"),
        Rule(id="any", indicator="other", kind="tripwire", rationale="any event of the other indicator"),
        Rule(id="surge", indicator="ind", kind="spike", window="24h", baseline="7d", ratio=3, count=2, rationale="a surge over the week"),
        Rule(id="silent", indicator="talks", kind="flatline", count=1, window="30d", rationale="talks have gone silent"),
        Rule(id="off", indicator="ind", kind="tripwire", enabled=False, rationale="switched off for the test"),
    ])


@pytest.fixture
def con(tmp_path):
    with db.connect(tmp_path / "wh.duckdb") as c:
        yield c


def by_rule(statuses):
    return {s["rule"]: s for s in statuses}


def test_a_fresh_warehouse_says_which_rules_wait_for_history(con):
    now = T0 + timedelta(days=5)
    s = by_rule(rule_status(con, pack(), now))
    assert s["resume"]["state"] == "not armed" and "no history yet" in s["resume"]["detail"]
    watched_since(con, T0)
    add_event(con, "e1", now - timedelta(hours=2))
    s = by_rule(rule_status(con, pack(), now))
    assert (s["resume"]["state"], s["resume"]["detail"]) == ("not armed", "resumption: armed in 9 days: history since 2026-11-20")
    assert s["resume"]["armed_at"] == (T0 + timedelta(days=14)).isoformat()
    assert (s["campaign"]["state"], s["campaign"]["detail"]) == ("armed", "threshold: 1 of 3 events in 3d")
    assert s["any"]["state"] == "armed" and s["any"]["detail"].startswith("tripwire: armed: 0 event(s) in 1d")
    assert s["surge"]["state"] == "not armed" and s["surge"]["detail"] == "spike: armed in 3 days: history since 2026-11-20"
    assert s["silent"]["state"] == "not armed" and s["silent"]["detail"] == "flatline: armed in 25 days: history since 2026-11-20"
    assert s["off"]["state"] == "disabled" and not s["off"]["armed"]
    assert [x["rule"] for x in not_armed(list(s.values()))] == ["resume", "surge", "silent"]
    table = format_table(list(s.values())).splitlines()
    assert table[0].split() == ["RULE", "INDICATOR", "KIND", "STATE", "WHY"] and len(table) == 7


def test_armed_after_enough_history_and_rearmed_after_the_quiet(con):
    watched_since(con, T0)
    now = T0 + timedelta(days=20)
    s = by_rule(rule_status(con, pack(), now))
    assert s["resume"]["state"] == "armed" and "the next event fires" in s["resume"]["detail"]
    assert s["surge"]["state"] == "armed" and s["silent"]["detail"] == "flatline: armed in 10 days: history since 2026-11-20"
    # An event fires the resumption; while it fires, the rule says so; once the window has
    # passed, the next event would not fire until 14 days of quiet have passed again.
    add_event(con, "e1", now)
    evaluate(con, pack(), now + timedelta(minutes=1))
    s = by_rule(rule_status(con, pack(), now + timedelta(minutes=2)))
    assert s["resume"]["state"] == "firing" and s["resume"]["firing_since"]
    assert s["resume"]["detail"] == "resumption: resumed after 2w quiet: 1 event(s) since"
    later = now + timedelta(days=4)
    evaluate(con, pack(), later)
    s = by_rule(rule_status(con, pack(), later))
    assert s["resume"]["state"] == "not armed"
    assert s["resume"]["detail"] == f"resumption: re-armed in 10 days: last event {now:%Y-%m-%d %H:%M} UTC (needs 2w quiet)"
    # A flagged event does not count: the rule is armed again at once.
    feedback.flag_not_event(con, "e1", None, "alice", later)
    assert by_rule(rule_status(con, pack(), later))["resume"]["state"] == "armed"


def test_a_silenced_rule_says_until_when_and_why(con):
    watched_since(con, T0)
    now = T0 + timedelta(days=20)
    add_silence(con, "indicator", "ind", 6 * 3600, "maintenance drill at Harir", "alice", now)
    s = by_rule(rule_status(con, pack(), now + timedelta(hours=1)))
    assert s["campaign"]["state"] == "silenced" and "silenced until" in s["campaign"]["detail"] and "maintenance drill" in s["campaign"]["detail"]
    assert s["any"]["state"] == "armed"  # another indicator
    assert by_rule(rule_status(con, pack(), now + timedelta(hours=7)))["campaign"]["state"] == "armed"


def test_rules_status_and_alerts_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "wh.duckdb"
    now = datetime.now(timezone.utc)
    with db.connect(path) as c:
        watched_since(c, now - timedelta(days=5))
    assert cli.main(["rules", "status", "--db", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["RULE", "INDICATOR", "KIND", "STATE", "WHY"]
    resume = next(line for line in out if line.startswith("militia-attacks-resume"))
    assert "not armed" in resume and "resumption: armed in 9 days: history since" in resume
    assert cli.main(["alerts", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no alerts" in out and "NOT ARMED  militia-attacks-resume" in out and "armed in 9 days" in out
    assert "militia-attack-campaign" not in out  # a threshold is always armed
