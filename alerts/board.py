"""The indicator board's data: per indicator its state, quiet time and last events; per
source its health. Plain Python over the analysts' read copy, so the Airflow UI page
(``plugins/marsad_board.py``), its JSON endpoint and any CLI read the very same thing.

The board never opens the primary warehouse: it opens the published read copy
(``warehouse.publish``) read-only for the length of one query and closes it. The
pipeline never writes that file in place (it publishes by atomic rename), so a board
that is being read never holds up a load or an evaluation, and each request sees the
newest copy.

States of an indicator, from the alerts of its rules (``alerts/evaluate.py``):

* ``firing``: at least one of its rules has an alert firing now;
* ``resolved``: none firing, and the last alert of its rules resolved within
  ``RESOLVED_FOR`` (3 days): it was paging ops recently;
* ``quiet``: neither.

Health of a source (``sources/health.py`` judges down and silent the way ops alerts do):
``ok``, ``failing`` (the last poll failed; the detail says when it counts as down),
``silent`` (answers, but nothing new for far longer than usual), ``stale`` (no poll for
3 intervals: is the pipeline running?), ``never polled`` or ``disabled``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import yaml

RESOLVED_FOR = timedelta(days=3)
EVENTS_SHOWN = 5
STATE_ORDER = {"firing": 0, "resolved": 1, "quiet": 2}


@dataclass(frozen=True)
class BoardConfig:
    """Where the board reads from: the read copy and the analysts' configuration files."""

    read_copy: Path
    indicators: Path
    rules: Path
    feeds: Path

    @classmethod
    def from_env(cls) -> "BoardConfig":
        """The same paths the pipeline uses (MARSAD_WAREHOUSE, MARSAD_READ_COPY, MARSAD_RULES, ...)."""
        from alerts.rules import indicators_dir, rules_path
        from sources.registry import feeds_path
        from warehouse.db import default_path
        from warehouse.publish import read_copy_path

        return cls(read_copy_path(default_path()), indicators_dir(), rules_path(), feeds_path())


def build(cfg: BoardConfig, now: datetime | None = None, events_shown: int = EVENTS_SHOWN) -> dict:
    """The whole board, or ``status: no_read_copy`` / ``error`` with a message; never raises
    for a missing or unreadable copy (the page says so instead)."""
    now = now or datetime.now(timezone.utc)
    indicators, problems = _indicators(cfg.indicators)
    rules, more = _rules(cfg.rules, [i["id"] for i in indicators])
    problems += more
    health_cfg, more = _health_settings(cfg.feeds)
    problems += more
    out = {"status": "ok", "message": None, "generated_at": now, "read_copy": str(cfg.read_copy), "config_problems": problems,
           "resolved_for_days": RESOLVED_FOR / timedelta(days=1), "published": None, "indicators": [], "sources": [], "counts": {}}
    if not cfg.read_copy.exists():
        out.update(status="no_read_copy", message=(
            f"No read copy has been published yet at {cfg.read_copy}. The pipeline publishes it after its first "
            "load (or run `marsad publish`)."))
        return out
    try:
        con = open_board_copy(cfg.read_copy)
    except (duckdb.Error, FileNotFoundError) as exc:
        out.update(status="error", message=f"Cannot open the read copy {cfg.read_copy}: {exc}")
        return out
    try:
        out.update(snapshot(con, now, indicators, rules, health_cfg, events_shown))
    except duckdb.Error as exc:
        out.update(status="error", message=f"Cannot read the read copy {cfg.read_copy}: {exc}")
    finally:
        con.close()
    return out


def open_board_copy(path: Path) -> duckdb.DuckDBPyConnection:
    """The read copy, sealed like every analyst's connection (no file or network access,
    configuration locked; see ``warehouse.publish.open_read_copy``); the board needs no fts."""
    from warehouse.publish import open_read_copy

    return open_read_copy(path, fts=False)


