"""Read-only SQL for analysts (``marsad query``), against the published read copy.

Two fences.

1. By construction: the connection (``warehouse.publish.open_read_copy``) is read-only,
   with DuckDB's ``enable_external_access = false`` and then ``lock_configuration = true``.
   Whatever the SQL, DuckDB will not read or write a file other than the read copy (file
   readers, globbing, replacement scans such as ``FROM 'x.csv'``, COPY, EXPORT, ATTACH),
   reach the network, install or load an extension, or change a setting, those two
   included. The few harmless settings an analyst may ask for (``SAFE_SETTINGS``) are
   applied after external access is off and before the lock.
2. The statement check (``check``), before anything is opened, so that a refusal says why
   in one line: only SELECT (with SHOW, DESCRIBE, SUMMARIZE, PIVOT) and EXPLAIN of a
   SELECT run, plus SET of a safe setting; no statement may call a function that reads
   files or the network or runs SQL held in a string (``query()``), nor name a file as a
   table. Statements are split and tokenised by DuckDB itself, so comments and quoting
   hide nothing; parsing happens on a sealed in-memory connection (DuckDB's parser reads
   the files an ``IMPORT DATABASE`` names).
"""
from __future__ import annotations

import csv
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO

import duckdb

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
SAFE_SETTINGS = {"timezone", "calendar", "threads", "memory_limit", "default_order", "default_null_order", "null_order"}
_SET_NAME = re.compile(r"^\s*(?:SET|RESET)\s+(?:SESSION\s+|LOCAL\s+|GLOBAL\s+)?([A-Za-z_]+)\b", re.IGNORECASE)
FORMATS = ("table", "csv", "json", "parquet")
# Functions that read files or the network (in any format, present or to come: read_*,
# *_scan, parquet_*, ...) or run SQL held in a string, which this check cannot see.
_FILE_FUNCTION = re.compile(
    r"^(read_\w+|\w+_scan|parquet_\w+|sniff_csv|glob|st_read\w*|\w+_attach|iceberg_\w+|delta_\w+|sqlite_\w+|"
    r"postgres_\w+|mysql_\w+|getenv|query|query_table|json_execute_serialized_sql)$", re.IGNORECASE)
# A table name that can only be a file, a glob or a URL (DuckDB's replacement scans).
_FILE_TABLE = re.compile(r"[./\\:*?~]")


class QueryRefused(ValueError):
    """A statement that is not a read, or that reaches outside the read copy."""


@dataclass
class Plan:
    """A checked query: ``settings`` (SET/RESET of SAFE_SETTINGS, applied when the connection
    is opened) and ``reads`` (SELECT and EXPLAIN SELECT statements, run in order)."""

    settings: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    ends_with_select: bool = False  # the last read is a SELECT (not an EXPLAIN)


def _parser() -> duckdb.DuckDBPyConnection:
    from warehouse.publish import SEALED_CONFIG

    con = duckdb.connect(":memory:", config=SEALED_CONFIG)
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


_TOKEN_TEXT = re.compile(r'"(?:[^"]|"")*"|\w+|\S')


def _tokens(sql: str) -> list[tuple[str, str]]:
    """(kind, text) of each token of ``sql`` by DuckDB's own tokenizer, which skips comments;
    quoted names unquoted."""
    spans = duckdb.tokenize(sql)
    out = []
    for i, (pos, kind) in enumerate(spans):
        end = spans[i + 1][0] if i + 1 < len(spans) else len(sql)
        m = _TOKEN_TEXT.match(sql, pos, end)  # the span also holds the blanks and comments after the token
        text = m.group(0) if m else ""
        if kind == duckdb.token_type.identifier and len(text) > 1 and text[0] == text[-1] == '"':
            text = text[1:-1].replace('""', '"')
        out.append((kind.name, text))
    return out


def _check_names(sql: str) -> None:
    """No call of a file, network or SQL-in-a-string function; no IMPORT (its parsing reads files)."""
    tokens = _tokens(sql)
    for i, (kind, text) in enumerate(tokens):
        if kind == "keyword" and text.upper() == "IMPORT":
            raise QueryRefused(f"read-only: IMPORT DATABASE is refused, only SELECT and EXPLAIN run: {_short(sql)}")
        if kind in ("identifier", "keyword") and i + 1 < len(tokens) and tokens[i + 1][1].startswith("("):
            if _FILE_FUNCTION.match(text):
                raise QueryRefused(_function_refused(text, sql))


