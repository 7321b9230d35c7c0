"""The articles' 64-bit id keys (migration 0026, warehouse.load): what a load finds the stored
articles among the staged ones by. Real DuckDB files; the loads are ``load_articles``'."""
import hashlib
from datetime import datetime, timedelta, timezone

import duckdb

from warehouse import db
from warehouse.load import ARTICLE_COLUMNS, MAX_RUNS, _runs, id_key_sql, load_articles, write_jsonl

T = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def id_key(article_id: str) -> int:
    """The key as the migration defines it, computed apart from DuckDB: the first 64 bits of
    the md5 of the id."""
    return int(hashlib.md5(article_id.encode("utf-8")).hexdigest()[:16], 16)


def _row(i: int, fetched: datetime = T, text: str = "") -> dict:
    return dict(article_id=f"id-{i}", source_id="s1", guid=f"g{i}", url=f"https://x.example/{i}", canonical_url=f"https://x.example/{i}",
                title=f"title {i}{text}", summary="", lang="en", published_at=fetched, published_flag=None, fetched_at=fetched,
                title_folded=f"title {i}{text}", text_folded=f"title {i}{text}", content_hash=f"h{i}{text}")


def _load(con, tmp_path, rows, name="staged.jsonl"):
    path = tmp_path / name
    write_jsonl(path, rows)
    with db.transaction(con):
        return load_articles(con, [path])


def test_the_key_is_the_first_64_bits_of_the_ids_md5_in_sql_and_python():
    con = duckdb.connect()
    for article_id in ("a", "id-1", "3f2c0b9e" * 5, "خبر-١", ""):
        assert con.execute(f"SELECT {id_key_sql('?')}", [article_id]).fetchone()[0] == id_key(article_id)
    assert id_key("abc") == 0x900150983CD24FB0  # md5("abc") = 900150983cd24fb0...


def test_migration_keys_every_article_of_an_older_warehouse_and_changes_nothing_else(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    db.migrate(con, upto=25)
    con.execute(f"""INSERT INTO articles SELECT 'old-' || i, 's' || (i % 3), 'g' || i, NULL, NULL, 't' || i, '', 'en',
                    TIMESTAMPTZ '2026-01-01' + to_seconds(i), NULL, TIMESTAMPTZ '2026-01-01' + to_seconds(i), 't', 't', md5(i::VARCHAR),
                    NULL FROM range(3000) t(i)""")
    before = con.execute("SELECT * FROM articles ORDER BY rowid").fetchall()
    con.close()
    with db.connect(path) as con:
        assert con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] >= 26
        cols = [c for c, in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'articles' "
                                         "ORDER BY ordinal_position").fetchall()]
        assert cols[-1] == "id_key"
        rows = con.execute("SELECT * FROM articles ORDER BY rowid").fetchall()
    assert [r[:-1] for r in rows] == before
    assert all(r[-1] == id_key(r[0]) for r in rows)


def test_a_load_keys_what_it_inserts_and_finds_stored_articles_by_key(tmp_path):
    with db.connect(tmp_path / "wh.duckdb") as con:
        new, corrected = _load(con, tmp_path, [_row(i) for i in range(5)])
        assert len(new) == 5 and not corrected
        assert con.execute("SELECT count(*) FROM articles WHERE id_key IS NULL OR id_key <> "
                           f"{id_key_sql()}").fetchone()[0] == 0
        # the same entries again (one corrected), a day later: nothing new
        rows = [_row(i, T + timedelta(days=1)) for i in range(4)] + [_row(4, T + timedelta(days=1), " (updated)")]
        new, corrected = _load(con, tmp_path, rows)
        assert new == [] and corrected == ["id-4"]
        assert con.execute("SELECT count(*), count(DISTINCT article_id) FROM articles").fetchone() == (5, 5)


def test_an_article_stored_without_its_key_is_still_found(tmp_path):
    """A writer naming its columns without id_key (tests, benches, a restore) leaves it NULL: the
    next load fills it before it looks, so the entry is not taken for new. (Fetched 30 days ago:
    beyond the dedupe horizon, only its id can tell.)"""
    old = T - timedelta(days=30)
    with db.connect(tmp_path / "wh.duckdb") as con:
        r = _row(1, old)
        cols = ", ".join(ARTICLE_COLUMNS)
        con.execute(f"INSERT INTO articles ({cols}) VALUES ({', '.join('?' for _ in ARTICLE_COLUMNS)})", [r[c] for c in ARTICLE_COLUMNS])
        assert con.execute("SELECT id_key FROM articles").fetchall() == [(None,)]
        new, corrected = _load(con, tmp_path, [_row(1, T, " again"), _row(2)])
        assert [a for a, _ in new] == ["id-2"] and corrected == ["id-1"]
        assert con.execute("SELECT article_id, id_key FROM articles ORDER BY 1").fetchall() == [
            ("id-1", id_key("id-1")), ("id-2", id_key("id-2"))]


def test_a_key_shared_by_two_ids_does_not_make_a_new_entry_known(tmp_path):
    """Keys are confirmed on the id: a stored article whose key equals a staged entry's (two ids
    of one 64-bit key) is not that entry."""
    with db.connect(tmp_path / "wh.duckdb") as con:
        _load(con, tmp_path, [_row(i, T - timedelta(days=30)) for i in range(3)])
        con.execute("UPDATE articles SET id_key = ? WHERE article_id = 'id-1'", [id_key("id-9")])
        new, corrected = _load(con, tmp_path, [_row(9), _row(0, T)])
        assert [a for a, _ in new] == ["id-9"] and corrected == []
        assert con.execute("SELECT count(*) FROM articles").fetchone()[0] == 4


def test_runs_cover_every_row_id_in_few_scans():
    ids = sorted({(i * 7919) % 2_000_000 for i in range(5000)} | {5, 6, 7, 1_999_999})
    runs = _runs(ids)
    assert len(runs) <= MAX_RUNS
    assert all(any(a <= r <= b for a, b in runs) for r in ids)
    assert _runs([1, 2, 3, 100_000, 100_001]) == [(1, 3), (100_000, 100_001)]
    assert _runs([]) == []
