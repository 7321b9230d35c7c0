"""The indicator board's data: per indicator its state, quiet time, 90-day timeline and last
events with their evidence; per source its health. Plain Python over the analysts' read
copy, so the Airflow UI page (``plugins/marsad_board.py``), its JSON endpoint and any CLI
read the very same thing.

``build`` returns one dict of sections: ``status``/``message`` (no read copy, unreadable),
``published`` (the read copy's age), ``indicators`` (one row per indicator: state, alerts,
``events`` with ``reports``/``frame``/``alerts``, ``timeline``), ``sources`` (health),
``counts``, ``config_problems``. A new panel is a new section computed in ``snapshot``.
The numbers (events per day, quiet spells, window peaks) come from DuckDB SQL.

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
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import yaml

RESOLVED_FOR = timedelta(days=3)
EVENTS_SHOWN = 5
STATE_ORDER = {"firing": 0, "resolved": 1, "quiet": 2}
TIMELINE_DAYS = 90
# The shortest gap the timeline shades as a quiet spell for an indicator without a
# resumption rule (with one, the rule's ``quiet``).
DEFAULT_QUIET = timedelta(days=7)


@dataclass(frozen=True)
class BoardConfig:
    """Where the board reads from: the read copy and the analysts' configuration files."""

    read_copy: Path
    indicators: Path
    rules: Path
    feeds: Path
    assessments: Path | None = None  # key judgements (alerts/assessments/); None: no panel

    @classmethod
    def from_env(cls) -> "BoardConfig":
        """The same paths the pipeline uses (MARSAD_WAREHOUSE, MARSAD_READ_COPY, MARSAD_RULES, ...)."""
        from alerts.judgements import assessments_dir
        from alerts.rules import indicators_dir, rules_path
        from sources.registry import feeds_path
        from warehouse.db import default_path
        from warehouse.publish import read_copy_path

        return cls(read_copy_path(default_path()), indicators_dir(), rules_path(), feeds_path(), assessments_dir())


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
        _add_rule_status(out, con, cfg, [i["id"] for i in indicators], now)
        if cfg.assessments is not None:
            from alerts.judgements import board_panel

            out["judgements"] = board_panel(con, cfg.assessments, now)
    except duckdb.Error as exc:
        out.update(status="error", message=f"Cannot read the read copy {cfg.read_copy}: {exc}")
    finally:
        con.close()
    return out


