"""The analysts' connection (`marsad query`, `marsad search`, the board) cannot touch the file
system or the network: by construction (DuckDB's enable_external_access=false,
lock_configuration=true, read-only), with the statement check as a second line.

Every escape below is tried twice: through `marsad query` (both lines; refused with one
clear line), and straight on the connection, without the statement check (the first line
alone). Either way no file is read, written or created, and nothing connects to the
loopback listener that the network escapes aim at."""
import hashlib
import json
import uuid

import duckdb
import pytest

from analyst_data import shared  # noqa: F401  (a fixture)
from conftest import Listener
from marsad.cli import main as marsad_main
from warehouse.publish import open_read_copy
from warehouse.search import fts_extension_path, search

# (id, SQL template, does DuckDB itself refuse it on the sealed connection?)
# Placeholders: {txt} {csv} {json} {ndjson} {parquet} {db} a secret in every format, {bait} their
# directory, {imp} a directory IMPORT DATABASE would read, {out} a directory that must stay empty,
# {victim} a file that must keep its bytes, {url} a loopback listener that must see no connection,
# {fts} the fts extension file.
ESCAPES = [
    # file readers, every format
    ("read_csv", "SELECT * FROM read_csv('{csv}')", True),
    ("read_csv_auto", "SELECT * FROM read_csv_auto('{csv}')", True),
    ("sniff_csv", "SELECT * FROM sniff_csv('{csv}')", True),
    ("read_json", "SELECT * FROM read_json('{json}')", True),
    ("read_json_auto", "SELECT * FROM read_json_auto('{json}')", True),
    ("read_ndjson", "SELECT * FROM read_ndjson('{ndjson}')", True),
    ("read_json_objects", "SELECT * FROM read_json_objects('{json}')", True),
    ("read_parquet", "SELECT * FROM read_parquet('{parquet}')", True),
    ("parquet_scan", "SELECT * FROM parquet_scan('{parquet}')", True),
    ("parquet_metadata", "SELECT * FROM parquet_metadata('{parquet}')", True),
    ("parquet_schema", "SELECT * FROM parquet_schema('{parquet}')", True),
    ("read_text", "SELECT content FROM read_text('{txt}')", True),
    ("read_blob", "SELECT content FROM read_blob('{txt}')", True),
    ("read_text list", "SELECT content FROM read_text(['{txt}', '{csv}'])", True),
    ("glob", "SELECT * FROM glob('{bait}/*')", True),
    ("read_csv glob", "SELECT * FROM read_csv('{bait}/*.csv')", True),
    ("replacement scan csv", "SELECT * FROM '{csv}'", True),
    ("replacement scan glob", "SELECT * FROM '{bait}/*.csv'", True),
    ("replacement scan quoted", 'SELECT * FROM "{parquet}"', True),
    ("replacement scan join", "SELECT * FROM articles, '{csv}' LIMIT 1", True),
    ("FROM-first", "FROM read_text('{txt}')", True),
    ("scalar subquery", "SELECT (SELECT content FROM read_text('{txt}'))", True),
    ("cte", "WITH x AS (SELECT * FROM read_blob('{txt}')) SELECT * FROM x", True),
    ("describe file", "DESCRIBE '{csv}'", True),
    ("summarize file", "SUMMARIZE SELECT * FROM read_csv('{csv}')", True),
    ("show file", "SHOW '{parquet}'", True),
    ("explain reader", "EXPLAIN ANALYZE SELECT * FROM read_text('{txt}')", True),
    ("pivot file", "PIVOT '{csv}' ON k USING count(*)", True),
    ("unpivot file", "UNPIVOT '{csv}' ON k INTO NAME n VALUE v", True),
    ("network read", "SELECT * FROM read_csv('{url}/secret.csv')", True),
    ("network replacement scan", "SELECT * FROM '{url}/secret.parquet'", True),
    # COPY and EXPORT, bare and wrapped
    ("copy table", "COPY articles TO '{out}/articles.csv'", True),
    ("copy query", "COPY (SELECT 'x' AS k) TO '{out}/x.csv' (HEADER false)", True),
    ("copy over a file", "COPY (SELECT 'x' AS k) TO '{victim}' (HEADER false)", True),
    ("explain analyze copy", "EXPLAIN ANALYZE COPY (SELECT 'x' AS k) TO '{victim}' (HEADER false)", True),
    ("explain analyze copy table", "EXPLAIN ANALYZE COPY articles TO '{out}/dump.csv'", True),
    ("explain copy", "EXPLAIN COPY articles TO '{out}/dump.csv'", True),
    ("explain json copy", "EXPLAIN (FORMAT json) COPY articles TO '{out}/dump.json'", True),
    ("copy from", "COPY articles FROM '{csv}'", True),
    ("copy parquet", "COPY articles TO '{out}/a.parquet' (FORMAT parquet)", True),
    ("export database", "EXPORT DATABASE '{out}/dump'", True),
    ("export parquet", "EXPORT DATABASE '{out}/dump' (FORMAT parquet)", True),
    ("copy from database", "COPY FROM DATABASE memory TO marsad_read", True),
    ("import database", "IMPORT DATABASE '{imp}'", True),
    # ATTACH, INSTALL, LOAD
    ("attach new", "ATTACH '{out}/new.duckdb' AS n", True),
    ("attach existing", "ATTACH '{db}' AS s (READ_ONLY)", True),
    ("attach memory", "ATTACH ':memory:' AS m", True),
    ("install", "INSTALL httpfs", True),
    ("install from url", "FORCE INSTALL httpfs FROM '{url}'", True),
    ("install file", "INSTALL '{fts}'", True),
    ("load httpfs", "LOAD httpfs", True),
    ("load file", "LOAD '{txt}'", True),
    ("update extensions", "UPDATE EXTENSIONS", True),
    # settings
    ("set external access", "SET enable_external_access = true", True),
    ("reset external access", "RESET enable_external_access", True),
    ("unlock", "SET lock_configuration = false", True),
    ("reset lock", "RESET lock_configuration", True),
    ("allowed directories", "SET allowed_directories = ['/']", True),
    ("allowed paths", "SET allowed_paths = ['{txt}']", True),
    ("global setting", "SET GLOBAL enable_external_access = true", True),
    ("temp directory", "SET temp_directory = '{out}/tmp'", True),
    ("profiling output", "SET profiling_output = '{out}/profile.json'", True),
    ("safe name with a reader", "SET TimeZone = (SELECT content FROM read_text('{txt}'))", True),
    # PRAGMA, CALL
    ("pragma profiling", "PRAGMA enable_profiling = 'json'", True),
    ("pragma output", "PRAGMA profile_output = '{out}/profile.json'", True),
    ("pragma setting", "PRAGMA enable_external_access = true", True),
    ("call glob", "CALL glob('{bait}/*')", True),
    # macros and secrets
    ("macro", "CREATE MACRO m() AS TABLE SELECT * FROM read_text('{txt}')", True),
    ("temp macro", "CREATE TEMP MACRO m(p) AS TABLE SELECT * FROM read_text(p)", False),
    ("secret", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", True),
    # SQL held in a string
    ("query()", "SELECT * FROM query('SELECT content FROM read_text(''{txt}'')')", True),
    ("query() harmless", "SELECT * FROM query('SELECT 1')", False),
    ("query_table()", "SELECT * FROM query_table('{csv}')", True),
    ("query_table() harmless", "SELECT * FROM query_table('articles')", False),
    # several statements in one string
    ("select then copy", "SELECT 1; COPY (SELECT 'x' AS k) TO '{out}/m.csv'", True),
    ("select then attach", "SELECT 1; ATTACH '{out}/m.duckdb'", True),
    ("unlock then read", "SELECT 1; SET enable_external_access = true; SELECT content FROM read_text('{txt}')", True),
    ("harmless setting then read", "SET TimeZone = 'UTC'; SELECT content FROM read_text('{txt}')", True),
    # comments, quoting and case hiding keywords
    ("comment before copy", "/* SELECT */ COPY articles TO '{out}/c.csv'", True),
    ("line comment then copy", "SELECT 1 -- ;\n; COPY articles TO '{out}/c.csv'", True),
    ("comments around explain", "EXPLAIN /* x */ ANALYZE /* y */ COPY articles TO '{out}/c.csv'", True),
    ("comment inside call", "SELECT * FROM /* x */ read_text /* y */ ('{txt}')", True),
    ("quoted function", "SELECT * FROM \"read_text\"('{txt}')", True),
    ("mixed case", "SELECT * FROM ReAd_TeXt('{txt}')", True),
    ("qualified function", "SELECT * FROM system.main.read_text('{txt}')", True),
]


@pytest.fixture(scope="module")
def listener():
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture
def bait(tmp_path, listener):
    """A secret in every format DuckDB reads, a file to overwrite, a directory to keep empty
    (new for each test, so that one escape that works cannot hide or fake another)."""
    d = tmp_path / "bait"
    d.mkdir()
    secret = f"SECRET-{uuid.uuid4().hex}"
    (d / "secret.txt").write_text(secret)
    (d / "secret.csv").write_text(f"k\n{secret}\n")
    (d / "secret.json").write_text(json.dumps({"k": secret}))
    (d / "secret.ndjson").write_text(json.dumps({"k": secret}) + "\n")
    writer = duckdb.connect(str(d / "secret.duckdb"))
    writer.execute("CREATE TABLE t AS SELECT ? AS k", [secret])
    writer.execute(f"COPY t TO '{d / 'secret.parquet'}' (FORMAT parquet)")
    writer.close()
    (d / "import").mkdir()  # what IMPORT DATABASE reads: it runs schema.sql and load.sql
    (d / "import" / "schema.sql").write_text(f"SELECT '{secret}' AS k;\n")
    (d / "import" / "load.sql").write_text(f"SELECT '{secret}' AS k;\n")
    (d / "victim.txt").write_text("untouched\n")
    (d / "out").mkdir()
    paths = {"txt": d / "secret.txt", "csv": d / "secret.csv", "json": d / "secret.json", "ndjson": d / "secret.ndjson",
             "parquet": d / "secret.parquet", "db": d / "secret.duckdb", "bait": d, "imp": d / "import",
             "out": d / "out", "victim": d / "victim.txt", "url": listener.url, "fts": fts_extension_path()}
    return {"secret": secret, "dir": d, "listener": listener, "connections": listener.connections,
            "fill": lambda sql: sql.format(**{k: str(v) for k, v in paths.items()})}


def snapshot(shared, bait) -> dict:  # noqa: F811
    """Every file under the bait directory and next to the read copy, with a hash of its bytes."""
    files = {}
    for root in (bait["dir"], shared.read_copy.parent):
        for p in sorted(root.rglob("*")):
            files[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return files


def assert_untouched(shared, bait, before, output):  # noqa: F811
    assert bait["secret"] not in output, "a secret file was read"
    assert snapshot(shared, bait) == before, "a file was written or created"
    assert not list((bait["dir"] / "out").iterdir())
    assert (bait["dir"] / "victim.txt").read_text() == "untouched\n"
    assert bait["listener"].connections == bait["connections"], "the network was reached"


@pytest.mark.parametrize("sql", [e[1] for e in ESCAPES], ids=[e[0] for e in ESCAPES])
def test_marsad_query_refuses_every_escape(shared, bait, capsys, sql):  # noqa: F811
    sql = bait["fill"](sql)
    before = snapshot(shared, bait)
    rc = marsad_main(["query", sql, "--db", str(shared.warehouse)])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert err.startswith("marsad: refused: ") and err.count("\n") == 1, err
    assert out == ""
    assert_untouched(shared, bait, before, out + err)


@pytest.mark.parametrize("sql, refused", [(e[1], e[2]) for e in ESCAPES], ids=[e[0] for e in ESCAPES])
def test_the_connection_itself_cannot_touch_files_or_the_network(shared, bait, sql, refused):  # noqa: F811
    """The first line alone: the escape straight on the analysts' connection, no statement check."""
    sql = bait["fill"](sql)
    before = snapshot(shared, bait)
    con = open_read_copy(shared.read_copy)
    try:
        seen = ""
        if refused:
            with pytest.raises(duckdb.Error) as exc:
                seen = repr(con.execute(sql).fetchall())
            seen += str(exc.value)
        else:
            seen = repr(con.execute(sql).fetchall())
        if "TEMP MACRO" in sql:  # defining it works (the temp catalog is memory); using it cannot read
            with pytest.raises(duckdb.PermissionException):
                con.execute(f"SELECT * FROM m('{bait['dir'] / 'secret.txt'}')").fetchall()
        try:
            con.execute("ROLLBACK")  # COPY FROM DATABASE leaves its transaction aborted
        except duckdb.Error:
            pass
        assert con.execute("SELECT current_setting('enable_external_access')").fetchone()[0] is False
    finally:
        con.close()
    assert_untouched(shared, bait, before, seen)


def test_every_analyst_connection_is_sealed(shared):  # noqa: F811
    """marsad query and search (open_read_copy) and the board open the read copy the same way."""
    from alerts.board import open_board_copy

    for con in (open_read_copy(shared.read_copy), open_board_copy(shared.read_copy)):
        try:
            settings = dict(con.execute(
                """SELECT name, value FROM duckdb_settings()
                   WHERE name IN ('enable_external_access', 'lock_configuration', 'access_mode',
                                  'autoinstall_known_extensions', 'autoload_known_extensions')""").fetchall())
            assert settings == {"enable_external_access": "false", "lock_configuration": "true", "access_mode": "read_only",
                                "autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
            with pytest.raises(duckdb.Error):
                con.execute("SET lock_configuration = false")
        finally:
            con.close()


def test_reads_still_work_on_the_sealed_connection(shared, tmp_path, capsys):  # noqa: F811
    """Search, safe settings and Parquet output keep working behind both fences."""
    con = open_read_copy(shared.read_copy)
    try:
        assert search(con, "عين الأسد")
    finally:
        con.close()
    rc = marsad_main(["query", "SET TimeZone = 'Asia/Baghdad'; SELECT current_setting('TimeZone') AS tz", "--format", "json",
                      "--db", str(shared.warehouse)])
    assert rc == 0 and json.loads(capsys.readouterr().out) == {"tz": "Asia/Baghdad"}
    out = tmp_path / "n.parquet"
    assert marsad_main(["query", "SELECT count(*) AS n FROM articles", "--format", "parquet", "--out", str(out),
                        "--db", str(shared.warehouse)]) == 0
    assert duckdb.connect().execute(f"SELECT n FROM '{out}'").fetchone()[0] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["n.parquet"]  # no temporary file left behind
