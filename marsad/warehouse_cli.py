"""``marsad`` subcommands for analysts and admins of the warehouse:
search, query, publish, prune, export."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

EXIT_USAGE = 2


def _die(message: str, code: int = EXIT_USAGE) -> int:
    print(f"marsad: {message}", file=sys.stderr)
    return code


def _settings(args):
    """--db, else marsad/settings.yaml paths.warehouse ($MARSAD_WAREHOUSE), with its read copy."""
    from marsad.pipeline import Settings

    return Settings.from_env(getattr(args, "db", None))


def _warehouse(args) -> Path:
    return _settings(args).warehouse


def _open_read_copy(args):
    from warehouse.publish import open_read_copy

    return open_read_copy(_settings(args).read_copy)


def cmd_search(args) -> int:
    import duckdb

    from sources.configfile import parse_duration
    from warehouse.search import search

    try:
        since = datetime.now(timezone.utc) - timedelta(seconds=parse_duration(args.since)) if args.since else None
        con = _open_read_copy(args)
    except (ValueError, FileNotFoundError) as exc:
        return _die(str(exc))
    try:
        hits = search(con, args.query, since=since, lang=args.lang, limit=args.limit)
    except duckdb.Error as exc:
        return _die(str(exc).splitlines()[0], 1)
    finally:
        con.close()
    if hits and not args.json:
        print("published (UTC)    source  lang  title  url")
    for h in hits:
        if args.json:
            print(json.dumps(h.as_dict(), ensure_ascii=False))
        else:
            print(f"{h.published_at:%Y-%m-%d %H:%M}Z  {h.source_id}  {h.lang}  {h.title}  {h.url or ''}")
    if not hits and not args.json:
        print("no matches", file=sys.stderr)
    return 0


def cmd_query(args) -> int:
    import duckdb

    from warehouse.query import QueryRefused, check, connect, describe_error, run, to_parquet, write

    sql = sys.stdin.read() if args.sql == "-" else args.sql
    if args.format == "parquet" and not args.out:
        return _die("--format parquet needs --out FILE")
    read_copy = _settings(args).read_copy
    try:
        plan = check(sql)  # the second fence: refused before anything is opened
        if args.format == "parquet":
            n = to_parquet(read_copy, plan, args.out)
            print(f"{n} rows -> {args.out}", file=sys.stderr)
            return 0
        con = connect(read_copy, plan)  # the first: no file or network access, settings locked
    except QueryRefused as exc:
        return _die(f"refused: {exc}")
    except FileNotFoundError as exc:
        return _die(str(exc))
    except duckdb.PermissionException as exc:
        return _die(f"refused: no file or network access: {str(exc).splitlines()[0]}")
    except duckdb.Error as exc:
        return _die(str(exc).splitlines()[0])
    try:
        columns, rows = run(con, plan)
        write(columns, rows, args.format, sys.stdout)
    except duckdb.PermissionException as exc:
        return _die(f"refused: no file or network access: {str(exc).splitlines()[0]}")
    except duckdb.Error as exc:
        return _die(describe_error(con, plan, exc))
    finally:
        con.close()
    return 0


def cmd_publish(args) -> int:
    from warehouse.publish import publish

    s = _settings(args)
    print(json.dumps(publish(s.warehouse, s.read_copy, full=args.full).as_dict()))
    return 0


def cmd_prune(args) -> int:
    from sources.configfile import parse_duration
    from warehouse import db
    from warehouse.retention import prune_fetch_log

    try:
        keep = parse_duration(args.keep) if args.keep else _settings(args).fetch_log_retention
    except ValueError as exc:
        return _die(str(exc))
    with db.connect(_warehouse(args)) as con, db.transaction(con):
        n = prune_fetch_log(con, datetime.now(timezone.utc), keep)
    print(json.dumps({"fetch_log_deleted": n}))
    return 0


def cmd_export(args) -> int:
    from warehouse import db
    from warehouse.retention import export

    wh = _warehouse(args)
    if not wh.exists():
        return _die(f"{wh}: no warehouse")
    try:
        with db.connect(wh, read_only=True) as con:
            files = export(con, args.dir)
    except FileExistsError as exc:
        return _die(str(exc))
    print(json.dumps({"dir": str(args.dir), "files": len(files)}))
    return 0


def add_commands(sub) -> None:
    db_help = "warehouse file (default: paths.warehouse in marsad/settings.yaml, $MARSAD_WAREHOUSE); its read copy is used"

    s = sub.add_parser("search", help="full-text search (Arabic and English) over the published read copy; ranked hits")
    s.add_argument("query")
    s.add_argument("--since", help="only articles published in this past duration, e.g. 30d, 12h")
    s.add_argument("--lang", choices=["ar", "en"])
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true", help="one JSON object per hit")
    s.add_argument("--db", help=db_help)
    s.set_defaults(fn=cmd_search)

    s = sub.add_parser("query", help="read-only SQL against the published read copy")
    s.add_argument("sql", help="SQL text, or '-' for standard input")
    s.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    s.add_argument("--out", help="output file (required for parquet)")
    s.add_argument("--db", help=db_help)
    s.set_defaults(fn=cmd_query)

    s = sub.add_parser("publish", help="publish the analysts' read copy now (the pipeline does it after load and evaluate)")
    s.add_argument("--db", help="warehouse file")
    s.add_argument("--full", action="store_true", help="copy the whole warehouse and rebuild the search index (otherwise only what changed)")
    s.set_defaults(fn=cmd_publish)

    s = sub.add_parser("prune", help="delete fetch_log rows older than warehouse.fetch_log_retention in marsad/settings.yaml (30d)")
    s.add_argument("--keep", help="retention for this run, e.g. 14d")
    s.add_argument("--db", help="warehouse file")
    s.set_defaults(fn=cmd_prune)

    s = sub.add_parser("export", help="export every table as Parquet (EXPORT DATABASE); restore with IMPORT DATABASE")
    s.add_argument("dir", help="new or empty directory")
    s.add_argument("--db", help="warehouse file")
    s.set_defaults(fn=cmd_export)