def _add_rule_status(out: dict, con: duckdb.DuckDBPyConnection, cfg: BoardConfig, indicator_ids: list[str], now: datetime) -> None:
    """Whether each rule can fire now and why not (``alerts.armed``: "armed in 9 days: history
    since ..."), beside the rule on its indicator's card. A rule file that does not validate is
    already among ``config_problems``: the cards then show the rules without a status."""
    from alerts.armed import rule_status
    from alerts.rules import load_rules
    from sources.configfile import ConfigError

    try:
        pack = load_rules(cfg.rules, indicator_ids)
    except (ConfigError, OSError, UnicodeDecodeError):
        return
    status = {s["rule"]: s for s in rule_status(con, pack, now)}
    for row in out["indicators"]:
        row["rules"] = [{**r, **{k: status[r["id"]][k] for k in ("state", "armed", "armed_at", "detail")}} if r["id"] in status else r
                        for r in row["rules"]]


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
        f"""WITH {_SLACK_ROOTS}
           SELECT al.alert_id, rule_id, indicator, kind, severity, state, started_at, resolved_at, summary, acked_at, acked_by,
                  root.slack_channel, root.slack_ts
           FROM alerts al LEFT JOIN slack_roots root USING (alert_id)
           QUALIFY state = 'firing' OR row_number() OVER (PARTITION BY rule_id ORDER BY started_at DESC, al.alert_id) = 1
           ORDER BY started_at DESC""").fetchall():
        a = dict(zip(("alert_id", "rule_id", "indicator", "kind", "severity", "state", "started_at", "resolved_at", "summary",
                      "acked_at", "acked_by"), r))
        a["slack"] = _slack(r[11], r[12])
        alerts.setdefault(a["indicator"], []).append(a)

    stats = {
        r[0]: {"last_event_at": r[1], "events_7d": r[2], "events_30d": r[3], "events_total": r[4]}
        for r in con.execute(
            """SELECT indicator, max(first_report_at),
                      count(*) FILTER (WHERE first_report_at > ?::TIMESTAMPTZ - INTERVAL 7 DAY),
                      count(*) FILTER (WHERE first_report_at > ?::TIMESTAMPTZ - INTERVAL 30 DAY),
                      count(*)
               FROM counted_events WHERE first_seen_at <= ? GROUP BY indicator""", [now, now, now]).fetchall()
    }
    events = latest_events(con, now, events_shown)

    lines = timelines(con, now, indicators, rules)
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
            "since_last_event_s": round((now - last).total_seconds()) if last else None,
            "firing": firing,
            "last_resolved": resolved[0] if resolved else None,
            "rules": rules.get(iid, []),
            "events": events.get(iid, []),
            "timeline": lines.get(iid),
        })
    rows.sort(key=lambda r: (STATE_ORDER[r["state"]], -(r["last_event_at"].timestamp() if r["last_event_at"] else float("-inf")), r["id"]))

    sources = _sources(con, now, health_cfg, alerts.get("source_health", []))
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in STATE_ORDER}
    for s in sources:
        counts[f"sources_{s['health']}"] = counts.get(f"sources_{s['health']}", 0) + 1
    return {"published": published, "indicators": rows, "sources": sources, "counts": counts}


# ----------------------------------------------------------------------------- events and their evidence

# The message that opened each alert's thread in Slack: its first notification that was
# posted to Slack as a parent (follow-ups carry ``thread_ts``). Alerts delivered to the local
# sink, or not delivered yet, have none.
_SLACK_ROOTS = """slack_roots AS (
    SELECT alert_id, arg_min(slack_channel, seq) AS slack_channel, arg_min(slack_ts, seq) AS slack_ts
    FROM notifications
    WHERE status = 'sent' AND sink = 'slack' AND thread_ts IS NULL AND slack_channel IS NOT NULL AND slack_ts IS NOT NULL
    GROUP BY alert_id)"""


def _slack(channel: str | None, ts: str | None) -> dict | None:
    return {"channel": channel, "ts": ts} if channel and ts else None


def _frame(value) -> dict | None:
    """``article_indicators.frame`` (JSON) as a dict."""
    if value is None or isinstance(value, dict):
        return value
    try:
        out = json.loads(value)
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


