"""Set-based loads into the warehouse.

Python hands DuckDB newline-delimited JSON files and DuckDB does the rest in one
statement (``read_json`` + ``INSERT ... ON CONFLICT DO NOTHING``): no row-by-row inserts,
and loading the same rows twice changes nothing.
"""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Iterable

import duckdb

ARTICLE_COLUMNS = {
    "article_id": "VARCHAR",
    "source_id": "VARCHAR",
    "guid": "VARCHAR",
    "url": "VARCHAR",
    "canonical_url": "VARCHAR",
    "title": "VARCHAR",
    "summary": "VARCHAR",
    "lang": "VARCHAR",
    "published_at": "TIMESTAMPTZ",
    "published_flag": "VARCHAR",
    "fetched_at": "TIMESTAMPTZ",
    "title_folded": "VARCHAR",
    "text_folded": "VARCHAR",
    "content_hash": "VARCHAR",
}


def _columns_sql(columns: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in columns.items()) + "}"


def read_json_sql(files: list[str | Path], columns: dict[str, str]) -> tuple[str, list]:
    """A ``read_json`` table expression over files, with the columns typed."""
    return (
        f"read_json(?, format='newline_delimited', columns={_columns_sql(columns)})",
        [[str(f) for f in files]],
    )


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=_json_default))
            fh.write("\n")
            n += 1
    return n


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> int:
    """``write_jsonl`` to ``path`` through a temporary name renamed into place, so that a reader
    never sees half a file. On any error (a full disk) the partial file is removed and the
    error names ``path``: "[Errno 28] No space left on device" alone says nothing of where."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        n = write_jsonl(tmp, rows)
        os.replace(tmp, path)
        return n
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"{exc.strerror or exc} (writing {path.name})", str(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """``path`` written whole or not at all (see ``write_jsonl_atomic``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"{exc.strerror or exc} (writing {path.name})", str(path)) from exc


def _json_default(obj):
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def bulk_insert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    rows: list[dict],
    columns: dict[str, str],
    conflict: str = "DO NOTHING",
    returning: str | None = None,
) -> list[tuple]:
    """Insert rows in one statement through a temporary NDJSON file."""
    if not rows:
        return []
    fd, tmp = tempfile.mkstemp(prefix=f"marsad-{table}-", suffix=".jsonl")
    os.close(fd)
    try:
        write_jsonl(tmp, ({k: r.get(k) for k in columns} for r in rows))
        src, params = read_json_sql([tmp], columns)
        cols = ", ".join(columns)
        sql = f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {src} ON CONFLICT {conflict}"
        if returning:
            sql += f" RETURNING {returning}"
        return con.execute(sql, params).fetchall()
    finally:
        os.unlink(tmp)


def insert_articles(con: duckdb.DuckDBPyConnection, files: list[str | Path]) -> list[tuple[str, str]]:
    """Load staged article files; returns (article_id, source_id) of the articles that are new.

    An entry repeated inside a batch (duplicate GUIDs in one feed, the same feed staged
    twice) keeps its first sighting.
    """
    files = [f for f in files if Path(f).stat().st_size > 0]
    if not files:
        return []
    src, params = read_json_sql(files, ARTICLE_COLUMNS)
    cols = ", ".join(ARTICLE_COLUMNS)
    return con.execute(
        f"""
        INSERT INTO articles ({cols})
        SELECT {cols} FROM (
            SELECT *, row_number() OVER (PARTITION BY article_id ORDER BY fetched_at, published_at) AS rn
            FROM {src}
        ) WHERE rn = 1
        ON CONFLICT DO NOTHING
        RETURNING article_id, source_id
        """,
        params,
    ).fetchall()
