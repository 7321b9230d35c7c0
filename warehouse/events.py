"""Events: one real-world occurrence per indicator, however many reports it has.

``assign_events`` links every classified (article, indicator) pair to an event: exact
copies, near-duplicates and reports of the same occurrence in another outlet or language
join one event; everything else opens one. The decision rules are in ``warehouse.cluster``;
this module reads what they need from the warehouse and writes the result set-based.
The event's time is its earliest report; ``events_v`` shows each event's corroboration
(reports, outlets, languages).
"""
from __future__ import annotations

import gc
from datetime import datetime

import duckdb

from alerts.places import PlaceHierarchy
from warehouse import neardup
from warehouse.cluster import EXACT_HORIZON, FOLLOWUP_HORIZON, WINDOW, Clusterer, Event, Report
from warehouse.load import bulk_insert

LOOKBACK = max(EXACT_HORIZON, FOLLOWUP_HORIZON, WINDOW)

_REPORT_SQL = """SELECT {sel} a.article_id, a.published_at, a.fetched_at, a.title, a.canonical_url, a.content_hash,
                        a.text_folded, a.guid,
                        coalesce((SELECT list({{'g': x.gazetteer, 'i': x.entity_id, 'k': x.kind, 'r': x.role}})
                                  FROM article_entities x WHERE x.article_id = a.article_id), []) AS entities,
                        s.minhash
                 FROM {src} JOIN articles a USING (article_id) JOIN article_sketches s USING (article_id)"""


CHUNK = 20_000  # reports sketched, or read and held as Report objects, at a time


def _sketch_pending(con: duckdb.DuckDBPyConnection) -> None:
    """MinHash every classified article that has none yet (once per article), ``CHUNK`` at a
    time: a sketch on its way to the table is 128 Python ints."""
    while True:
        rows = con.execute(
            """SELECT a.article_id, a.text_folded FROM articles a
               WHERE EXISTS (SELECT 1 FROM article_indicators ai WHERE ai.article_id = a.article_id)
                 AND NOT EXISTS (SELECT 1 FROM article_sketches s WHERE s.article_id = a.article_id)
               LIMIT ?""",
            [CHUNK],
        ).fetchall()
        if not rows:
            return
        bulk_insert(
            con,
            "article_sketches",
            [dict(article_id=a, minhash=neardup.signature(t)) for a, t in rows],
            {"article_id": "VARCHAR", "minhash": "UBIGINT[]"},
        )


