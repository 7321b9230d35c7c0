"""Events: one real-world occurrence per indicator, however many reports it has.

``assign_events`` links every classified (article, indicator) pair to an event: exact
copies, near-duplicates and reports of the same occurrence in another outlet or language
join one event; everything else opens one. The decision rules are in ``warehouse.cluster``;
this module reads what they need from the warehouse and writes the result set-based.
The event's time is its earliest report; ``events_v`` shows each event's corroboration
(reports, outlets, languages).
"""
from __future__ import annotations

import functools
import gc
import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np

from alerts.places import PlaceHierarchy
from warehouse import db, neardup
from warehouse.cluster import EXACT_HORIZON, FOLLOWUP_HORIZON, WINDOW, Clusterer, Event, Report
from warehouse.load import append_new_sql, bulk_insert, stored_keys_sql, time_bound
from warehouse.matches import classified_span

log = logging.getLogger("marsad.events")

LOOKBACK = max(EXACT_HORIZON, FOLLOWUP_HORIZON, WINDOW)

# What a Report is made of besides its entities and sketch, which are read apart as columns
# (``_read_reports``): a list of structs per row costs more than the rest of the row.
# The times come as epoch microseconds, made datetimes here (``_report``): DuckDB's own
# conversion of a TIMESTAMPTZ (pytz, per value) cost more than the rest of the row.
_REPORT_COLUMNS = """a.article_id, epoch_us(a.published_at), epoch_us(a.fetched_at), a.title, a.canonical_url, a.content_hash,
                     a.text_folded, a.guid"""


CHUNK = 10_000  # reports sketched, or read and held as Report objects, at a time (20k: 530 MB peak at 1M, 10k: 482 MB)


def _pending_sql(classified_at: datetime | None = None, span: tuple | None = None) -> tuple[str, list]:
    """SQL and parameters of the (article, indicator) pairs of ``article_indicators`` not linked
    to an event of that indicator: one definition, two scopes.

    * ``classified_at`` given (the loader's ``now``): the pairs of the articles classified at
      that time. ``marsad.pipeline.load`` classifies (staged verdicts, its own, corrected
      articles again) and assigns in one transaction with one ``now``, so these are all the
      pairs the load made and the only ones that can be waiting: the cost follows the load,
      not the history (the history's link tables are read for these articles only). ``span``:
      their (min, max) publication time (``warehouse.matches.classified_span``), which their
      rows in the link tables carry (migration 0029): only those row groups are read.
    * ``None``: every pair of the whole history, for writers that insert verdicts themselves
      (tests/events_gen.py, the dedupe bench) and for a repair of a warehouse an older Marsad
      left with unassigned pairs (its loads without an indicator pack took staged verdicts
      without assigning them; a failed load rolls back both). Loads never need it."""
    if classified_at is None:
        return """SELECT ai.article_id, ai.indicator FROM article_indicators ai
                  ANTI JOIN (SELECT ea.article_id, e.indicator FROM event_articles ea JOIN events e USING (event_id)) linked
                       USING (article_id, indicator)""", []
    # The load's pairs first (a few hundred), then the links of their articles only: the scan
    # of every link's id probes those few ids, not the 10k the load classified (at 2M
    # articles 31-35 ms CPU warm against 45-51 ms when both sides were semi-joined with them).
    # Both link tables are read in the span of these articles' times (``time_bound``: zone
    # maps), not whole: their ids are random digests, which no row group's min/max excludes.
    lo, hi = span
    return f"""WITH mine AS MATERIALIZED (
                  SELECT ai.article_id, ai.indicator FROM article_indicators ai
                  SEMI JOIN (SELECT article_id FROM articles WHERE classified_at = ?) a USING (article_id)
                  WHERE {time_bound(lo, hi, 'ai')})
              SELECT article_id, indicator FROM mine
              ANTI JOIN (SELECT ea.article_id, e.indicator FROM event_articles ea
                         SEMI JOIN (SELECT DISTINCT article_id FROM mine) m USING (article_id)
                         JOIN events e USING (event_id)
                         WHERE {time_bound(lo, hi, 'ea')}) linked
                   USING (article_id, indicator)""", [classified_at]


