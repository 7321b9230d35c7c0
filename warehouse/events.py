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
import numpy as np

from alerts.places import PlaceHierarchy
from warehouse import neardup
from warehouse.cluster import EXACT_HORIZON, FOLLOWUP_HORIZON, WINDOW, Clusterer, Event, Report
from warehouse.load import append_new_sql, bulk_insert

LOOKBACK = max(EXACT_HORIZON, FOLLOWUP_HORIZON, WINDOW)

# What a Report is made of; the sketch is read apart, as one array (``_read_reports``).
_REPORT_COLUMNS = """a.article_id, a.published_at, a.fetched_at, a.title, a.canonical_url, a.content_hash,
                     a.text_folded, a.guid,
                     coalesce((SELECT list({'g': x.gazetteer, 'i': x.entity_id, 'k': x.kind, 'r': x.role})
                               FROM article_entities x WHERE x.article_id = a.article_id), []) AS entities"""


CHUNK = 20_000  # reports sketched, or read and held as Report objects, at a time


def _pending_sql(classified_at: datetime | None = None) -> tuple[str, list]:
    """SQL and parameters of the (article, indicator) pairs of ``article_indicators`` not linked
    to an event of that indicator: one definition, two scopes.

    * ``classified_at`` given (the loader's ``now``): the pairs of the articles classified at
      that time. ``marsad.pipeline.load`` classifies (staged verdicts, its own, corrected
      articles again) and assigns in one transaction with one ``now``, so these are all the
      pairs the load made and the only ones that can be waiting: the cost follows the load,
      not the history (the history's link tables are read for these articles only).
    * ``None``: every pair of the whole history, for writers that insert verdicts themselves
      (tests/events_gen.py, the dedupe bench) and for a repair of a warehouse an older Marsad
      left with unassigned pairs (its loads without an indicator pack took staged verdicts
      without assigning them; a failed load rolls back both). Loads never need it."""
    mine = "" if classified_at is None else "SEMI JOIN (SELECT article_id FROM articles WHERE classified_at = ?) mine USING (article_id)"
    return f"""SELECT ai.article_id, ai.indicator FROM article_indicators ai {mine}
               ANTI JOIN (SELECT ea.article_id, e.indicator FROM event_articles ea JOIN events e USING (event_id) {mine}) linked
                    USING (article_id, indicator)""", [] if classified_at is None else [classified_at, classified_at]


def _in_load(scope: datetime | None, word: str = "WHERE") -> tuple[str, list]:
    """A filter on ``articles a`` bounding the pending articles' reads to the load's (zone maps
    of classified_at skip the past), and its parameters; nothing for the whole-history scope."""
    return ("", []) if scope is None else (f"{word} a.classified_at = ?", [scope])


def pending_pairs(con: duckdb.DuckDBPyConnection, classified_at: datetime | None = None) -> list[tuple[str, str]]:
    """The pending (article_id, indicator) pairs of ``_pending_sql``, sorted."""
    sql, params = _pending_sql(classified_at)
    return sorted(con.execute(sql, params).fetchall())


