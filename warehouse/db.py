"""DuckDB warehouse: connections, versioned migrations.

DuckDB lets one process write a file, or many read it, never both at once. Every Marsad
step therefore holds its connection only for a short transaction, and ``connect`` waits
(with backoff) while another process holds the lock instead of failing the task.
"""
from __future__ import annotations

import json
import random
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

MIGRATIONS = Path(__file__).with_name("migrations")
# DuckDB's storage units: rows per row group (its unit of a checkpoint's rewrite and of
# parallel scanning) and per vector (the smallest block a bounded read fetches).
ROW_GROUP, VECTOR = 122_880, 2_048
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


# Lists are bound as one JSON text: DuckDB 1.5.5 binding a Python list tries ``import pandas``
# twice per element when pandas is not installed (a failed import scans sys.path each time):
# ~0.1 ms an element (0.12 s for the 1,000 ids of a sync, 60 ms for 1,000 staged file names),
# against ~1 ms for the JSON text.
VARCHARS = """from_json(?, '["VARCHAR"]')"""
DOUBLES = """from_json(?, '["DOUBLE"]')"""


def json_list(values: list) -> str:
    """``values`` as the one parameter ``VARCHARS`` / ``DOUBLES`` read."""
    return json.dumps(values, ensure_ascii=False)


def row_runs(rowids: list[int], gap: int) -> list[list[int]]:
    """Sorted row ids as runs ``[first, last]``: ids at most ``gap`` apart share a run. A scan
    bounded by ``rowid BETWEEN first AND last`` skips the row groups and vectors outside."""
    runs: list[list[int]] = []
    for r in rowids:
        if runs and r - runs[-1][1] <= gap:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    return runs


def drop_temp(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    """Drop temporary tables on the way out (a ``finally``). After an error that aborted the
    transaction DuckDB refuses even that (the rollback drops them), and the error that matters
    is the first one, so that refusal is not raised over it."""
    for table in tables:
        try:
            con.execute(f"DROP TABLE IF EXISTS {table}")
        except duckdb.TransactionException:
            pass


def database_path(con: duckdb.DuckDBPyConnection) -> str | None:
    """The file of ``con``'s database (None for an in-memory one)."""
    return con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0] or None


class WarehouseBusy(RuntimeError):
    """The DuckDB file stayed locked by another process for longer than we wait."""


def default_path() -> Path:
    """paths.warehouse as marsad.settings resolves it (relative to the repository, never the cwd)."""
    from marsad.settings import current

    return current("paths.warehouse").path("paths.warehouse")


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


def open_db(path: str | Path, read_only: bool = False, wait_s: float = 120.0) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting while another process holds the file lock."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() >= deadline:
                if _is_lock_error(exc):
                    raise WarehouseBusy(f"{path} is locked by another process: {exc}") from exc
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


@contextmanager
def connect(path: str | Path | None = None, read_only: bool = False, migrate_schema: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection (schema migrated when writable); closed on exit."""
    con = open_db(path or default_path(), read_only=read_only)
    try:
        con.execute("SET TimeZone = 'UTC'")
        if migrate_schema and not read_only:
            migrate(con)
        yield con
    finally:
        con.close()


def migrations() -> list[tuple[int, str, Path]]:
    out = []
    for p in sorted(MIGRATIONS.glob("*.sql")):
        m = _MIGRATION_NAME.match(p.name)
        if not m:
            raise RuntimeError(f"{p}: migration files are named NNNN_name.sql")
        out.append((int(m.group(1)), m.group(2), p))
    versions = [v for v, _, _ in out]
    # Numbers are unique; a gap is allowed, since branches reserve numbers (0002 source health,
    # 0003 events) and ``migrate`` applies whichever a file has not seen yet.
    if len(set(versions)) != len(versions) or not versions or versions[0] != 1:
        raise RuntimeError(f"{MIGRATIONS}: migration versions must be unique and start at 1, found {versions}")
    return out


def migrate(con: duckdb.DuckDBPyConnection, upto: int | None = None) -> list[int]:
    """Apply the migrations this file has not seen, each in its own transaction (those numbered
    up to ``upto`` only, when given: a warehouse of an older schema, for migration tests)."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    done = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, name, path in migrations():
        if version in done or (upto is not None and version > upto):
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(path.read_text(encoding="utf-8"))
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
