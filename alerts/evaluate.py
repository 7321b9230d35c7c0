"""Evaluate rules against the events in the warehouse and move alerts through their states.

All changes of one evaluation (alerts, their events, and the notifications to send) are
written in a single transaction: a retried or repeated evaluation at the same time finds
the state it left and adds nothing, and every notification waits in the outbox until
delivery (``alerts.delivery``) has posted it.

Evaluation is set-based: a fixed handful of statements for the whole pack, whatever its
size. One scan reads the events of the widest lookback (a constant range on
``first_report_at``, so DuckDB's zone maps skip older row groups), window functions give
each rule its counts and quiet gaps, and the events behind each condition stay in
temporary tables that the alert state machine, the evidence and the outbox join against.
Python decides per rule (not per event) and builds the payloads.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from alerts.feedback import flag_reason, flaggers
from alerts.lifecycle import ALERT_COLUMNS, NOTIFICATION_COLUMNS, Notice, Observation, Transition, apply  # noqa: F401 (re-exported)
from alerts.rules import Rule, RulePack, indicators_dir
from sources.configfile import format_duration
from warehouse.db import transaction


@dataclass
class Condition:
    """A rule's condition at one time: whether it holds, what it counted, and its facts.

    The events behind it stay in DuckDB (the temporary table ``_eval_cond``): Python only
    sees the first of them, which names a new alert.
    """

    active: bool
    facts: dict = field(default_factory=dict)
    first_event: str | None = None


def history_start(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """When Marsad started watching: the first successful poll of any source."""
    row = con.execute("SELECT min(started_at) FROM fetch_log WHERE status IN ('ok', 'not_modified')").fetchone()
    return row[0] if row else None


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def _us(t: datetime) -> int:
    return (t - _EPOCH) // _US


def _lookback_s(rule: Rule) -> int:
    """How far back a rule looks: its window, plus the quiet spell (resumption) or baseline (spike)."""
    if rule.kind == "resumption":
        return rule.window_s + rule.quiet
    if rule.kind == "spike":
        return rule.window_s + rule.baseline
    return rule.window_s


_RULES_JSON = json.dumps([{"rule_id": "VARCHAR", "indicator": "VARCHAR", "kind": "VARCHAR", "window_us": "BIGINT",
                           "lookback_us": "BIGINT", "quiet_us": "BIGINT"}])

# Every event each rule looks at, in one pass over the events table. The range on
# first_report_at is a constant (the widest lookback of the pack), so DuckDB's zone maps
# skip the row groups of older events; each rule then keeps its own lookback, numbers its
# events in time order and remembers the one before (lag), all per rule.
_LOOKBACK_SQL = """
CREATE OR REPLACE TEMP TABLE _eval_lookback AS
WITH ev AS (
    SELECT event_id, indicator, first_report_at AS t, epoch_us(first_report_at) AS t_us
    FROM counted_events  -- events flagged "not an event" do not count (migration 0017)
    WHERE first_report_at > $lo AND first_report_at <= $now AND first_seen_at <= $now)
SELECT r.rule_id, ev.event_id, ev.t, ev.t_us > $now_us - r.window_us AS in_window,
       row_number() OVER w AS pos, lag(ev.t) OVER w AS prev_t
FROM _eval_rules r JOIN ev ON ev.indicator = r.indicator AND ev.t_us > $now_us - r.lookback_us
WINDOW w AS (PARTITION BY r.rule_id ORDER BY ev.t, ev.event_id)
"""

# The events that make each rule's condition: those in the window (tripwire, threshold,
# spike), or, for a resumption, those from the first event in the window that came after a
# quiet spell of at least ``quiet`` and after Marsad had watched for ``quiet``. The first
# event of a rule's lookback has no ``prev_t`` here; any event before it is older than the
# lookback, so more than ``quiet`` before any event in the window: its gap qualifies.
_COND_SQL = """
CREATE OR REPLACE TEMP TABLE _eval_cond AS
WITH resumed AS (
    SELECT l.rule_id, min(l.pos) AS pos
    FROM _eval_lookback l JOIN _eval_rules r USING (rule_id)
    WHERE r.kind = 'resumption' AND l.in_window
      AND epoch_us(l.t) - CAST($watched_us AS BIGINT) >= r.quiet_us
      AND (l.prev_t IS NULL OR epoch_us(l.t) - epoch_us(l.prev_t) >= r.quiet_us)
    GROUP BY l.rule_id)