def _stage_reports(con: duckdb.DuckDBPyConnection, table: str, sql: str, params: list, order: str) -> int:
    """Materialise a ``_REPORT_SQL`` query (indicator column just before article_id) as a temp
    table numbered in ``order`` (a unique key); returns its row count."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT row_number() OVER (ORDER BY {order}) AS rn, * FROM ({sql})", params)
    return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _read_reports(con: duckdb.DuckDBPyConnection, table: str, first: int = 1, last: int | None = None) -> list[tuple[tuple, Report]]:
    """(row, Report) for rows ``first``..``last`` of a staged table. The sketches come as one
    numpy array, not as 128 Python ints per row: a second pass over the same rows."""
    where, params = ("rn BETWEEN ? AND ?", [first, last]) if last is not None else ("rn >= ?", [first])
    rows = con.execute(f"SELECT * EXCLUDE (rn, minhash) FROM {table} WHERE {where} ORDER BY rn", params).fetchall()
    sketches = con.execute(f"SELECT minhash FROM {table} WHERE {where} ORDER BY rn", params).fetchnumpy()["minhash"]
    return [(row, _report(row[-10], row[-9:], sk)) for row, sk in zip(rows, sketches)]


def _report(indicator: str, row: tuple, minhash) -> Report:
    article_id, published, fetched, title, url, chash, folded, guid, ents = row
    return Report(
        article_id, indicator, published, fetched, title, url or None, chash, folded, guid or None,
        neardup.from_signature(minhash), {(e["g"], e["i"], e["k"]) for e in ents},
        frozenset(e["i"] for e in ents if e["r"] == "launch") if ents else frozenset(),
    )


def assign_events(con: duckdb.DuckDBPyConnection, now: datetime, places: PlaceHierarchy | None = None) -> int:
    """Link unlinked (article, indicator) pairs to events; returns how many events were opened.
    ``places`` is the nesting of places.yaml (without it, only the same place joins).
    Pending reports are read ``CHUNK`` at a time, so memory holds the events and the links,
    not every pending report with its sketch."""
    _sketch_pending(con)
    # The loop below makes millions of small objects and no reference cycles: the cyclic
    # collector would re-scan the growing heap again and again (superlinear at 1M reports).
    collecting = gc.isenabled()
    gc.disable()
    try:
        n = _stage_reports(
            con, "_marsad_pending",
            _REPORT_SQL.format(sel="ai.indicator,", src="article_indicators ai")
            + """ WHERE NOT EXISTS (SELECT 1 FROM event_articles ea JOIN events e USING (event_id)
                                    WHERE ea.article_id = ai.article_id AND e.indicator = ai.indicator)""",
            [], "published_at, article_id, indicator",
        )
        if not n:
            return 0
        indicators, lo, hi = con.execute(
            "SELECT list(DISTINCT indicator ORDER BY indicator), min(published_at), max(published_at) FROM _marsad_pending"
        ).fetchone()
        lo, hi = lo - LOOKBACK, hi + WINDOW

        clusterer = Clusterer(places)
        for event_id, indicator, first_report, first_seen, title in con.execute(
            """SELECT event_id, indicator, first_report_at, first_seen_at, title FROM events
               WHERE list_contains(?, indicator) AND first_report_at BETWEEN ? AND ?""",
            [indicators, lo, hi],
        ).fetchall():
            clusterer.add_event(Event(event_id, indicator, first_report, first_seen, title))
        _stage_reports(
            con, "_marsad_members",
            _REPORT_SQL.format(sel="e.event_id, e.indicator,", src="events e JOIN event_articles ea USING (event_id)")
            + " WHERE list_contains(?, e.indicator) AND e.first_report_at BETWEEN ? AND ?",
            [indicators, lo, hi], "published_at, article_id, event_id",
        )
        for row, r in _read_reports(con, "_marsad_members"):
            clusterer.add_member(row[0], r)

        links = []
        for first in range(1, n + 1, CHUNK):
            for _, r in _read_reports(con, "_marsad_pending", first, first + CHUNK - 1):
                event_id, how = clusterer.assign(r)
                links.append(dict(event_id=event_id, article_id=r.article_id, how=how))
    finally:
        if collecting:
            gc.enable()
        con.execute("DROP TABLE IF EXISTS _marsad_pending")
        con.execute("DROP TABLE IF EXISTS _marsad_members")

    new = [e for e in clusterer.events.values() if e.new]
    bulk_insert(con, "events", [dict(e.__dict__, created_at=now) for e in new], EVENT_COLUMNS)
    bulk_insert(con, "event_articles", links, {"event_id": "VARCHAR", "article_id": "VARCHAR", "how": "VARCHAR"})
    moved = [dict(e.__dict__, created_at=now) for e in clusterer.events.values() if e.changed]
    # Existing events that gained an earlier report (a late-arriving first report).
    bulk_insert(
        con, "events", moved, EVENT_COLUMNS,
        conflict="(event_id) DO UPDATE SET first_report_at = least(events.first_report_at, excluded.first_report_at), "
        "first_seen_at = least(events.first_seen_at, excluded.first_seen_at)",
    )
    return len(new)


EVENT_COLUMNS = {
    "event_id": "VARCHAR", "indicator": "VARCHAR", "first_report_at": "TIMESTAMPTZ",
    "first_seen_at": "TIMESTAMPTZ", "title": "VARCHAR", "created_at": "TIMESTAMPTZ",
}
