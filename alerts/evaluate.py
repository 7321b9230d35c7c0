"""Evaluate rules against the events in the warehouse and move alerts through their states.

All changes of one evaluation (alerts, their events, and the notifications to send) are
written in a single transaction: a retried or repeated evaluation at the same time finds
the state it left and adds nothing, and every notification waits in the outbox until
delivery (``alerts.delivery``) has posted it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb

from alerts.rules import Rule, RulePack
from sources.configfile import format_duration
from warehouse.db import transaction
from warehouse.load import bulk_insert


@dataclass
class Condition:
    active: bool
    event_ids: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)


def history_start(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """When Marsad started watching: the first successful poll of any source."""
    row = con.execute("SELECT min(started_at) FROM fetch_log WHERE status IN ('ok', 'not_modified')").fetchone()
    return row[0] if row else None


def _events_in(con, indicator: str, start: datetime, end: datetime, now: datetime) -> list[tuple[str, datetime]]:
    return con.execute(
        """SELECT event_id, first_report_at FROM events
           WHERE indicator = ? AND first_seen_at <= ? AND first_report_at > ? AND first_report_at <= ?
           ORDER BY first_report_at, event_id""",
        [indicator, now, start, end],
    ).fetchall()


def _last_event_before(con, indicator: str, t: datetime, now: datetime) -> datetime | None:
    row = con.execute(
        "SELECT max(first_report_at) FROM events WHERE indicator = ? AND first_seen_at <= ? AND first_report_at < ?",
        [indicator, now, t],
    ).fetchone()
    return row[0] if row else None


def condition(con: duckdb.DuckDBPyConnection, rule: Rule, now: datetime, watched_since: datetime | None) -> Condition:
    w = timedelta(seconds=rule.window_s)
    if rule.kind in ("tripwire", "threshold"):
        evs = _events_in(con, rule.indicator, now - w, now, now)
        need = 1 if rule.kind == "tripwire" else rule.count
        facts = {"window": format_duration(rule.window_s), "events": len(evs), "threshold": need}
        return Condition(len(evs) >= need, [e for e, _ in evs], facts)

    if rule.kind == "resumption":
        quiet = timedelta(seconds=rule.quiet)
        rows = con.execute(
            """WITH ev AS (
                   SELECT event_id, first_report_at AS t,
                          lag(first_report_at) OVER (ORDER BY first_report_at, event_id) AS prev_t
                   FROM events WHERE indicator = ? AND first_seen_at <= ? AND first_report_at <= ?)
               SELECT event_id, t, prev_t FROM ev WHERE t > ? ORDER BY t, event_id""",
            [rule.indicator, now, now, now - w],
        ).fetchall()
        for i, (event_id, t, prev_t) in enumerate(rows):
            watched_long_enough = watched_since is not None and t - watched_since >= quiet
            quiet_before = prev_t is None or t - prev_t >= quiet
            if watched_long_enough and quiet_before:
                gap_days = (t - prev_t).total_seconds() / 86400 if prev_t else None
                facts = {
                    "quiet": format_duration(rule.quiet),
                    "days_since_previous": round(gap_days, 1) if gap_days is not None else None,
                    "previous_event_at": prev_t.isoformat() if prev_t else None,
                    "events": len(rows) - i,
                }
                return Condition(True, [e for e, _, _ in rows[i:]], facts)
        return Condition(False)

    if rule.kind == "flatline":
        evs = _events_in(con, rule.indicator, now - w, now, now)
        watched = watched_since is not None and now - watched_since >= w
        last = _last_event_before(con, rule.indicator, now + timedelta(microseconds=1), now)
        facts = {
            "window": format_duration(rule.window_s),
            "events": len(evs),
            "minimum": rule.count,
            "last_event_at": last.isoformat() if last else None,
        }
        return Condition(watched and len(evs) < rule.count, [], facts)

    if rule.kind == "spike":
        b = timedelta(seconds=rule.baseline)
        cur = _events_in(con, rule.indicator, now - w, now, now)
        base = _events_in(con, rule.indicator, now - w - b, now - w, now)
        expected = len(base) * (w / b)
        active = len(cur) >= rule.count and len(cur) >= rule.ratio * expected
        if watched_since is None or now - watched_since < w + b:
            active = False  # no baseline to compare with yet
        facts = {
            "window": format_duration(rule.window_s),
            "events": len(cur),
            "baseline": format_duration(rule.baseline),
            "baseline_events": len(base),
            "expected": round(expected, 2),
            "ratio": rule.ratio,
        }
        return Condition(active, [e for e, _ in cur], facts)
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def evidence(con: duckdb.DuckDBPyConnection, event_ids: list[str]) -> list[dict]:
    """The reports behind events: one dict per article, earliest first."""
    if not event_ids:
        return []
    rows = con.execute(
        """SELECT ea.event_id, a.article_id, a.guid, a.source_id, coalesce(s.name, a.source_id), s.reliability,
                  a.lang, a.title, a.url, a.published_at
           FROM event_articles ea JOIN articles a USING (article_id) LEFT JOIN sources s USING (source_id)
           WHERE list_contains(?, ea.event_id)
           ORDER BY a.published_at, a.article_id""",
        [event_ids],
    ).fetchall()
    keys = ("event_id", "article_id", "guid", "source_id", "source", "reliability", "lang", "title", "url", "published_at")
    out = []
    for r in rows:
        d = dict(zip(keys, r))
        d["published_at"] = d["published_at"].isoformat()
        out.append(d)
    return out


def corroboration(ev: list[dict]) -> list[dict]:
    """Per event, over all its reports: how many articles, outlets and languages (as ``events_v``)."""
    per: dict[str, list[dict]] = {}
    for e in ev:
        per.setdefault(e["event_id"], []).append(e)
    return [
        {"event_id": k, "n_articles": len(v), "n_outlets": len({e["source_id"] for e in v}), "languages": sorted({e["lang"] for e in v})}
        for k, v in sorted(per.items(), key=lambda kv: (kv[1][0]["published_at"], kv[0]))
    ]


def _alert_id(rule: Rule, first_event: str | None, now: datetime) -> str:
    return hashlib.sha1(f"{rule.id}\x1f{first_event}\x1f{now.isoformat()}".encode()).hexdigest()[:20]


def _payload(rule: Rule, state: str, now: datetime, cond: Condition, ev: list[dict], summary: str) -> dict:
    outlets = sorted({e["source_id"] for e in ev})
    langs = sorted({e["lang"] for e in ev})
    return {
        "indicator": rule.indicator,
        "rule": rule.id,
        "kind": rule.kind,
        "state": state,
        "at": now.isoformat(),
        "severity": rule.severity,
        "summary": summary,
        "rationale": rule.rationale,
        "facts": cond.facts,
        "events": sorted({e["event_id"] for e in ev}),
        "corroboration": {"articles": len(ev), "outlets": len(outlets), "languages": langs, "events": corroboration(ev)},
        "evidence": ev,
    }


def _summary(rule: Rule, cond: Condition, state: str) -> str:
    f = cond.facts
    if state == "resolved":
        return f"{rule.indicator}: condition of {rule.id} has cleared"
    if rule.kind == "tripwire":
        return f"{rule.indicator}: {f['events']} new event(s) in the last {f['window']}"
    if rule.kind == "threshold":
        return f"{rule.indicator}: {f['events']} events in {f['window']} (threshold {f['threshold']})"
    if rule.kind == "resumption":
        since = f.get("days_since_previous")
        gap = f"{since} days after the previous event" if since is not None else "the first event seen"
        return f"{rule.indicator}: resumed after a quiet period of at least {f['quiet']} ({gap})"
    if rule.kind == "flatline":
        return f"{rule.indicator}: only {f['events']} event(s) in {f['window']} (expected at least {f['minimum']})"
    return f"{rule.indicator}: {f['events']} events in {f['window']} vs {f['expected']} expected from the baseline"


def _days_since_previous(con, indicator: str, event_ids: list[str], now: datetime) -> float | None:
    """Days between the earliest event of this alert and the event before it (any age)."""
    if not event_ids:
        return None
    row = con.execute(
        """WITH first AS (SELECT min(first_report_at) AS t FROM events WHERE list_contains(?, event_id))
           SELECT (SELECT t FROM first), max(first_report_at) FROM events
           WHERE indicator = ? AND first_seen_at <= ? AND first_report_at < (SELECT t FROM first)""",
        [event_ids, indicator, now],
    ).fetchone()
    if not row or row[1] is None:
        return None
    return round((row[0] - row[1]).total_seconds() / 86400, 1)


def evaluate(con: duckdb.DuckDBPyConnection, pack: RulePack, now: datetime) -> list[dict]:
    """Evaluate every enabled rule at ``now``; returns the notifications queued."""
    queued: list[dict] = []
    with transaction(con):
        watched = history_start(con)
        open_alerts = {
            r[0]: r
            for r in con.execute(
                "SELECT rule_id, alert_id, last_notified_at, started_at, acked_at FROM alerts WHERE state = 'firing'"
            ).fetchall()
        }
        new_alerts, alert_events, notes = [], [], []
        for rule in pack.active():
            cond = condition(con, rule, now, watched)
            if cond.active and "days_since_previous" not in cond.facts:
                cond.facts["days_since_previous"] = _days_since_previous(con, rule.indicator, cond.event_ids, now)
            current = open_alerts.get(rule.id)
            channel = pack.channel_for(rule)
            if current is None and cond.active:
                alert_id = _alert_id(rule, cond.event_ids[0] if cond.event_ids else None, now)
                ev = evidence(con, cond.event_ids)
                summary = _summary(rule, cond, "firing")
                new_alerts.append(
                    dict(alert_id=alert_id, rule_id=rule.id, indicator=rule.indicator, kind=rule.kind, severity=rule.severity,
                         channel=channel, state="firing", started_at=now, resolved_at=None, last_notified_at=now, summary=summary)
                )
                alert_events += [dict(alert_id=alert_id, event_id=e, notified_at=now) for e in cond.event_ids]
                notes.append((alert_id, 1, "firing", channel, _payload(rule, "firing", now, cond, ev, summary)))
                continue
            if current is None:
                continue
            _, alert_id, last_notified, _started, acked_at = current
            seq = con.execute("SELECT count(*) FROM notifications WHERE alert_id = ?", [alert_id]).fetchone()[0] + 1
            if not cond.active:
                told = [r[0] for r in con.execute("SELECT event_id FROM alert_events WHERE alert_id = ?", [alert_id]).fetchall()]
                ev = evidence(con, told)
                summary = _summary(rule, cond, "resolved")
                con.execute("UPDATE alerts SET state = 'resolved', resolved_at = ?, last_notified_at = ? WHERE alert_id = ?", [now, now, alert_id])
                notes.append((alert_id, seq, "resolved", channel, _payload(rule, "resolved", now, cond, ev, summary)))
                continue
            told = {r[0] for r in con.execute("SELECT event_id FROM alert_events WHERE alert_id = ?", [alert_id]).fetchall()}
            fresh = [e for e in cond.event_ids if e not in told]
            if fresh:
                state, ev_ids = "update", fresh
            elif acked_at is None and now - last_notified >= timedelta(seconds=rule.repeat):
                state, ev_ids = "repeat", cond.event_ids
            else:
                continue
            ev = evidence(con, ev_ids)
            summary = _summary(rule, cond, state)
            alert_events += [dict(alert_id=alert_id, event_id=e, notified_at=now) for e in fresh]
            con.execute("UPDATE alerts SET last_notified_at = ?, summary = ? WHERE alert_id = ?", [now, summary, alert_id])
            notes.append((alert_id, seq, state, channel, _payload(rule, state, now, cond, ev, summary)))

        bulk_insert(con, "alerts", new_alerts, ALERT_COLUMNS)
        bulk_insert(con, "alert_events", alert_events, {"alert_id": "VARCHAR", "event_id": "VARCHAR", "notified_at": "TIMESTAMPTZ"})
        rows = [
            dict(notification_id=f"{a}:{s}", alert_id=a, seq=s, state=st, created_at=now, channel=ch, payload=p)
            for a, s, st, ch, p in notes
        ]
        bulk_insert(con, "notifications", rows, NOTIFICATION_COLUMNS)
        queued = [r["payload"] for r in rows]
    return queued


ALERT_COLUMNS = {
    "alert_id": "VARCHAR", "rule_id": "VARCHAR", "indicator": "VARCHAR", "kind": "VARCHAR", "severity": "VARCHAR",
    "channel": "VARCHAR", "state": "VARCHAR", "started_at": "TIMESTAMPTZ", "resolved_at": "TIMESTAMPTZ",
    "last_notified_at": "TIMESTAMPTZ", "summary": "VARCHAR",
}
NOTIFICATION_COLUMNS = {
    "notification_id": "VARCHAR", "alert_id": "VARCHAR", "seq": "INTEGER", "state": "VARCHAR",
    "created_at": "TIMESTAMPTZ", "channel": "VARCHAR", "payload": "JSON",
}
