"""The analysts' read copy: a snapshot of the warehouse that any number of readers can hold.

DuckDB lets one process open a file read-write, or many processes read-only, never both.
So analysts never open the primary file (``var/marsad.duckdb``). After each load and each
evaluation the pipeline publishes ``marsad-read.duckdb`` next to it. The published file is
never written again: a publish prepares a *new* file and renames it over the read copy.

Incremental (every cycle): the file prepared is a copy of the current read copy that the
previous publish made after its swap (``_prepare_spare``), kept under a hidden name
(``.marsad-read.duckdb.spare``), and brought up to date with only what changed since:

1. take the spare (a rename: one publisher at a time owns it) and open it read-write, unless
   a file copy of the current read copy is expected to cost less to bring up to date (when
   the spare is older than the read copy: one left by an older version, or put back): the
   articles each lacks (counted from their watermarks, below) at the index rate, plus the
   file at the copy rate, both as the last publishes measured them (``publish_info``). With
   no spare (the first publish, or after a publisher was killed), or if some process holds
   the spare open (DuckDB refuses at once, it never waits), the publish copies the read
   copy's file (never written after it is published, so a plain copy is consistent);
2. with the primary open read-only: the copy's ``publish_info`` holds the newest
   ``classified_at`` it was synced to (the watermark) and a fingerprint (count, sum of row
   hashes) of its articles up to it. A load sets ``classified_at`` to its own time on every
   article it adds, corrects (NULL until classified) or classifies late, so the changed
   articles are those with ``classified_at`` NULL or after the watermark; they are replaced,
   and so are exactly their rows in the article-keyed tables (``ARTICLE_TABLES``) and the
   events linked to them (before or after) or new. If the older rows no longer add up to
   the fingerprint (a deletion, a clock set back), or a synced table's row count differs from
   the primary's, every row is compared instead (as ``compare_all=True`` does). The other
   (small) tables get the rows they lack and lose the rows the primary no longer has (a set
   difference of row hashes, in SQL); the search index (``warehouse.search.update_index``)
   is updated for the changed articles only, their texts read from the rows just fetched
   from the primary (not from the whole copy); ``publish_info`` is rewritten;
3. checkpoint, then ``os.replace`` the prepared file over the read copy: one atomic rename;
4. after the swap (readers already open the new copy; in a cycle nothing waits for the
   publish, the last step of the evaluate DAG), copy the new read copy to the spare name
   and write it to disk: the next publish's base, one cycle behind, without ~1 GB (at 1M
   articles) copied on its own path. The spare is never a generation a reader opened.

Full (``publish(full=True)``, ``marsad publish --full``, and automatically when there is no
read copy, when its schema migrations or tables differ from the primary's, e.g. after a
migration, or when its search index is of another version): ``COPY FROM DATABASE`` of the
primary into a new file, the whole search index built (``warehouse.search.build_index``),
renamed over the read copy.

Readers that have the old copy open keep its inode (POSIX keeps an unlinked file alive
while it is open) and are never blocked or broken; the next connection they open sees the
new copy. Since the delta is computed from what the file itself records it holds (not from
a log of what happened since), any older generation is brought exactly up to date; a copy
left half-updated by a publisher that was killed is never renamed in (the spare is taken
by a rename and prepared under a name of its own, and a file copy is made afresh).
"""
from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import duckdb

from warehouse import db
from warehouse.db import ROW_GROUP, VECTOR, row_runs
from warehouse.search import INDEX_TABLES, INDEX_VERSION, build_index, load_fts, update_index

READ_COPY_ENV = "MARSAD_READ_COPY"
ALIAS = "marsad_publish"
# Tables only the read copy has (not compared with the primary).
COPY_ONLY = {"publish_info", "article_search", *INDEX_TABLES}


def read_copy_path(warehouse: str | Path) -> Path:
    """paths.read_copy (``$MARSAD_READ_COPY``, marsad.settings), or ``<warehouse stem>-read.duckdb``
    next to the warehouse."""
    from marsad.settings import current

    configured = current("paths.read_copy").path("paths.read_copy")
    if configured is not None:
        return configured
    warehouse = Path(warehouse)
    return warehouse.with_name(f"{warehouse.stem}-read{warehouse.suffix or '.duckdb'}")


def spare_path(target: Path) -> Path:
    """The next publish's base: a copy of the read copy made right after it was published."""
    return target.with_name(f".{target.name}.spare")