def latest_events(con: duckdb.DuckDBPyConnection, now: datetime, events_shown: int = EVENTS_SHOWN,
                  day: tuple[str, date] | None = None) -> dict[str, list[dict]]:
    """Indicator -> its last ``events_shown`` events seen by ``now``, newest first (or, with
    ``day`` = (indicator, UTC date), every event of that indicator first reported that day),
    each with its evidence: every report (title, link, outlet, language, how
    it joined, its frame), the event's frame (that of its first report that has one), its
    corroboration, and the alerts that told ops about it with their Slack thread.

    The title, link and outlet shown for an event are those of one report, its first: an
    event's stored title is the first report's *when the event opened*, and a report
    published earlier that joins later moves the event's time, not its title."""
    pick = ("SELECT event_id, indicator, first_report_at FROM events WHERE first_seen_at <= $now "
            "QUALIFY row_number() OVER (PARTITION BY indicator ORDER BY first_report_at DESC, event_id) <= $n")
    params = {"now": now, "n": events_shown}
    if day is not None:
        pick = ("SELECT event_id, indicator, first_report_at FROM events WHERE first_seen_at <= $now AND indicator = $indicator "
                "AND CAST(date_trunc('day', first_report_at AT TIME ZONE 'UTC') AS DATE) = $day")
        params = {"now": now, "indicator": day[0], "day": day[1]}
    rows = con.execute(
        f"""WITH latest AS ({pick}),
           {_SLACK_ROOTS},
           reports AS (
               SELECT l.event_id, ea.how, a.article_id, a.title, a.url, a.lang, a.source_id,
                      coalesce(s.name, a.source_id) AS outlet, a.published_at, ai.frame
               FROM latest l JOIN event_articles ea USING (event_id) JOIN articles a USING (article_id)
               LEFT JOIN sources s USING (source_id)
               LEFT JOIN article_indicators ai ON ai.article_id = a.article_id AND ai.indicator = l.indicator
           ), told AS (
               SELECT ae.event_id,
                      list({{'alert_id': al.alert_id, 'rule_id': al.rule_id, 'kind': al.kind, 'state': al.state,
                             'started_at': al.started_at, 'resolved_at': al.resolved_at,
                             'slack_channel': root.slack_channel, 'slack_ts': root.slack_ts}} ORDER BY al.started_at, al.alert_id) AS alerts
               FROM alert_events ae JOIN alerts al USING (alert_id) LEFT JOIN slack_roots root USING (alert_id)
               WHERE ae.event_id IN (SELECT event_id FROM latest)
               GROUP BY ae.event_id
           ), flags AS (  -- flagged "not an event" (alerts/feedback.py): shown struck, left out of every count
               SELECT event_id, arg_max(flagged_by, flagged_at) AS flagged_by, max(flagged_at) AS flagged_at
               FROM event_feedback WHERE undone_at IS NULL AND event_id IN (SELECT event_id FROM latest)
               GROUP BY event_id
           )
           SELECT l.indicator, l.event_id, l.first_report_at,
                  arg_min({{'title': r.title, 'url': r.url, 'outlet': r.outlet, 'lang': r.lang}}, (r.published_at, r.article_id)) AS first,
                  count(*)                                 AS n_articles,
                  count(DISTINCT r.source_id)              AS n_outlets,
                  list_sort(list_distinct(list(r.lang)))   AS languages,
                  list_sort(list_distinct(list(r.outlet))) AS outlets,
                  list({{'article_id': r.article_id, 'title': r.title, 'url': r.url, 'lang': r.lang, 'outlet': r.outlet,
                        'source_id': r.source_id, 'published_at': r.published_at, 'how': r.how, 'frame': r.frame}}
                       ORDER BY r.published_at, r.article_id) AS reports,
                  arg_min(r.frame, (r.published_at, r.article_id)) FILTER (WHERE r.frame IS NOT NULL) AS frame,
                  any_value(t.alerts)                      AS alerts,
                  any_value(f.flagged_by)                  AS flagged_by,
                  any_value(f.flagged_at)                  AS flagged_at
           FROM latest l JOIN reports r USING (event_id) LEFT JOIN told t USING (event_id) LEFT JOIN flags f USING (event_id)
           GROUP BY l.indicator, l.event_id, l.first_report_at
           ORDER BY l.indicator, l.first_report_at DESC, l.event_id""", params).fetchall()
    out: dict[str, list[dict]] = {}
    for (indicator, event_id, at, first, n_articles, n_outlets, languages, outlets, reports, frame, told, flagged_by, flagged_at) in rows:
        out.setdefault(indicator, []).append({
            "event_id": event_id, "at": at, "title": first["title"], "url": first["url"], "outlet": first["outlet"],
            "lang": first["lang"], "n_articles": n_articles, "n_outlets": n_outlets, "languages": languages, "outlets": outlets,
            "reports": [dict(r, frame=_frame(r["frame"])) for r in reports],
            "frame": _frame(frame),
            "alerts": [{**{k: v for k, v in a.items() if not k.startswith("slack_")}, "slack": _slack(a["slack_channel"], a["slack_ts"])}
                       for a in (told or [])],
            "flagged": {"by": flagged_by, "at": flagged_at} if flagged_by else None,
        })
    return out


