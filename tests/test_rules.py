"""Rule kinds evaluated over events in a real DuckDB file, through the alert state machine."""
from datetime import datetime, timedelta, timezone

import pytest

from alerts.evaluate import evaluate
from alerts.rules import Rule, RulePack
from warehouse import db
from warehouse.events import EVENT_COLUMNS
from warehouse.load import bulk_insert

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)


@pytest.fixture
def con(tmp_path):
    with db.connect(tmp_path / "wh.duckdb") as c:
        # watched since T0 (one successful poll)
        c.execute("INSERT INTO fetch_log (fetch_id, source_id, started_at, finished_at, status) VALUES ('f0', 's', ?, ?, 'ok')", [T0, T0])
        yield c


def add_events(con, indicator, times):
    bulk_insert(con, "events", [dict(event_id=f"{indicator}-{t.isoformat()}", indicator=indicator, first_report_at=t,
                                     first_seen_at=t, title="x", created_at=t) for t in times], EVENT_COLUMNS)


def pack(**kw):
    return RulePack(rules=[Rule(id="r1", indicator="ind", rationale="a rule for the test", **kw)])


def run(con, p, start, end, step=timedelta(hours=1)):
    out, t = [], start
    while t <= end:
        out += [(n["state"], t) for n in evaluate(con, p, t)]
        t += step
    return out


def test_tripwire_fires_updates_and_resolves(con):
    add_events(con, "ind", [T0 + timedelta(hours=5), T0 + timedelta(hours=8)])
    got = run(con, pack(kind="tripwire", window="24h"), T0, T0 + timedelta(days=2))
    assert got == [("firing", T0 + timedelta(hours=5)), ("update", T0 + timedelta(hours=8)), ("resolved", T0 + timedelta(hours=32))]


def test_flatline_needs_history_then_fires_and_clears(con):
    add_events(con, "ind", [T0 + timedelta(days=1)])
    p = pack(kind="flatline", count=1, window="3d", repeat="30d")
    got = run(con, p, T0, T0 + timedelta(days=6), step=timedelta(hours=6))
    # Not before 3 days of history; quiet from day 4 (the day-1 event leaves the window)
    assert got == [("firing", T0 + timedelta(days=4))]
    add_events(con, "ind", [T0 + timedelta(days=6, hours=1)])
    assert [n["state"] for n in evaluate(con, p, T0 + timedelta(days=6, hours=2))] == ["resolved"]


def test_spike_compares_with_the_baseline_rate(con):
    # baseline: 1 event a day on days 1-6; then several on day 8
    add_events(con, "ind", [T0 + timedelta(days=d, hours=12) for d in range(1, 7)])
    add_events(con, "ind", [T0 + timedelta(days=8, hours=h) for h in (2, 4, 6, 8)])
    p = pack(kind="spike", window="1d", baseline="6d", ratio=3.0, count=3)
    assert evaluate(con, p, T0 + timedelta(days=6, hours=13)) == []  # not 7 days of history yet
    assert evaluate(con, p, T0 + timedelta(days=8, hours=5)) == []  # 2 in the window: below count
    (n,) = evaluate(con, p, T0 + timedelta(days=8, hours=6, minutes=30))
    assert n["state"] == "firing" and n["facts"]["events"] == 3 and n["facts"]["expected"] == 1.0


def test_threshold_counts_events_and_repeats_at_its_interval(con):
    add_events(con, "ind", [T0 + timedelta(hours=h) for h in (1, 2, 3)])
    got = run(con, pack(kind="threshold", count=3, window="72h", repeat="12h"), T0, T0 + timedelta(days=4))
    assert got == [("firing", T0 + timedelta(hours=3)), ("repeat", T0 + timedelta(hours=15)), ("repeat", T0 + timedelta(hours=27)),
                   ("repeat", T0 + timedelta(hours=39)), ("repeat", T0 + timedelta(hours=51)), ("repeat", T0 + timedelta(hours=63)),
                   ("resolved", T0 + timedelta(hours=73))]