@dataclass
class PublishReport:
    path: str
    articles: int
    copy_s: float      # full: COPY FROM DATABASE; incremental: taking the spare (or copying the file) and the delta
    index_s: float     # search index (whole or the changed articles) and checkpoint
    total_s: float
    mode: str = "full"  # full | incremental
    reason: str = ""    # why full, or how the incremental base was obtained (spare / file copy)
    changed: int = 0    # articles (re)indexed
    prepare_s: float = 0.0  # after the swap (not in total_s): the next publish's base, copied and written to disk

    def as_dict(self) -> dict:
        return self.__dict__.copy()


class _NeedFull(Exception):
    """The base file cannot be brought up to date incrementally (the message says why)."""


def publish(warehouse: str | Path, target: str | Path | None = None, full: bool = False,
            compare_all: bool = False, prepare: bool = True) -> PublishReport:
    """Bring a read copy of ``warehouse`` up to date (incrementally when it can, see the module
    docstring), then swap it in atomically. ``compare_all``: compare every row with the
    primary instead of trusting the watermark (a check; the bench's baseline). ``prepare``:
    after the swap, make the next publish's base (``_prepare_spare``; ``report.prepare_s``)."""
    warehouse = Path(warehouse)
    target = Path(target or read_copy_path(warehouse))
    work = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    _remove_stale(target)
    t0 = time.perf_counter()
    try:
        report = None
        reason = "asked for (--full)" if full else ""
        if not full:
            try:
                report = _incremental(warehouse, target, work, t0, compare_all)
            except _NeedFull as why:
                reason = str(why)
                _unlink(work)
        if report is None:
            report = _full(warehouse, work, t0)
            report.reason = reason
        os.replace(work, target)
        report.path = str(target)
        report.total_s = round(time.perf_counter() - t0, 3)  # the new copy is what readers open from here
        if prepare:
            report.prepare_s = _prepare_spare(target)
        return report
    finally:
        _unlink(work)