def day_events(cfg: BoardConfig, indicator: str, day: date, now: datetime | None = None) -> dict:
    """Every event of ``indicator`` first reported on the UTC day ``day``, with its evidence
    (as in ``latest_events``), oldest first: what a bar of the timeline stands for."""
    now = now or datetime.now(timezone.utc)
    indicators, _ = _indicators(cfg.indicators)
    known = {i["id"]: i for i in indicators}
    out = {"status": "ok", "message": None, "generated_at": now, "read_copy": str(cfg.read_copy), "day": day,
           "indicator": known.get(indicator, {"id": indicator, "name": indicator, "definition": ""}), "events": []}
    if indicator not in known:
        out.update(status="error", message=f"No indicator {indicator!r} (known: {', '.join(sorted(known))}).")
        return out
    if not cfg.read_copy.exists():
        out.update(status="no_read_copy", message=f"No read copy has been published yet at {cfg.read_copy}.")
        return out
    con = open_board_copy(cfg.read_copy)
    try:
        out["events"] = sorted(latest_events(con, now, day=(indicator, day)).get(indicator, []), key=lambda e: (e["at"], e["event_id"]))
    finally:
        con.close()
    return out


def slack_thread(cfg: BoardConfig, alert_id: str) -> dict | None:
    """The Slack message that opened ``alert_id``'s thread ({channel, ts}), or None."""
    con = open_board_copy(cfg.read_copy)
    try:
        row = con.execute(f"WITH {_SLACK_ROOTS} SELECT slack_channel, slack_ts FROM slack_roots WHERE alert_id = ?", [alert_id]).fetchone()
    finally:
        con.close()
    return _slack(*row) if row else None


# ----------------------------------------------------------------------------- the timeline


def _day(t: datetime) -> date:
    return t.astimezone(timezone.utc).date()


