"""Read-only SQL for analysts (``marsad query``), against the published read copy.

Two fences: the read copy is opened ``read_only=True`` (DuckDB refuses any write to it),
and every statement is checked up front with ``duckdb.extract_statements``: only SELECT
(with SHOW, DESCRIBE, SUMMARIZE, PRAGMA-style table functions) and EXPLAIN run, plus SET
of a few harmless session settings. ATTACH, COPY, EXPORT, INSTALL, LOAD, CALL and other
settings are refused before anything runs.
"""
from __future__ import annotations

import csv
import json
import re
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO

import duckdb

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
SAFE_SETTINGS = {"timezone", "calendar", "threads", "memory_limit", "default_order", "default_null_order", "null_order"}
_SET_NAME = re.compile(r"^\s*(?:SET|RESET)\s+(?:SESSION\s+|LOCAL\s+|GLOBAL\s+)?([A-Za-z_]+)", re.IGNORECASE)
FORMATS = ("table", "csv", "json", "parquet")


class QueryRefused(ValueError):
    """A statement that is not a read."""


def checked_statements(sql: str) -> list:
    """The statements of ``sql``, if every one of them only reads; QueryRefused otherwise."""
    statements = duckdb.extract_statements(sql)
    if not statements:
        raise QueryRefused("no SQL statement given")
    for st in statements:
        if st.type in ALLOWED:
            continue
        if st.type == duckdb.StatementType.SET:
            m = _SET_NAME.match(st.query)
            if m and m.group(1).lower() in SAFE_SETTINGS:
                continue
            raise QueryRefused(f"setting refused (allowed: {', '.join(sorted(SAFE_SETTINGS))}): {st.query.strip()[:80]}")
        raise QueryRefused(f"read-only: {st.type.name} statements are refused, only SELECT and EXPLAIN run: {st.query.strip()[:80]}")
    return statements


def run(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple]]:
    """Run checked statements; the columns and rows of the last one."""
    statements = checked_statements(sql)
    for st in statements[:-1]:
        con.execute(st.query)
    cur = con.execute(statements[-1].query)
    columns = [d[0] for d in cur.description or []]
    return columns, cur.fetchall() if columns else []


def to_parquet(con: duckdb.DuckDBPyConnection, sql: str, out: str | Path) -> int:
    """Write the result of one SELECT to a Parquet file; returns the number of rows."""
    statements = checked_statements(sql)
    *settings, last = statements
    if last.type != duckdb.StatementType.SELECT:
        raise QueryRefused("--format parquet needs the last statement to be a SELECT")
    for st in settings:
        con.execute(st.query)
    query = last.query.strip().rstrip(";")
    out = str(out).replace("'", "''")
    return con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet)").fetchone()[0]


def _plain(v):
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, (timedelta, Decimal)):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    return v


def write(columns: list[str], rows: list[tuple], fmt: str, out: IO[str], max_width: int = 60) -> None:
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(columns)
        w.writerows([[json.dumps(v, ensure_ascii=False, default=_plain) if isinstance(v, (list, dict)) else _plain(v) for v in r] for r in rows])
    elif fmt == "json":  # one object per line, like the CLI's other commands
        for r in rows:
            out.write(json.dumps(dict(zip(columns, r)), ensure_ascii=False, default=_plain) + "\n")
    elif fmt == "table":
        def cell(v) -> str:
            s = "NULL" if v is None else str(_plain(v))
            s = s.replace("\n", " ")
            return s if len(s) <= max_width else s[: max_width - 1] + "…"

        cells = [[cell(v) for v in r] for r in rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
        out.write(line(columns) + "\n")
        out.write(line(["-" * w for w in widths]) + "\n")
        for r in cells:
            out.write(line(r) + "\n")
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    else:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