def _prepare_spare(target: Path) -> float:
    """Copy the read copy just published to the spare name and write it to disk, so that the
    next publish starts from a base one cycle behind without copying ~1 GB (at 1M articles) on
    its own path. Done after the swap: the new copy is already what readers open, and in a
    cycle nothing waits for the publish (the last step of the evaluate DAG and of
    ``run-once``). The copy gets a name of its own first and the spare name only once it is
    whole and on disk (a publisher killed mid-way leaves a temporary file, ``_remove_stale``).
    The published file is never written again, so a plain copy is consistent; and since the
    spare is a file of its own, never a generation a reader opened, no reader can hold it.
    Returns the seconds it took (0 when it failed: the next publish copies the file itself)."""
    t = time.perf_counter()
    spare = spare_path(target)
    tmp = spare.with_name(f"{spare.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        shutil.copyfile(target, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, spare)
    except OSError:
        tmp.unlink(missing_ok=True)
        return 0.0
    return round(time.perf_counter() - t, 3)


def _full(warehouse: Path, work: Path, t0: float) -> PublishReport:
    con = db.open_db(warehouse, read_only=True)
    try:
        source = con.execute("SELECT current_database()").fetchone()[0]
        con.execute(f"ATTACH '{_sql_path(work)}' AS {ALIAS} (READ_WRITE)")
        # The schema (tables, views, macros), then each table again without its keys and
        # indexes: readers never write, and a checkpoint after each cycle's rows would
        # otherwise rewrite the whole of every index (a million-key ART for articles).
        con.execute(f'COPY FROM DATABASE "{source}" TO {ALIAS} (SCHEMA)')
        for table in _tables(con, source):
            con.execute(f'DROP TABLE {ALIAS}.main."{table}"')
            con.execute(f'CREATE TABLE {ALIAS}.main."{table}" AS SELECT * FROM "{source}".main."{table}"')
        con.execute(f"DETACH {ALIAS}")
    finally:
        con.close()
    t1 = time.perf_counter()
    con = duckdb.connect(str(work))  # the primary's lock is no longer held while the index builds
    try:
        con.execute("SET TimeZone = 'UTC'")
        n = build_index(con)
        _publish_info(con, con.execute("SELECT current_database()").fetchone()[0], "full")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    t2 = time.perf_counter()
    return PublishReport("", n, round(t1 - t0, 3), round(t2 - t1, 3), 0.0, "full", "", n)


def _incremental(warehouse: Path, target: Path, work: Path, t0: float, compare_all: bool = False) -> PublishReport:
    if not target.exists():
        raise _NeedFull("no read copy yet")
    con = db.open_db(warehouse, read_only=True)
    flushing = None  # set before the try: its finally reads it whatever fails first
    try:
        con.execute("SET TimeZone = 'UTC'")
        source = con.execute("SELECT current_database()").fetchone()[0]
        how, rates, flushing = _attach_base(con, source, target, work)
        changed, found, sync = _apply_delta(con, source, compare_all)
        t1 = time.perf_counter()
        # Only an article the copy held can have entries in its index (crid: its row id in the
        # copy): a cycle with no corrections or deletions, new articles only, then skips reading
        # search_docs' million ids (DuckDB does not scan the probe side of a join with nothing
        # to find: 0.002 s of CPU against 0.05-0.07 s for 50 ids, at 1M).
        n = update_index(con, ALIAS, "_marsad_changed", texts="_marsad_rows",
                         held="(SELECT article_id FROM _marsad_changed WHERE crid IS NOT NULL) AS held")
        con.execute("DROP TABLE _marsad_rows")
        if n >= 1000:  # enough articles for the rate to mean something
            rates[0] = (time.perf_counter() - t1) / n
        _publish_info(con, ALIAS, "incremental", sync, rates)
        con.execute(f"CHECKPOINT {ALIAS}")
        con.execute(f"DETACH {ALIAS}")
        articles = con.execute("SELECT count(*) FROM articles").fetchone()[0]
    finally:
        con.close()
        if flushing is not None:
            flushing.join()
    t2 = time.perf_counter()
    return PublishReport("", articles, round(t1 - t0, 3), round(t2 - t1, 3), 0.0, "incremental", f"{how}, {found}", max(n, changed))


# Until a publish has measured them (publish_info keeps the last measurements).
INDEX_S_PER_ARTICLE, COPY_BYTES_PER_S = 1e-4, 500e6


def _attach_base(con: duckdb.DuckDBPyConnection, source: str, target: Path, work: Path) -> tuple[str, list, threading.Thread | None]:
    """Attach, read-write as ``ALIAS``, the file this publish will bring up to date: the spare
    (a copy of the read copy made after the previous publish, ``_prepare_spare``) when no
    process holds it, it has the primary's schema and bringing it up to date is expected to
    cost no more than a file copy of the read copy brought up to date (it costs more only
    when the spare is older than the read copy); else that file copy. _NeedFull when neither will
    do. Returns how, the rates to keep in publish_info [s per article indexed, bytes
    per s copied], and, for a file copy, the thread writing it to disk (``_flush``)."""
    why = ""
    try:
        os.replace(spare_path(target), work)  # ours alone now (another publisher gets the next branch)
        try:
            con.execute(f"ATTACH '{_sql_path(work)}' AS {ALIAS} (READ_WRITE)")
            try:
                _check_compatible(con, source)
                rates = _rates(con, ALIAS)
                spare_lag = _lag(con, source, ALIAS)
                con.execute(f"ATTACH '{_sql_path(target)}' AS marsad_current (READ_ONLY)")
                try:
                    current_lag = _lag(con, source, "marsad_current")
                finally:
                    con.execute("DETACH marsad_current")
                if spare_lag is None or current_lag is None:
                    return "spare", rates, None
                spare_s = spare_lag * rates[0]
                copy_s = target.stat().st_size / rates[1] + current_lag * rates[0]
                if spare_s <= copy_s:
                    return "spare", rates, None
                why = f" (expected {copy_s:.2f} s against {spare_s:.2f} s for the spare)"
                con.execute(f"DETACH {ALIAS}")
            except _NeedFull:  # e.g. made before a migration, which the read copy has
                con.execute(f"DETACH {ALIAS}")
        except duckdb.Error:  # a reader still has this generation open (DuckDB never waits), or it is damaged
            try:
                con.execute(f"DETACH {ALIAS}")
            except duckdb.Error:
                pass
        _unlink(work)  # a reader keeps the inode
    except FileNotFoundError:
        pass
    try:
        t = time.perf_counter()
        shutil.copyfile(target, work)  # the published file is never written: a plain copy is consistent
        copied_s = time.perf_counter() - t
        flushing = _flush(work)
        con.execute(f"ATTACH '{_sql_path(work)}' AS {ALIAS} (READ_WRITE)")
    except (OSError, duckdb.Error) as exc:
        raise _NeedFull(f"the read copy cannot be copied: {str(exc).splitlines()[0]}") from None
    _check_compatible(con, source)
    rates = _rates(con, ALIAS)
    if copied_s > 0.05:  # too short a copy says little about the disk
        rates[1] = work.stat().st_size / copied_s
    return "file copy" + why, rates, flushing


def _flush(path: Path) -> threading.Thread:
    """Start writing a fresh file copy to disk (``fsync`` in a thread, which leaves the GIL and
    the cores to the delta). The copy's pages are all dirty: the checkpoint at the end of the
    publish, which syncs the file, would otherwise wait for the whole file (~1 GB at 1M
    articles) to reach the disk after the delta instead of during it."""
    fd = os.open(path, os.O_RDONLY)

    def sync() -> None:
        try:
            os.fsync(fd)
        except OSError:  # the checkpoint syncs the file anyway
            pass
        finally:
            os.close(fd)

    thread = threading.Thread(target=sync, name="marsad-publish-flush", daemon=True)
    thread.start()
    return thread


def _rates(con: duckdb.DuckDBPyConnection, dbname: str) -> list:
    index_s, copy_bps = con.execute(f"SELECT index_s_per_article, copy_bytes_per_s FROM {dbname}.publish_info").fetchone()
    return [index_s or INDEX_S_PER_ARTICLE, copy_bps or COPY_BYTES_PER_S]


def _lag(con: duckdb.DuckDBPyConnection, source: str, dbname: str) -> int | None:
    """Articles of the primary added, changed or classified since ``dbname`` was synced (None: unknown)."""
    try:
        mark = con.execute(f"SELECT synced_classified_at FROM {dbname}.publish_info").fetchone()[0]
    except duckdb.Error:
        return None
    return con.execute(f"""SELECT count(*) FROM "{source}".main.articles
                           WHERE $mark IS NULL OR classified_at IS NULL OR classified_at > $mark""", {"mark": mark}).fetchone()[0]


def _check_compatible(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Same migrations, same tables and columns, same search index version; else _NeedFull."""
    def migrations(dbname):
        return con.execute(f'SELECT list(version ORDER BY version) FROM "{dbname}".schema_migrations').fetchone()[0]

    def columns(dbname):
        return con.execute(
            """SELECT list((table_name, column_name, data_type) ORDER BY table_name, column_index)
               FROM duckdb_columns() WHERE database_name = ? AND schema_name = 'main'
                 AND table_name IN (SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main')
                 AND NOT list_contains(?, table_name)""",
            [dbname, dbname, sorted(COPY_ONLY)]).fetchone()[0]

    try:
        version = con.execute(f"SELECT max(index_version) FROM {ALIAS}.publish_info").fetchone()[0]
        ours = migrations(ALIAS)
    except duckdb.Error:
        raise _NeedFull("the read copy predates incremental publishing") from None
    if version != INDEX_VERSION:
        raise _NeedFull(f"search index version {version}, this version builds {INDEX_VERSION}")
    if ours != migrations(source):
        raise _NeedFull("schema migrations differ from the primary's")
    if columns(ALIAS) != columns(source):
        raise _NeedFull("tables or columns differ from the primary's")


# Tables whose rows are appended and change only with an article (migration 0018: no keys;
# warehouse/load.py load_articles, forget_derived, unlink_unmatched; warehouse/events.py
# _write_events): each cycle replaces exactly the rows of the articles that changed.
ARTICLE_TABLES = ("article_indicators", "article_entities", "article_sketches", "event_articles")


def _apply_delta(con: duckdb.DuckDBPyConnection, source: str, compare_all: bool = False) -> tuple[int, str, tuple]:
    """Make every table of the attached copy equal to the primary's; returns the number of
    articles added, changed or removed (their ids left in temp table ``_marsad_changed``) and
    how they were found ("watermark" or "full compare")."""
    src, dst = f'"{source}".main', f"{ALIAS}.main"
    how = "watermark"
    mark, *fp = con.execute(f"SELECT synced_classified_at, synced_count, synced_sum FROM {dst}.publish_info").fetchone()
    # The copy holds the primary as it was when every classified_at was <= mark. A load sets
    # classified_at to its own time (later than mark) on what it adds, corrects (NULL until
    # classified) or classifies late; so the articles that changed are among those with
    # classified_at NULL or after mark. Unless an older row changed or left otherwise (a clock
    # set back, a deletion): then the older rows of the primary plus those the copy held for
    # the candidates no longer add up to the fingerprint of the copy's older rows (a count and
    # a sum of row hashes, one scan of three columns), and every article is compared.
    def candidates(where: str) -> None:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _marsad_cand AS
            SELECT p.article_id, p.rid, p.content_hash <> c.content_hash OR c.article_id IS NULL
                                        OR p.classified_at IS DISTINCT FROM c.classified_at AS differs,
                   CASE WHEN c.classified_at <= $mark THEN hash(c.article_id, c.content_hash, c.classified_at) END AS was_old,
                   c.crid
            FROM (SELECT article_id, content_hash, classified_at, rowid AS rid FROM {src}.articles WHERE {where}) p
            LEFT JOIN (SELECT article_id, content_hash, classified_at, rowid AS crid FROM {dst}.articles) c USING (article_id)""",
            {"mark": mark})

    newer = "classified_at IS NULL OR classified_at > $mark"
    if mark is not None and not compare_all:
        candidates(newer)
        n, total = _fingerprint(con, f"{src}.articles", "classified_at <= ?", [mark])
        n2, total2 = con.execute("SELECT count(was_old), coalesce(sum(was_old::HUGEINT), 0) FROM _marsad_cand").fetchone()
        if [n + n2, total + total2] != fp:
            how = "full compare"
    else:
        how = "full compare"
    if how == "full compare":
        candidates("true")
    # crid: the article's row id in the copy (NULL: not there), for deleting it without another
    # read of the copy's million article ids
    con.execute("CREATE OR REPLACE TEMP TABLE _marsad_changed AS SELECT article_id, rid, crid FROM _marsad_cand WHERE differs")
    con.execute("DROP TABLE _marsad_cand")
    if how == "full compare":
        con.execute(f"INSERT INTO _marsad_changed SELECT article_id, NULL, rowid FROM {dst}.articles c ANTI JOIN {src}.articles p USING (article_id)")
    changed = con.execute("SELECT count(*) FROM _marsad_changed").fetchone()[0]
    # The changed rows (kept in temp table _marsad_rows: the search index reads their texts
    # there, not in the whole copy), read without reading a million texts to find 10k. By the
    # watermark: with the candidates' own filter on classified_at, which DuckDB applies in the
    # scan (row groups whose classified_at all precede the mark are skipped by their min/max,
    # and the other columns are read only for vectors holding a changed row). An OR of the
    # row-id runs is evaluated on every row id of the table instead (0.14 s of CPU at 1M for
    # 50 scattered corrections, against ~0.01 s for the classified_at filter). After a full
    # compare (any row may have changed), one scan bounded by the runs of row ids: a scattered
    # correction costs a vector, not a row group.
    if how == "watermark":
        bound, params = newer, {"mark": mark}
    else:
        bound = " OR ".join(f"rowid BETWEEN {lo} AND {hi}" for lo, hi in _row_ranges(con, "_marsad_changed", "rid")) or "false"
        params = {}
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _marsad_rows AS SELECT * FROM {src}.articles
                    WHERE ({bound}) AND rowid IN (SELECT rid FROM _marsad_changed)""", params)
    if changed:
        con.execute(f"DELETE FROM {dst}.articles WHERE rowid IN (SELECT crid FROM _marsad_changed WHERE crid IS NOT NULL)")
        con.execute(f"INSERT INTO {dst}.articles SELECT * FROM _marsad_rows")
    tables = [t for t in _tables(con, source) if t != "articles" and t not in COPY_ONLY]
    if how == "watermark" and set(ARTICLE_TABLES) | {"events"} <= set(tables):
        # events that can have changed: new ids, and those linked (before or after) to a changed
        # article (an earlier report moves first_report_at; an event emptied by unlink goes)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _marsad_events AS
            SELECT event_id FROM {dst}.event_articles SEMI JOIN _marsad_changed USING (article_id)
            UNION SELECT event_id FROM {src}.event_articles SEMI JOIN _marsad_changed USING (article_id)
            UNION SELECT event_id FROM (SELECT DISTINCT event_id FROM {src}.events) ANTI JOIN {dst}.events USING (event_id)""")
        for table in ARTICLE_TABLES:
            _replace_keyed(con, f'{src}."{table}"', f'{dst}."{table}"', "article_id", "_marsad_changed")
        _replace_keyed(con, f"{src}.events", f"{dst}.events", "event_id", "_marsad_events")
        con.execute("DROP TABLE _marsad_events")
        # a change these rules did not foresee shows in the row counts (kept in the tables'
        # metadata): such a table is compared row by row
        for table in (*ARTICLE_TABLES, "events"):
            if _count(con, f'{src}."{table}"') != _count(con, f'{dst}."{table}"'):
                _sync_table(con, f'{src}."{table}"', f'{dst}."{table}"')
        tables = [t for t in tables if t not in ARTICLE_TABLES and t != "events"]
    for table in tables:
        _sync_table(con, f'{src}."{table}"', f'{dst}."{table}"')
    # what the copy now holds, for the next publish: the newest classified_at, and the
    # fingerprint of the rows up to it (a sum: the older part was just checked, the rest is new)
    new_mark = con.execute(f"SELECT max(classified_at) FROM {src}.articles").fetchone()[0]
    if new_mark is None:
        sync = (None, 0, 0)
    elif how == "watermark":  # the older rows still there (checked above) and those classified since
        n1, total1 = _fingerprint(con, f"{src}.articles", "classified_at > ? AND classified_at <= ?", [mark, new_mark])
        sync = (new_mark, n + n1, total + total1)
    else:
        sync = (new_mark, *_fingerprint(con, f"{src}.articles", "classified_at <= ?", [new_mark]))
    return changed, how, sync


def _row_ranges(con: duckdb.DuckDBPyConnection, table: str, column: str, most: int = 256) -> list[tuple[int, int]]:
    """The runs of row ids in ``table.column``: ids less than a vector (2,048 rows) apart
    share a run; when that makes more than ``most`` runs, ids in the same row group do.
    (The ids, a few thousand integers, are grouped here: a window over them in SQL is one
    task that cost up to 0.2 s of CPU at 10k.)"""
    ids = [r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY 1").fetchall()]
    for gap in (VECTOR, ROW_GROUP):
        ranges = row_runs(ids, gap)
        if len(ranges) <= most:
            break
    return [tuple(r) for r in ranges]


def _fingerprint(con: duckdb.DuckDBPyConnection, table: str, where: str, params: list) -> tuple[int, int]:
    """Count and sum of row hashes of the articles matching ``where``: any article added,
    changed or removed among them changes it (odds of a miss ~ 2^-64)."""
    return tuple(con.execute(f"""SELECT count(*), coalesce(sum(hash(article_id, content_hash, classified_at)::HUGEINT), 0)
                                 FROM {table} WHERE {where}""", params).fetchone())


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _replace_keyed(con: duckdb.DuckDBPyConnection, src: str, dst: str, key: str, keys: str) -> None:
    """``dst``'s rows whose ``key`` is in table ``keys`` become ``src``'s."""
    con.execute(f"DELETE FROM {dst} WHERE {key} IN (SELECT {key} FROM {keys})")
    con.execute(f"INSERT INTO {dst} SELECT * FROM {src} WHERE {key} IN (SELECT {key} FROM {keys})")


def _tables(con: duckdb.DuckDBPyConnection, dbname: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' ORDER BY table_name",
        [dbname]).fetchall()]


def _sync_table(con: duckdb.DuckDBPyConnection, src: str, dst: str) -> None:
    """Make ``dst`` hold exactly the rows of ``src`` (multisets, so tables without a key are
    right too). Rows are compared by their 64-bit hash (a tenth of the time of comparing the
    rows themselves: sketches are 128 numbers); for every hash the two sides hold a different
    number of times, ``dst``'s rows with it are replaced by ``src``'s. Two different rows with
    the same hash and count on both sides would go unnoticed (odds ~ rows / 2^64)."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _marsad_diff AS
        SELECT h FROM (SELECT hash(x) AS h, 1 AS side FROM {src} x UNION ALL SELECT hash(y), 2 FROM {dst} y)
        GROUP BY h HAVING count(*) FILTER (side = 1) <> count(*) FILTER (side = 2)""")
    if con.execute("SELECT count(*) FROM _marsad_diff").fetchone()[0]:
        con.execute(f"DELETE FROM {dst} WHERE rowid IN (SELECT rowid FROM {dst} y WHERE hash(y) IN (SELECT h FROM _marsad_diff))")
        con.execute(f"INSERT INTO {dst} SELECT * FROM {src} x WHERE hash(x) IN (SELECT h FROM _marsad_diff)")
    con.execute("DROP TABLE _marsad_diff")


