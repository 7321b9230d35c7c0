"""Set-based loads into the warehouse.

Python hands DuckDB newline-delimited JSON files and DuckDB does the rest in one
statement (``read_json`` + ``INSERT ... ON CONFLICT DO NOTHING``): no row-by-row inserts,
and loading the same rows twice changes nothing.
"""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Iterable

import duckdb

from warehouse.db import VARCHARS, drop_temp, json_list, row_runs

ARTICLE_COLUMNS = {
    "article_id": "VARCHAR",
    "source_id": "VARCHAR",
    "guid": "VARCHAR",
    "url": "VARCHAR",
    "canonical_url": "VARCHAR",
    "title": "VARCHAR",
    "summary": "VARCHAR",
    "lang": "VARCHAR",
    "published_at": "TIMESTAMPTZ",
    "published_flag": "VARCHAR",
    "fetched_at": "TIMESTAMPTZ",
    "title_folded": "VARCHAR",
    "text_folded": "VARCHAR",
    "content_hash": "VARCHAR",
}


def id_key_sql(column: str = "article_id") -> str:
    """SQL of an article's ``id_key`` (migration 0026): the first 64 bits of the md5 of its id,
    as UBIGINT. md5, not DuckDB's ``hash()``: the stored keys must mean the same to every
    DuckDB version that opens the file."""
    return f"CAST('0x' || left(md5({column}), 16) AS UBIGINT)"


def _columns_sql(columns: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in columns.items()) + "}"


def read_json_sql(files: list[str | Path], columns: dict[str, str]) -> tuple[str, list]:
    """A ``read_json`` table expression over files, with the columns typed; the file list is
    bound as one JSON text (``warehouse.db.VARCHARS``: the 1,000 files of a 1,000-feed cycle)."""
    return (
        f"read_json({VARCHARS}, format='newline_delimited', columns={_columns_sql(columns)})",
        [json_list([str(f) for f in files])],
    )


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=_json_default))
            fh.write("\n")
            n += 1
    return n


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> int:
    """``write_jsonl`` to ``path`` through a temporary name renamed into place, so that a reader
    never sees half a file. On any error (a full disk) the partial file is removed and the
    error names ``path``: "[Errno 28] No space left on device" alone says nothing of where."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        n = write_jsonl(tmp, rows)
        os.replace(tmp, path)
        return n
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"{exc.strerror or exc} (writing {path.name})", str(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """``path`` written whole or not at all (see ``write_jsonl_atomic``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"{exc.strerror or exc} (writing {path.name})", str(path)) from exc


def _json_default(obj):
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# Tables written for append (migration 0018): no primary key, whose ART index DuckDB would
# rewrite whole at every checkpoint; each keeps its key by inserting only the keys not stored
# yet. ``bulk_insert`` (``conflict="DO NOTHING"``) does it for them with these keys.
APPEND_KEYS = {
    "articles": ("article_id",),
    "article_indicators": ("article_id", "indicator"),
    "article_entities": ("article_id", "gazetteer", "entity_id"),
    "article_sketches": ("article_id",),
    "event_articles": ("event_id", "article_id"),
    "events": ("event_id",),
}


# Tables whose rows hang off an article and carry its publication time (migration 0029):
# every row of one article has the same ``article_published_at``.
LINK_TIME = "article_published_at"
TIMED_TABLES = ("article_indicators", "article_entities", "article_sketches", "event_articles")


def time_bound(lo: datetime | None, hi: datetime | None = None, alias: str = "") -> str:
    """SQL: ``article_published_at`` within ``lo..hi`` (``hi`` None: no upper bound), as
    constants, which DuckDB checks against each row group's min/max before it reads it (a bound
    bound as a parameter of a join, or a subquery, prunes nothing). ``lo`` None: no rows."""
    col = f"{alias}.{LINK_TIME}" if alias else LINK_TIME
    if lo is None:
        return "false"
    out = f"{col} >= TIMESTAMPTZ '{lo.isoformat()}'"
    return out if hi is None else f"{out} AND {col} <= TIMESTAMPTZ '{hi.isoformat()}'"


