"""The article's publication time on the link tables' rows (migration 0029): what a load's reads
of article_indicators, article_entities, article_sketches and event_articles prune by. Real
DuckDB files; the scans' row counts are DuckDB's own profile."""
import json
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from warehouse import db
from warehouse.events import _horizon_start, _pending_sql, pending_pairs
from warehouse.load import id_key_sql, time_bound
from warehouse.matches import classified_span, matched_in_load

T = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
LINKS = ("article_indicators", "article_entities", "article_sketches", "event_articles")


def _articles(con, n: int, classified: datetime, first: int = 0, step_s: int = 60) -> None:
    """``n`` articles ``a<first>..``, one a minute (``step_s``) up to ``T``."""
    con.execute(f"""INSERT INTO articles (article_id, source_id, title, summary, lang, published_at, fetched_at, title_folded,
                                         text_folded, content_hash, classified_at, id_key)
                    SELECT 'a' || i, 's1', 't', '', 'en', ?::TIMESTAMPTZ - to_seconds((? - i) * ?), ?::TIMESTAMPTZ - to_seconds((? - i) * ?),
                           't' || i, 't' || i, md5('t' || i), ?, {id_key_sql("'a' || i")}
                    FROM range(?, ?) r(i)""", [T, first + n, step_s, T, first + n, step_s, classified, first, first + n])


def _fingerprints(con) -> dict:
    """Per link table: an md5 of its rows but the new column, in a fixed order."""
    return {t: con.execute(f"SELECT count(*), md5(coalesce(string_agg(CAST(x AS VARCHAR), '|' ORDER BY CAST(x AS VARCHAR)), '')) "
                           f"FROM (SELECT COLUMNS(c -> c <> 'article_published_at') FROM {t}) x").fetchone() for t in LINKS}


def test_migration_0029_gives_each_link_row_its_articles_time_and_keeps_every_row(tmp_path):
    with db.connect(tmp_path / "wh.duckdb", migrate_schema=False) as con:
        db.migrate(con, upto=28)
        _articles(con, 3, T)
        # a0..a2 stored; 'gone' is a row whose article is not (hand-made: nothing deletes articles)
        con.execute("""INSERT INTO article_indicators (article_id, indicator, clause, hits, refs, frame)
                       VALUES ('a0', 'ind', 0, '[]', '["p"]', '{"x": 1}'), ('a2', 'ind', 1, '[]', '[]', NULL), ('gone', 'ind', 0, NULL, NULL, NULL)""")
        con.execute("INSERT INTO event_articles VALUES ('e0', 'a0', 'first'), ('e0', 'a2', 'same_place'), ('e0', 'gone', 'same_place')")
        con.execute("INSERT INTO article_entities VALUES ('a0', 'places', 'base', 'us_base', 'target'), ('a2', 'actors', 'm', 'militia', NULL)")
        con.execute("INSERT INTO article_sketches SELECT 'a' || i, list_transform(range(128), k -> hash(i, k) % 4294967296)::UINTEGER[128] "
                    "FROM range(3) t(i)")
        before = _fingerprints(con)
        assert db.migrate(con) == [29]
        assert _fingerprints(con) == before
        for t in LINKS:
            got = con.execute(f"""SELECT count(*) FILTER (WHERE l.article_published_at = a.published_at),
                                         count(*) FILTER (WHERE a.article_id IS NULL AND l.article_published_at = '-infinity'::TIMESTAMPTZ),
                                         count(*)
                                  FROM {t} l LEFT JOIN articles a USING (article_id)""").fetchone()
            assert got[0] + got[1] == got[2] and got[0] >= 2, (t, got)
            # every writer must give it: a row without it is refused, not stored unreadable
            with pytest.raises(duckdb.ConstraintException):
                con.execute(f"INSERT INTO {t} (article_id) SELECT 'a9'" if t != "event_articles"
                            else "INSERT INTO event_articles (event_id, article_id, how) VALUES ('e9', 'a9', 'first')")