SELECT l.rule_id, l.event_id, l.t, l.prev_t, l.pos = min(l.pos) OVER (PARTITION BY l.rule_id) AS is_first
FROM _eval_lookback l JOIN _eval_rules r USING (rule_id) LEFT JOIN resumed s USING (rule_id)
WHERE l.in_window AND (r.kind IN ('tripwire', 'threshold', 'spike') OR (r.kind = 'resumption' AND l.pos >= s.pos))
"""

# One row per rule: counts in the window and before it (a spike's baseline), the first event
# of the condition and the event before it in the lookback, and the last event (flatline).
_SUMMARY_SQL = """
WITH lb AS (
    SELECT rule_id, count(*) FILTER (WHERE in_window) AS n_window, count(*) FILTER (WHERE NOT in_window) AS n_before,
           max(t) AS last_t
    FROM _eval_lookback GROUP BY rule_id),
c AS (
    SELECT rule_id, count(*) AS n_cond, any_value(event_id) FILTER (WHERE is_first) AS first_event,
           any_value(t) FILTER (WHERE is_first) AS first_t, any_value(prev_t) FILTER (WHERE is_first) AS prev_t
    FROM _eval_cond GROUP BY rule_id)
SELECT r.rule_id, coalesce(lb.n_window, 0), coalesce(lb.n_before, 0), coalesce(c.n_cond, 0), c.first_event, c.first_t,
       c.prev_t, lb.last_t