def stored_keys_sql(table: str, span: tuple[datetime, datetime] | None = None) -> str:
    """SQL of the keys (``APPEND_KEYS``) ``table`` holds, to anti-join new rows with; with a
    ``span`` (``TIMED_TABLES``: the (min, max) ``article_published_at`` of the new rows) only
    the stored rows of that span: a stored row of the same key is of the same article, hence
    of the same time, and zone maps skip the rest of the history's keys."""
    return table if span is None else f"(SELECT {', '.join(APPEND_KEYS[table])} FROM {table} WHERE {time_bound(*span)})"


def append_new_sql(table: str, cols: str, src: str, span: tuple[datetime, datetime] | None = None) -> str:
    """``INSERT`` of the rows of ``src`` whose key (``APPEND_KEYS``) ``table`` does not hold
    yet, the first of each key in ``src``: what ``ON CONFLICT DO NOTHING`` did with a primary key.

    ``span``: the (min, max) ``article_published_at`` of ``src``'s rows: only the stored rows
    of that span are matched (``stored_keys_sql``)."""
    keys = ", ".join(APPEND_KEYS[table])
    return (f"INSERT INTO {table} ({cols}) SELECT {cols} FROM "
            f"(SELECT DISTINCT ON ({keys}) {cols} FROM {src} ANTI JOIN {stored_keys_sql(table, span)} USING ({keys}))")


def bulk_insert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    rows: list[dict],
    columns: dict[str, str],
    conflict: str = "DO NOTHING",
    returning: str | None = None,
) -> list[tuple]:
    """Insert rows in one statement through a temporary NDJSON file. Rows whose key is stored
    already are skipped (``ON CONFLICT``; for the append tables, their ``APPEND_KEYS``)."""
    if not rows:
        return []
    fd, tmp = tempfile.mkstemp(prefix=f"marsad-{table}-", suffix=".jsonl")
    os.close(fd)
    try:
        write_jsonl(tmp, ({k: r.get(k) for k in columns} for r in rows))
        src, params = read_json_sql([tmp], columns)
        cols = ", ".join(columns)
        if table in APPEND_KEYS:
            if conflict != "DO NOTHING":
                raise ValueError(f"{table} is written for append: only new keys are inserted (conflict {conflict!r})")
            span = None
            if table in TIMED_TABLES and LINK_TIME in columns:
                times = [r.get(LINK_TIME) for r in rows]
                if all(isinstance(t, datetime) for t in times):
                    span = (min(times), max(times))
            sql = append_new_sql(table, cols, src, span)
        else:
            sql = f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {src} ON CONFLICT {conflict}"
        if returning:
            sql += f" RETURNING {returning}"
        return con.execute(sql, params).fetchall()
    finally:
        os.unlink(tmp)


# A feed that re-issues its entries under new GUIDs (every poll, for some CMSs) must not add
# them again: within this long, an entry of the same source with the same canonical URL or
# the same content is the article already stored.
DEDUPE_HORIZON_DAYS = 7

_CORRECTABLE = ("guid", "url", "canonical_url", "title", "summary", "lang", "title_folded", "text_folded", "content_hash")


def insert_articles(con: duckdb.DuckDBPyConnection, files: list[str | Path]) -> list[tuple[str, str]]:
    """``load_articles``, returning only the new articles."""
    return load_articles(con, files)[0]