def _publish_info(con: duckdb.DuckDBPyConnection, dbname: str, mode: str, sync: tuple | None = None,
                  rates: Sequence = (None, None)) -> None:
    """``publish_info``: what analysts see (when, how many articles), and what the next
    incremental publish starts from (``synced_*``: see ``_apply_delta``; ``sync`` None:
    computed from the copy's own articles, as after a full publish)."""
    articles = f'"{dbname}".main.articles'
    if sync is None:
        mark = con.execute(f"SELECT max(classified_at) FROM {articles}").fetchone()[0]
        sync = (mark, 0, 0) if mark is None else (
            mark, *_fingerprint(con, articles, "classified_at <= ?", [mark]))
    con.execute(
        f"""CREATE OR REPLACE TABLE "{dbname}".main.publish_info AS
           SELECT now() AS published_at, count(*) AS articles, max(fetched_at) AS newest_fetched_at,
                  '{mode}' AS mode, {INDEX_VERSION} AS index_version,
                  ?::TIMESTAMPTZ AS synced_classified_at, ?::BIGINT AS synced_count, ?::HUGEINT AS synced_sum,
                  ?::DOUBLE AS index_s_per_article, ?::DOUBLE AS copy_bytes_per_s
           FROM {articles}""", [*sync, *rates])


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _unlink(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


def _remove_stale(target: Path, older_than_s: float = 3600) -> None:
    """Temporary files left by a publisher that was killed mid-way (a live one is never that old)."""
    cutoff = time.time() - older_than_s
    for leftover in target.parent.glob(f".{target.name}.*.tmp*"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except FileNotFoundError:
            pass


# What every connection that serves an analyst (marsad query, marsad search, the board) is
# opened with, or set to before its configuration is locked. DuckDB then refuses, whatever
# the SQL, to read or write any file but the database itself (read_csv, read_text, COPY,
# EXPORT, ATTACH, replacement scans of 'file.csv'), to reach the network, to install or load
# an extension, to scan Python objects by name, and to change any setting, these included.
SEALED_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                 "python_enable_replacements": False}
# DuckDB shares one database instance between the connections of a process to the same
# file, and its settings with it: opening and sealing must not interleave (board requests).
_OPENING = threading.Lock()


def open_read_copy(path: str | Path, *, fts: bool = True, settings: Sequence[str] = (),
                   writable: Sequence[str | Path] = ()) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the published copy that cannot touch the file system or the
    network, with fts loaded for searching (``fts=False``: not loaded).

    ``settings``: SET statements (already checked, see ``warehouse.query``) applied after
    external access is off and before the configuration is locked. ``writable``: files the
    caller itself writes through this connection (``marsad query --format parquet``); they
    are the only paths outside the database DuckDB will open."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no read copy published yet (it appears after the next load, or run `marsad publish`)")
    with _OPENING:
        con = duckdb.connect(str(path), read_only=True, config=SEALED_CONFIG)
        try:
            if _sealed(con):  # another connection of this process has the same instance open
                if settings or writable or (fts and not _fts_loaded(con)):
                    raise RuntimeError(f"{path} is already open in this process with its configuration locked; "
                                       "settings, output files and fts can only be set up by the first connection")
                return con
            con.execute("SET GLOBAL TimeZone = 'UTC'")  # for every connection that shares the instance
            if fts:
                load_fts(con)  # from the installed package: needs file access, so before the seal
            seal(con, settings, writable)
        except BaseException:
            con.close()
            raise
    return con


def seal(con: duckdb.DuckDBPyConnection, settings: Sequence[str] = (), writable: Sequence[str | Path] = ()) -> None:
    """Turn external access off (DuckDB never lets it back on), apply ``settings``, lock the configuration."""
    if writable:
        con.execute("SET allowed_paths = ?", [[str(p) for p in writable]])
    con.execute("SET enable_external_access = false")
    for statement in settings:
        con.execute(statement)
    con.execute("SET lock_configuration = true")


def _sealed(con: duckdb.DuckDBPyConnection) -> bool:
    locked, external = con.execute(
        "SELECT current_setting('lock_configuration'), current_setting('enable_external_access')").fetchone()
    if locked and external:
        raise RuntimeError("the read copy is open in this process with its configuration locked but external access on")
    return bool(locked)


def _fts_loaded(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_extensions() WHERE extension_name = 'fts' AND loaded").fetchone()[0])
