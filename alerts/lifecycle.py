"""The alert lifecycle: one typed payload and one path for every notification.

Rule alerts (``alerts.evaluate``), source health and broken config files (``alerts.ops``),
the daily digest and the ingest deadline notice all describe what they tell ops as a
``Notice`` and hand what they observed to ``apply``, the one function that opens, updates,
repeats and resolves alerts and queues their notifications in the outbox
(``notifications``, delivered by ``alerts.delivery``). So acknowledgements, silences, the
repeat interval and resolution work the same way for all of them:

* an alert *fires* when its condition starts to hold (a new ``alerts`` row, notification 1);
* an *update* goes into its thread when the condition holds new evidence (new events, a
  different error in the same file);
* a *repeat* when it has been firing ``repeat_s`` since the last message, unless someone
  acknowledged it (``ack``): an acknowledgement stops repeats, never updates or the
  resolution;
* it *resolves* when the condition no longer holds;
* a *one-shot* notice (the digest) has no alert row: it is queued once under its key.

A *silence* (by indicator or by rule, time-boxed, with a reason) keeps the notifications
created inside it out of Slack: delivery marks them ``silenced`` (``silenced`` here says
whether one applies), so nothing is lost and the history shows what was held back.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Callable

import duckdb

from warehouse.db import transaction
from warehouse.load import bulk_insert


class LifecycleError(ValueError):
    pass


ALERT_COLUMNS = {
    "alert_id": "VARCHAR", "rule_id": "VARCHAR", "indicator": "VARCHAR", "kind": "VARCHAR", "severity": "VARCHAR",
    "channel": "VARCHAR", "state": "VARCHAR", "started_at": "TIMESTAMPTZ", "resolved_at": "TIMESTAMPTZ",
    "last_notified_at": "TIMESTAMPTZ", "summary": "VARCHAR",
}
NOTIFICATION_COLUMNS = {
    "notification_id": "VARCHAR", "alert_id": "VARCHAR", "seq": "INTEGER", "state": "VARCHAR",
    "created_at": "TIMESTAMPTZ", "channel": "VARCHAR", "payload": "JSON",
}


@dataclass
class Notice:
    """What one notification tells ops: the outbox's ``payload`` (``to_payload``), what the
    renderer (``alerts.render``) draws. ``detail`` holds what only one kind has (the digest's
    counts, top events and unhealthy sources) and is stored at the top level of the payload."""

    indicator: str  # indicator id, or source_health | config | digest | pipeline
    rule: str
    kind: str  # the rule kind, or source_down | source_silent | config_error | digest | deadline
    state: str  # firing | update | repeat | resolved | digest | deadline
    at: str  # ISO 8601
    severity: str
    summary: str
    rationale: str = ""
    indicator_name: str | None = None  # as the board shows it
    alert_id: str | None = None
    facts: dict = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    corroboration: dict = field(default_factory=dict)
    evidence: list[dict] = field(default_factory=list)
    detail: dict = field(default_factory=dict)

    def to_payload(self) -> dict:
        d = asdict(self)
        detail = d.pop("detail")
        return {**detail, **d}

    @classmethod
    def from_payload(cls, payload: dict) -> "Notice":
        names = {f.name for f in fields(cls)} - {"detail"}
        return cls(**{k: v for k, v in payload.items() if k in names},
                   detail={k: v for k, v in payload.items() if k not in names})


@dataclass
class Observation:
    """What a caller found for one alert key (``rule_id``) at one time: whether its condition
    holds, and how to tell about it. ``notice(state, alert_id, summary)`` builds the payload,
    only for the transitions ``apply`` decides on (the caller may fill in evidence then)."""

    rule_id: str
    indicator: str
    kind: str
    severity: str
    channel: str
    active: bool
    summary: str = ""
    repeat_s: int | None = None  # None: never repeated
    fresh: bool = False  # new evidence the open alert has not told about: an update
    oneshot: bool = False  # a notice without an alert row (the digest): queued once under rule_id


@dataclass
class Transition:
    """One notification ``apply`` queues: the alert it belongs to and its state."""

    obs: Observation
    alert_id: str
    seq: int
    state: str
    summary: str
    notice: Notice | None = None


_CHANGED_JSON = json.dumps([{"alert_id": "VARCHAR", "state": "VARCHAR", "summary": "VARCHAR"}])


def alert_id_for(rule_id: str, first: str | None, now: datetime) -> str:
    return hashlib.sha1(f"{rule_id}\x1f{first}\x1f{now.isoformat()}".encode()).hexdigest()[:20]


def apply(con: duckdb.DuckDBPyConnection, observed: list[Observation], now: datetime,
          build: Callable[[list[Transition]], dict[str, Notice]], first: dict[str, str | None] | None = None) -> list[dict]:
    """Move the alerts of ``observed`` through their states at ``now`` and queue what to tell,
    inside the caller's transaction (with the reading of the condition): a repeated call at the
    same time finds the state it left and adds nothing. ``build`` gets the transitions decided and returns
    their notices by alert id. ``first``: what names a new alert of a key (its first event),
    so that its id is stable. Returns the payloads queued."""
    if not observed:
        return []
    keyed = [o for o in observed if not o.oneshot]
    open_alerts = {}
    if keyed:
        open_alerts = {r[0]: r[1:] for r in con.execute(
            """SELECT a.rule_id, a.alert_id, a.last_notified_at, a.acked_at,
                      (SELECT count(*) FROM notifications n WHERE n.alert_id = a.alert_id)
               FROM alerts a WHERE a.state = 'firing' AND list_contains(?, a.rule_id)""",
            [[o.rule_id for o in keyed]]).fetchall()}
    moves: list[Transition] = []
    new_alerts = []
    for o in observed:
        if o.oneshot:
            if o.active:
                moves.append(Transition(o, o.rule_id, 1, o.kind, o.summary))
            continue
        current = open_alerts.get(o.rule_id)
        if current is None:
            if o.active:
                alert_id = alert_id_for(o.rule_id, (first or {}).get(o.rule_id), now)
                new_alerts.append(dict(alert_id=alert_id, rule_id=o.rule_id, indicator=o.indicator, kind=o.kind, severity=o.severity,
                                       channel=o.channel, state="firing", started_at=now, resolved_at=None, last_notified_at=now,
                                       summary=o.summary))
                moves.append(Transition(o, alert_id, 1, "firing", o.summary))
            continue
        alert_id, last_notified, acked_at, n_notes = current
        if not o.active:
            state = "resolved"
        elif o.fresh:
            state = "update"
        elif acked_at is None and o.repeat_s is not None and now - last_notified >= timedelta(seconds=o.repeat_s):
            state = "repeat"
        else:
            continue
        moves.append(Transition(o, alert_id, n_notes + 1, state, o.summary))
    if not moves:
        return []
    notices = build(moves)
    rows = []
    for m in moves:
        m.notice = notices[m.alert_id]
        if not m.obs.oneshot:
            m.notice.alert_id = m.alert_id
        rows.append(dict(notification_id=f"{m.alert_id}:{m.seq}", alert_id=m.alert_id, seq=m.seq, state=m.state,
                         created_at=now, channel=m.obs.channel, payload=m.notice.to_payload()))
    changed = [dict(alert_id=m.alert_id, state=m.state, summary=m.summary) for m in moves if m.state in ("update", "repeat", "resolved")]
    if changed:  # one statement for all of them; a resolved alert keeps the summary of its condition
        con.execute(
            f"""UPDATE alerts SET state = CASE WHEN x.state = 'resolved' THEN 'resolved' ELSE alerts.state END,
                                 resolved_at = CASE WHEN x.state = 'resolved' THEN $now ELSE alerts.resolved_at END,
                                 last_notified_at = $now,
                                 summary = CASE WHEN x.state = 'resolved' THEN alerts.summary ELSE x.summary END
                FROM (SELECT unnest(from_json($x, '{_CHANGED_JSON}'), recursive := true)) x
                WHERE alerts.alert_id = x.alert_id""",
            {"now": now, "x": json.dumps(changed)})
    bulk_insert(con, "alerts", new_alerts, ALERT_COLUMNS)
    inserted = {r[0] for r in bulk_insert(con, "notifications", rows, NOTIFICATION_COLUMNS, returning="notification_id")}
    return [r["payload"] for r in rows if r["notification_id"] in inserted]


def silenced(con: duckdb.DuckDBPyConnection, indicator: str, rule: str, at: datetime) -> bool:
    """Whether a silence holds back a notice of ``indicator`` / ``rule`` created at ``at`` (the
    rule delivery applies to the outbox, for a notice that does not go through it)."""
    return active_silence(con, rule, indicator, at) is not None


def add_silence(
    con: duckdb.DuckDBPyConnection, matcher: str, value: str, duration_s: int, reason: str, by: str, now: datetime
) -> str:
    if matcher not in ("indicator", "rule"):
        raise LifecycleError("a silence matches an indicator or a rule")
    if not reason.strip():
        raise LifecycleError("a silence needs a reason")
    sid = hashlib.sha1(f"{matcher}\x1f{value}\x1f{now.isoformat()}".encode()).hexdigest()[:12]
    con.execute(
        "INSERT INTO silences VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [sid, matcher, value, now, now + timedelta(seconds=duration_s), reason.strip(), by, now],
    )
    return sid


def expire_silence(con: duckdb.DuckDBPyConnection, silence_id: str, now: datetime) -> None:
    n = con.execute(
        "UPDATE silences SET ends_at = ? WHERE silence_id = ? AND ends_at > ? RETURNING silence_id", [now, silence_id, now]
    ).fetchall()
    if not n:
        raise LifecycleError(f"no active silence {silence_id!r}")


def list_silences(con: duckdb.DuckDBPyConnection, now: datetime, active_only: bool = True) -> list[tuple]:
    where = "WHERE ends_at > ?" if active_only else "WHERE ? IS NOT NULL"
    return con.execute(
        f"SELECT silence_id, matcher, value, starts_at, ends_at, reason, created_by FROM silences {where} ORDER BY starts_at",
        [now],
    ).fetchall()


def ack(con: duckdb.DuckDBPyConnection, alert_id: str, by: str, note: str | None, now: datetime) -> None:
    with transaction(con):
        row = con.execute("SELECT state FROM alerts WHERE alert_id = ?", [alert_id]).fetchone()
        if row is None:
            raise LifecycleError(f"no alert {alert_id!r}")
        if row[0] != "firing":
            raise LifecycleError(f"alert {alert_id} is {row[0]}, not firing")
        con.execute("UPDATE alerts SET acked_at = ?, acked_by = ?, ack_note = ? WHERE alert_id = ?", [now, by, note, alert_id])


def list_alerts(con: duckdb.DuckDBPyConnection, firing_only: bool = False, limit: int = 50) -> list[tuple]:
    where = "WHERE state = 'firing'" if firing_only else ""
    return con.execute(
        f"""SELECT alert_id, rule_id, indicator, severity, state, started_at, resolved_at, acked_by, summary
            FROM alerts {where} ORDER BY started_at DESC LIMIT ?""",
        [limit],
    ).fetchall()


def check_target(matcher: str, value: str, indicators: set[str], rules: set[str], rule_prefixes: tuple[str, ...] = ()) -> None:
    """A silence must name an indicator or rule that exists: a typo would otherwise hold back
    nothing while ops believe the channel is quiet. ``rule_prefixes`` admit families of rules
    named at run time (``source-down:<feed>``)."""
    known = indicators if matcher == "indicator" else rules
    if value in known or (matcher == "rule" and value.startswith(rule_prefixes)):
        return
    import difflib

    close = difflib.get_close_matches(value, sorted(known), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known {matcher}s: {', '.join(sorted(known)[:20])}"
    raise LifecycleError(f"no {matcher} {value!r}{hint}")


# ----------------------------------------------------------------------------- the ingest deadline
# The deadline notice is posted by Airflow's triggerer while the slow run still holds (or
# waits for) the warehouse: it cannot write the outbox, so it is the one notice that does not
# go through ``apply``. It is still a ``Notice``, drawn by the same renderer, and a silence of
# its indicator (``pipeline``) or rule (``ingest-deadline``) holds it back: the silences are
# read from the analysts' read copy (never locked: it is replaced by rename), which is at most
# one publish behind the warehouse.

DEADLINE_INDICATOR = "pipeline"
DEADLINE_RULE = "ingest-deadline"


def deadline_notice(dag_id: str, run_id: str, after: str, deadline_at: str, run_state: str, now: datetime) -> Notice:
    return Notice(
        indicator=DEADLINE_INDICATOR, indicator_name="Marsad pipeline", rule=DEADLINE_RULE, kind="deadline", state="deadline",
        at=now.isoformat(), severity="medium",
        summary=(f"Marsad: {dag_id} run {run_id} has not finished {after} after it was queued (deadline {deadline_at}; "
                 f"the run was {run_state}). It goes on; if it fails, ops hear of it again."),
        rationale="A run that overruns its deadline delays every alert behind it; its log says what it waits for.",
        facts={"dag_id": dag_id, "run_id": run_id, "deadline": deadline_at, "run_state": run_state},
    )


def silenced_in_read_copy(notice: Notice, read_copy: str | None, now: datetime) -> bool | None:
    """Whether a silence in the read copy holds ``notice`` back; None when there is no read copy
    to ask (then the notice is posted: better told twice than not at all)."""
    if not read_copy:
        return None
    from pathlib import Path

    from warehouse.publish import open_read_copy

    if not Path(read_copy).exists():
        return None
    try:
        con = open_read_copy(read_copy, fts=False)
    except Exception:
        return None
    try:
        return silenced(con, notice.indicator, notice.rule, now)
    except duckdb.Error:
        return None  # a copy from before silences existed
    finally:
        con.close()


# ----------------------------------------------------------------------------- the message, as it stands


def active_silence(con: duckdb.DuckDBPyConnection, rule_id: str, indicator: str, now: datetime) -> tuple | None:
    """(ends_at, created_by) of the silence covering the rule (or its indicator) at ``now`` that
    ends last; None when none does."""
    return con.execute(
        """SELECT ends_at, created_by FROM silences
           WHERE starts_at <= ? AND ends_at > ? AND ((matcher = 'rule' AND value = ?) OR (matcher = 'indicator' AND value = ?))
           ORDER BY ends_at DESC LIMIT 1""", [now, now, rule_id, indicator]).fetchone()


def message_state(con: duckdb.DuckDBPyConnection, alert_id: str, now: datetime, shown: set[str] | None = None):
    """What ops did to an alert, for drawing its first message again (``alerts.render.MessageState``):
    who acknowledged it, the silence of its rule or indicator in force at ``now`` (the one that
    ends last), and its events flagged as not events (``event_feedback``); of those, only the
    events in ``shown`` (the message's own) when given. Every edit of the first message (a
    press, the resolution, ``redraw_changed``) draws it from here, so no edit forgets what ops did."""
    from alerts.render import MessageState

    row = con.execute("SELECT rule_id, indicator, acked_by, acked_at FROM alerts WHERE alert_id = ?", [alert_id]).fetchone()
    if row is None:
        raise LifecycleError(f"no alert {alert_id!r}")
    rule_id, indicator, acked_by, acked_at = row
    state = MessageState(acked_by=acked_by, acked_at=acked_at.isoformat() if acked_at else None)
    silence = active_silence(con, rule_id, indicator, now)
    if silence:
        state.silenced_until, state.silenced_by = silence[0].isoformat(), silence[1]
    from alerts import feedback  # every migrated warehouse has event_feedback (0013)

    events = shown if shown is not None else {e for (e,) in con.execute("SELECT event_id FROM alert_events WHERE alert_id = ?", [alert_id]).fetchall()}
    state.not_events = {e: by for e, by in feedback.flagged(con).items() if e in events}
    return state


def shown_events(payload: dict) -> set[str]:
    """The events a message shows (its evidence)."""
    return {e.get("event_id") for e in payload.get("evidence") or [] if e.get("event_id")}


REDRAW_HORIZON = timedelta(days=7)  # a resolved alert's message is kept up to date this long


@dataclass
class Redraw:
    """An alert's first message whose drawing of what ops did is behind the warehouse."""

    alert_id: str
    channel: str
    ts: str
    payload: dict
    resolved_at: str | None
    state: object  # alerts.render.MessageState

    def key(self) -> str:
        return json.dumps(asdict(self.state), sort_keys=True)