def _in_load(scope: datetime | None, word: str = "WHERE") -> tuple[str, list]:
    """A filter on ``articles a`` bounding the pending articles' reads to the load's (zone maps
    of classified_at skip the past), and its parameters; nothing for the whole-history scope."""
    return ("", []) if scope is None else (f"{word} a.classified_at = ?", [scope])


def pending_pairs(con: duckdb.DuckDBPyConnection, classified_at: datetime | None = None) -> list[tuple[str, str]]:
    """The pending (article_id, indicator) pairs of ``_pending_sql``, sorted."""
    sql, params = _pending_sql(classified_at, None if classified_at is None else classified_span(con, classified_at))
    return sorted(con.execute(sql, params).fetchall())


def indicators_with_events(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The indicators some stored event belongs to, sorted (the digest's list when no rule pack
    can be read)."""
    return [r[0] for r in con.execute("SELECT DISTINCT indicator FROM events ORDER BY 1").fetchall()]


def _span(con: duckdb.DuckDBPyConnection, table: str, first: int, last: int) -> tuple:
    """(min, max) ``published_at`` of the rows numbered ``first..last`` of a staged table
    numbered in that order: a bound on ``articles`` that lets DuckDB skip the blocks of other
    times (min/max per block), so a chunk's read does not scan the whole history."""
    return con.execute(f"SELECT min(published_at), max(published_at) FROM {table} WHERE rn BETWEEN ? AND ?", [first, last]).fetchone()


_SEP = "\x1f"  # joins the ids of one statement into one string parameter (ids are hex digests)


def _joined(values) -> str:
    text = _SEP.join(values)
    if text.count(_SEP) != len(values) - 1:
        raise ValueError("an id contains the unit separator (0x1f)")
    return text


def _strings(param: int) -> str:
    """SQL for the list of strings joined in parameter number ``param``."""
    return f"string_split(${param}, chr(31))"


def write_sketches(con: duckdb.DuckDBPyConnection, article_ids: list[str], sketches: np.ndarray, published: np.ndarray, *,
                   checked: bool = False) -> None:
    """Insert ``(article_id, sketch)`` rows (at least one) into ``article_sketches`` (its only writer): the
    hash values as numpy columns DuckDB scans in place, stored as a ``UINTEGER[128]`` (migration
    0028: MinHash values are 32-bit), the ids as one string; no Python object per value (a
    numpy array of str would cost more than the sketch). ``published``: each article's
    ``published_at`` in epoch microseconds (``int64``), stored as ``article_published_at``
    (migration 0029).

    ``checked``: the caller has just read, in this transaction, that none of these distinct
    ids has a sketch (``_read_reports``), so the stored keys are not matched again (an
    anti-join with every stored sketch's id, a scan of the whole history's)."""
    published = np.asarray(published, dtype=np.int64)
    columns = {"r": np.arange(len(article_ids), dtype=np.int64), "p": published}
    columns.update((f"h{k}", np.ascontiguousarray(sketches[:, k])) for k in range(sketches.shape[1]))
    values = ", ".join(f"h{k}" for k in range(sketches.shape[1]))
    # an article's sketch is of its time: the stored ones are matched in the span of these
    stored = stored_keys_sql("article_sketches", _us_span(published))
    con.register("_marsad_new_sketches", columns)
    try:
        con.execute(f"""INSERT INTO article_sketches (article_id, minhash, article_published_at)
                        SELECT i.article_id, CAST([{values}] AS UINTEGER[{neardup.NUM_PERM}]), make_timestamptz(p) FROM _marsad_new_sketches JOIN
                               (SELECT unnest(l) AS article_id, generate_subscripts(l, 1) - 1 AS r
                                FROM (SELECT {_strings(1)} AS l)) i USING (r)
                        {"" if checked else f"ANTI JOIN {stored} s USING (article_id)"}""", [_joined(article_ids)])
    finally:
        con.unregister("_marsad_new_sketches")


def _us_span(us) -> tuple[datetime, datetime]:
    """(min, max) of epoch microseconds as datetimes (UTC)."""
    return _EPOCH + timedelta(microseconds=int(np.min(us))), _EPOCH + timedelta(microseconds=int(np.max(us)))


def _read_reports(con: duckdb.DuckDBPyConnection, first: int, last: int) -> list[Report]:
    """The Reports of the pending pairs numbered ``first..last`` (``_marsad_pending``), in
    that order. Three passes over the same rows: the columns, the entities (one row each,
    grouped here), and the stored sketches as one flat array (not 128 Python ints per row);
    the reports whose article has none yet are sketched from the text just read
    (``_sketch_missing``)."""
    params = [first, last]
    src = "_marsad_pending p JOIN articles a USING (article_id)"
    span = _span(con, "_marsad_pending", first, last)
    rows = con.execute(
        f"SELECT p.rn, p.indicator, {_REPORT_COLUMNS} FROM {src} WHERE p.rn BETWEEN ? AND ? AND a.published_at BETWEEN ? AND ? ORDER BY p.rn",
        params + list(span),
    ).fetchall()
    if not rows:
        return []
    entities: dict[int, list] = {}
    chunk = "SELECT article_id FROM _marsad_pending WHERE rn BETWEEN $1 AND $2"
    for rn, g, i, k, r in con.execute(
        f"""SELECT p.rn, x.gazetteer, x.entity_id, x.kind, x.role
            FROM _marsad_pending p JOIN {_entities_of(chunk, *span)} x USING (article_id)
            WHERE p.rn BETWEEN $1 AND $2""", params
    ).fetchall():
        entities.setdefault(rn, []).append((g, i, k, r))
    got = con.execute(
        f"""SELECT rn, unnest(minhash) AS h FROM (
                SELECT p.rn, s.minhash FROM _marsad_pending p JOIN {_sketches_of(chunk, *span)} s
                USING (article_id) WHERE p.rn BETWEEN $1 AND $2 ORDER BY p.rn) s""", params
    ).fetchnumpy()
    rns = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    sketches = np.empty((len(rows), neardup.NUM_PERM), dtype=neardup._DTYPE)
    have = np.zeros(len(rows), dtype=bool)
    if len(got["h"]):
        at = np.searchsorted(rns, np.asarray(got["rn"][:: neardup.NUM_PERM], dtype=np.int64))
        sketches[at] = np.asarray(got["h"], dtype=neardup._DTYPE).reshape(-1, neardup.NUM_PERM)
        have[at] = True
    if not have.all():
        _sketch_missing(con, rows, sketches, np.flatnonzero(~have).tolist())
    return [_report(row, entities.get(row[0]), sk) for row, sk in zip(rows, sketches)]


def _sketch_missing(con: duckdb.DuckDBPyConnection, rows: list[tuple], sketches: np.ndarray, missing: list[int]) -> None:
    """Sketch the chunk's reports whose article has no sketch yet (``rows[i]`` for ``i`` in
    ``missing``), from the folded text the chunk has just read, into ``sketches[i]``, and store
    each article's sketch once (``write_sketches``). Sketching here, as the reports are read,
    instead of in a pass of its own before, reads each pending article's text once, not twice,
    and its sketch is not read back."""
    first: dict[str, int] = {}  # article id -> its first row among the missing (an article of two indicators is one text)
    for i in missing:
        first.setdefault(rows[i][2], i)
    ids = list(first)
    computed = neardup.signatures([rows[i][8] for i in first.values()])
    of = dict(zip(ids, range(len(ids))))
    sketches[missing] = computed[[of[rows[i][2]] for i in missing]]
    write_sketches(con, ids, computed, np.fromiter((rows[i][3] for i in first.values()), dtype=np.int64, count=len(ids)), checked=True)


def _rows_of(table: str, ids: str, cols: str, lo: datetime | None, hi: datetime | None = None) -> str:
    """SQL for the rows (``cols``) of ``table`` whose ``article_id`` the query ``ids`` selects,
    fetched by row id: the ids are matched in a scan of the ``article_id`` column alone and
    DuckDB reads the other columns of those rows only. A join with the table would read every
    row's columns (every sketch of the history, 128 values each: 0.1 s at 100k sketches).

    ``lo..hi`` (``hi`` None: unbounded): the span of those articles' ``published_at``, which
    their rows carry (migration 0029): both scans read the row groups of that span only."""
    bound = time_bound(lo, hi)
    return f"(SELECT {cols} FROM {table} WHERE {bound} AND rowid IN (SELECT t.rowid FROM {table} t WHERE {bound} AND t.article_id IN ({ids})))"


def _sketches_of(ids: str, lo: datetime | None, hi: datetime | None = None) -> str:
    return _rows_of("article_sketches", ids, "article_id, minhash", lo, hi)


def _entities_of(ids: str, lo: datetime | None, hi: datetime | None = None) -> str:
    return _rows_of("article_entities", ids, "article_id, gazetteer, entity_id, kind, role", lo, hi)


@functools.cache
def _utc_epoch() -> datetime:
    """1970-01-01 UTC with the tzinfo DuckDB gives a TIMESTAMPTZ under ``SET TimeZone = 'UTC'``
    (``db.connect``): the reports' times are made from it, and compared with the events'
    times DuckDB made, fastest when both hold the same tzinfo object."""
    probe = duckdb.connect()
    try:
        probe.execute("SET TimeZone = 'UTC'")
        return probe.execute("SELECT TIMESTAMPTZ '1970-01-01 00:00:00+00'").fetchone()[0]
    finally:
        probe.close()


def _report(row: tuple, ents: list | None, minhash) -> Report:
    _, indicator, article_id, published, fetched, title, url, chash, folded, guid = row
    epoch = _utc_epoch()
    published, fetched = epoch + timedelta(microseconds=published), epoch + timedelta(microseconds=fetched)
    return Report(
        article_id, indicator, published, fetched, title, url or None, chash, folded, guid or None,
        minhash, {(g, i, k) for g, i, k, _ in ents} if ents else set(),
        frozenset(i for _, i, _, r in ents if r == "launch") if ents else frozenset(),
    )


def _horizon_start(con: duckdb.DuckDBPyConnection, lo: datetime, hi: datetime) -> datetime:
    """The earliest first-report time of a stored event some pending report (``_marsad_pending``,
    published ``lo..hi``) can join: rules 1 to 5 look back ``EXACT_HORIZON`` at most (exact
    copies; the others ``WINDOW``), rule 6 ``FOLLOWUP_HORIZON``, and only for a report with a
    ``followup`` cue (``cluster.Clusterer._decide``). So the events of the 30 days before are
    read only as far back as the earliest such report needs: an older event could be joined by
    no pending report, and giving it to the Clusterer changes no decision."""
    start = lo - max(EXACT_HORIZON, WINDOW)
    first = con.execute(
        f"""SELECT min(p.published_at) FROM _marsad_pending p SEMI JOIN
                (SELECT article_id FROM article_entities WHERE {time_bound(lo, hi)} AND gazetteer = 'cues' AND entity_id = 'followup') x
                USING (article_id)""").fetchone()[0]
    return start if first is None else min(start, first - FOLLOWUP_HORIZON)


def _read_events(con: duckdb.DuckDBPyConnection, clusterer: Clusterer, indicators: list[str], lo: datetime, hi: datetime,
                 pending: bool = False, since: datetime | None = None) -> None:
    """Give ``clusterer`` what the rules can reach of the events already stored, each thing at
    its own horizon around the pending reports' times ``lo..hi`` (``cluster``'s rules):

    * events first reported within ``LOOKBACK`` before ``lo`` (follow-ups, rule 6) up to
      ``WINDOW`` after ``hi``: their times and the union of their reports' entities, read
      as rows and gathered by the Clusterer, not their reports;
    * the keys (URL, entry id, content hash) of the reports of those within
      ``EXACT_HORIZON`` (rule 1);
    * the sketches and texts of the reports of those within ``WINDOW`` (rules 2 and 3).

    ``pending``: the pending pairs are staged (``_marsad_pending``), and those of their
    articles that are already members and have no sketch are sketched first. ``since``: the
    earliest event time to read instead of ``LOOKBACK`` before ``lo`` (``_horizon_start``)."""
    since = lo - LOOKBACK if since is None else since
    params = [indicators, since, hi]
    chosen = "list_contains($1, e.indicator) AND e.first_report_at BETWEEN $2 AND $3"
    # The links of the widest horizon's events, staged once with their reports' keys: the
    # reads below join this instead of scanning every link of the history each (event_articles
    # has no time column), and only the sketches' read goes back to the articles (their text).
    # An event's reports are published at or after its time: said on the articles too, so
    # DuckDB skips the blocks of older articles (min/max per block) instead of joining all.
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _marsad_members AS
                    SELECT e.event_id, e.indicator, e.first_report_at, ea.article_id, a.published_at, a.canonical_url, a.guid, a.content_hash
                    FROM events e JOIN event_articles ea USING (event_id) JOIN articles a USING (article_id)
                    WHERE {chosen} AND a.published_at >= $2 AND {time_bound(since, alias='ea')}""", params)
    try:
        if pending:
            _sketch_pending_members(con)
        _read_known(con, clusterer, indicators, lo, hi, chosen, params)
    finally:
        db.drop_temp(con, "_marsad_members")


def _sketch_pending_members(con: duckdb.DuckDBPyConnection) -> None:
    """Sketch the pending articles that are already members of a staged event
    (``_marsad_members``: an article linked under one indicator, pending under another) and
    have no sketch: the pending reports are sketched as they are read (``_read_reports``), but
    these are read before, as members near-duplicates are sought among. Almost always none."""
    both = [a for a, in con.execute(
        "SELECT DISTINCT article_id FROM _marsad_members SEMI JOIN _marsad_pending USING (article_id) ORDER BY article_id").fetchall()]
    if not both:
        return
    lo, hi = con.execute("SELECT min(published_at), max(published_at) FROM _marsad_pending SEMI JOIN _marsad_members USING (article_id)").fetchone()
    rows = con.execute(
        f"""SELECT a.article_id, a.text_folded, epoch_us(a.published_at) FROM articles a
            WHERE a.article_id IN (SELECT unnest({_strings(1)}))
              AND a.article_id NOT IN (SELECT article_id FROM {_sketches_of(f'SELECT unnest({_strings(1)})', lo, hi)})
            ORDER BY a.article_id""", [_joined(both)]).fetchall()
    if rows:
        write_sketches(con, [a for a, _, _ in rows], neardup.signatures([t for _, t, _ in rows]),
                       np.fromiter((p for _, _, p in rows), dtype=np.int64, count=len(rows)))


def _read_known(con: duckdb.DuckDBPyConnection, clusterer: Clusterer, indicators: list[str], lo: datetime, hi: datetime,
                chosen: str, params: list) -> None:
    """``_read_events`` over the staged links and keys (``_marsad_members``)."""
    reports = f"{chosen} AND e.published_at >= $2"
    entities: dict[str, list] = {}
    for event_id, g, i, k, launch in con.execute(
        f"""SELECT DISTINCT event_id, gazetteer, entity_id, kind, launch FROM (
                SELECT e.event_id, x.gazetteer, x.entity_id, x.kind,
                       bool_or(x.role = 'launch') OVER (PARTITION BY x.article_id, x.entity_id) AS launch
                FROM _marsad_members e JOIN {_entities_of(f'SELECT article_id FROM _marsad_members e WHERE {reports}', params[1])} x USING (article_id)
                WHERE {reports})""", params,
    ).fetchall():
        entities.setdefault(event_id, []).append((g, i, k, launch))
    for event_id, indicator, first_report, first_seen, title in con.execute(
        f"""SELECT event_id, indicator, first_report_at, first_seen_at, title FROM events e
            WHERE {chosen} ORDER BY first_report_at, event_id""", params,
    ).fetchall():
        clusterer.add_known_event(Event(event_id, indicator, first_report, first_seen, title), entities.pop(event_id, ()))
    order = "ORDER BY e.published_at, e.article_id, e.event_id"
    for event_id, indicator, url, guid, chash in con.execute(
        f"""SELECT e.event_id, e.indicator, e.canonical_url, e.guid, e.content_hash FROM _marsad_members e
            WHERE {reports} {order}""", [indicators, lo - EXACT_HORIZON, hi],
    ).fetchall():
        clusterer.add_member_keys(event_id, indicator, url or None, guid or None, chash)
    params = [indicators, lo - WINDOW, hi]
    # a report never sketched is no near-duplicate
    members = f"_marsad_members e JOIN {_sketches_of(f'SELECT article_id FROM _marsad_members e WHERE {reports}', lo - WINDOW)} s USING (article_id)"
    rows = con.execute(
        f"""SELECT e.event_id, e.indicator, e.article_id, a.text_folded FROM {members} JOIN articles a USING (article_id)
            WHERE {reports} AND a.published_at >= $2 {order}""", params
    ).fetchall()
    if not rows:
        return
    flat = con.execute(
        f"""SELECT unnest(minhash) AS h FROM (SELECT s.minhash FROM {members}
            WHERE {reports} {order})""", params
    ).fetchnumpy()["h"]
    sketches = np.asarray(flat, dtype=neardup._DTYPE).reshape(-1, neardup.NUM_PERM)
    if len(sketches) != len(rows):
        raise RuntimeError(f"{len(rows) - len(sketches)} reports of recent events have no sketch")
    for (event_id, indicator, article_id, folded), sketch in zip(rows, sketches):
        clusterer.add_member_sketch(event_id, indicator, article_id, sketch, folded)


def assign_events(con: duckdb.DuckDBPyConnection, now: datetime, places: PlaceHierarchy | None = None, *, this_load: bool = False) -> int:
    """Link unlinked (article, indicator) pairs to events; returns how many events were opened.
    ``places`` is the nesting of places.yaml (without it, only the same place joins).

    What is read of the past follows the rules' horizons around the pending reports, not the
    history (``_read_events``). Memory holds what the rules can still reach, not the load:
    pending reports are read ``CHUNK`` at a time (only their keys are staged), links are
    written after each chunk, and events no report can join any more
    (``Clusterer.take_closed``) are written and dropped as the reports' time passes them.

    ``this_load``: the pending pairs are those of the articles classified at ``now`` (the
    loader's scope, ``_pending_sql``); without it, every unlinked pair of the history."""
    scope = now if this_load else None
    restore, want = _limit_memory(con)
    try:
        return _assign(con, now, places, scope)
    except duckdb.OutOfMemoryException as exc:
        if not restore:
            raise
        # DuckDB aborts the transaction on an out-of-memory error: nothing can be retried in
        # it, and the load rolls back whole (nothing is lost: its staged files stay). What is
        # left is to make the next attempt succeed: it assigns without the lowered limit
        # until the setting changes, and the error says so and what to change.
        marker = _memory_marker(con)
        if marker is not None:
            marker.write_text(want, encoding="utf-8")
        raise AssignMemoryError(
            f"event assignment needed more memory than warehouse.assign_memory ({want}, MARSAD_ASSIGN_MEMORY): "
            f"the load is rolled back and its next attempt assigns without that limit (until the setting changes; "
            f"{marker}); raise warehouse.assign_memory: {exc}") from exc
    finally:
        if restore:
            try:
                con.execute(f"SET memory_limit = '{restore}'")
            except duckdb.Error:  # an aborted transaction refuses even SET: the connection is closed after the load
                pass


class AssignMemoryError(RuntimeError):
    """Event assignment ran out of memory under ``warehouse.assign_memory``."""


def _memory_marker(con: duckdb.DuckDBPyConnection) -> Path | None:
    """``<warehouse>.assign-memory``: the ``warehouse.assign_memory`` value under which
    assignment ran out of memory (None for an in-memory database)."""
    path = db.database_path(con)
    return Path(path + ".assign-memory") if path else None


def _limit_memory(con: duckdb.DuckDBPyConnection) -> tuple[str | None, str]:
    """Lower DuckDB's memory limit to ``warehouse.assign_memory`` (marsad/settings.yaml) while
    events are assigned: what assignment writes and reads is spilled beyond it instead of
    held (at 1M reports DuckDB would otherwise keep about 1 GB of table data). Returns the
    limit to restore (None when it is not lowered: it is lower already, DuckDB cannot free
    enough memory to go under it now, or assignment ran out of memory under this very value
    before, ``_memory_marker``) and the setting's value."""
    from marsad.settings import current

    want = current("warehouse.assign_memory").get("warehouse.assign_memory")
    marker = _memory_marker(con)
    if marker is not None and marker.exists():
        if marker.read_text(encoding="utf-8").strip() == want:
            log.warning("event assignment ran out of memory under warehouse.assign_memory=%s before: assigning without "
                        "that limit until the setting changes (%s)", want, marker)
            return None, want
        marker.unlink(missing_ok=True)  # the setting changed: try the new value
    before = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    if _bytes(before) <= _bytes(want):
        return None, want
    try:
        con.execute(f"SET memory_limit = '{want}'")
    except duckdb.OutOfMemoryException:
        return None, want
    return before, want


_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def _bytes(size: str) -> float:
    """Bytes of a DuckDB memory size ("256MB", "18.8 GiB")."""
    number, unit = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]+)\s*", size).groups()
    return float(number) * _UNITS[unit.upper()]