def snapshot(con: duckdb.DuckDBPyConnection, now: datetime, indicators: list[dict], rules: dict[str, list[dict]],
             health_cfg=None, events_shown: int = EVENTS_SHOWN) -> dict:
    """The board's rows from an open connection to a warehouse (the read copy, or any file
    with Marsad's schema). ``indicators``: [{id, name, definition}]; ``rules``: indicator
    id -> [{id, kind, severity, rationale}]."""
    published = None
    if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'publish_info'").fetchone()[0]:
        row = con.execute("SELECT published_at, articles, newest_fetched_at FROM publish_info").fetchone()
        if row:
            published = {"published_at": row[0], "articles": row[1], "newest_fetched_at": row[2]}

    # Alerts: every firing one, and the latest episode of each rule.
    alerts: dict[str, list[dict]] = {}
    for r in con.execute(
        """SELECT alert_id, rule_id, indicator, kind, severity, state, started_at, resolved_at, summary, acked_at, acked_by
           FROM alerts
           QUALIFY state = 'firing' OR row_number() OVER (PARTITION BY rule_id ORDER BY started_at DESC, alert_id) = 1
           ORDER BY started_at DESC""").fetchall():
        a = dict(zip(("alert_id", "rule_id", "indicator", "kind", "severity", "state", "started_at", "resolved_at", "summary",
                      "acked_at", "acked_by"), r))
        alerts.setdefault(a["indicator"], []).append(a)

    stats = {
        r[0]: {"last_event_at": r[1], "events_7d": r[2], "events_30d": r[3], "events_total": r[4]}
        for r in con.execute(
            """SELECT indicator, max(first_report_at),
                      count(*) FILTER (WHERE first_report_at > ?::TIMESTAMPTZ - INTERVAL 7 DAY),
                      count(*) FILTER (WHERE first_report_at > ?::TIMESTAMPTZ - INTERVAL 30 DAY),
                      count(*)
               FROM events WHERE first_seen_at <= ? GROUP BY indicator""", [now, now, now]).fetchall()
    }
    events: dict[str, list[dict]] = {}
    for r in con.execute(
        """WITH latest AS (
               SELECT event_id, indicator, first_report_at, title FROM events WHERE first_seen_at <= ?
               QUALIFY row_number() OVER (PARTITION BY indicator ORDER BY first_report_at DESC, event_id) <= ?
           ), reports AS (
               SELECT ea.event_id, a.url, a.lang, a.source_id, coalesce(s.name, a.source_id) AS outlet, a.published_at, a.article_id
               FROM event_articles ea JOIN articles a USING (article_id) LEFT JOIN sources s USING (source_id)
               WHERE ea.event_id IN (SELECT event_id FROM latest)
           )
           SELECT l.indicator, l.event_id, l.first_report_at, l.title,
                  arg_min(r.url, (r.published_at, r.article_id))    AS url,
                  arg_min(r.outlet, (r.published_at, r.article_id)) AS outlet,
                  count(*)                                        AS n_articles,
                  count(DISTINCT r.source_id)                     AS n_outlets,
                  list_sort(list_distinct(list(r.lang)))          AS languages,
                  list_sort(list_distinct(list(r.outlet)))        AS outlets
           FROM latest l JOIN reports r USING (event_id)
           GROUP BY ALL
           ORDER BY l.indicator, l.first_report_at DESC, l.event_id""", [now, events_shown]).fetchall():
        e = dict(zip(("indicator", "event_id", "at", "title", "url", "outlet", "n_articles", "n_outlets", "languages", "outlets"), r))
        events.setdefault(e.pop("indicator"), []).append(e)

    rows = []
    for ind in indicators:
        iid = ind["id"]
        mine = alerts.get(iid, [])
        firing = [a for a in mine if a["state"] == "firing"]
        resolved = sorted((a for a in mine if a["state"] == "resolved" and a["resolved_at"]), key=lambda a: a["resolved_at"], reverse=True)
        if firing:
            state = "firing"
        elif resolved and now - resolved[0]["resolved_at"] <= RESOLVED_FOR:
            state = "resolved"
        else:
            state = "quiet"
        st = stats.get(iid, {"last_event_at": None, "events_7d": 0, "events_30d": 0, "events_total": 0})
        last = st["last_event_at"]
        rows.append({
            **ind, "state": state, **st,
            "days_since_last_event": round((now - last).total_seconds() / 86400, 1) if last else None,
            "firing": firing,
            "last_resolved": resolved[0] if resolved else None,
            "rules": rules.get(iid, []),
            "events": events.get(iid, []),
        })
    rows.sort(key=lambda r: (STATE_ORDER[r["state"]], -(r["last_event_at"].timestamp() if r["last_event_at"] else float("-inf")), r["id"]))

    sources = _sources(con, now, health_cfg, alerts.get("source_health", []))
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in STATE_ORDER}
    for s in sources:
        counts[f"sources_{s['health']}"] = counts.get(f"sources_{s['health']}", 0) + 1
    return {"published": published, "indicators": rows, "sources": sources, "counts": counts}