def timelines(con: duckdb.DuckDBPyConnection, now: datetime, indicators: list[dict], rules: dict[str, list[dict]],
              days: int = TIMELINE_DAYS) -> dict[str, dict]:
    """Per indicator, its story over the last ``days`` UTC days (today included):

    * ``days``: events per day (by first report), every day present, zeros included;
    * ``quiet_spells``: gaps between consecutive events of at least ``quiet_s`` (the shortest
      ``quiet`` of the indicator's resumption rules, or ``DEFAULT_QUIET`` without one): the
      gap before the first event counts from when Marsad started watching, the gap after the
      last one runs to ``now`` (``ongoing``);
    * ``alerts``: every alert episode of its rules that overlaps the period (started, resolved,
      its Slack thread);
    * ``thresholds``: per counting rule (threshold, spike, flatline; a tripwire counts as a
      threshold of 1) its ``count`` in ``window`` and, for threshold and spike rules, the most
      events its window held on each day (the count the rule compared with ``count``).
    Events count once Marsad has seen them (``first_seen_at <= now``), as on the rest of the board."""
    from alerts.evaluate import history_start

    ids = [i["id"] for i in indicators]
    last = _day(now)
    first = last - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=timezone.utc)
    watched = history_start(con)

    counts = dict(con.execute(
        """WITH ind AS (SELECT unnest($ids::VARCHAR[]) AS indicator),
                days AS (SELECT CAST(d AS DATE) AS day FROM generate_series($first::DATE, $last::DATE, INTERVAL 1 DAY) g(d)),
                ev AS (SELECT indicator, CAST(date_trunc('day', first_report_at AT TIME ZONE 'UTC') AS DATE) AS day, count(*) AS n
                       FROM counted_events
                       WHERE first_seen_at <= $now AND first_report_at <= $now AND first_report_at >= $start
                       GROUP BY ALL)
           SELECT ind.indicator, list(coalesce(ev.n, 0) ORDER BY days.day)
           FROM ind CROSS JOIN days LEFT JOIN ev USING (indicator, day)
           GROUP BY ind.indicator""",
        {"ids": ids, "first": first, "last": last, "now": now, "start": start}).fetchall())

    resumption = {iid: min(((r["quiet_s"], r["id"]) for r in rules.get(iid, []) if r["kind"] == "resumption" and r.get("quiet_s")),
                           default=(None, None)) for iid in ids}
    quiet = {iid: q for iid, (q, _) in resumption.items()}
    spells: dict[str, list[dict]] = {}
    for iid, s_at, e_at, ongoing, from_watch in con.execute(
        """WITH q AS (SELECT unnest($ids::VARCHAR[]) AS indicator, unnest($quiet::BIGINT[]) AS quiet_us),
                seen AS (SELECT indicator, first_report_at AS t FROM counted_events
                         WHERE first_seen_at <= $now AND first_report_at <= $now AND list_contains($ids, indicator)),
                -- the period's events, and the last one before it (where a spell into the period starts)
                ev AS (SELECT indicator, t FROM seen WHERE t >= $start
                       UNION ALL
                       SELECT indicator, max(t) FROM seen WHERE t < $start GROUP BY indicator),
                gaps AS (
                    SELECT indicator, lag(t) OVER (PARTITION BY indicator ORDER BY t) AS prev_t, t AS next_t FROM ev
                    UNION ALL  -- after the last event (or, with none, since watching began): up to now
                    SELECT q.indicator, max(ev.t), NULL FROM q LEFT JOIN ev USING (indicator) GROUP BY q.indicator),
                spans AS (
                    SELECT indicator, coalesce(prev_t, $watched::TIMESTAMPTZ) AS s, coalesce(next_t, $now::TIMESTAMPTZ) AS e,
                           next_t IS NULL AS ongoing, prev_t IS NULL AS from_watch
                    FROM gaps)
           SELECT indicator, s, e, ongoing, from_watch FROM spans JOIN q USING (indicator)
           WHERE s IS NOT NULL AND epoch_us(e) - epoch_us(s) >= q.quiet_us AND e > $start
           ORDER BY indicator, s""",
        {"ids": ids, "quiet": [int((quiet[i] or DEFAULT_QUIET.total_seconds()) * 1_000_000) for i in ids],
         "now": now, "watched": watched, "start": start}).fetchall():
        spells.setdefault(iid, []).append({"start": s_at, "end": e_at, "seconds": round((e_at - s_at).total_seconds()),
                                           "ongoing": ongoing, "since_watch_start": from_watch})

    alerts: dict[str, list[dict]] = {}
    for r in con.execute(
        f"""WITH {_SLACK_ROOTS}
           SELECT al.indicator, al.alert_id, al.rule_id, al.kind, al.severity, al.state, al.started_at, al.resolved_at,
                  al.summary, root.slack_channel, root.slack_ts
           FROM alerts al LEFT JOIN slack_roots root USING (alert_id)
           WHERE list_contains($ids, al.indicator) AND al.started_at <= $now AND coalesce(al.resolved_at, $now) >= $start
           ORDER BY al.indicator, al.started_at, al.alert_id""", {"ids": ids, "now": now, "start": start}).fetchall():
        a = dict(zip(("alert_id", "rule_id", "kind", "severity", "state", "started_at", "resolved_at", "summary"), r[1:9]))
        if a["resolved_at"] is not None and a["resolved_at"] > now:  # resolved after the board's ``now``
            a.update(state="firing", resolved_at=None)
        alerts.setdefault(r[0], []).append({**a, "slack": _slack(r[9], r[10])})

    # A tripwire is a threshold of one event in its window.
    counting = [(iid, dict(r, count=1) if r["kind"] == "tripwire" else r) for iid in ids for r in rules.get(iid, [])
                if r["kind"] == "tripwire" or (r["kind"] in ("threshold", "spike", "flatline") and r.get("count") and r.get("window_s"))]
    peaks: dict[str, list[int]] = {}
    rolling = [(iid, r) for iid, r in counting if r["kind"] in ("threshold", "spike")]
    if rolling:
        # A window's count peaks right after an event or at the start of a day (it only falls
        # in between): the day's peak is the largest count at those instants. Each instant counts
        # the events in (t - window, t] with a window frame over the rule's events (weight 1)
        # and the days' starts (weight 0).
        peaks = dict(con.execute(
            """WITH r AS (SELECT unnest($rules::VARCHAR[]) AS rule_id, unnest($inds::VARCHAR[]) AS indicator,
                                 unnest($windows::BIGINT[]) AS window_us),
                    days AS (SELECT CAST(d AS DATE) AS day FROM generate_series($first::DATE, $last::DATE, INTERVAL 1 DAY) g(d)),
                    ev AS (SELECT indicator, epoch_us(first_report_at) AS t_us FROM counted_events
                           WHERE first_seen_at <= $now AND first_report_at <= $now AND list_contains($inds, indicator)
                             AND epoch_us(first_report_at) > epoch_us($start::TIMESTAMPTZ) - $widest),
                    pts AS (SELECT r.rule_id, r.window_us, ev.t_us, 1 AS w FROM r JOIN ev USING (indicator)
                            UNION ALL
                            SELECT r.rule_id, r.window_us, epoch_us(CAST(days.day AS TIMESTAMP) AT TIME ZONE 'UTC'), 0 FROM r CROSS JOIN days),
                    cnt AS (SELECT rule_id, t_us,
                                   sum(w) OVER (PARTITION BY rule_id ORDER BY t_us RANGE BETWEEN window_us - 1 PRECEDING AND CURRENT ROW) AS n
                            FROM pts),
                    daily AS (SELECT rule_id, CAST(date_trunc('day', make_timestamp(t_us)) AS DATE) AS day, max(n) AS n
                              FROM cnt WHERE t_us >= epoch_us($start::TIMESTAMPTZ) GROUP BY ALL)
               SELECT r.rule_id, list(coalesce(daily.n, 0)::BIGINT ORDER BY days.day)
               FROM r CROSS JOIN days LEFT JOIN daily USING (rule_id, day)
               GROUP BY r.rule_id""",
            {"rules": [r["id"] for _, r in rolling], "inds": [i for i, _ in rolling],
             "windows": [r["window_s"] * 1_000_000 for _, r in rolling], "widest": max(r["window_s"] for _, r in rolling) * 1_000_000,
             "first": first, "last": last, "now": now, "start": start}).fetchall())
    thresholds: dict[str, list[dict]] = {}
    for iid, r in counting:
        thresholds.setdefault(iid, []).append({"rule_id": r["id"], "kind": r["kind"], "count": r["count"], "window_s": r["window_s"],
                                               "peaks": peaks.get(r["id"])})

    day_list = [first + timedelta(days=k) for k in range(days)]
    out = {}
    for iid in ids:
        n = counts.get(iid) or [0] * days
        out[iid] = {
            "first_day": first, "last_day": last, "days": [{"day": d, "events": c} for d, c in zip(day_list, n)],
            "max_events": max(n, default=0), "events": sum(n),
            "quiet_s": round(quiet[iid] or DEFAULT_QUIET.total_seconds()), "quiet_from_rule": quiet[iid] is not None,
            "quiet_rule": resumption[iid][1],
            "quiet_spells": spells.get(iid, []), "alerts": alerts.get(iid, []), "thresholds": thresholds.get(iid, []),
            "watched_since": watched,
        }
    return out


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
        out.setdefault(r.indicator, []).append({"id": r.id, "kind": r.kind, "severity": r.severity, "rationale": r.rationale,
                                                "count": r.count, "window_s": r.window_s, "quiet_s": r.quiet})
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