def _assign(con: duckdb.DuckDBPyConnection, now: datetime, places: PlaceHierarchy | None, scope: datetime | None) -> int:
    mine, mine_params = _in_load(scope)
    pending, pending_params = _pending_sql(scope, None if scope is None else classified_span(con, scope))
    # The loop below makes many small objects and no reference cycles: the cyclic
    # collector would re-scan the heap again and again.
    collecting = gc.isenabled()
    gc.disable()
    opened = 0
    try:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _marsad_pending AS
                SELECT row_number() OVER (ORDER BY a.published_at, p.article_id, p.indicator) AS rn, p.indicator, p.article_id, a.published_at
                FROM ({pending}) p JOIN articles a USING (article_id) {mine}""",
            pending_params + mine_params,
        )
        n, indicators, lo, hi = con.execute(
            "SELECT count(*), list(DISTINCT indicator ORDER BY indicator), min(published_at), max(published_at) FROM _marsad_pending"
        ).fetchone()
        if not n:
            return 0

        clusterer = Clusterer(places)
        _read_events(con, clusterer, indicators, lo, hi + WINDOW, pending=True, since=_horizon_start(con, lo, hi))
        for first in range(1, n + 1, CHUNK):
            links: list[tuple[str, str, str, int]] = []
            for r in _read_reports(con, first, first + CHUNK - 1):
                event_id, how = clusterer.assign(r)
                links.append((event_id, r.article_id, how, (r.published - _EPOCH) // _MICROSECOND))
            _write_links(con, links)
            opened += _write_events(con, clusterer.take_closed(), now)
        opened += _write_events(con, list(clusterer.events.values()), now)
    finally:
        if collecting:
            gc.enable()
        db.drop_temp(con, "_marsad_pending")
    return opened


def _write_links(con: duckdb.DuckDBPyConnection, links: list[tuple[str, str, str, int]]) -> None:
    """Insert (event_id, article_id, how, the article's published_at in epoch microseconds)
    links not stored yet; the stored ones are matched in the span of these articles' times
    (``append_new_sql``: a link is of its article's time, migration 0029)."""
    if not links:
        return
    event_ids, article_ids, hows, published = zip(*links)
    con.register("_marsad_link_times", {"r": np.arange(len(links), dtype=np.int64), "p": np.asarray(published, dtype=np.int64)})
    try:
        con.execute(
            append_new_sql("event_articles", "event_id, article_id, how, article_published_at",
                           f"""(SELECT l.event_id, l.article_id, l.how, make_timestamptz(t.p) AS article_published_at FROM _marsad_link_times t JOIN
                                    (SELECT unnest({_strings(1)}) AS event_id, unnest({_strings(2)}) AS article_id, unnest({_strings(3)}) AS how,
                                            generate_subscripts({_strings(1)}, 1) - 1 AS r) l USING (r))""",
                           _us_span(published)),
            [_joined(event_ids), _joined(article_ids), _joined(hows)],
        )
    finally:
        con.unregister("_marsad_link_times")


def _write_events(con: duckdb.DuckDBPyConnection, events: list[Event], now: datetime) -> int:
    """Insert the new events, and move existing ones that gained an earlier report (a
    late-arriving first report); returns how many were new."""
    new = [e for e in events if e.new]
    _insert_events(con, new, now)
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


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _insert_events(con: duckdb.DuckDBPyConnection, new: list[Event], now: datetime) -> None:
    """Insert new events (new ids only: APPEND_KEYS, events has no index): the strings as one
    joined parameter each and the times as numpy microseconds, no JSON (a third of the time
    at 80k events). A missing title or one holding the separator goes the JSON way, which takes any text."""
    if not new:
        return
    titles = [e.title for e in new]
    if any(t is None or _SEP in t for t in titles):
        bulk_insert(con, "events", [e.row() | {"created_at": now} for e in new], EVENT_COLUMNS)
        return
    times = {
        "r": np.arange(len(new), dtype=np.int64),
        "fr": np.fromiter(((e.first_report_at - _EPOCH) // _MICROSECOND for e in new), dtype=np.int64, count=len(new)),
        "fs": np.fromiter(((e.first_seen_at - _EPOCH) // _MICROSECOND for e in new), dtype=np.int64, count=len(new)),
    }
    split = [_strings(k) for k in (1, 2, 3)]
    src = f"""(SELECT s.event_id, s.indicator, make_timestamptz(t.fr) AS first_report_at, make_timestamptz(t.fs) AS first_seen_at,
                      s.title, $4::TIMESTAMPTZ AS created_at
               FROM _marsad_new_events t JOIN
                    (SELECT unnest({split[0]}) AS event_id, unnest({split[1]}) AS indicator, unnest({split[2]}) AS title,
                            generate_subscripts({split[0]}, 1) - 1 AS r) s USING (r))"""
    con.register("_marsad_new_events", times)
    try:
        con.execute(append_new_sql("events", ", ".join(EVENT_COLUMNS), src),
                    [_joined([e.event_id for e in new]), _joined([e.indicator for e in new]), _SEP.join(titles), now])
    finally:
        con.unregister("_marsad_new_events")


EVENT_COLUMNS = {
    "event_id": "VARCHAR", "indicator": "VARCHAR", "first_report_at": "TIMESTAMPTZ",
    "first_seen_at": "TIMESTAMPTZ", "title": "VARCHAR", "created_at": "TIMESTAMPTZ",
}
