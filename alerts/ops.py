"""Ops alerts about Marsad itself (sources that went down or silent, config files that do
not validate), through the one alert lifecycle (``alerts.lifecycle.apply``) as indicators.

Each unhealthy source is an alert with ``indicator = "source_health"`` and rule
``source-down:<id>`` or ``source-silent:<id>``, routed to the ops channel of the
``health:`` section of feeds.yaml. It fires once, repeats every ``health.repeat`` while
the problem lasts (unless acknowledged) and resolves when the source recovers (or is
disabled). A broken config file is an alert with rule ``config:<file>``: told once, again
(in its thread) when the error changes, resolved when the file validates again.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

import duckdb

from alerts.lifecycle import Notice, Observation, Transition, apply
from sources.health import SourceHealth, source_health
from sources.registry import HealthSettings
from warehouse.db import transaction
from warehouse.sources import record_verdicts

INDICATOR = "source_health"
INDICATOR_NAME = "Source health"
SEVERITY = {"down": "high", "silent": "medium"}
RATIONALE = {
    "down": "A source that keeps failing blinds every indicator it feeds; fix or disable it.",
    "silent": "A source that stops publishing far beyond its usual rate may have moved its feed or broken silently.",
}


def _facts(h: SourceHealth | None) -> dict:
    if h is None:
        return {}
    return {
        "source": h.source_id, "last_success_at": h.last_success_at.isoformat() if h.last_success_at else None,
        "consecutive_failures": h.consecutive_failures, "last_error": h.last_error,
        "items_24h": h.items_24h, "items_7d": h.items_7d,
        "last_item_at": h.last_item_at.isoformat() if h.last_item_at else None,
    }


def evaluate_source_health(
    con: duckdb.DuckDBPyConnection, now: datetime, config: Callable[[], HealthSettings] | HealthSettings | None = None
) -> list[dict]:
    """Queue ops notifications for sources that went down or silent, or recovered. ``config``
    may be a callable so that the registry is read only when there is something to judge."""
    with transaction(con):
        firing = [r[0] for r in con.execute(
            "SELECT rule_id FROM alerts WHERE indicator = ? AND state = 'firing'", [INDICATOR]).fetchall()]
        if not firing and not con.execute("SELECT count(*) FROM sources WHERE url NOT LIKE 'replay:%'").fetchone()[0]:
            return []  # a replay database, or nothing registered yet
        cfg = config() if callable(config) else (config or HealthSettings())
        judged = source_health(con, now, cfg)
        record_verdicts(con, [(h.source_id, h.problem, h.detail) for h in judged], now)
        wanted: dict[str, SourceHealth] = {f"source-{h.problem}:{h.source_id}": h for h in judged if h.problem}
        observed = []
        for rule_id, h in wanted.items():
            observed.append(Observation(rule_id=rule_id, indicator=INDICATOR, kind=f"source_{h.problem}", severity=SEVERITY[h.problem],
                                        channel=cfg.channel, active=True, repeat_s=cfg.repeat,
                                        summary=f"source {h.name} ({h.source_id}) is {h.problem}: {h.detail}"))
        for rule_id in firing:
            if rule_id not in wanted:
                problem, source_id = rule_id.removeprefix("source-").split(":", 1)
                observed.append(Observation(rule_id=rule_id, indicator=INDICATOR, kind=f"source_{problem}", severity=SEVERITY[problem],
                                            channel=cfg.channel, active=False,
                                            summary=f"source {source_id} has recovered (no longer {problem})"))

        def build(moves: list[Transition]) -> dict[str, Notice]:
            out = {}
            for m in moves:
                problem = m.obs.kind.removeprefix("source_")
                out[m.alert_id] = Notice(
                    indicator=INDICATOR, indicator_name=INDICATOR_NAME, rule=m.obs.rule_id, kind=m.obs.kind, state=m.state,
                    at=now.isoformat(), severity=m.obs.severity, summary=m.obs.summary, rationale=RATIONALE[problem],
                    facts=_facts(wanted.get(m.obs.rule_id) if m.state != "resolved" else None))
            return out

        return apply(con, observed, now, build)


# ----------------------------------------------------------------------------- broken config files

CONFIG_INDICATOR = "config"
CONFIG_INDICATOR_NAME = "Configuration"
CONFIG_RATIONALE = (
    "Marsad keeps running on the last good copy of a file that does not validate (or without its part): "
    "edits to it are not in force until it is fixed. Run `marsad config check`."
)


def report_config_errors(con: duckdb.DuckDBPyConnection, now: datetime, problems: list, fine: set[str], channel: str) -> list[dict]:
    """Tell ops about config files that do not validate, once per file and error (not at every
    run), through the same alert lifecycle as everything else: a new error in the same file is
    an update in the alert's thread, and the alert resolves when the file validates again.
    ``problems``: objects with ``file``, ``error`` (file:line: field: message lines) and
    ``fallback`` (what the step did instead); ``fine``: files that were read fine."""
    firing = dict(con.execute(
        "SELECT rule_id, summary FROM alerts WHERE indicator = ? AND state = 'firing'", [CONFIG_INDICATOR]).fetchall())
    if not problems and not any(rule_id.removeprefix("config:") in fine for rule_id in firing):
        return []
    observed, facts = [], {}
    for p in problems:
        rule_id = f"config:{p.file}"
        if rule_id in facts:
            continue
        lines = p.error.splitlines()
        summary = f"config error: {lines[0]}" + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")
        facts[rule_id] = ({"file": p.file, "errors": lines[:20], "meanwhile": p.fallback}, f"{summary}; {p.fallback}")
        observed.append(Observation(rule_id=rule_id, indicator=CONFIG_INDICATOR, kind="config_error", severity="high", channel=channel,
                                    active=True, summary=summary, fresh=rule_id in firing and firing[rule_id] != summary))
    for rule_id in firing:
        file = rule_id.removeprefix("config:")
        if file in fine and rule_id not in facts:
            facts[rule_id] = ({"file": file}, f"{file} validates again")
            observed.append(Observation(rule_id=rule_id, indicator=CONFIG_INDICATOR, kind="config_error", severity="high",
                                        channel=channel, active=False, summary=firing[rule_id]))

    def build(moves: list[Transition]) -> dict[str, Notice]:
        return {m.alert_id: Notice(indicator=CONFIG_INDICATOR, indicator_name=CONFIG_INDICATOR_NAME, rule=m.obs.rule_id,
                                   kind="config_error", state=m.state, at=now.isoformat(), severity="high",
                                   summary=facts[m.obs.rule_id][1], rationale=CONFIG_RATIONALE, facts=facts[m.obs.rule_id][0])
                for m in moves}

    with transaction(con):
        return apply(con, observed, now, build, first={o.rule_id: o.summary for o in observed})
