"""Ops alerts about the sources themselves, through the same alerts and outbox as indicators.

Each unhealthy source is an alert with ``indicator = "source_health"`` and rule
``source-down:<id>`` or ``source-silent:<id>``, routed to the ops channel of the
``health:`` section of feeds.yaml. It fires once, repeats every ``health.repeat`` while
the problem lasts and resolves when the source recovers (or is disabled).
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Callable

import duckdb

from alerts.evaluate import ALERT_COLUMNS, NOTIFICATION_COLUMNS
from sources.health import SourceHealth, source_health
from sources.registry import HealthSettings
from warehouse.db import transaction
from warehouse.load import bulk_insert

INDICATOR = "source_health"
SEVERITY = {"down": "high", "silent": "medium"}
RATIONALE = {
    "down": "A source that keeps failing blinds every indicator it feeds; fix or disable it.",
    "silent": "A source that stops publishing far beyond its usual rate may have moved its feed or broken silently.",
}


def _payload(rule_id: str, problem: str, state: str, now: datetime, h: SourceHealth | None, summary: str) -> dict:
    facts = {}
    if h is not None:
        facts = {
            "source": h.source_id, "last_success_at": h.last_success_at.isoformat() if h.last_success_at else None,
            "consecutive_failures": h.consecutive_failures, "last_error": h.last_error,
            "items_24h": h.items_24h, "items_7d": h.items_7d,
            "last_item_at": h.last_item_at.isoformat() if h.last_item_at else None,
        }
    return {
        "indicator": INDICATOR, "rule": rule_id, "kind": f"source_{problem}", "state": state, "at": now.isoformat(),
        "severity": SEVERITY[problem], "summary": summary, "rationale": RATIONALE[problem], "facts": facts,
        "events": [], "corroboration": {}, "evidence": [],
    }


def evaluate_source_health(
    con: duckdb.DuckDBPyConnection, now: datetime, config: Callable[[], HealthSettings] | HealthSettings | None = None
) -> list[dict]:
    """Queue ops notifications for sources that went down or silent, or recovered. ``config``
    may be a callable so that the registry is read only when there is something to judge."""
    with transaction(con):
        open_alerts = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT rule_id, alert_id, last_notified_at FROM alerts WHERE indicator = ? AND state = 'firing'", [INDICATOR]
            ).fetchall()
        }
        if not open_alerts and not con.execute("SELECT count(*) FROM sources WHERE url NOT LIKE 'replay:%'").fetchone()[0]:
            return []  # a replay database, or nothing registered yet
        cfg = config() if callable(config) else (config or HealthSettings())
        wanted: dict[str, tuple[str, SourceHealth]] = {
            f"source-{h.problem}:{h.source_id}": (h.problem, h) for h in source_health(con, now, cfg) if h.problem
        }
        new_alerts, notes = [], []
        for rule_id, (problem, h) in wanted.items():
            summary = f"source {h.name} ({h.source_id}) is {problem}: {h.detail}"
            if rule_id not in open_alerts:
                alert_id = hashlib.sha1(f"{rule_id}\x1f{now.isoformat()}".encode()).hexdigest()[:20]
                new_alerts.append(dict(alert_id=alert_id, rule_id=rule_id, indicator=INDICATOR, kind=f"source_{problem}",
                                       severity=SEVERITY[problem], channel=cfg.channel, state="firing", started_at=now,
                                       resolved_at=None, last_notified_at=now, summary=summary))
                notes.append((alert_id, 1, "firing", dict(_payload(rule_id, problem, "firing", now, h, summary), alert_id=alert_id)))
                continue
            alert_id, last_notified = open_alerts[rule_id]
            if now - last_notified >= timedelta(seconds=cfg.repeat):
                con.execute("UPDATE alerts SET last_notified_at = ?, summary = ? WHERE alert_id = ?", [now, summary, alert_id])
                notes.append((alert_id, None, "repeat", _payload(rule_id, problem, "repeat", now, h, summary)))
        for rule_id, (alert_id, _) in open_alerts.items():
            if rule_id in wanted:
                continue
            problem, source_id = rule_id.removeprefix("source-").split(":", 1)
            summary = f"source {source_id} has recovered (no longer {problem})"
            con.execute("UPDATE alerts SET state = 'resolved', resolved_at = ?, last_notified_at = ? WHERE alert_id = ?",
                        [now, now, alert_id])
            notes.append((alert_id, None, "resolved", _payload(rule_id, problem, "resolved", now, None, summary)))
        bulk_insert(con, "alerts", new_alerts, ALERT_COLUMNS)
        rows = []
        for alert_id, seq, state, payload in notes:
            if seq is None:
                seq = con.execute("SELECT count(*) FROM notifications WHERE alert_id = ?", [alert_id]).fetchone()[0] + 1
            rows.append(dict(notification_id=f"{alert_id}:{seq}", alert_id=alert_id, seq=seq, state=state, created_at=now,
                             channel=cfg.channel, payload=payload))
        bulk_insert(con, "notifications", rows, NOTIFICATION_COLUMNS)
    return [r["payload"] for r in rows]


# ----------------------------------------------------------------------------- broken config files

CONFIG_INDICATOR = "config"
CONFIG_RATIONALE = (
    "Marsad keeps running on the last good copy of a file that does not validate (or without its part): "
    "edits to it are not in force until it is fixed. Run `marsad config check`."
)


def _config_payload(rule_id: str, state: str, now: datetime, summary: str, facts: dict) -> dict:
    return {
        "indicator": CONFIG_INDICATOR, "rule": rule_id, "kind": "config_error", "state": state, "at": now.isoformat(),
        "severity": "high", "summary": summary, "rationale": CONFIG_RATIONALE, "facts": facts,
        "events": [], "corroboration": {}, "evidence": [],
    }


def report_config_errors(con: duckdb.DuckDBPyConnection, now: datetime, problems: list, fine: set[str], channel: str) -> list[dict]:
    """Tell ops about config files that do not validate, once per file and error (not at every
    run), through the same alerts and outbox as everything else; and once more when the file
    validates again. ``problems``: objects with ``file``, ``error`` (file:line: field: message
    lines) and ``fallback`` (what the step did instead); ``fine``: files that were read fine."""
    firing = {
        r[0]: (r[1], r[2])
        for r in con.execute(
            "SELECT rule_id, alert_id, summary FROM alerts WHERE indicator = ? AND state = 'firing'", [CONFIG_INDICATOR]
        ).fetchall()
    }
    if not problems and not any(rule_id.removeprefix("config:") in fine for rule_id in firing):
        return []
    rows, new_alerts = [], []
    with transaction(con):
        seen: set[str] = set()
        for p in problems:
            rule_id = f"config:{p.file}"
            if rule_id in seen:
                continue
            seen.add(rule_id)
            lines = p.error.splitlines()
            summary = f"config error: {lines[0]}" + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")
            old = firing.get(rule_id)
            if old and old[1] == summary:
                continue  # told already
            if old:  # another error in the same file: this message replaces the old one
                con.execute("UPDATE alerts SET state = 'resolved', resolved_at = ? WHERE alert_id = ?", [now, old[0]])
            alert_id = hashlib.sha1(f"{rule_id}\x1f{summary}\x1f{now.isoformat()}".encode()).hexdigest()[:20]
            new_alerts.append(dict(alert_id=alert_id, rule_id=rule_id, indicator=CONFIG_INDICATOR, kind="config_error",
                                   severity="high", channel=channel, state="firing", started_at=now, resolved_at=None,
                                   last_notified_at=now, summary=summary))
            facts = {"file": p.file, "errors": lines[:20], "meanwhile": p.fallback}
            rows.append(dict(notification_id=f"{alert_id}:1", alert_id=alert_id, seq=1, state="firing", created_at=now,
                             channel=channel, payload=dict(_config_payload(rule_id, "firing", now, f"{summary}; {p.fallback}", facts), alert_id=alert_id)))
        for rule_id, (alert_id, _) in firing.items():
            file = rule_id.removeprefix("config:")
            if file not in fine or rule_id in seen:
                continue
            con.execute("UPDATE alerts SET state = 'resolved', resolved_at = ?, last_notified_at = ? WHERE alert_id = ?", [now, now, alert_id])
            seq = con.execute("SELECT count(*) FROM notifications WHERE alert_id = ?", [alert_id]).fetchone()[0] + 1
            rows.append(dict(notification_id=f"{alert_id}:{seq}", alert_id=alert_id, seq=seq, state="resolved", created_at=now,
                             channel=channel, payload=_config_payload(rule_id, "resolved", now, f"{file} validates again", {"file": file})))
        bulk_insert(con, "alerts", new_alerts, ALERT_COLUMNS)
        bulk_insert(con, "notifications", rows, NOTIFICATION_COLUMNS)
    return [r["payload"] for r in rows]
