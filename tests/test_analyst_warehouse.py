"""What analysts get: views, full-text search in both languages, `marsad search` and
`marsad query` against the published read copy, retention and export."""
import csv
import io
import json
import subprocess
import sys
from datetime import timedelta

import duckdb
import pytest

from analyst_data import NOW, populate, shared  # noqa: F401  (shared is a fixture)
from warehouse import db
from warehouse.publish import open_read_copy
from warehouse.retention import prune_fetch_log
from warehouse.search import search

MARSAD = [sys.executable, "-m", "marsad.cli"]


@pytest.fixture
def warehouse(tmp_path, feed_server, settings):
    """A warehouse of its own, for a test that changes it."""
    populate(settings, feed_server, tmp_path)
    return settings


@pytest.fixture
def reader(shared):
    con = open_read_copy(shared.read_copy)
    yield con
    con.close()


def marsad(settings, *args):
    return subprocess.run([*MARSAD, *map(str, args), "--db", str(settings.warehouse)], capture_output=True, text=True)


def guids(con, hits):
    ids = [h.article_id for h in hits]
    got = dict(con.execute("SELECT article_id, guid FROM articles WHERE list_contains(?, article_id)", [ids]).fetchall())
    return [got[i] for i in ids]


def test_arabic_search_matches_every_spelling_and_clitic(reader):
    expected = {"ar-1", "ar-3", "ar-4", "ar-5"}  # plain, بعين + diacritics, و/ال clitics, tatweel
    for query in ("عين الأسد", "عين الاسد", "عَيْنُ الأَسَدِ", "عيـن الأسـد", "والأسد عين"):
        assert set(guids(reader, search(reader, query))) == expected, query
    # ب ل ك ف are stripped on the index side only: a query that spells one out asks for it.
    assert guids(reader, search(reader, "بعين الأسد")) == ["ar-3"]
    # "الأسد" without "عين" (the Syrian president) is not a match; Baghdad still finds Baghdad.
    assert "ar-6" not in guids(reader, search(reader, "عين الأسد"))
    assert guids(reader, search(reader, "بغداد")) == ["ar-2"]
    # taa marbuta / hamza spelled the other way
    assert "ar-1" in guids(reader, search(reader, "طائره مسيره"))


def test_search_ranks_phrases_first_and_filters_time_and_language(reader):
    hits = search(reader, "عين الأسد", since=NOW - timedelta(days=30))
    assert set(guids(reader, hits)) == {"ar-1", "ar-3", "ar-5"}  # ar-4 is 40 days old
    assert search(reader, "عين الأسد", lang="en") == []
    # English goes through the Porter stemmer: "attack" finds "attacked", "bases" finds "base".
    assert set(guids(reader, search(reader, "attack base"))) == {"en-1", "en-4", "w-1"}
    assert guids(reader, search(reader, "Ain al-Asad"))[0] == "en-4"


def test_search_command_prints_ranked_hits(shared):
    res = marsad(shared, "search", "عين الأسد", "--since", "30d")
    assert res.returncode == 0, res.stderr
    header, *lines = res.stdout.splitlines()
    assert header.split() == ["published", "(UTC)", "source", "lang", "title", "url"]
    assert len(lines) == 3
    assert all("test-ar  ar  " in line and "https://ar.example/n/" in line for line in lines)
    res = marsad(shared, "search", "Harir", "--json")
    hits = [json.loads(line) for line in res.stdout.splitlines()]
    assert {h["source_id"] for h in hits} == {"test-en", "test-wire"}
    assert {"published_at", "source_id", "lang", "title", "url", "score"} <= set(hits[0])


def test_query_command_formats(shared, tmp_path):
    sql = "SELECT source_id, count(*) AS n FROM articles GROUP BY ALL ORDER BY source_id"
    res = marsad(shared, "query", sql)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].split() == ["source_id", "n"] and "(3 rows)" in res.stdout
    rows = list(csv.reader(io.StringIO(marsad(shared, "query", sql, "--format", "csv").stdout)))
    assert rows == [["source_id", "n"], ["test-ar", "6"], ["test-en", "3"], ["test-wire", "1"]]
    objs = [json.loads(line) for line in marsad(shared, "query", sql, "--format", "json").stdout.splitlines()]
    assert objs[0] == {"source_id": "test-ar", "n": 6}
    out = tmp_path / "a.parquet"
    assert marsad(shared, "query", sql, "--format", "parquet", "--out", out).returncode == 0
    assert duckdb.connect().execute(f"SELECT sum(n) FROM '{out}'").fetchone()[0] == 10


