"""The SQL home of ``article_indicators``: which indicator each article matched, by which
clause, with the hits, references and the event frame that decided it.

Verdicts come from the classifier (``alerts.matching``), staged by the fetch tasks or computed
by the loader; ``marsad.pipeline`` wires those steps, the rows are written here.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from warehouse.db import drop_temp
from warehouse.load import bulk_insert, read_json_sql, time_bound

# article_published_at: the article's publication time, which every row of article_indicators
# carries (migration 0029) so that a load's reads of its own verdicts skip the history's
MATCH_COLUMNS = {"article_id": "VARCHAR", "indicator": "VARCHAR", "clause": "INTEGER", "hits": "JSON", "refs": "JSON", "frame": "JSON",
                 "article_published_at": "TIMESTAMPTZ"}
MATCHES_TYPE = "STRUCT(indicator VARCHAR, clause INTEGER, hits JSON, refs JSON, frame JSON)[]"


def insert_staged(con: duckdb.DuckDBPyConnection, files: list[Path], now: datetime) -> int:
    """Verdicts staged by the fetch tasks -> article_indicators, for articles not classified yet.

    The unclassified articles are found by ``classified_at IS NULL`` alone, materialised
    before they meet the staged ids: joined directly, DuckDB pushes the staged ids into the
    scan of ``articles`` and reads every id of the history (0.3 s at 2M articles) instead of
    the few row groups that hold unclassified rows. They are then marked by row id, and the
    verdicts stored already are looked up for their ids only."""
    if not files:
        return 0
    src, params = read_json_sql(files, {"article_id": "VARCHAR", "matches": MATCHES_TYPE})
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _marsad_verdicts AS
            WITH unclassified AS MATERIALIZED (SELECT rowid AS rid, article_id, published_at FROM articles WHERE classified_at IS NULL)
            SELECT u.rid, s.article_id, u.published_at, s.matches FROM {src} s JOIN unclassified u USING (article_id)""",
        params,
    )
    try:
        # The stored verdicts of these articles are of their publication times: only those
        # row groups of article_indicators are read (migration 0029), not the history's ids.
        span = con.execute("SELECT min(published_at), max(published_at) FROM _marsad_verdicts").fetchone()
        n = con.execute(
            f"""INSERT INTO article_indicators (article_id, indicator, clause, hits, refs, frame, article_published_at)
               SELECT DISTINCT ON (s.article_id, m.indicator) s.article_id, m.indicator, m.clause, m.hits, m.refs, m.frame, s.published_at
               FROM (SELECT article_id, published_at, unnest(matches) AS m FROM _marsad_verdicts) s(article_id, published_at, m)
               ANTI JOIN (SELECT article_id, indicator FROM article_indicators SEMI JOIN _marsad_verdicts USING (article_id)
                          WHERE {time_bound(*span)}) ai
                    ON ai.article_id = s.article_id AND ai.indicator = m.indicator
               RETURNING 1"""
        ).fetchall()
        con.execute("UPDATE articles SET classified_at = ? WHERE rowid IN (SELECT rid FROM _marsad_verdicts)", [now])
    finally:
        drop_temp(con, "_marsad_verdicts")
    return len(n)


def unclassified(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(article_id, text_folded, title_folded, published_at) of the articles not classified yet."""
    return con.execute("SELECT article_id, text_folded, title_folded, published_at FROM articles WHERE classified_at IS NULL").fetchall()


def insert_verdicts(con: duckdb.DuckDBPyConnection, matches: list[dict], now: datetime) -> None:
    """The loader's verdicts for every unclassified article (rows of ``MATCH_COLUMNS``); those
    articles are marked classified. The load holds the only write connection, so the
    unclassified rows are exactly those ``unclassified`` read."""
    bulk_insert(con, "article_indicators", matches, MATCH_COLUMNS)
    con.execute("UPDATE articles SET classified_at = ? WHERE classified_at IS NULL", [now])


def classified_span(con: duckdb.DuckDBPyConnection, now: datetime) -> tuple:
    """(min, max) ``published_at`` of the articles classified at ``now`` (a load's): the span
    of times their rows in the link tables carry (migration 0029); (None, None) for none."""
    return con.execute("SELECT min(published_at), max(published_at) FROM articles WHERE classified_at = ?", [now]).fetchone()


def matched_in_load(con: duckdb.DuckDBPyConnection, now: datetime) -> list[tuple]:
    """(article_id, text_folded, published_at) of the articles classified at ``now`` that matched an
    indicator. Their verdicts are read in the span of their times only (``classified_span``)."""
    ai = f"SELECT article_id FROM article_indicators WHERE {time_bound(*classified_span(con, now))}"
    return con.execute(
        f"""SELECT a.article_id, a.text_folded, a.published_at FROM articles a
           WHERE a.classified_at = ? AND a.article_id IN ({ai})""",
        [now],
    ).fetchall()