def messages_behind(con: duckdb.DuckDBPyConnection, now: datetime) -> list[Redraw]:
    """The first messages in Slack that do not show what ops did as it stands at ``now``: an
    acknowledgement or a flag from the CLI, a silence added, run out or expired, a flag undone.
    Firing alerts, and resolved ones whose message was already marked resolved (for
    ``REDRAW_HORIZON``); a message never redrawn counts as drawn with nothing done to it."""
    from alerts.render import MessageState

    rows = con.execute(
        """WITH candidates AS (
               SELECT alert_id, state, resolved_at FROM alerts
               WHERE state = 'firing' OR (state = 'resolved' AND resolved_at >= ?)),
           firsts AS (
               SELECT n.alert_id, n.slack_channel, n.slack_ts, n.payload, coalesce(n.parent_updated, false) AS marked
               FROM notifications n JOIN candidates USING (alert_id)
               WHERE n.status = 'sent'
               QUALIFY row_number() OVER (PARTITION BY n.alert_id ORDER BY n.seq) = 1)
           SELECT c.alert_id, c.state, c.resolved_at, f.slack_channel, f.slack_ts, f.payload, d.state
           FROM candidates c JOIN firsts f USING (alert_id) LEFT JOIN message_draws d USING (alert_id)
           WHERE f.slack_ts IS NOT NULL AND f.slack_channel IS NOT NULL AND (c.state = 'firing' OR f.marked)
           ORDER BY c.alert_id""", [now - REDRAW_HORIZON]).fetchall()
    out = []
    for alert_id, state, resolved_at, channel, ts, payload, drawn in rows:
        payload = json.loads(payload) if isinstance(payload, str) else payload
        r = Redraw(alert_id, channel, ts, payload, resolved_at.isoformat() if state == "resolved" and resolved_at else None,
                   message_state(con, alert_id, now, shown_events(payload)))
        before = json.loads(drawn) if drawn else asdict(MessageState())
        if r.key() != json.dumps(before, sort_keys=True):
            out.append(r)
    return out


def record_drawn(con: duckdb.DuckDBPyConnection, drawn: list[tuple[str, object]], now: datetime) -> None:
    """(alert_id, MessageState) of first messages just edited to show that state."""
    if drawn:
        con.execute(
            """INSERT INTO message_draws (alert_id, drawn_at, state)
               SELECT unnest($ids), $now, unnest($states)::JSON
               ON CONFLICT (alert_id) DO UPDATE SET drawn_at = excluded.drawn_at, state = excluded.state""",
            {"ids": [a for a, _ in drawn], "now": now, "states": [json.dumps(asdict(st), sort_keys=True) for _, st in drawn]})
