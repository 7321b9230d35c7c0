"""Retention and backup.

``fetch_log`` grows by one row per poll of every feed (about 100k rows a month for 30
feeds every 5 minutes) and is only needed for recent source health, so rows older than
``MARSAD_FETCH_LOG_RETENTION`` (default 30d) are pruned in the load step. Articles,
events and alerts are kept. The first successful fetch of each source is always kept:
it records when Marsad started watching that source, which the resumption, flatline and
spike rules need (``alerts.evaluate.history_start``).

``export`` writes every table as Parquet with DuckDB's ``EXPORT DATABASE``; ``IMPORT
DATABASE`` restores it into an empty file (docs/warehouse.md).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb

RETENTION_ENV = "MARSAD_FETCH_LOG_RETENTION"
DEFAULT_RETENTION = "30d"


def fetch_log_retention() -> int:
    """Seconds of fetch_log to keep: warehouse.fetch_log_retention (``$MARSAD_FETCH_LOG_RETENTION``, e.g. ``30d``) as marsad.settings resolves it."""
    from marsad.settings import current

    return current("warehouse.fetch_log_retention").get("warehouse.fetch_log_retention")


def prune_fetch_log(con: duckdb.DuckDBPyConnection, now: datetime, keep_s: int) -> int:
    """Delete fetch_log rows older than ``keep_s`` before ``now``; returns how many went."""
    gone = con.execute(
        """DELETE FROM fetch_log
           WHERE started_at < ?
             AND fetch_id NOT IN (SELECT arg_min(fetch_id, started_at) FROM fetch_log
                                  WHERE status IN ('ok', 'not_modified') GROUP BY source_id)
           RETURNING fetch_id""",
        [now - timedelta(seconds=keep_s)],
    ).fetchall()
    return len(gone)


def export(con: duckdb.DuckDBPyConnection, directory: str | Path) -> list[Path]:
    """EXPORT DATABASE as Parquet (one file per table, plus schema.sql and load.sql)."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory}: not empty; export into a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    con.execute(f"EXPORT DATABASE '{directory}' (FORMAT parquet)")
    return sorted(directory.iterdir())
