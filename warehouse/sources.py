"""The SQL home of the per-source tables: ``sources`` (the registry's mirror), ``source_state``
(conditional-GET validators, failures and the next poll) and ``fetch_log`` (one row per poll).

``marsad.pipeline`` decides when to call these; what each table holds and how a poll changes it
is written here, once.
"""
from __future__ import annotations

from datetime import datetime

import duckdb

from warehouse.db import DOUBLES, VARCHARS, json_list
from warehouse.load import bulk_insert

MAX_BACKOFF_S = 6 * 3600
# A feed falls due this much before its interval has fully passed (a fifth of it, at most a
# minute). Its fetch starts some seconds into a DAG run, so with an interval equal to the
# schedule's period it would otherwise not yet be due at the next run, and be polled only
# every other run (seen: a 5-minute feed on the */5 schedule polled every 10 minutes).
POLL_SLACK_FRACTION, POLL_SLACK_MAX_S = 0.2, 60

SOURCE_COLUMNS = {
    "source_id": "VARCHAR", "name": "VARCHAR", "lang": "VARCHAR", "url": "VARCHAR", "interval_s": "INTEGER",
    "reliability": "VARCHAR", "enabled": "BOOLEAN", "updated_at": "TIMESTAMPTZ", "removed_at": "TIMESTAMPTZ",
    "url_since": "TIMESTAMPTZ",
}
FETCH_COLUMNS = {
    "fetch_id": "VARCHAR", "source_id": "VARCHAR", "started_at": "TIMESTAMPTZ", "finished_at": "TIMESTAMPTZ",
    "status": "VARCHAR", "http_status": "INTEGER", "entries": "INTEGER", "new_articles": "INTEGER",
    "bytes": "BIGINT", "error": "VARCHAR", "staged_file": "VARCHAR",
}
STATE_COLUMNS = {
    "source_id": "VARCHAR", "etag": "VARCHAR", "last_modified": "VARCHAR", "last_attempt_at": "TIMESTAMPTZ",
    "last_success_at": "TIMESTAMPTZ", "last_status": "VARCHAR", "last_http_status": "INTEGER", "last_error": "VARCHAR",
    "consecutive_failures": "INTEGER",
}


def sync(con: duckdb.DuckDBPyConnection, feeds: list[dict], now: datetime) -> None:
    """Mirror the registry's feeds (dicts with the ``sources`` columns) into ``sources``.

    A feed id given a new URL starts afresh: the old URL's validators, backoff and last error
    are dropped (its next poll is due now) and its earlier failed polls stop counting. A feed
    that left the registry is disabled and marked removed (status and the board stop listing it;
    its articles stay); if it comes back it is listed again."""
    rows = [dict(f, updated_at=now, removed_at=None, url_since=now) for f in feeds]
    ids, urls = json_list([f["source_id"] for f in feeds]), json_list([f["url"] for f in feeds])
    con.execute(
        f"""DELETE FROM source_state WHERE source_id IN (
               SELECT s.source_id FROM sources s JOIN (SELECT unnest({VARCHARS}) AS source_id, unnest({VARCHARS}) AS url) r
               USING (source_id) WHERE s.url <> r.url)""",
        [ids, urls],
    )
    upsert(con, rows)
    con.execute(
        f"""UPDATE sources SET enabled = false, removed_at = coalesce(removed_at, ?)
           WHERE NOT list_contains({VARCHARS}, source_id) AND url NOT LIKE 'replay:%'""",
        [now, ids],
    )


def upsert(con: duckdb.DuckDBPyConnection, rows: list[dict]) -> None:
    sets = ", ".join(f"{c} = excluded.{c}" for c in SOURCE_COLUMNS if c not in ("source_id", "url_since"))
    # url_since moves only when the URL does (set before the url itself is overwritten).
    sets = f"url_since = CASE WHEN sources.url <> excluded.url THEN excluded.url_since ELSE sources.url_since END, {sets}"
    bulk_insert(con, "sources", rows, SOURCE_COLUMNS, conflict=f"(source_id) DO UPDATE SET {sets}")


def due(con: duckdb.DuckDBPyConnection, now: datetime, ahead_s: float = 0) -> list[dict]:
    """Enabled feeds due at a run at ``now``, oldest due first, with their conditional-GET validators.

    A feed is due when its interval (or error backoff) has elapsed, or, after a success, when it
    will have elapsed within ``ahead_s`` seconds: ``marsad.pipeline.due_sources`` passes half the
    time to the schedule's next run, so a feed is polled at the run nearest its due time. Without
    this, a poll off the schedule's grid (the run Airflow starts on unpause, a triggered run)
    sets a due time just after the next run, which skips the feed: it waited almost two periods.
    The look-ahead is at most half the feed's interval, never applies to a backoff, and never
    moves a poll before the server's Retry-After or max-age (``not_before``). So a healthy feed
    is polled no sooner than ``interval / 2 - slack`` after its last poll (90 s for 5 minutes)."""
    rows = con.execute(
        """SELECT s.source_id, s.url, s.lang, st.etag, st.last_modified
           FROM sources s LEFT JOIN source_state st USING (source_id)
           WHERE s.enabled AND (st.next_due_at IS NULL OR st.next_due_at <= $now OR (
                 st.last_status <> 'error' AND coalesce(st.not_before <= $now, true)
                 AND st.next_due_at <= $now + to_seconds(least($ahead, s.interval_s / 2))))
           ORDER BY coalesce(st.next_due_at, TIMESTAMPTZ '1970-01-01'), s.source_id""",
        {"now": now, "ahead": float(ahead_s)},
    ).fetchall()
    return [dict(source_id=r[0], url=r[1], lang=r[2], etag=r[3], last_modified=r[4]) for r in rows]