def _scanned(con, sql: str, params: list) -> dict[str, int]:
    """Rows DuckDB's table scans read per table while running ``sql`` (its profile)."""
    out = db.database_path(con) + ".profile.json"
    con.execute("PRAGMA enable_profiling = 'json'")
    con.execute(f"PRAGMA profiling_output = '{out}'")
    con.execute("""SET custom_profiling_settings = '{"OPERATOR_ROWS_SCANNED": "true", "EXTRA_INFO": "true"}'""")
    try:
        con.execute(sql, params).fetchall()
    finally:
        con.execute("PRAGMA disable_profiling")
    got: dict[str, int] = {}

    def walk(node):
        info = node.get("extra_info") or {}
        if node.get("operator_type") == "TABLE_SCAN" and isinstance(info, dict) and info.get("Table"):
            table = info["Table"].rsplit(".", 1)[-1]
            got[table] = got.get(table, 0) + node.get("operator_rows_scanned", 0)
        for child in node.get("children", []):
            walk(child)

    with open(out, encoding="utf-8") as fh:
        walk(json.load(fh))
    return got


def test_a_loads_reads_of_the_link_tables_skip_the_history(tmp_path):
    """A year of history with a verdict, a link and an entity for every article, and a load of
    100 new articles: its pending pairs and its matches read the link rows of their time, not
    the history's (whose ids, random digests, no row group's min/max can exclude)."""
    now = T + timedelta(minutes=5)
    n = 525_600  # a year, one a minute
    with db.connect(tmp_path / "wh.duckdb") as con:
        _articles(con, n, T - timedelta(days=1), step_s=60)
        con.execute("UPDATE articles SET published_at = published_at - INTERVAL 1 DAY, fetched_at = fetched_at - INTERVAL 1 DAY")
        _articles(con, 100, now, first=n, step_s=1)  # this load's: the last 100 seconds before T
        old = T - timedelta(days=2)
        con.execute("INSERT INTO article_indicators (article_id, indicator, article_published_at) SELECT article_id, 'ind', published_at FROM articles")
        con.execute("INSERT INTO events SELECT DISTINCT 'e' || (id_key % 1000), 'ind', ?, ?, 't', ? FROM articles WHERE classified_at < ?", [old, old, old, now])
        con.execute("INSERT INTO event_articles SELECT 'e' || (id_key % 1000), article_id, 'first', published_at FROM articles WHERE classified_at < ?", [now])
        con.execute("INSERT INTO article_entities SELECT article_id, 'places', 'p', 'base', NULL, published_at FROM articles")
        con.execute("CHECKPOINT")
        total = con.execute("SELECT count(*) FROM article_indicators").fetchone()[0]
        assert pending_pairs(con, now) == sorted((f"a{i}", "ind") for i in range(n, n + 100))
        assert len(matched_in_load(con, now)) == 100

        sql, params = _pending_sql(now, classified_span(con, now))
        scans = _scanned(con, sql, params)
        # (DuckDB may skip a scan whole when the bound excludes every row group: no entry)
        assert scans["article_indicators"] < total // 4 and scans.get("event_articles", 0) < total // 4, scans
        # matched_in_load's read of the verdicts
        ai = _scanned(con, f"SELECT article_id FROM article_indicators WHERE {time_bound(*classified_span(con, now))}", [])
        assert ai["article_indicators"] < total // 4, ai


def test_older_events_are_read_only_as_far_back_as_a_followup_needs(tmp_path):
    """Rules 1-5 look back 7 days at most; rule 6 (a report with a ``followup`` cue) 30 days
    from that report: the events read before a load's reports start there."""
    lo, hi = T, T + timedelta(hours=3)
    with db.connect(tmp_path / "wh.duckdb") as con:
        _articles(con, 3, T)
        con.execute("CREATE TEMP TABLE _marsad_pending AS SELECT 1 AS rn, 'ind' AS indicator, article_id, published_at FROM articles")
        assert _horizon_start(con, lo, hi) == lo - timedelta(days=7)
        at = con.execute("SELECT published_at FROM articles WHERE article_id = 'a1'").fetchone()[0]
        con.execute("INSERT INTO article_entities VALUES ('a1', 'cues', 'followup', 'followup', NULL, ?)", [at])
        assert _horizon_start(con, at, hi) == at - timedelta(days=30)
        assert _horizon_start(con, lo + timedelta(days=40), hi + timedelta(days=40)) == lo + timedelta(days=33)  # not among these