@pytest.mark.parametrize("sql, word", [
    ("DELETE FROM articles", "DELETE"),
    ("SELECT 1; DROP TABLE articles", "DROP"),
    ("ATTACH 'other.duckdb' AS o", "ATTACH"),
    ("COPY articles TO 'x.csv'", "COPY"),
    ("INSTALL httpfs", "LOAD"),
    ("SET enable_external_access = true", "setting refused"),
    ("EXPORT DATABASE 'dump'", "EXPORT"),
])
def test_query_command_refuses_anything_but_reads(shared, sql, word):
    res = marsad(shared, "query", sql)
    assert res.returncode == 2
    assert res.stderr.startswith("marsad: refused:") and word in res.stderr and res.stderr.count("\n") == 1
    with db.connect(shared.warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM articles").fetchone()[0] == 10


def test_query_errors_are_one_line(shared):
    res = marsad(shared, "query", "SELECT * FROM no_such_table")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "no_such_table" in res.stderr


def test_a_wrong_column_name_lists_the_real_columns_of_the_tables_named(shared):
    res = marsad(shared, "query", "SELECT a.headline, s.nom FROM articles a JOIN sources s USING (source_id)")
    assert res.returncode == 2
    first, *more = res.stderr.splitlines()
    assert "headline" in first
    cols = dict(line.strip().removeprefix("columns of ").split(": ", 1) for line in more)
    assert set(cols) == {"articles", "sources"}
    assert {"title", "summary", "published_at", "lang"} <= set(cols["articles"].split(", "))
    assert {"name", "url", "reliability"} <= set(cols["sources"].split(", "))
    res = marsad(shared, "query", "SELECT indicatr FROM events_v")  # views too
    assert "columns of events_v: event_id, indicator," in res.stderr


def test_views_answer_the_common_questions(reader):
    harir = reader.execute(
        "SELECT n_articles, n_outlets, languages, outlets FROM event_corroboration WHERE title LIKE 'Rockets target US forces at Harir%'"
    ).fetchone()
    assert harir == (2, 2, ["en"], ["test-en", "test-wire"])
    daily = reader.execute("SELECT sum(n_articles), sum(n_events) FROM indicator_daily WHERE indicator = 'militia_attack_us_forces'").fetchone()
    matched = reader.execute("SELECT count(*) FROM article_indicators WHERE indicator = 'militia_attack_us_forces'").fetchone()[0]
    events = reader.execute("SELECT count(*) FROM events WHERE indicator = 'militia_attack_us_forces'").fetchone()[0]
    assert daily == (matched, events) and events >= 2
    health = dict(reader.execute("SELECT source_id, health FROM source_health").fetchall())
    assert health == {"test-ar": "ok", "test-en": "ok", "test-wire": "ok"}
    assert reader.execute("SELECT sum(fetches_24h) FROM source_health").fetchone()[0] == 3
    history = reader.execute("SELECT count(*), coalesce(sum(n_notifications), 0) FROM alert_history").fetchone()
    assert history == reader.execute("SELECT (SELECT count(*) FROM alerts), (SELECT count(*) FROM notifications)").fetchone()


def test_prune_drops_old_fetch_log_but_keeps_articles_and_the_start_of_history(warehouse):
    with db.connect(warehouse.warehouse) as con:
        first = con.execute("SELECT fetch_id FROM fetch_log WHERE source_id = 'test-ar'").fetchone()[0]
        # three more fetch_log rows for test-ar: two 40 days old and one fresh
        con.execute(
            """INSERT INTO fetch_log (fetch_id, source_id, started_at, finished_at, status)
               SELECT 'old-' || i, 'test-ar', now() - INTERVAL 40 DAYS + i * INTERVAL 1 MINUTE, now() - INTERVAL 40 DAYS, 'ok'
               FROM range(2) t(i) UNION ALL SELECT 'fresh', 'test-ar', now() - INTERVAL 10 SECOND, now() - INTERVAL 10 SECOND, 'error'"""
        )
        assert prune_fetch_log(con, NOW, 30 * 86400) == 1  # 'old-0' is now the first fetch: it stays
        left = {r[0] for r in con.execute("SELECT fetch_id FROM fetch_log WHERE source_id = 'test-ar'").fetchall()}
        assert left == {"old-0", first, "fresh"}
        assert con.execute("SELECT count(*) FROM articles").fetchone()[0] == 10
    res = marsad(warehouse, "prune", "--keep", "1s")
    assert res.returncode == 0 and json.loads(res.stdout)["fetch_log_deleted"] >= 1


def test_export_to_parquet_and_import_restores_every_table(shared, tmp_path):
    out = tmp_path / "backup"
    res = marsad(shared, "export", out)
    assert res.returncode == 0, res.stderr
    assert (out / "articles.parquet").exists() and (out / "schema.sql").exists()
    restored = duckdb.connect(str(tmp_path / "restored.duckdb"))
    restored.execute(f"IMPORT DATABASE '{out}'")
    with db.connect(shared.warehouse, read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()]
        for t in tables:
            assert restored.execute(f"SELECT count(*) FROM {t}").fetchone() == con.execute(f"SELECT count(*) FROM {t}").fetchone(), t
    assert restored.execute("SELECT count(*) FROM event_corroboration").fetchone()[0] > 0  # views come back too
    assert marsad(shared, "export", out).returncode == 2  # never over an old backup