def removed_count(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT count(*) FROM sources WHERE removed_at IS NOT NULL").fetchone()[0]


def record_fetches(con: duckdb.DuckDBPyConnection, metas: list[dict], new_per_source: dict[str, int]) -> None:
    """One load's polls (the fetch manifests, oldest first) -> ``fetch_log`` rows, and each
    source's state: validators kept on errors, failures counted, and the next poll scheduled."""
    if not metas:
        return
    log_rows, state, wait = [], {}, {}
    for m in sorted(metas, key=lambda m: m["started_at"]):
        wait[m["source_id"]] = m.get("wait_s")
        log_rows.append(
            dict(m, new_articles=new_per_source.pop(m["source_id"], 0) if m.get("articles_file") else 0, staged_file=m.get("articles_file"))
        )
        prev = state.get(m["source_id"])
        failures = (prev["consecutive_failures"] if prev else 0) + 1 if m["status"] == "error" else 0
        ok = m["status"] != "error"
        state[m["source_id"]] = dict(
            source_id=m["source_id"],
            etag=m.get("etag") if ok else (prev or {}).get("etag"),
            last_modified=m.get("last_modified") if ok else (prev or {}).get("last_modified"),
            last_attempt_at=m["started_at"],
            last_success_at=m["finished_at"] if ok else (prev or {}).get("last_success_at"),
            last_status=m["status"],
            last_http_status=m.get("http_status"),
            last_error=m.get("error"),
            consecutive_failures=failures,
        )
    bulk_insert(con, "fetch_log", log_rows, FETCH_COLUMNS)
    # Errors keep the old validators and add to the failure count; successes reset it.
    bulk_insert(
        con,
        "source_state",
        list(state.values()),
        STATE_COLUMNS,
        conflict="""(source_id) DO UPDATE SET
            etag = CASE WHEN excluded.last_status = 'error' THEN source_state.etag ELSE excluded.etag END,
            last_modified = CASE WHEN excluded.last_status = 'error' THEN source_state.last_modified ELSE excluded.last_modified END,
            last_attempt_at = excluded.last_attempt_at,
            last_success_at = coalesce(excluded.last_success_at, source_state.last_success_at),
            last_status = excluded.last_status,
            last_http_status = excluded.last_http_status,
            last_error = excluded.last_error,
            consecutive_failures = CASE WHEN excluded.last_status = 'error'
                THEN source_state.consecutive_failures + excluded.consecutive_failures ELSE 0 END""",
    )
    # Next poll: the source's interval after success, less POLL_SLACK; exponential backoff with
    # jitter after errors; never sooner than the server asked (Retry-After on 429/503, max-age),
    # which ``not_before`` keeps on its own for ``due``'s look-ahead.
    con.execute(
        f"""UPDATE source_state SET
            not_before = source_state.last_attempt_at + to_seconds(h.wait_s),
            next_due_at = source_state.last_attempt_at + to_seconds(greatest(
                CASE WHEN source_state.last_status = 'error'
                     THEN least(s.interval_s * pow(2, least(source_state.consecutive_failures - 1, 12)), {MAX_BACKOFF_S})
                          * (0.8 + 0.4 * random())
                     ELSE s.interval_s - least(s.interval_s * {POLL_SLACK_FRACTION}, {POLL_SLACK_MAX_S}) END,
                coalesce(h.wait_s, 0)))
            FROM sources s, (SELECT unnest({VARCHARS}) AS source_id, unnest({DOUBLES}) AS wait_s) h
            WHERE s.source_id = source_state.source_id AND h.source_id = source_state.source_id""",
        [json_list(list(wait)), json_list(list(wait.values()))],
    )


def record_verdicts(con: duckdb.DuckDBPyConnection, verdicts: list[tuple[str, str | None, str]], now: datetime) -> None:
    """What an evaluation judged of each source, (source_id, problem, detail): the view
    ``source_health`` reads it for the states the warehouse cannot judge alone (silent)."""
    if not verdicts:
        return
    con.execute(
        f"""INSERT INTO source_verdicts (source_id, problem, detail, judged_at)
            SELECT unnest({VARCHARS}), unnest({VARCHARS}), unnest({VARCHARS}), ?
            ON CONFLICT (source_id) DO UPDATE SET problem = excluded.problem, detail = excluded.detail,
                judged_at = excluded.judged_at""",
        [json_list([v[0] for v in verdicts]), json_list([v[1] for v in verdicts]), json_list([v[2] for v in verdicts]), now],
    )