def load_articles(con: duckdb.DuckDBPyConnection, files: list[str | Path]) -> tuple[list[tuple[str, str]], list[str]]:
    """Load staged article files. Returns the (article_id, source_id) of the new articles, and
    the ids of stored articles corrected by this load.

    * An entry repeated inside a batch (duplicate GUIDs in one feed, the same feed staged
      twice) keeps its first sighting.
    * An entry already stored (same source and GUID, or URL when there is no GUID) whose
      content changed (its content hash) corrects the stored article: the text is replaced and
      its verdicts and tags are dropped (``forget_derived``), so that the load classifies it
      again and fixes its event links (``unlink_unmatched``, then event assignment). A feed
      first read with a bad byte, and then well-formed, is read right in the end.
    * A new entry whose canonical URL or content (per source, within ``DEDUPE_HORIZON_DAYS``)
      is an article already stored, or earlier in the batch, is a re-issued copy: not added.
      A URL that the batch shows with different texts (a feed linking every entry to its home
      or section page) identifies nothing and is not compared.
    """
    files = [f for f in files if Path(f).stat().st_size > 0]
    if not files:
        return [], []
    src, params = read_json_sql(files, ARTICLE_COLUMNS)
    cols = ", ".join(ARTICLE_COLUMNS)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _marsad_staged AS
            SELECT {cols}, {id_key_sql()} AS id_key FROM (
                SELECT *, row_number() OVER (PARTITION BY article_id ORDER BY fetched_at, published_at) AS rn FROM {src}
            ) WHERE rn = 1""",
        params,
    )
    try:
        # The copies a new entry is compared with are those of the horizon before the batch's
        # first fetch: a constant bound, so the scan skips the row groups of the past (zone maps).
        horizon = con.execute(f"SELECT min(fetched_at) - INTERVAL {DEDUPE_HORIZON_DAYS} DAY FROM _marsad_staged").fetchone()[0]
        sets = ", ".join(f"{c} = s.{c}" for c in _CORRECTABLE)
        # The stored articles among the staged ones, by id, with their row ids; corrections then
        # touch only those rows. The history is scanned on its 64-bit keys (``id_key``), not its
        # ids: 8 bytes compared as an integer against an FSST-compressed string decompressed
        # and hashed (at 2M articles ~0.15 s of CPU a load); the rows whose key is among the
        # staged keys are then fetched by row id and compared on the id itself.
        _fill_id_keys(con)
        candidates = [r for r, in con.execute(
            "SELECT a.rowid FROM articles a SEMI JOIN (SELECT DISTINCT id_key FROM _marsad_staged) k USING (id_key) ORDER BY 1").fetchall()]
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _marsad_known AS
                        SELECT rid, article_id FROM ({_rows_in_runs(candidates)}) SEMI JOIN _marsad_staged USING (article_id)""")
        # Corrections: the known rows only, bounded by their first and last row id (DuckDB skips
        # the row groups outside a BETWEEN on rowid; a list of row ids alone it reads whole).
        lo, hi = con.execute("SELECT min(rid), max(rid) FROM _marsad_known").fetchone()
        corrected = [] if lo is None else [
            r[0]
            for r in con.execute(
                f"""UPDATE articles SET {sets}, classified_at = NULL
                    FROM _marsad_staged s, _marsad_known k
                    WHERE articles.rowid BETWEEN ? AND ? AND articles.rowid IN (SELECT rid FROM _marsad_known) AND articles.rowid = k.rid
                      AND k.article_id = s.article_id AND articles.content_hash <> s.content_hash
                    RETURNING articles.article_id""", [lo, hi]
            ).fetchall()
        ]
        new = con.execute(
            f"""
            WITH fresh AS (
                SELECT s.* FROM _marsad_staged s ANTI JOIN _marsad_known k USING (article_id)
            ),
            shared_urls AS (  -- one URL, several texts in this batch: a home or section page
                SELECT source_id, canonical_url FROM _marsad_staged WHERE canonical_url IS NOT NULL
                GROUP BY ALL HAVING count(DISTINCT content_hash) > 1
            ),
            keyed AS (
                SELECT f.*,
                       CASE WHEN f.canonical_url IS NOT NULL AND u.canonical_url IS NULL
                                 AND NOT regexp_matches(f.canonical_url, '^[a-z]+://[^/]+/?$')
                            THEN f.canonical_url END AS url_key
                FROM fresh f LEFT JOIN shared_urls u USING (source_id, canonical_url)
            ),
            ranked AS (
                SELECT *,
                       row_number() OVER (PARTITION BY source_id, content_hash ORDER BY fetched_at, published_at, article_id) AS by_hash,
                       row_number() OVER (PARTITION BY source_id, coalesce(url_key, article_id) ORDER BY fetched_at, published_at, article_id) AS by_url
                FROM keyed
            ),
            recent AS (
                SELECT source_id, fetched_at, content_hash, canonical_url FROM articles WHERE fetched_at >= $horizon
            )
            INSERT INTO articles ({cols}, id_key)
            SELECT {cols}, id_key FROM ranked r
            WHERE by_hash = 1 AND by_url = 1
              -- a copy by content, or by URL: two equality joins, not one join on the source
              -- whose OR compares each new entry with every recent article of its source
              AND NOT EXISTS (SELECT 1 FROM recent a WHERE a.source_id = r.source_id AND a.content_hash = r.content_hash
                                AND a.fetched_at >= r.fetched_at - INTERVAL {DEDUPE_HORIZON_DAYS} DAY)
              AND NOT EXISTS (SELECT 1 FROM recent a WHERE a.source_id = r.source_id AND a.canonical_url = r.url_key
                                AND a.fetched_at >= r.fetched_at - INTERVAL {DEDUPE_HORIZON_DAYS} DAY)
            RETURNING article_id, source_id
            """,
            {"horizon": horizon},
        ).fetchall()
    finally:
        drop_temp(con, "_marsad_staged", "_marsad_known")
    if corrected:
        forget_derived(con, corrected)
    return new, corrected


