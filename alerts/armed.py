"""Whether each rule can fire now, and why not: ``marsad rules status``, ``marsad alerts`` and
the indicator board read :func:`rule_status`.

A rule is *armed* when an event arriving now would make it fire (or, for a flatline, when
its count is watched): a resumption needs ``quiet`` of watched history
(``alerts.evaluate.history_start``, the first successful poll) and no counted event within
``quiet``; a spike needs ``window + baseline`` of history and a flatline ``window``.
Thresholds and tripwires are always armed and say how far they are from firing. The counts
are the evaluator's own (``alerts.evaluate.conditions``: events flagged "not an event" do
not count), read at ``now`` on any connection, the analysts' read-only copy included.

Every entry is a plain dict: ``rule``, ``indicator``, ``kind``, ``severity``, ``state``
(``firing`` | ``armed`` | ``not armed`` | ``silenced`` | ``disabled``), ``armed`` (bool),
``armed_at`` (ISO time it will be armed, when known), ``firing_since``, ``silenced_until``
and ``detail``, one line such as "resumption: armed in 9 days: history since 2026-11-20"
or "threshold: 1 of 3 events in 72h".
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb

from alerts.evaluate import conditions, history_start
from alerts.rules import Rule, RulePack
from sources.configfile import format_duration

_TEMP = ("_eval_rules", "_eval_lookback", "_eval_cond")
_DAY = timedelta(days=1)


def _in(delta: timedelta) -> str:
    """'9 days', '5 hours', '20 minutes': rounded up, as a wait."""
    s = delta.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size or unit == "minute":
            n = max(1, math.ceil(s / size))
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return ""


def _history(watched: datetime | None, need_s: int, now: datetime, kind: str) -> tuple[bool, datetime | None, str]:
    """Armed by history? (armed, when it will be, the reason when not)."""
    if watched is None:
        return False, None, (f"{kind}: not armed: no history yet (needs {format_duration(need_s)} of polling; "
                             "`marsad backfill` loads past items)")
    at = watched + timedelta(seconds=need_s)
    if now >= at:
        return True, at, ""
    return False, at, f"{kind}: armed in {_in(at - now)}: history since {watched:%Y-%m-%d}"


def _last_events(con: duckdb.DuckDBPyConnection, indicators: list[str], now: datetime) -> dict[str, datetime]:
    """The latest counted event (seen by ``now``, not flagged) of each indicator."""
    if not indicators:
        return {}
    return dict(con.execute(
        """SELECT indicator, max(first_report_at) FROM counted_events
           WHERE list_contains(?, indicator) AND first_seen_at <= ? AND first_report_at <= ?
           GROUP BY indicator""",
        [indicators, now, now],
    ).fetchall())


def _silences(con: duckdb.DuckDBPyConnection, now: datetime) -> list[tuple]:
    return con.execute(
        """SELECT matcher, value, ends_at, created_by, reason FROM silences
           WHERE starts_at <= ? AND ends_at > ? ORDER BY ends_at DESC""",
        [now, now],
    ).fetchall()


def _firing(con: duckdb.DuckDBPyConnection) -> dict[str, datetime]:
    return dict(con.execute("SELECT rule_id, min(started_at) FROM alerts WHERE state = 'firing' GROUP BY rule_id").fetchall())


def rule_status(con: duckdb.DuckDBPyConnection, pack: RulePack, now: datetime) -> list[dict]:
    """Per rule of the pack, in its order: can it fire now, and if not, why (module docstring)."""
    watched = history_start(con)
    active = pack.active()
    conds = {}
    if active:
        try:
            conds = conditions(con, active, now, watched)
        finally:
            for t in _TEMP:
                con.execute(f"DROP TABLE IF EXISTS temp.{t}")
    last = _last_events(con, sorted({r.indicator for r in active if r.kind == "resumption"}), now)
    silences = _silences(con, now)
    firing = _firing(con)
    out = []
    for rule in pack.rules:
        d = dict(rule=rule.id, indicator=rule.indicator, kind=rule.kind, severity=rule.severity, state="armed", armed=True,
                 armed_at=None, firing_since=None, silenced_until=None, detail="")
        if not rule.enabled:
            d.update(state="disabled", armed=False, detail=f"{rule.kind}: disabled (enabled: false in the rule pack)")
            out.append(d)
            continue
        armed, at, detail = _judge(rule, conds[rule.id].facts, watched, last.get(rule.indicator), now)
        d.update(armed=armed, armed_at=at.isoformat() if at else None, detail=detail)
        if not armed:
            d["state"] = "not armed"
        if rule.id in firing:
            d.update(state="firing", firing_since=firing[rule.id].isoformat())
        sil = next((s for s in silences if (s[0], s[1]) in (("rule", rule.id), ("indicator", rule.indicator))), None)
        if sil:
            matcher, value, ends, by, reason = sil
            d["silenced_until"] = ends.isoformat()
            d["detail"] += f"; silenced until {ends:%Y-%m-%d %H:%M} UTC by {by} ({matcher} {value}): {reason}"
            if d["state"] != "firing":
                d["state"] = "silenced"
        out.append(d)
    return out


def _judge(rule: Rule, facts: dict, watched: datetime | None, last: datetime | None, now: datetime) -> tuple[bool, datetime | None, str]:
    window = format_duration(rule.window_s)
    k = rule.kind
    if k == "tripwire":
        return True, None, f"tripwire: armed: {facts['events']} event(s) in {window} (fires on 1)"
    if k == "threshold":
        return True, None, f"threshold: {facts['events']} of {rule.count} events in {window}"
    if k == "resumption":
        quiet = format_duration(rule.quiet)
        ok, at, why = _history(watched, rule.quiet, now, k)
        if not ok:
            return False, at, why
        if last is not None and now - last < timedelta(seconds=rule.quiet):
            if facts.get("events"):  # the condition holds: it resumed within its window
                return True, None, f"resumption: resumed after {quiet} quiet: {facts['events']} event(s) since"
            back = last + timedelta(seconds=rule.quiet)
            return False, back, (f"resumption: re-armed in {_in(back - now)}: last event {last:%Y-%m-%d %H:%M} UTC "
                                 f"(needs {quiet} quiet)")
        since = f"last event {last:%Y-%m-%d}" if last else "no event yet"
        return True, None, f"resumption: armed: {since}; the next event fires (quiet {quiet}, history since {watched:%Y-%m-%d})"
    if k == "spike":
        ok, at, why = _history(watched, rule.window_s + rule.baseline, now, k)
        if not ok:
            return False, at, why
        need = max(rule.count, math.ceil(rule.ratio * facts["expected"]))
        return True, None, (f"spike: {facts['events']} of {need} events in {window} "
                            f"({facts['baseline_events']} in the {format_duration(rule.baseline)} baseline)")
    if k == "flatline":
        ok, at, why = _history(watched, rule.window_s, now, k)
        if not ok:
            return False, at, why
        return True, None, f"flatline: {facts['events']} event(s) in {window} (fires below {rule.count})"
    raise ValueError(f"unknown rule kind {k!r}")


def not_armed(statuses: list[dict]) -> list[dict]:
    """The enabled rules that cannot fire now (what ``marsad alerts`` warns about)."""
    return [s for s in statuses if s["state"] in ("not armed", "silenced")]


def format_table(statuses: list[dict]) -> str:
    """``marsad rules status``: one row per rule under a header row."""
    rows = [("RULE", "INDICATOR", "KIND", "STATE", "WHY")]
    rows += [(s["rule"], s["indicator"], s["kind"], s["state"], s["detail"]) for s in statuses]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)
