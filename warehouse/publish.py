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
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import duckdb

from warehouse import db
from warehouse.search import build_index, load_fts

READ_COPY_ENV = "MARSAD_READ_COPY"


def read_copy_path(warehouse: str | Path) -> Path:
    """paths.read_copy (``$MARSAD_READ_COPY``, marsad.settings), or ``<warehouse stem>-read.duckdb``
    next to the warehouse."""
    from marsad.settings import current

    configured = current("paths.read_copy").path("paths.read_copy")
    if configured is not None:
        return configured
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
