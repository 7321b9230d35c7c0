"""Analyst feedback: "this is not an event", from a Slack button or ``marsad feedback``.

A flag takes the event out of every rule's counts (``alerts/evaluate.py`` skips events with
an active flag), so the next evaluation re-decides each rule without it: a threshold that no
longer holds resolves, and the resolution says which events were flagged and by whom
(:func:`flag_reason`). Flags are history, never deleted: ``undo`` stamps the row, and the
event counts again at the next evaluation.

The flagged reports are test data: :func:`export_jsonl` writes them in the labelled format of
``marsad eval`` (the dev-headlines fields ``id, lang, title, summary, labels, ok, why``), with
``labels: []`` and the flagged indicator left out of ``ok``, so a classifier that matches the
report again for that indicator scores a false positive.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import duckdb

from warehouse.db import transaction


class FeedbackError(ValueError):
    pass


# The active flag of each event (undone_at IS NULL); at most one per event.


def flag_not_event(con: duckdb.DuckDBPyConnection, event_id: str, alert_id: str | None, by: str, now: datetime,
                   note: str | None = None) -> bool:
    """Record that ``event_id`` is not an event of its indicator. False (and nothing written)
    when it is already flagged: a second press changes nothing."""
    if not by or not str(by).strip():
        raise FeedbackError("feedback needs who gives it")
    with transaction(con):
        row = con.execute("SELECT indicator FROM events WHERE event_id = ?", [event_id]).fetchone()
        if row is None:
            raise FeedbackError(f"no event {event_id!r}")
        if con.execute("SELECT 1 FROM event_feedback WHERE event_id = ? AND undone_at IS NULL", [event_id]).fetchone():
            return False
        n = con.execute("SELECT count(*) FROM event_feedback WHERE event_id = ?", [event_id]).fetchone()[0]
        fid = hashlib.sha1(f"{event_id}\x1f{n}".encode()).hexdigest()[:16]
        con.execute(
            """INSERT INTO event_feedback (feedback_id, event_id, indicator, verdict, alert_id, flagged_by, flagged_at, note)
               VALUES (?, ?, ?, 'not_event', ?, ?, ?, ?)""",
            [fid, event_id, row[0], alert_id, str(by).strip(), now, (note or "").strip() or None],
        )
    return True


def undo(con: duckdb.DuckDBPyConnection, event_id: str, by: str, now: datetime) -> bool:
    """Withdraw the active flag of ``event_id``: it counts again at the next evaluation.
    False when it has no active flag."""
    with transaction(con):
        done = con.execute(
            """UPDATE event_feedback SET undone_at = ?, undone_by = ?
               WHERE event_id = ? AND undone_at IS NULL RETURNING feedback_id""",
            [now, str(by).strip(), event_id],
        ).fetchall()
    return bool(done)


def flagged(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The active flags: event id -> who flagged it."""
    return dict(con.execute("SELECT event_id, flagged_by FROM event_feedback WHERE undone_at IS NULL").fetchall())


FEEDBACK_KEYS = ("event_id", "indicator", "title", "first_report_at", "alert_id", "flagged_by", "flagged_at", "note",
                 "undone_at", "undone_by")


def list_feedback(con: duckdb.DuckDBPyConnection, include_undone: bool = False) -> list[dict]:
    """Flags, newest first (with the undone ones too when asked), with their event's title."""
    where = "" if include_undone else "WHERE f.undone_at IS NULL"
    rows = con.execute(
        f"""SELECT f.event_id, f.indicator, e.title, e.first_report_at, f.alert_id, f.flagged_by, f.flagged_at, f.note,
                   f.undone_at, f.undone_by
            FROM event_feedback f LEFT JOIN events e USING (event_id) {where}
            ORDER BY f.flagged_at DESC, f.event_id"""
    ).fetchall()
    return [dict(zip(FEEDBACK_KEYS, r)) for r in rows]


def flaggers(con: duckdb.DuckDBPyConnection, alert_id: str) -> tuple[int, list[str]]:
    """How many of the events an alert told about are flagged now, and by whom."""
    n, by = con.execute(
        """SELECT count(DISTINCT f.event_id), list(DISTINCT f.flagged_by ORDER BY f.flagged_by)
           FROM alert_events ae JOIN event_feedback f USING (event_id)
           WHERE ae.alert_id = ? AND f.undone_at IS NULL""",
        [alert_id],
    ).fetchone()
    return n or 0, by or []


def flag_reason(con: duckdb.DuckDBPyConnection, alert_id: str) -> str | None:
    """Why an alert's events no longer count, if analysts flagged any of them, as plain text
    (a summary is escaped when rendered; the message shows the mentions from ``flaggers``):
    "2 events flagged not an event by U1, U2". None when none was."""
    n, by = flaggers(con, alert_id)
    if not n:
        return None
    return f"{n} event{'s' if n != 1 else ''} flagged not an event by {', '.join(by)}"


# One line per report of each actively flagged event; an article in events of several
# indicators gets the ones not flagged as ``ok`` (neither required nor penalised).
_EXPORT_SQL = """
WITH f AS (
    SELECT f.event_id, f.indicator, f.flagged_by, f.flagged_at, f.note, ea.article_id
    FROM event_feedback f JOIN event_articles ea USING (event_id)
    WHERE f.undone_at IS NULL),
other AS (
    SELECT ea.article_id, list(DISTINCT e.indicator ORDER BY e.indicator) AS inds
    FROM event_articles ea JOIN counted_events e USING (event_id)
    WHERE ea.article_id IN (SELECT article_id FROM f)
    GROUP BY ea.article_id)
SELECT a.article_id, a.lang, a.title, a.summary, a.source_id, a.published_at, a.url,
       list(DISTINCT f.indicator ORDER BY f.indicator) AS not_inds,
       list(DISTINCT f.flagged_by ORDER BY f.flagged_by) AS by,
       max(f.flagged_at) AS flagged_at,
       list(DISTINCT f.note ORDER BY f.note) FILTER (WHERE f.note IS NOT NULL) AS notes,
       list(DISTINCT f.event_id ORDER BY f.event_id) AS event_ids,
       any_value(o.inds) AS ok
FROM f JOIN articles a USING (article_id) LEFT JOIN other o USING (article_id)
GROUP BY ALL ORDER BY a.published_at, a.article_id
"""


def export_rows(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """The flagged reports as labelled items for ``marsad eval``: "not <indicator>"."""
    out = []
    for (aid, lang, title, summary, source, published, url, not_inds, by, flagged_at, notes, event_ids,
         ok) in con.execute(_EXPORT_SQL).fetchall():
        ok = [i for i in (ok or []) if i not in not_inds]
        why = "; ".join(f"not {i}" for i in not_inds) + f": flagged by {', '.join(by)} at {flagged_at.isoformat(timespec='seconds')}"
        if notes:
            why += f" ({'; '.join(notes)})"
        out.append({
            "id": aid, "lang": lang, "title": title, "summary": summary, "source": source,
            "published": published.isoformat(), "url": url, "labels": [], "ok": ok,
            "trap": "flagged_not_event", "why": why, "events": event_ids,
        })
    return out


def export_jsonl(con: duckdb.DuckDBPyConnection, path: str | Path) -> int:
    """Write :func:`export_rows` as JSON lines to ``path``; returns how many lines."""
    rows = export_rows(con)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return len(rows)