def test_evaluation_is_idempotent_at_the_same_time(con):
    add_events(con, "ind", [T0 + timedelta(hours=1)])
    p = pack(kind="tripwire")
    assert len(evaluate(con, p, T0 + timedelta(hours=2))) == 1
    assert evaluate(con, p, T0 + timedelta(hours=2)) == []  # a retried task adds nothing
    assert con.execute("SELECT count(*) FROM notifications").fetchone()[0] == 1


def test_the_event_before_is_found_at_any_age(con):
    # Evaluation looks at each rule's lookback only, and searches further back only for the
    # event before: 25, 100 and 200 days before (each a wider step of that search).
    gaps = {"i1": 25, "i2": 100, "i3": 200}
    for ind, days in gaps.items():
        add_events(con, ind, [T0 - timedelta(days=days), T0 + timedelta(days=15)])
    add_events(con, "i4", [T0 - timedelta(days=100)])
    rules = [Rule(id=f"resume-{i}", indicator=i, kind="resumption", quiet="14d", rationale="a rule for the test") for i in gaps]
    rules += [Rule(id="trip-i3", indicator="i3", kind="tripwire", rationale="a rule for the test"),
              Rule(id="flat-i4", indicator="i4", kind="flatline", count=1, window="3d", rationale="a rule for the test")]
    now = T0 + timedelta(days=15, hours=1)
    got = {n["rule"]: n["facts"] for n in evaluate(con, RulePack(rules=rules), now)}
    for ind, days in gaps.items():
        assert got[f"resume-{ind}"] == {"quiet": "2w", "days_since_previous": days + 15.0, "events": 1,
                                        "previous_event_at": (T0 - timedelta(days=days)).isoformat()}
    assert got["trip-i3"]["days_since_previous"] == 215.0 and got["trip-i3"]["events"] == 1
    assert got["flat-i4"] == {"window": "3d", "events": 0, "minimum": 1, "last_event_at": (T0 - timedelta(days=100)).isoformat(),
                                "days_since_previous": None}


def test_events_count_only_once_seen(con):
    # B is reported on day 16 but first seen on day 20: until then C resumes after A.
    def ev(eid, t, seen):
        return dict(event_id=eid, indicator="ind", first_report_at=t, first_seen_at=seen, title="x", created_at=seen)

    a, b, c = T0 + timedelta(hours=1), T0 + timedelta(days=16), T0 + timedelta(days=16, hours=12)
    bulk_insert(con, "events", [ev("A", a, a), ev("B", b, T0 + timedelta(days=20)), ev("C", c, c)], EVENT_COLUMNS)
    p = RulePack(rules=[Rule(id="resume", indicator="ind", kind="resumption", quiet="14d", rationale="a rule for the test"),
                        Rule(id="trip", indicator="ind", kind="tripwire", window="6h", rationale="a rule for the test")])
    assert evaluate(con, p, b + timedelta(hours=1)) == []  # B not seen yet
    got = {n["rule"]: n for n in evaluate(con, p, c)}
    assert got["resume"]["facts"]["previous_event_at"] == a.isoformat() and got["resume"]["facts"]["events"] == 1
    assert got["trip"]["facts"]["events"] == 1 and got["trip"]["facts"]["days_since_previous"] == 16.5


def test_events_at_the_same_time_are_ordered_by_id(con):
    t = T0 + timedelta(days=15)
    bulk_insert(con, "events", [dict(event_id=e, indicator="ind", first_report_at=t, first_seen_at=t, title="x", created_at=t)
                                for e in ("Y", "X")], EVENT_COLUMNS)
    p = RulePack(rules=[Rule(id="resume", indicator="ind", kind="resumption", quiet="14d", rationale="a rule for the test"),
                        Rule(id="pair", indicator="ind", kind="threshold", count=2, window="1h", rationale="a rule for the test")])
    got = {n["rule"]: n for n in evaluate(con, p, t)}
    # the first of the two resumes (the second follows it with no gap); both are its events
    assert got["resume"]["facts"] == {"quiet": "2w", "days_since_previous": None, "previous_event_at": None, "events": 2}
    assert got["pair"]["facts"]["events"] == 2 and got["pair"]["facts"]["days_since_previous"] is None
    first = con.execute("SELECT event_id FROM alert_events JOIN alerts USING (alert_id) WHERE rule_id = 'resume' ORDER BY ALL").fetchall()
    assert first == [("X",), ("Y",)]