def _sources(con, now: datetime, health_cfg, ops_alerts: list[dict]) -> list[dict]:
    from sources.health import STATES, assess, source_health

    firing = {a["rule_id"].split(":", 1)[1]: a["rule_id"] for a in ops_alerts if a["state"] == "firing" and ":" in a["rule_id"]}
    out = []
    for h in source_health(con, now, health_cfg):
        health, detail = assess(h, now)
        out.append({
            "source_id": h.source_id, "name": h.name, "lang": h.lang, "health": health, "problem": h.problem, "detail": detail,
            "last_success_at": h.last_success_at, "last_attempt_at": h.last_attempt_at, "last_status": h.last_status,
            "last_http_status": h.last_http_status, "last_error": (h.last_error or "")[:300] or None,
            "consecutive_failures": h.consecutive_failures, "failing_since": h.failing_since,
            "items_24h": h.items_24h, "items_7d": h.items_7d, "last_item_at": h.last_item_at,
            "ops_alert": firing.get(h.source_id),
        })
    out.sort(key=lambda s: (STATES.index(s["health"]), s["source_id"]))
    return out


# ----------------------------------------------------------------------------- configuration
# Read on every request, parsed again only when a file changes.


def _mtimes(*paths: Path) -> tuple:
    out = []
    for p in paths:
        files = sorted(p.glob("*.yaml")) if p.is_dir() else [p]
        out += [(str(f), f.stat().st_mtime_ns if f.exists() else None) for f in files]
    return tuple(out)


def _indicators(directory: Path) -> tuple[list[dict], list[str]]:
    return _indicators_cached(Path(directory), _mtimes(Path(directory)))


@functools.lru_cache(maxsize=4)
def _indicators_cached(directory: Path, _mtimes: tuple) -> tuple[list[dict], list[str]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out, problems = [], []
    for path in sorted(directory.glob("*.yaml")):
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
        except (OSError, yaml.YAMLError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        data = data if isinstance(data, dict) else {}
        out.append({"id": str(data.get("id") or path.stem), "name": str(data.get("name") or path.stem),
                    "definition": str(data.get("definition") or "")})
    return out, problems


def _rules(path: Path, indicator_ids: list[str]) -> tuple[dict[str, list[dict]], list[str]]:
    return _rules_cached(Path(path), tuple(indicator_ids), _mtimes(Path(path)))


@functools.lru_cache(maxsize=4)
def _rules_cached(path: Path, indicator_ids: tuple, _mtimes: tuple) -> tuple[dict[str, list[dict]], list[str]]:
    from alerts.rules import load_rules
    from sources.configfile import ConfigError

    try:
        pack = load_rules(path, list(indicator_ids))
    except (ConfigError, OSError) as exc:
        return {}, [f"{path}: {exc}"]
    out: dict[str, list[dict]] = {}
    for r in pack.active():
        out.setdefault(r.indicator, []).append({"id": r.id, "kind": r.kind, "severity": r.severity, "rationale": r.rationale})
    return out, []


def _health_settings(path: Path):
    return _health_cached(Path(path), _mtimes(Path(path)))


@functools.lru_cache(maxsize=4)
def _health_cached(path: Path, _mtimes: tuple):
    from sources.configfile import ConfigError
    from sources.registry import HealthSettings, load_registry

    try:
        return load_registry(path).health, []
    except (ConfigError, OSError) as exc:
        return HealthSettings(), [f"{path}: {exc} (source health judged with the default settings)"]


def jsonable(value):
    """The board as JSON-ready data: datetimes as ISO 8601 strings."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value