RUN_GAP = 16_384  # row ids: candidates closer than this are read as one run of rows
MAX_RUNS = 32


def _runs(rowids: list[int]) -> list[tuple[int, int]]:
    """Sorted row ids as at most ``MAX_RUNS`` runs ``(first, last)`` covering them all: ids
    within ``RUN_GAP`` of each other share a run, and the closest runs are merged beyond
    ``MAX_RUNS`` (each run is a scan of its own)."""
    runs = row_runs(rowids, RUN_GAP)
    while len(runs) > MAX_RUNS:
        k = min(range(len(runs) - 1), key=lambda i: runs[i + 1][0] - runs[i][1])
        runs[k:k + 2] = [[runs[k][0], runs[k + 1][1]]]
    return [(a, b) for a, b in runs]


def _rows_in_runs(rowids: list[int]) -> str:
    """SQL of (rid, article_id) of the articles in the runs of ``rowids`` (``_runs``). A filter
    ``rowid BETWEEN first AND last`` is applied in the scan, which reads the ids of those rows
    only; DuckDB treats a list of row ids (``rowid IN (...)``, a join on rowid) as an optional
    filter and decompresses the whole column (at 2M articles as dear as the scan the key saves)."""
    if not rowids:
        return "SELECT NULL::BIGINT AS rid, NULL::VARCHAR AS article_id WHERE false"
    return " UNION ALL ".join(f"SELECT rowid AS rid, article_id FROM articles WHERE rowid BETWEEN {int(a)} AND {int(b)}"
                              for a, b in _runs(rowids))


def _fill_id_keys(con: duckdb.DuckDBPyConnection) -> None:
    """Give ``id_key`` to the articles that lack it: those a writer inserted naming its columns
    without it (tests, benches, a restore of an older export). Loads fill it as they insert, so
    there are none as a rule, and the scan is skipped by the column's statistics (a row group
    without NULLs). Without its key an article would be taken for new by every load."""
    con.execute(f"UPDATE articles SET id_key = {id_key_sql()} WHERE id_key IS NULL")


def forget_derived(con: duckdb.DuckDBPyConnection, article_ids: list[str]) -> None:
    """Drop what was derived from these articles' old text (verdicts, tags, sketch), so that the
    load classifies them again. Their event links stay until ``unlink_unmatched``: a corrected
    article that still matches an indicator keeps its event (no churn of events and updates)."""
    for table in ("article_indicators", "article_entities", "article_sketches"):
        con.execute(f"DELETE FROM {table} WHERE list_contains(?, article_id)", [article_ids])


def unlink_unmatched(con: duckdb.DuckDBPyConnection, article_ids: list[str]) -> None:
    """After re-classifying corrected articles: remove their links to events of indicators they
    no longer match, and the events so emptied that no alert has cited. Indicators they now
    match for the first time are linked by event assignment as for any new article."""
    if not article_ids:
        return
    events = [
        r[0]
        for r in con.execute(
            """DELETE FROM event_articles ea USING events e
               WHERE ea.event_id = e.event_id AND list_contains(?, ea.article_id)
                 AND NOT EXISTS (SELECT 1 FROM article_indicators ai WHERE ai.article_id = ea.article_id AND ai.indicator = e.indicator)
               RETURNING ea.event_id""",
            [article_ids],
        ).fetchall()
    ]
    if events:
        con.execute(
            """DELETE FROM events e WHERE list_contains(?, e.event_id)
                 AND NOT EXISTS (SELECT 1 FROM event_articles ea WHERE ea.event_id = e.event_id)
                 AND NOT EXISTS (SELECT 1 FROM alert_events ae WHERE ae.event_id = e.event_id)""",
            [events],
        )
