"""Events: one real-world occurrence per indicator, however many reports it has.

``assign_events`` links every classified (article, indicator) pair to an event. Reports
that are exact copies (same canonical URL or same folded title and summary) of a report
already in an event of that indicator join it; every other report opens an event. The
event's time is its earliest report. (Near-duplicate and cross-lingual clustering plug
in here: they only change how a report finds its event.)
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import duckdb

from warehouse.load import bulk_insert

# How far back a copy may look for the event it belongs to.
JOIN_HORIZON = timedelta(days=7)


def _event_id(indicator: str, article_id: str) -> str:
    return hashlib.sha1(f"{indicator}\x1f{article_id}".encode()).hexdigest()[:20]


def assign_events(con: duckdb.DuckDBPyConnection, now: datetime) -> int:
    """Link unlinked (article, indicator) pairs to events; returns how many events were opened."""
    pending = con.execute(
        """SELECT ai.article_id, ai.indicator, a.canonical_url, a.content_hash, a.published_at, a.fetched_at, a.title
           FROM article_indicators ai JOIN articles a USING (article_id)
           WHERE NOT EXISTS (SELECT 1 FROM event_articles ea JOIN events e USING (event_id)
                             WHERE ea.article_id = ai.article_id AND e.indicator = ai.indicator)
           ORDER BY a.published_at, ai.article_id"""
    ).fetchall()
    if not pending:
        return 0
    indicators = sorted({p[1] for p in pending})
    oldest = min(p[4] for p in pending) - JOIN_HORIZON
    keys: dict[tuple[str, str], str] = {}
    for indicator, event_id, url, chash in con.execute(
        """SELECT e.indicator, e.event_id, a.canonical_url, a.content_hash
           FROM events e JOIN event_articles ea USING (event_id) JOIN articles a USING (article_id)
           WHERE list_contains(?, e.indicator) AND e.first_report_at >= ?""",
        [indicators, oldest],
    ).fetchall():
        if url:
            keys.setdefault((indicator, "u:" + url), event_id)
        keys.setdefault((indicator, "h:" + chash), event_id)

    new_events: dict[str, dict] = {}
    links: list[dict] = []
    earlier: dict[str, tuple[datetime, datetime]] = {}  # existing events that gain an earlier report
    for article_id, indicator, url, chash, published, fetched, title in pending:
        cand = [("u:" + url, "same_url")] if url else []
        cand.append(("h:" + chash, "same_content"))
        event_id = how = None
        for key, why in cand:
            if (indicator, key) in keys:
                event_id, how = keys[(indicator, key)], why
                break
        if event_id is None:
            event_id, how = _event_id(indicator, article_id), "first"
            new_events[event_id] = dict(
                event_id=event_id, indicator=indicator, first_report_at=published, first_seen_at=fetched, title=title, created_at=now
            )
        elif event_id in new_events:
            ev = new_events[event_id]
            ev["first_report_at"] = min(ev["first_report_at"], published)
            ev["first_seen_at"] = min(ev["first_seen_at"], fetched)
        else:
            prev = earlier.get(event_id)
            earlier[event_id] = (min(published, prev[0]) if prev else published, min(fetched, prev[1]) if prev else fetched)
        for key, _ in cand:
            keys.setdefault((indicator, key), event_id)
        links.append(dict(event_id=event_id, article_id=article_id, how=how))

    bulk_insert(con, "events", list(new_events.values()), EVENT_COLUMNS)
    bulk_insert(con, "event_articles", links, {"event_id": "VARCHAR", "article_id": "VARCHAR", "how": "VARCHAR"})
    for event_id, (published, fetched) in earlier.items():
        con.execute(
            """UPDATE events SET first_report_at = least(first_report_at, ?), first_seen_at = least(first_seen_at, ?)
               WHERE event_id = ?""",
            [published, fetched, event_id],
        )
    return len(new_events)


EVENT_COLUMNS = {
    "event_id": "VARCHAR", "indicator": "VARCHAR", "first_report_at": "TIMESTAMPTZ",
    "first_seen_at": "TIMESTAMPTZ", "title": "VARCHAR", "created_at": "TIMESTAMPTZ",
}