def _sketch_pending(con: duckdb.DuckDBPyConnection, classified_at: datetime | None = None) -> None:
    """MinHash every article waiting for an event that has no sketch yet (once per article),
    ``CHUNK`` at a time, sketched together (``neardup.signatures``) and written from numpy
    arrays, one column per hash value: no Python int or JSON per value. ``classified_at``:
    the scope of ``_pending_sql``."""
    pending, params = _pending_sql(classified_at)
    n = con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _marsad_unsketched AS
            SELECT row_number() OVER () AS rn, article_id FROM (
                SELECT DISTINCT p.article_id FROM ({pending}) p
                WHERE NOT EXISTS (SELECT 1 FROM article_sketches s WHERE s.article_id = p.article_id))""",
        params,
    ).fetchone()[0]
    try:
        for first in range(1, n + 1, CHUNK):
            # Scoped to a load, the articles' scan is bounded by classified_at (zone maps skip
            # the row groups of the past): text_folded is not read for the whole history.
            and_mine, mine_params = _in_load(classified_at, "AND")
            rows = con.execute(
                f"""SELECT a.article_id, a.text_folded FROM _marsad_unsketched u JOIN articles a USING (article_id)
                    WHERE u.rn BETWEEN ? AND ? {and_mine}""",
                [first, first + CHUNK - 1] + mine_params,
            ).fetchall()
            if rows:
                write_sketches(con, [a for a, _ in rows], neardup.signatures([t for _, t in rows]))
    finally:
        con.execute("DROP TABLE IF EXISTS _marsad_unsketched")


_SEP = "\x1f"  # joins the ids of one statement into one string parameter (ids are hex digests)


def _joined(values) -> str:
    text = _SEP.join(values)
    if text.count(_SEP) != len(values) - 1:
        raise ValueError("an id contains the unit separator (0x1f)")
    return text


def _strings(param: int) -> str:
    """SQL for the list of strings joined in parameter number ``param``."""
    return f"string_split(${param}, chr(31))"


def write_sketches(con: duckdb.DuckDBPyConnection, article_ids: list[str], sketches: np.ndarray) -> None:
    """Insert ``(article_id, sketch)`` rows (at least one) into ``article_sketches`` (its only writer): the
    hash values as numpy columns DuckDB scans in place, the ids as one string; no Python
    object per value (a numpy array of str would cost more than the sketch)."""
    columns = {"r": np.arange(len(article_ids), dtype=np.int64)}
    columns.update((f"h{k}", np.ascontiguousarray(sketches[:, k])) for k in range(sketches.shape[1]))
    values = ", ".join(f"h{k}" for k in range(sketches.shape[1]))
    con.register("_marsad_new_sketches", columns)
    try:
        con.execute(f"""INSERT INTO article_sketches (article_id, minhash)
                        SELECT i.article_id, CAST([{values}] AS UBIGINT[]) FROM _marsad_new_sketches JOIN
                               (SELECT unnest(l) AS article_id, generate_subscripts(l, 1) - 1 AS r
                                FROM (SELECT {_strings(1)} AS l)) i USING (r)
                        ANTI JOIN article_sketches s USING (article_id)""", [_joined(article_ids)])
    finally:
        con.unregister("_marsad_new_sketches")


def _read_reports(con: duckdb.DuckDBPyConnection, sel: str, src: str, rest: str, params: list) -> list[tuple[tuple, Report]]:
    """(row, Report) for the reports of ``src`` (joined to articles ``a`` and their sketches)
    that ``rest`` (WHERE ... ORDER BY a unique key) selects; ``sel`` are columns before
    them, the indicator last. The sketches come as one array, not as 128 Python ints per
    row: a second pass over the same rows, in the same order."""
    src = f"{src} JOIN articles a USING (article_id) JOIN article_sketches s USING (article_id)"
    rows = con.execute(f"SELECT {sel} {_REPORT_COLUMNS} FROM {src} {rest}", params).fetchall()
    if not rows:
        return []
    sketches = np.stack(con.execute(f"SELECT s.minhash FROM {src} {rest}", params).fetchnumpy()["minhash"])
    sketches = sketches.astype(neardup._DTYPE)
    return [(row, _report(row[-10], row[-9:], sk)) for row, sk in zip(rows, sketches)]


def _report(indicator: str, row: tuple, minhash) -> Report:
    article_id, published, fetched, title, url, chash, folded, guid, ents = row
    return Report(
        article_id, indicator, published, fetched, title, url or None, chash, folded, guid or None,
        minhash, {(e["g"], e["i"], e["k"]) for e in ents} if ents else set(),
        frozenset(e["i"] for e in ents if e["r"] == "launch") if ents else frozenset(),
    )


def assign_events(con: duckdb.DuckDBPyConnection, now: datetime, places: PlaceHierarchy | None = None, *, this_load: bool = False) -> int:
    """Link unlinked (article, indicator) pairs to events; returns how many events were opened.
    ``places`` is the nesting of places.yaml (without it, only the same place joins).

    Memory holds what the rules can still reach, not the load: pending reports are read
    ``CHUNK`` at a time (only their keys are staged), links are written after each chunk,
    and events no report can join any more (``Clusterer.take_closed``) are written and
    dropped as the reports' time passes them.

    ``this_load``: the pending pairs are those of the articles classified at ``now`` (the
    loader's scope, ``_pending_sql``); without it, every unlinked pair of the history."""
    scope = now if this_load else None
    (mine, mine_params), (and_mine, _) = _in_load(scope), _in_load(scope, "AND")
    _sketch_pending(con, scope)
    # The loop below makes many small objects and no reference cycles: the cyclic
    # collector would re-scan the heap again and again.
    collecting = gc.isenabled()
    gc.disable()
    opened = 0
    try:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _marsad_pending AS
                SELECT row_number() OVER (ORDER BY a.published_at, p.article_id, p.indicator) AS rn, p.indicator, p.article_id
                FROM ({_pending_sql(scope)[0]}) p JOIN articles a USING (article_id) {mine}""",
            _pending_sql(scope)[1] + mine_params,
        )
        n, indicators, lo, hi = con.execute(
            f"""SELECT count(*), list(DISTINCT indicator ORDER BY indicator), min(published_at), max(published_at)
                FROM _marsad_pending JOIN articles a USING (article_id) {mine}""",
            mine_params,
        ).fetchone()
        if not n:
            return 0
        lo, hi = lo - LOOKBACK, hi + WINDOW

        clusterer = Clusterer(places)
        for event_id, indicator, first_report, first_seen, title in con.execute(
            """SELECT event_id, indicator, first_report_at, first_seen_at, title FROM events
               WHERE list_contains(?, indicator) AND first_report_at BETWEEN ? AND ?
               ORDER BY first_report_at, event_id""",
            [indicators, lo, hi],
        ).fetchall():
            clusterer.add_event(Event(event_id, indicator, first_report, first_seen, title))
        for row, r in _read_reports(
            con, "e.event_id, e.indicator,", "events e JOIN event_articles ea USING (event_id)",
            "WHERE list_contains(?, e.indicator) AND e.first_report_at BETWEEN ? AND ? ORDER BY a.published_at, a.article_id, e.event_id",
            [indicators, lo, hi],
        ):
            clusterer.add_member(row[0], r)

        for first in range(1, n + 1, CHUNK):
            links: list[tuple[str, str, str]] = []
            for _, r in _read_reports(
                con, "p.indicator,", "_marsad_pending p", f"WHERE p.rn BETWEEN ? AND ? {and_mine} ORDER BY p.rn",
                [first, first + CHUNK - 1] + mine_params,
            ):
                event_id, how = clusterer.assign(r)
                links.append((event_id, r.article_id, how))
            _write_links(con, links)
            opened += _write_events(con, clusterer.take_closed(), now)
        opened += _write_events(con, list(clusterer.events.values()), now)
    finally:
        if collecting:
            gc.enable()
        con.execute("DROP TABLE IF EXISTS _marsad_pending")
    return opened


def _write_links(con: duckdb.DuckDBPyConnection, links: list[tuple[str, str, str]]) -> None:
    if not links:
        return
    event_ids, article_ids, hows = zip(*links)
    con.execute(
        append_new_sql("event_articles", "event_id, article_id, how",
                       f"(SELECT unnest({_strings(1)}) AS event_id, unnest({_strings(2)}) AS article_id, unnest({_strings(3)}) AS how)"),
        [_joined(event_ids), _joined(article_ids), _joined(hows)],
    )


def _write_events(con: duckdb.DuckDBPyConnection, events: list[Event], now: datetime) -> int:
    """Insert the new events, and move existing ones that gained an earlier report (a
    late-arriving first report); returns how many were new."""
    new = [e.row() | {"created_at": now} for e in events if e.new]
    bulk_insert(con, "events", new, EVENT_COLUMNS)  # new ids only (APPEND_KEYS: events has no index)
    moved = [e.row() for e in events if e.changed]
    if moved:
        con.execute(
            """UPDATE events SET first_report_at = least(events.first_report_at, m.first_report_at),
                                 first_seen_at = least(events.first_seen_at, m.first_seen_at)
               FROM (SELECT unnest(?::VARCHAR[]) AS event_id, unnest(?::TIMESTAMPTZ[]) AS first_report_at,
                            unnest(?::TIMESTAMPTZ[]) AS first_seen_at) m
               WHERE events.event_id = m.event_id""",
            [[r["event_id"] for r in moved], [r["first_report_at"] for r in moved], [r["first_seen_at"] for r in moved]],
        )
    return len(new)


EVENT_COLUMNS = {
    "event_id": "VARCHAR", "indicator": "VARCHAR", "first_report_at": "TIMESTAMPTZ",
    "first_seen_at": "TIMESTAMPTZ", "title": "VARCHAR", "created_at": "TIMESTAMPTZ",
}