FROM _eval_rules r LEFT JOIN lb USING (rule_id) LEFT JOIN c USING (rule_id)
"""

_OLDER_JSON = json.dumps([{"rule_id": "VARCHAR", "indicator": "VARCHAR", "before_us": "BIGINT"}])
_OLDER_SQL = """
WITH q AS (SELECT unnest(from_json($q, '{json}'), recursive := true))
SELECT q.rule_id, max(e.first_report_at)
FROM q JOIN counted_events e ON e.indicator = q.indicator AND epoch_us(e.first_report_at) < q.before_us
WHERE e.first_seen_at <= $now {bound}
GROUP BY q.rule_id
"""


def _latest_before(con: duckdb.DuckDBPyConnection, wanted: dict[str, tuple[str, int]], now: datetime, lo: datetime,
                   span: timedelta) -> dict[str, datetime]:
    """The latest event (seen by ``now``) of each rule's indicator before a time, of any age:
    ``wanted`` maps rule id to (indicator, epoch microseconds). Nothing of the lookback is
    that early, so the search widens back from ``lo`` with a constant bound (DuckDB skips
    the older row groups) and scans the whole table only for what it has not found."""
    found: dict[str, datetime] = {}
    for bound in (lo - span, lo - 8 * span, None):
        if not wanted:
            break
        q = [dict(rule_id=k, indicator=ind, before_us=us) for k, (ind, us) in wanted.items()]
        sql = _OLDER_SQL.format(json=_OLDER_JSON, bound="AND e.first_report_at > $bound" if bound else "")
        params = {"q": json.dumps(q), "now": now} | ({"bound": bound} if bound else {})
        for rule_id, t in con.execute(sql, params).fetchall():
            found[rule_id] = t
            del wanted[rule_id]
    return found


def conditions(con: duckdb.DuckDBPyConnection, rules: list[Rule], now: datetime, watched_since: datetime | None) -> dict[str, Condition]:
    """The condition of every rule at ``now``, set-based: a handful of statements whatever the pack.

    Leaves the temporary tables ``_eval_rules``, ``_eval_lookback`` and ``_eval_cond`` (the
    events behind each rule's condition) on the connection for the caller.
    """
    rows = [dict(rule_id=r.id, indicator=r.indicator, kind=r.kind, window_us=r.window_s * 1_000_000,
                 lookback_us=_lookback_s(r) * 1_000_000, quiet_us=(r.quiet or 0) * 1_000_000) for r in rules]
    con.execute(f"CREATE OR REPLACE TEMP TABLE _eval_rules AS SELECT unnest(from_json(?, '{_RULES_JSON}'), recursive := true)",
                [json.dumps(rows)])
    span = timedelta(seconds=max(_lookback_s(r) for r in rules))
    lo = now - span
    con.execute(_LOOKBACK_SQL, {"lo": lo, "now": now, "now_us": _us(now)})
    con.execute(_COND_SQL, {"watched_us": _us(watched_since) if watched_since is not None else None})
    summary = {r[0]: list(r) for r in con.execute(_SUMMARY_SQL).fetchall()}
    # The event before the condition's first (for days_since_previous), or a flatline's last
    # event, when the lookback holds none: one search for all the rules that need it.
    by_id = {r.id: r for r in rules}
    wanted = {}
    for rule_id, (_, _, _, _, _, first_t, prev_t, last_t) in summary.items():
        if by_id[rule_id].kind == "flatline" and last_t is None:
            wanted[rule_id] = (by_id[rule_id].indicator, _us(now) + 1)
        elif by_id[rule_id].kind != "flatline" and first_t is not None and prev_t is None:
            wanted[rule_id] = (by_id[rule_id].indicator, _us(first_t))
    for rule_id, t in _latest_before(con, wanted, now, lo, span).items():
        summary[rule_id][6 if by_id[rule_id].kind != "flatline" else 7] = t
    return {rule.id: _condition(rule, summary[rule.id], now, watched_since) for rule in rules}


def _condition(rule: Rule, row: tuple, now: datetime, watched_since: datetime | None) -> Condition:
    _, n_window, n_before, n_cond, first_event, first_t, prev_t, last_t = row
    w = timedelta(seconds=rule.window_s)
    if rule.kind in ("tripwire", "threshold"):
        need = 1 if rule.kind == "tripwire" else rule.count
        facts = {"window": format_duration(rule.window_s), "events": n_window, "threshold": need}
        cond = Condition(n_window >= need, facts, first_event)
    elif rule.kind == "resumption":
        if not n_cond:
            return Condition(False)
        gap_days = (first_t - prev_t).total_seconds() / 86400 if prev_t else None
        facts = {
            "quiet": format_duration(rule.quiet),
            "days_since_previous": round(gap_days, 1) if gap_days is not None else None,
            "previous_event_at": prev_t.isoformat() if prev_t else None,
            "events": n_cond,
        }
        return Condition(True, facts, first_event)
    elif rule.kind == "flatline":
        watched = watched_since is not None and now - watched_since >= w
        facts = {
            "window": format_duration(rule.window_s),
            "events": n_window,
            "minimum": rule.count,
            "last_event_at": last_t.isoformat() if last_t else None,
        }
        cond = Condition(watched and n_window < rule.count, facts)
    elif rule.kind == "spike":
        b = timedelta(seconds=rule.baseline)
        expected = n_before * (w / b)
        active = n_window >= rule.count and n_window >= rule.ratio * expected
        if watched_since is None or now - watched_since < w + b:
            active = False  # no baseline to compare with yet
        facts = {
            "window": format_duration(rule.window_s),
            "events": n_window,
            "baseline": format_duration(rule.baseline),
            "baseline_events": n_before,
            "expected": round(expected, 2),
            "ratio": rule.ratio,
        }
        cond = Condition(active, facts, first_event)
    else:
        raise ValueError(f"unknown rule kind {rule.kind!r}")
    if cond.active:
        # Days between the earliest event of the condition and the event before it (any age).
        cond.facts["days_since_previous"] = round((first_t - prev_t).total_seconds() / 86400, 1) if first_t and prev_t else None
    return cond


_EVIDENCE_KEYS = ("event_id", "article_id", "guid", "source_id", "source", "reliability", "lang", "title", "url", "published_at")


def evidence(con: duckdb.DuckDBPyConnection) -> dict[str, list[dict]]:
    """The reports behind the events each alert tells about (``_eval_want``): one dict per
    article, earliest first, per alert."""
    rows = con.execute(
        """SELECT w.alert_id, ea.event_id, a.article_id, a.guid, a.source_id, coalesce(s.name, a.source_id), s.reliability,
                  a.lang, a.title, a.url, a.published_at
           FROM _eval_want w JOIN event_articles ea USING (event_id) JOIN articles a USING (article_id)
           LEFT JOIN sources s USING (source_id)
           ORDER BY w.alert_id, a.published_at, a.article_id, ea.event_id"""
    ).fetchall()
    out: dict[str, list[dict]] = {}
    for alert_id, *r in rows:
        d = dict(zip(_EVIDENCE_KEYS, r))
        d["published_at"] = d["published_at"].isoformat()
        out.setdefault(alert_id, []).append(d)
    return out


# What each event of ``_eval_want`` is about, over all its reports: the attacker of the first
# report's event frame (else the actor its reports name most, ops' own forces last), the place
# the attack landed (never where it was fired from), the weapon named most.
_EVENT_ENTITIES_SQL = """
WITH ev AS (SELECT DISTINCT event_id FROM _eval_want),
framed AS (
    SELECT ea.event_id, arg_min(ai.frame->>'actor_entity', a.published_at) FILTER (WHERE ai.frame->>'actor_entity' IS NOT NULL) AS actor
    FROM ev JOIN event_articles ea USING (event_id) JOIN events e USING (event_id) JOIN articles a USING (article_id)
    JOIN article_indicators ai ON ai.article_id = ea.article_id AND ai.indicator = e.indicator
    GROUP BY ea.event_id),
named AS (
    SELECT ea.event_id, ae.gazetteer, ae.entity_id,
           count(*) AS n,
           CASE WHEN ae.gazetteer = 'places' THEN (coalesce(ae.role, 'other') = 'target')::INT
                WHEN ae.gazetteer = 'actors' THEN CASE ae.kind WHEN 'us_military' THEN -2 WHEN 'descriptor' THEN -1 ELSE 0 END
                ELSE 0 END AS pref
    FROM ev JOIN event_articles ea USING (event_id) JOIN article_entities ae USING (article_id)
    WHERE ae.gazetteer IN ('places', 'actors', 'weapons') AND coalesce(ae.role, 'other') <> 'launch'
    GROUP BY ALL),
best AS (
    SELECT event_id, gazetteer, arg_max(entity_id, (pref, n, entity_id)) AS entity_id FROM named GROUP BY ALL)
SELECT ev.event_id,
       any_value(b.entity_id) FILTER (WHERE b.gazetteer = 'places'),
       coalesce(any_value(f.actor), any_value(b.entity_id) FILTER (WHERE b.gazetteer = 'actors')),
       any_value(b.entity_id) FILTER (WHERE b.gazetteer = 'weapons')
FROM ev LEFT JOIN best b USING (event_id) LEFT JOIN framed f USING (event_id)
GROUP BY ev.event_id
"""


def event_entities(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """Place, actor and weapon of each event of ``_eval_want``, by display name."""
    names = entity_names()
    out = {}
    for event_id, place, actor, weapon in con.execute(_EVENT_ENTITIES_SQL).fetchall():
        out[event_id] = {k: names.get(v, v.replace("_", " ")) for k, v in (("place", place), ("actor", actor), ("weapon", weapon)) if v}
    return out


def _mtimes(directory: Path) -> tuple:
    return tuple((str(f), f.stat().st_mtime_ns) for f in sorted(directory.glob("*.yaml")))


@functools.lru_cache(maxsize=4)
def _entity_names(directory: Path, _mtimes: tuple) -> dict[str, str]:
    from alerts.matching import Gazetteers
    from sources.configfile import ConfigError

    try:
        gaz = Gazetteers.load(directory)
    except (ConfigError, OSError, ValueError):
        return {}  # the ids stand in; `marsad config check` reports the file
    return {e.id: (e.en or e.ar or [e.id])[0].replace("*", "") for entries in gaz.entries.values() for e in entries}


def entity_names() -> dict[str, str]:
    """Gazetteer entry id -> display name (its first English name), read again when a file changes."""
    directory = indicators_dir().parent / "gazetteers"
    return _entity_names(directory, _mtimes(directory)) if directory.is_dir() else {}


def indicator_names(directory: str | Path | None = None) -> dict[str, str]:
    """Indicator id -> its name, as the board shows it (the board's reading of the indicator files)."""
    from alerts.board import _indicators

    directory = Path(directory) if directory else indicators_dir()
    try:
        found, _ = _indicators(directory) if directory.is_dir() else ([], [])
    except Exception:  # a file being edited (or cut short): the ids stand in; the config guard reports it
        return {}
    return {i["id"]: i["name"] for i in found}


def corroboration(ev: list[dict], entities: dict[str, dict] | None = None) -> list[dict]:
    """Per event, over all its reports: how many articles, outlets and languages (as
    ``events_v``), and its place, actor and weapon when known."""
    per: dict[str, list[dict]] = {}
    for e in ev:
        per.setdefault(e["event_id"], []).append(e)
    return [
        {"event_id": k, "n_articles": len(v), "n_outlets": len({e["source_id"] for e in v}), "languages": sorted({e["lang"] for e in v}),
         **(entities or {}).get(k, {})}
        for k, v in sorted(per.items(), key=lambda kv: (kv[1][0]["published_at"], kv[0]))
    ]


def _notice(rule: Rule, state: str, now: datetime, cond: Condition, ev: list[dict], summary: str,
            entities: dict[str, dict], name: str | None) -> Notice:
    outlets = sorted({e["source_id"] for e in ev})
    langs = sorted({e["lang"] for e in ev})
    return Notice(
        indicator=rule.indicator, indicator_name=name, rule=rule.id, kind=rule.kind, state=state, at=now.isoformat(),
        severity=rule.severity, summary=summary, rationale=rule.rationale, facts=cond.facts,
        events=sorted({e["event_id"] for e in ev}),
        corroboration={"articles": len(ev), "outlets": len(outlets), "languages": langs, "events": corroboration(ev, entities)},
        evidence=ev,
    )


def _summary(rule: Rule, cond: Condition, state: str, name: str | None = None) -> str:
    f = cond.facts
    who = name or rule.indicator
    if state == "resolved":
        return f"{who}: condition of {rule.id} has cleared"
    if rule.kind == "tripwire":
        return f"{who}: {f['events']} new event(s) in the last {f['window']}"
    if rule.kind == "threshold":
        return f"{who}: {f['events']} events in {f['window']} (threshold {f['threshold']})"
    if rule.kind == "resumption":
        since = f.get("days_since_previous")
        gap = f"{since} days after the previous event" if since is not None else "the first event seen"
        return f"{who}: resumed after a quiet period of at least {f['quiet']} ({gap})"
    if rule.kind == "flatline":
        return f"{who}: only {f['events']} event(s) in {f['window']} (expected at least {f['minimum']})"
    return f"{who}: {f['events']} events in {f['window']} vs {f['expected']} expected from the baseline"


# Firing alerts of the pack's rules whose condition now holds events they have not told about yet.
_FRESH_SQL = """
SELECT a.rule_id
FROM alerts a
WHERE a.state = 'firing' AND a.rule_id IN (SELECT rule_id FROM _eval_rules)
  AND EXISTS (SELECT 1 FROM _eval_cond c
              WHERE c.rule_id = a.rule_id
                AND NOT EXISTS (SELECT 1 FROM alert_events ae WHERE ae.alert_id = a.alert_id AND ae.event_id = c.event_id))
"""

_ACTIONS_JSON = json.dumps([{"alert_id": "VARCHAR", "rule_id": "VARCHAR", "state": "VARCHAR"}])

# The events each notification tells about: all of its condition's (a new alert, a repeat),
# those it has not told about yet (an update), or all it ever told about (resolved).
_WANT_SQL = """
CREATE OR REPLACE TEMP TABLE _eval_want AS
SELECT x.alert_id, x.state, c.event_id
FROM _eval_actions x JOIN _eval_cond c USING (rule_id)
WHERE x.state IN ('firing', 'repeat')
   OR (x.state = 'update'
       AND NOT EXISTS (SELECT 1 FROM alert_events ae WHERE ae.alert_id = x.alert_id AND ae.event_id = c.event_id))
UNION ALL
SELECT x.alert_id, x.state, ae.event_id
FROM _eval_actions x JOIN alert_events ae USING (alert_id)
WHERE x.state = 'resolved'
"""

_TEMP_TABLES = ("_eval_rules", "_eval_lookback", "_eval_cond", "_eval_actions", "_eval_want")


def evaluate(con: duckdb.DuckDBPyConnection, pack: RulePack, now: datetime, names: dict[str, str] | None = None) -> list[dict]:
    """Evaluate every enabled rule at ``now``; the alert lifecycle (``alerts.lifecycle.apply``)
    decides what to tell. Returns the notifications queued. ``names``: indicator id -> name
    (read from the indicator files when not given)."""
    rules = pack.active()
    if not rules:
        return []
    if names is None:
        names = indicator_names()
    by_id = {r.id: r for r in rules}
    with transaction(con):
        conds = conditions(con, rules, now, history_start(con))
        fresh = {r[0] for r in con.execute(_FRESH_SQL).fetchall()}
        observed = [
            Observation(rule_id=r.id, indicator=r.indicator, kind=r.kind, severity=r.severity, channel=pack.channel_for(r),
                        active=conds[r.id].active, summary=_summary(r, conds[r.id], "firing" if conds[r.id].active else "resolved",
                                                                     names.get(r.indicator)),
                        repeat_s=r.repeat, fresh=r.id in fresh)
            for r in rules
        ]

        def build(moves: list[Transition]) -> dict[str, Notice]:
            acts = [dict(alert_id=m.alert_id, rule_id=m.obs.rule_id, state=m.state) for m in moves]
            con.execute(f"CREATE OR REPLACE TEMP TABLE _eval_actions AS SELECT unnest(from_json(?, '{_ACTIONS_JSON}'), recursive := true)",
                        [json.dumps(acts)])
            con.execute(_WANT_SQL)
            ev = evidence(con)
            ents = event_entities(con)
            con.execute(
                """INSERT INTO alert_events (alert_id, event_id, notified_at)
                   SELECT alert_id, event_id, ? FROM _eval_want WHERE state IN ('firing', 'update') ON CONFLICT DO NOTHING""",
                [now],
            )
            out = {}
            for m in moves:
                rule = by_id[m.obs.rule_id]
                name = names.get(rule.indicator)
                summary = _summary(rule, conds[rule.id], m.state, name)
                flagged = flaggers(con, m.alert_id)[1] if m.state == "resolved" else []
                if flagged:  # the resolution says it was analysts' feedback
                    summary = f"{summary}: {flag_reason(con, m.alert_id)}"
                m.summary = summary if m.state != "resolved" else m.summary
                out[m.alert_id] = _notice(rule, m.state, now, conds[rule.id], ev.get(m.alert_id, []), summary, ents, name)
                if flagged:
                    out[m.alert_id].detail["flagged_by"] = flagged
            return out

        queued = apply(con, observed, now, build, first={r.id: conds[r.id].first_event for r in rules})
        for t in _TEMP_TABLES:
            con.execute(f"DROP TABLE IF EXISTS temp.{t}")
    return queued
