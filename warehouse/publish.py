"""The analysts' read copy: a snapshot of the warehouse that any number of readers can hold.

DuckDB lets one process open a file read-write, or many processes read-only, never both.
So analysts never open the primary file (``var/marsad.duckdb``). After each load and each
evaluation the pipeline publishes ``marsad-read.duckdb`` next to it:

1. open the primary (read-only, so publishing can never change it) and
   ``COPY FROM DATABASE`` it into a new temporary file; the primary's lock is held only
   for this copy;
2. in the temporary file, build the full-text index (``warehouse.search``) and record
   ``publish_info`` (when it was published, newest article);
3. ``os.replace`` the temporary file over the read copy: one atomic rename.

Readers that have the old copy open keep its inode (POSIX keeps an unlinked file alive
while it is open) and are never blocked or broken; the next connection they open sees the
new copy. The read copy is never written in place, so readers never hold a lock that the
pipeline waits for.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from warehouse import db
from warehouse.search import build_index

READ_COPY_ENV = "MARSAD_READ_COPY"


def read_copy_path(warehouse: str | Path) -> Path:
    """``$MARSAD_READ_COPY``, or ``<warehouse stem>-read.duckdb`` next to the warehouse."""
    if os.environ.get(READ_COPY_ENV):
        return Path(os.environ[READ_COPY_ENV])
    warehouse = Path(warehouse)
    return warehouse.with_name(f"{warehouse.stem}-read{warehouse.suffix or '.duckdb'}")


@dataclass
class PublishReport:
    path: str
    articles: int
    copy_s: float
    index_s: float
    total_s: float

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def publish(warehouse: str | Path, target: str | Path | None = None) -> PublishReport:
    """Snapshot ``warehouse`` into a fresh file with a search index, then swap it in atomically."""
    warehouse = Path(warehouse)
    target = Path(target or read_copy_path(warehouse))
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    _remove_stale(target)
    t0 = time.perf_counter()
    try:
        con = db.open_db(warehouse, read_only=True)
        try:
            source = con.execute("SELECT current_database()").fetchone()[0]
            con.execute(f"ATTACH '{tmp}' AS marsad_publish (READ_WRITE)")
            con.execute(f'COPY FROM DATABASE "{source}" TO marsad_publish')
            con.execute("DETACH marsad_publish")
        finally:
            con.close()
        t1 = time.perf_counter()
        con = duckdb.connect(str(tmp))
        try:
            con.execute("SET TimeZone = 'UTC'")
            n = build_index(con)
            con.execute(
                """CREATE OR REPLACE TABLE publish_info AS
                   SELECT now() AS published_at, count(*) AS articles, max(fetched_at) AS newest_fetched_at FROM articles"""
            )
            con.execute("CHECKPOINT")
        finally:
            con.close()
        t2 = time.perf_counter()
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return PublishReport(str(target), n, round(t1 - t0, 3), round(t2 - t1, 3), round(time.perf_counter() - t0, 3))


def _remove_stale(target: Path, older_than_s: float = 3600) -> None:
    """Temporary files left by a publisher that was killed mid-way (a live one is never that old)."""
    cutoff = time.time() - older_than_s
    for leftover in target.parent.glob(f".{target.name}.*.tmp*"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except FileNotFoundError:
            pass


def open_read_copy(path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the published copy, with fts loaded for searching."""
    from warehouse.search import load_fts

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no read copy published yet (it appears after the next load, or run `marsad publish`)")
    con = duckdb.connect(str(path), read_only=True, config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    load_fts(con)
    return con