def _function_refused(name: str, sql: str) -> str:
    if name.lower() in ("query", "query_table", "json_execute_serialized_sql"):
        return f"{name}() runs SQL held in a string, which is not allowed; write the query itself: {_short(sql)}"
    return f"no file or network access: {name}() reads outside the read copy; query its tables instead: {_short(sql)}"


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _check_tables(parser: duckdb.DuckDBPyConnection, sql: str) -> None:
    """No table named by a file path, glob or URL (``FROM 'x.csv'``), nor a file function."""
    tree = json.loads(parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if tree.get("error"):  # PIVOT and others the serializer does not cover: the names check still applies
        return
    for node in _walk(tree):
        name = node.get("function_name")
        if isinstance(name, str) and _FILE_FUNCTION.match(name):
            raise QueryRefused(_function_refused(name, sql))
        if node.get("type") == "BASE_TABLE" and _FILE_TABLE.search(node.get("table_name") or ""):
            raise QueryRefused(f"no file or network access: {node['table_name']!r} is not a table of the read copy: {_short(sql)}")


def _explained(sql: str) -> str:
    """The statement an EXPLAIN [ANALYZE] [(options)] wraps."""
    spans = duckdb.tokenize(sql)
    words = [text.upper() for _, text in _tokens(sql)]
    i = 1  # past EXPLAIN
    if i < len(words) and words[i] in ("ANALYZE", "ANALYSE"):
        i += 1
    if i < len(words) and words[i] == "(":
        depth = 0
        while i < len(words):
            depth += (words[i] == "(") - (words[i] == ")")
            i += 1
            if depth == 0:
                break
    return sql[spans[i][0]:] if i < len(spans) else ""


def _short(sql: str) -> str:
    return " ".join(sql.split())[:80]


def check(sql: str) -> Plan:
    """The checked plan of ``sql``, if every statement only reads the read copy; QueryRefused otherwise."""
    _check_names(sql)
    parser = _parser()
    try:
        try:
            statements = parser.extract_statements(sql)
        except duckdb.PermissionException as exc:
            raise QueryRefused(f"no file or network access: {str(exc).splitlines()[0]}") from None
        if not statements:
            raise QueryRefused("no SQL statement given")
        plan = Plan()
        for st in statements:
            if st.type == duckdb.StatementType.SET:
                m = _SET_NAME.match(st.query)
                if m and m.group(1).lower() in SAFE_SETTINGS:
                    plan.settings.append(st.query)
                    continue
                raise QueryRefused(f"setting refused (allowed: {', '.join(sorted(SAFE_SETTINGS))}): {_short(st.query)}")
            if st.type not in ALLOWED:
                raise QueryRefused(f"read-only: {st.type.name} statements are refused, only SELECT and EXPLAIN run: {_short(st.query)}")
            inner = st.query
            if st.type == duckdb.StatementType.EXPLAIN:
                wrapped = parser.extract_statements(_explained(st.query))
                if len(wrapped) != 1 or wrapped[0].type != duckdb.StatementType.SELECT:
                    kind = wrapped[0].type.name if wrapped else "nothing"
                    raise QueryRefused(f"read-only: EXPLAIN of {kind} is refused, only SELECT and EXPLAIN SELECT run: {_short(st.query)}")
                inner = wrapped[0].query
            _check_tables(parser, inner)
            plan.reads.append(st.query)
            plan.ends_with_select = st.type == duckdb.StatementType.SELECT
        return plan
    finally:
        parser.close()


def _tables_named(sql: str) -> list[str]:
    """The base tables and views ``sql`` reads, in the order they appear (by DuckDB's parser)."""
    parser = _parser()
    try:
        names = []
        for st in parser.extract_statements(sql):
            inner = _explained(st.query) if st.type == duckdb.StatementType.EXPLAIN else st.query
            tree = json.loads(parser.execute("SELECT json_serialize_sql(?)", [inner]).fetchone()[0])
            names += [n["table_name"] for n in _walk(tree) if n.get("type") == "BASE_TABLE" and n.get("table_name")]
        return list(dict.fromkeys(names))
    except duckdb.Error:
        return []
    finally:
        parser.close()


def describe_error(con: duckdb.DuckDBPyConnection, sql: str | Plan, exc: duckdb.Error) -> str:
    """DuckDB's one-line error, and for a column it cannot find, the real columns of each table
    or view the query names (DuckDB suggests only near spellings, often none)."""
    first = str(exc).splitlines()[0]
    if not isinstance(exc, duckdb.BinderException) or "column" not in first.lower():
        return first
    text = ";\n".join(sql.reads) if isinstance(sql, Plan) else sql
    lines = [first]
    for name in _tables_named(text):
        cols = [r[0] for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE lower(table_name) = lower(?) AND NOT internal ORDER BY column_index", [name]
        ).fetchall()]
        if cols:
            lines.append(f"columns of {name}: {', '.join(cols)}")
    return "\n".join(lines)


def connect(read_copy: str | Path, plan: Plan, writable=()) -> duckdb.DuckDBPyConnection:
    """The sealed analysts' connection for ``plan``, its settings applied (``open_read_copy``)."""
    from warehouse.publish import open_read_copy

    return open_read_copy(read_copy, settings=plan.settings, writable=writable)


def run(con: duckdb.DuckDBPyConnection, sql: str | Plan) -> tuple[list[str], list[tuple]]:
    """Run the reads of checked SQL; the columns and rows of the last one.

    A ``Plan``'s settings belong to the connection (``connect``); SQL given as text is
    checked here and its settings run first (a sealed connection refuses them)."""
    if isinstance(sql, Plan):
        plan = sql
    else:
        plan = check(sql)
        for st in plan.settings:
            con.execute(st)
    if not plan.reads:
        return [], []
    for st in plan.reads[:-1]:
        con.execute(st)
    cur = con.execute(plan.reads[-1])
    columns = [d[0] for d in cur.description or []]
    return columns, cur.fetchall() if columns else []


def to_parquet(read_copy: str | Path, sql: str | Plan, out: str | Path) -> int:
    """Write the result of the last SELECT to a Parquet file; returns the number of rows.

    The connection may write one file only: a new temporary name next to ``out``, renamed
    over ``out`` once complete."""
    plan = sql if isinstance(sql, Plan) else check(sql)
    if not plan.ends_with_select:
        raise QueryRefused("--format parquet needs the last statement to be a SELECT")
    out = Path(out).absolute()
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    con = connect(read_copy, plan, writable=[tmp])
    try:
        for st in plan.reads[:-1]:
            con.execute(st)
        query = plan.reads[-1].strip().rstrip(";")
        target = str(tmp).replace("'", "''")
        n = con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet)").fetchone()[0]
        con.close()
        os.replace(tmp, out)
        return n
    finally:
        con.close()
        tmp.unlink(missing_ok=True)


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
