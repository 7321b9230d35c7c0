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
from warehouse.load import bulk_insert, read_json_sql

MATCH_COLUMNS = {"article_id": "VARCHAR", "indicator": "VARCHAR", "clause": "INTEGER", "hits": "JSON", "refs": "JSON", "frame": "JSON"}
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
            WITH unclassified AS MATERIALIZED (SELECT rowid AS rid, article_id FROM articles WHERE classified_at IS NULL)
            SELECT u.rid, s.article_id, s.matches FROM {src} s JOIN unclassified u USING (article_id)""",
        params,
    )
    try:
        n = con.execute(
            """INSERT INTO article_indicators (article_id, indicator, clause, hits, refs, frame)
               SELECT DISTINCT ON (s.article_id, m.indicator) s.article_id, m.indicator, m.clause, m.hits, m.refs, m.frame
               FROM (SELECT article_id, unnest(matches) AS m FROM _marsad_verdicts) s(article_id, m)
               ANTI JOIN (SELECT article_id, indicator FROM article_indicators SEMI JOIN _marsad_verdicts USING (article_id)) ai
                    ON ai.article_id = s.article_id AND ai.indicator = m.indicator
               RETURNING 1"""
        ).fetchall()
        con.execute("UPDATE articles SET classified_at = ? WHERE rowid IN (SELECT rid FROM _marsad_verdicts)", [now])
    finally:
        drop_temp(con, "_marsad_verdicts")
    return len(n)


def unclassified(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(article_id, text_folded, title_folded) of the articles not classified yet."""
    return con.execute("SELECT article_id, text_folded, title_folded FROM articles WHERE classified_at IS NULL").fetchall()


def insert_verdicts(con: duckdb.DuckDBPyConnection, matches: list[dict], now: datetime) -> None:
    """The loader's verdicts for every unclassified article (rows of ``MATCH_COLUMNS``); those
    articles are marked classified. The load holds the only write connection, so the
    unclassified rows are exactly those ``unclassified`` read."""
    bulk_insert(con, "article_indicators", matches, MATCH_COLUMNS)
    con.execute("UPDATE articles SET classified_at = ? WHERE classified_at IS NULL", [now])


def matched_in_load(con: duckdb.DuckDBPyConnection, now: datetime) -> list[tuple]:
    """(article_id, text_folded) of the articles classified at ``now`` that matched an indicator."""
    return con.execute(
        """SELECT a.article_id, a.text_folded FROM articles a
           WHERE a.classified_at = ? AND EXISTS (SELECT 1 FROM article_indicators ai WHERE ai.article_id = a.article_id)""",
        [now],
    ).fetchall()
