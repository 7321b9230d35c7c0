"""The ``marsad`` command. Subcommands call marsad.pipeline, the same code the DAGs run."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

EXIT_USAGE = 2


def _die(message: str, code: int = EXIT_USAGE) -> int:
    print(f"marsad: {message}".replace("\n", "\n  "), file=sys.stderr)
    return code


def cmd_parse(args) -> int:
    from datetime import datetime, timezone

    from sources.fetch import FetchRequest, fetch_sync
    from sources.parse import FeedError, parse_feed

    target = args.target
    now = datetime.now(timezone.utc)
    content_type = base_url = None
    if target.startswith(("http://", "https://")):
        res = fetch_sync([FetchRequest("cli", target)])[0]
        if res.status != "ok":
            return _die(f"{target}: {res.error or res.status}")
        data, content_type, base_url = res.body, res.headers.get("content-type"), res.final_url
    else:
        try:
            data = Path(target).read_bytes()
        except OSError as exc:
            return _die(f"{target}: {exc.strerror or exc}")
    source = args.source or (Path(target).stem if not target.startswith("http") else "cli")
    try:
        feed = parse_feed(data, source, args.lang, now, content_type, base_url)
    except FeedError as exc:
        return _die(f"{target}: {exc}")
    if feed.bozo:  # ill-formed but readable: say so once, even when no entry is left to carry it
        print(f"marsad: warning: {target}: {' '.join(feed.bozo.split())[:300]}", file=sys.stderr)
    out = sys.stdout
    for a in feed.articles:
        d = a.to_dict()
        if feed.bozo:
            d["feed_warning"] = feed.bozo[:300]
        out.write(json.dumps(d, ensure_ascii=False) + "\n")
    return 0


def _settings(args):
    from marsad.pipeline import Settings

    return Settings.from_env(getattr(args, "db", None))


def cmd_classify(args) -> int:
    from marsad.pipeline import Settings

    clf = Settings.from_env().classifier()
    fh = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                return _die(f"{args.file}:{n}: not JSON: {exc.msg}")
            if not isinstance(item, dict) or "id" not in item:
                return _die(f"{args.file}:{n}: each line needs at least id, title, summary")
            verdicts = clf.classify(item.get("title") or "", item.get("summary") or "")
            sys.stdout.write(json.dumps({"id": item["id"], "indicators": [v.indicator for v in verdicts]}, ensure_ascii=False) + "\n")
    return 0


def cmd_explain(args) -> int:
    from marsad.pipeline import Settings

    settings = Settings.from_env(args.db)
    clf = settings.classifier()
    title, summary = args.text, args.summary or ""
    found = _article_by_id(settings, args.text)
    if found:
        title, summary, source = found
        print(f"article {args.text} ({source}): {title}")
    frames = clf.read_frames(title, summary)
    print("frames:" if frames else "frames: none (no action word in the title or the summary)")
    for f in frames:
        print(f"  {f.describe()}")
    for v in clf.explain(title, summary):
        mark = "MATCH" if v.matched else "-"
        print(f"{mark:6} {v.indicator}")
        if v.hits:
            print("         terms: " + ", ".join(sorted({f'{h.group}={h.text}' for h in v.hits})))
        if v.vetoes:
            print("         excluded by: " + ", ".join(sorted({f'{h.group}={h.text}' for h in v.vetoes})))
        if v.frame_note:
            print(f"         frame predicate: {v.frame_note}")
        if not v.matched and args.verbose:
            for why in v.near_misses:
                print(f"         {why}")
    return 0


def _article_by_id(settings, ref: str):
    """(title, summary, source) of the article whose id or guid is ``ref``, if the warehouse has it."""
    from warehouse import db

    if not settings.warehouse.exists() or len(ref) > 200 or " " in ref.strip():
        return None
    with db.connect(settings.warehouse, read_only=True) as con:
        return con.execute(
            "SELECT title, summary, source_id FROM articles WHERE article_id = ? OR guid = ? LIMIT 1", [ref, ref]
        ).fetchone()


def cmd_eval(args) -> int:
    from marsad.evaluation import evaluate_file, print_report
    from marsad.pipeline import Settings

    try:
        rep = evaluate_file(Settings.from_env().classifier(), Path(args.file), Path(args.labels) if args.labels else None)
    except (ValueError, OSError) as exc:
        return _die(str(exc))
    print_report(rep, sys.stdout, show_misses=not args.no_misses)
    if args.fail_on_false_positive and rep.total.fp:
        print(f"marsad: {rep.total.fp} false positive(s)", file=sys.stderr)
        return 1
    return 0


def cmd_replay(args) -> int:
    from marsad.replay import ReplayError, parse_time, print_summary, replay
    from sources.configfile import parse_duration

    try:
        interval = parse_duration(args.poll_interval)
        start = parse_time(args.start) if args.start else None
        end = parse_time(args.end) if args.end else None
        stats = replay(Path(args.file), Path(args.db), interval, start, end, exhaustive=args.exhaustive)
    except (ReplayError, ValueError, OSError) as exc:
        return _die(str(exc))
    # stdout stays pure JSON lines (the alert stream); the summary goes to stderr.
    print_summary(stats.pop("rules"), sys.stderr)
    print(json.dumps({"replay": stats}), file=sys.stderr)
    return 0


def cmd_dedupe_eval(args) -> int:
    from marsad.dedupe_eval import evaluate_ans, evaluate_fixture
    from marsad.replay import ReplayError
    from sources.configfile import parse_duration

    try:
        out = {"ans": evaluate_ans(Path(args.ans), tuple(args.ans_split or ["test"]))} if args.ans else {}
        for f in args.file:
            out.setdefault("fixtures", []).append(evaluate_fixture(Path(f), parse_duration(args.poll_interval)))
    except (ReplayError, ValueError, OSError, KeyError) as exc:
        return _die(str(exc))
    if not out:
        return _die("dedupe-eval: give a labelled FILE.jsonl and/or --ans DIR")
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


def cmd_run_once(args) -> int:
    from marsad.pipeline import run_once

    print(json.dumps(run_once(_settings(args), _sink_from_env()), indent=2))
    return 0


def _sink_from_env():
    """Slack when MARSAD_SLACK_TOKEN is set (CLI use), else the local sink."""
    from alerts.delivery import LocalSink, SlackSink, slack_client

    token = os.environ.get("MARSAD_SLACK_TOKEN")
    if not token:
        return LocalSink(sys.stderr)
    return SlackSink(slack_client(token, os.environ.get("MARSAD_SLACK_BASE_URL")))


def cmd_deliver(args) -> int:
    from marsad.pipeline import deliver

    print(json.dumps(deliver(_settings(args), _sink_from_env()).as_dict()))
    return 0


def _user() -> str:
    import getpass

    return os.environ.get("MARSAD_USER") or getpass.getuser()


def cmd_silence(args) -> int:
    from alerts.lifecycle import LifecycleError, add_silence, expire_silence, list_silences
    from marsad.pipeline import utcnow
    from sources.configfile import parse_duration
    from warehouse import db

    settings = _settings(args)
    now = utcnow()
    with db.connect(settings.warehouse) as con:
        try:
            if args.silence_command == "add":
                matcher, value = ("indicator", args.indicator) if args.indicator else ("rule", args.rule)
                _check_silence_target(settings, matcher, value)
                sid = add_silence(con, matcher, value, parse_duration(args.duration), args.reason, args.by or _user(), now)
                print(f"silence {sid}: {matcher} {value} until {(now + __import__('datetime').timedelta(seconds=parse_duration(args.duration))).isoformat(timespec='minutes')}")
            elif args.silence_command == "expire":
                expire_silence(con, args.silence_id, now)
                print(f"silence {args.silence_id} expired")
            else:
                rows = list_silences(con, now, active_only=not args.all)
                for sid, m, v, start, end, reason, by in rows:
                    print(f"{sid}  {m}={v}  {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC  by {by}: {reason}")
                if not rows:
                    print("no active silences" if not args.all else "no silences")
        except (LifecycleError, ValueError) as exc:
            return _die(str(exc))
    return 0


def _check_silence_target(settings, matcher: str, value: str) -> None:
    """Refuse a silence of an indicator or rule that does not exist (ops alerts included)."""
    from alerts import ops
    from alerts.lifecycle import check_target

    pack, clf = settings.rule_pack(), settings.classifier()
    feeds = [f.id for f in settings.registry().feeds]
    indicators = set(clf.ids) | {r.indicator for r in pack.rules} | {ops.INDICATOR, ops.CONFIG_INDICATOR}
    rules = {r.id for r in pack.rules} | {f"source-{p}:{f}" for p in ops.SEVERITY for f in feeds}
    check_target(matcher, value, indicators, rules, rule_prefixes=("config:",))


def cmd_ack(args) -> int:
    from alerts.lifecycle import LifecycleError, ack
    from marsad.pipeline import utcnow
    from warehouse import db

    with db.connect(_settings(args).warehouse) as con:
        try:
            ack(con, args.alert_id, args.by or _user(), args.note, utcnow())
        except LifecycleError as exc:
            return _die(str(exc))
    print(f"alert {args.alert_id} acknowledged: no more repeats; new evidence and the resolution are still posted; "
          "its Slack message shows who acknowledged it after the next delivery run")
    return 0


def cmd_alerts(args) -> int:
    from alerts.lifecycle import list_alerts
    from warehouse import db

    settings = _settings(args)
    with db.connect(settings.warehouse, read_only=True) as con:
        rows = list_alerts(con, firing_only=args.firing, limit=args.limit)
        unarmed = _not_armed(con, settings)
    if rows:
        print(f"{'alert':<20}  {'state':<8} {'severity':<8} {'rule':<28} {'started (UTC)':<16}  summary")
    for aid, rule, ind, sev, state, started, resolved, acked_by, summary in rows:
        extra = f" acked by {acked_by}" if acked_by else ""
        print(f"{aid}  {state:<8} {sev:<8} {rule:<28} {started:%Y-%m-%d %H:%M}{extra}  {summary}")
    if not rows:
        print("no alerts")
    for line in unarmed:  # rules that could not fire now: an empty list is not "all quiet"
        print(line)
    return 0


def _not_armed(con, settings) -> list[str]:
    """One line per rule that cannot fire now (``alerts.armed``), for ``marsad alerts``."""
    from alerts.armed import not_armed, rule_status
    from marsad.pipeline import utcnow
    from sources.configfile import ConfigError

    try:
        pack = settings.rule_pack()
    except (ConfigError, OSError) as exc:
        return [f"rules: not read ({str(exc).splitlines()[0]}): see `marsad config check`"]
    return [f"{s['state'].upper():<10} {s['rule']:<28} {s['detail']}" for s in not_armed(rule_status(con, pack, utcnow()))]


def cmd_rules_status(args) -> int:
    from alerts.armed import format_table, rule_status
    from marsad.pipeline import utcnow
    from warehouse import db

    settings = _settings(args)
    pack = settings.rule_pack()
    if not settings.warehouse.exists():
        return _die(f"{settings.warehouse}: no warehouse yet (run `marsad run-once` or `marsad backfill` first)")
    with db.connect(settings.warehouse, read_only=True) as con:
        statuses = rule_status(con, pack, utcnow())
    if args.json:
        for s in statuses:
            print(json.dumps(s, ensure_ascii=False))
    else:
        print(format_table(statuses))
    return 0


def cmd_feedback(args) -> int:
    from alerts import feedback
    from marsad.pipeline import utcnow
    from warehouse import db

    settings = _settings(args)
    read_only = args.feedback_command in ("list", "export")
    with db.connect(settings.warehouse, read_only=read_only) as con:
        try:
            if args.feedback_command == "flag":
                done = feedback.flag_not_event(con, args.event_id, None, args.by or _user(), utcnow(), args.note)
                print(f"event {args.event_id} flagged not an event: rules no longer count it from their next evaluation"
                      if done else f"event {args.event_id} was already flagged: nothing changed")
            elif args.feedback_command == "undo":
                if not feedback.undo(con, args.event_id, args.by or _user(), utcnow()):
                    return _die(f"event {args.event_id} has no active flag (see `marsad feedback list --all`)", 1)
                print(f"event {args.event_id} counts again from the next evaluation; its alert's Slack message shows it after the next delivery run")
            elif args.feedback_command == "export":
                n = feedback.export_jsonl(con, args.file)
                print(f"{n} flagged report(s) written to {args.file}; score them with `marsad eval {args.file}`")
            else:
                rows = feedback.list_feedback(con, include_undone=args.all)
                for r in rows:
                    undone = f"  undone {r['undone_at']:%Y-%m-%d %H:%M} by {r['undone_by']}" if r["undone_at"] else ""
                    note = f"  ({r['note']})" if r["note"] else ""
                    print(f"{r['event_id']}  {r['indicator']:<26} {r['flagged_at']:%Y-%m-%d %H:%M} by {r['flagged_by']}{undone}"
                          f"  {r['title'] or '(event gone)'}{note}")
                if not rows:
                    print("no flagged events" if not args.all else "no feedback")
        except feedback.FeedbackError as exc:
            return _die(str(exc))
    return 0


def cmd_backfill(args) -> int:
    from marsad.replay import ReplayError, backfill
    from sources.configfile import parse_duration

    try:
        stats = backfill(Path(args.file), _settings(args), parse_duration(args.poll_interval))
    except (ReplayError, ValueError, OSError) as exc:
        return _die(str(exc))
    print(json.dumps({"backfill": stats}))
    return 0


def cmd_digest(args) -> int:
    from marsad.pipeline import deliver, queue_digest

    settings = _settings(args)
    d = queue_digest(settings)
    print(d["summary"] if d["status"] == "queued" else f"marsad: {d['summary']}")
    report = deliver(settings, _sink_from_env()).as_dict()
    if d["status"] == "queued" or any(report.values()):
        print(json.dumps(report))
    return 0


def cmd_config_check(args) -> int:
    from marsad.configcheck import check

    report = check()
    for line in report.ok:
        print(line)
    for p in report.errors:
        print(p, file=sys.stderr)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)", file=sys.stderr)
    return 1 if report.errors else 0


def cmd_config_env(args) -> int:
    """The settings as the MARSAD_* variables Airflow's components get (``airflow_env``)."""
    import shlex

    from marsad.settings import load

    for var, value in load().to_env().items():
        print(f"{var}={shlex.quote(value)}")
    return 0


def cmd_slack_test(args) -> int:
    """One test message through the Slack setup Marsad uses; says what to fix when it fails."""
    from marsad.settings import airflow_home, current
    from marsad.slack_check import SetupError, check, format_report, resolve

    loaded = current("ops.slack_conn_id", "ops.channel")  # what a running make run resolved, when there is one
    try:
        setup = resolve(loaded.get("ops.slack_conn_id"), airflow_home=airflow_home())
    except SetupError as exc:
        return _die(str(exc), 1)
    report = check(setup, args.channel or loaded.get("ops.channel"))
    print(format_report(report))
    return 0 if report.ok else 1


def cmd_config_show(args) -> int:
    """Every setting in effect for this command, and where each value came from."""
    from marsad.settings import ENV, applies, load, resolved_snapshot

    try:
        loaded = load(read_file=True)
    except Exception as exc:  # ConfigError: show what is valid, then the problems
        if not hasattr(exc, "partial"):
            raise
        loaded = exc.partial
        print(f"marsad: the settings have errors (`marsad config check`):\n{exc}", file=sys.stderr)
    snap = resolved_snapshot()
    rows = [{"setting": name, "variable": var, "value": loaded.text(name), "from": loaded.origin(name), "applies": applies(name)}
            for name, var in ENV.items()]
    if args.json:
        print(json.dumps({"settings_file": str(loaded.file), "make_run": str(snap[0]) if snap else None, "settings": rows},
                         ensure_ascii=False, indent=2))
        return 0
    print(f"settings file: {loaded.file}")
    print(f"make run: {snap[0]} (pid {snap[1].get('pid')}, since {snap[1].get('at')}): its values are in effect where a row says so"
          if snap else "make run: none running (values from variables, the settings file and defaults)")
    width = max(len(r["setting"]) for r in rows)
    vwidth = min(48, max(len(r["value"]) for r in rows))
    print(f"{'setting':<{width}}  {'value':<{vwidth}}  from  [applies]")
    for r in rows:
        print(f"{r['setting']:<{width}}  {r['value'] or '(empty)':<{vwidth}}  {r['from']}  [{r['applies']}]")
    return 0


def cmd_sources_status(args) -> int:
    from marsad.pipeline import sync_sources, utcnow
    from sources.health import format_table, source_health
    from warehouse import db, sources as source_rows

    s = _settings(args)
    now = utcnow()
    registry = s.registry()
    with db.connect(s.warehouse) as con:
        with db.transaction(con):
            sync_sources(con, registry, now)  # feeds added since the last poll show up as new
        rows = source_health(con, now, registry.health)
        removed = source_rows.removed_count(con)
    print(format_table(rows, now, removed))
    return 0


def cmd_sources_import(args) -> int:
    from sources.opml import OpmlError, import_opml

    feeds = _settings(args).feeds
    try:
        report = import_opml(args.file, feeds, args.lang)
    except OpmlError as exc:
        return _die(str(exc))
    for line in report.skipped:
        print(f"skipped {line}")
    print(f"added {len(report.added)} feed(s) to {feeds}" + (": " + ", ".join(report.added) if report.added else ""))
    return 0


def cmd_sources_export(args) -> int:
    from sources.opml import export_opml

    text = export_opml(_settings(args).registry(), include_disabled=args.all)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_judgements(args) -> int:
    """Key judgements (alerts/judgements.py): where each stands, and the track record."""
    from alerts.judgements import format_report, format_status, load_assessments, report, status_rows
    from marsad.pipeline import utcnow
    from warehouse import db

    settings = _settings(args)
    # Indicator ids from the file names: compiling the pack is not needed to show a status.
    ids = sorted(p.stem for p in settings.indicators.glob("*.yaml"))
    assessments = load_assessments(settings.assessments, ids)  # ConfigError: file:line errors, exit 2
    if not settings.warehouse.exists():
        return _die(f"{settings.warehouse}: no warehouse yet (run an evaluation first: marsad run-once)", 1)
    with db.connect(settings.warehouse, read_only=True) as con:
        if not con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'judgement_status_v'").fetchone()[0]:
            return _die(f"{settings.warehouse}: judgements have not been evaluated yet (the next evaluation migrates it)", 1)
        if args.judgements_command == "status":
            rows = status_rows(con, assessments, utcnow())
            print(json.dumps(rows, ensure_ascii=False, indent=2) if args.json else format_status(rows))
        else:
            rep = report(con)
            print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="marsad", description="Marsad: OSINT feed monitoring and alerting")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("parse", help="parse a feed file or URL; one JSON line per normalised article")
    s.add_argument("target", metavar="FILE_OR_URL")
    s.add_argument("--source", help="source id to record (default: file name)")
    s.add_argument("--lang", choices=["ar", "en"], help="language when the feed does not say")
    s.set_defaults(fn=cmd_parse)

    s = sub.add_parser("classify", help="classify JSON lines {id, title, summary} into indicators")
    s.add_argument("file", metavar="FILE.jsonl", help="'-' for standard input")
    s.set_defaults(fn=cmd_classify)

    s = sub.add_parser("eval", help="precision, recall and F1 per indicator and language on labelled items")
    s.add_argument("file", metavar="FILE.jsonl", help="items {id, title, summary, labels[, ok, lang]}")
    s.add_argument("--labels", metavar="LABELS.jsonl", help="gold labels in a separate file, joined by id")
    s.add_argument("--no-misses", action="store_true", help="do not list the misses")
    s.add_argument("--fail-on-false-positive", action="store_true",
                   help="exit 1 on any false positive (for checking a rule change against `marsad feedback export`)")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("explain", help="show which terms and exclusions decide each indicator for a text or an article id")
    s.add_argument("text", help="a headline, or an article id / guid in the warehouse")
    s.add_argument("--db", help="warehouse to look article ids up in")
    s.add_argument("--summary")
    s.add_argument("-v", "--verbose", action="store_true", help="also say why non-matching indicators failed")
    s.set_defaults(fn=cmd_explain)

    s = sub.add_parser("replay", help="run the pipeline over captured items in simulated time; prints the alert stream")
    s.add_argument("file", metavar="FILE.jsonl|DIR", help="JSON lines, or a directory of captured feed files")
    s.add_argument("--db", required=True, help="DuckDB file for the simulation (created; never a live warehouse)")
    s.add_argument("--poll-interval", default="15m")
    s.add_argument("--from", dest="start", help="ISO time: replay items published from then")
    s.add_argument("--to", dest="end", help="ISO time: replay items (and polls) until then")
    s.add_argument("--exhaustive", action="store_true", help="evaluate at every poll, even when nothing can change")
    s.set_defaults(fn=cmd_replay)

    s = sub.add_parser("dedupe-eval", help="pairwise precision/recall of event assignment on labelled items (and near-duplicates on ANS)")
    s.add_argument("file", metavar="FILE.jsonl", nargs="*", help="replay-format items with an 'event' label")
    s.add_argument("--ans", metavar="DIR", help="ANS stance corpus directory (stance-<split>.csv)")
    s.add_argument("--ans-split", action="append", default=None, help="ANS split(s) to score (default: test)")
    s.add_argument("--poll-interval", default="15m")
    s.set_defaults(fn=cmd_dedupe_eval)

    s = sub.add_parser("run-once", help="one full cycle now: poll due feeds, load, evaluate, deliver")
    s.add_argument("--db", help="warehouse file (default: paths.warehouse in marsad/settings.yaml, $MARSAD_WAREHOUSE)")
    s.set_defaults(fn=cmd_run_once)

    s = sub.add_parser("deliver", help="send queued notifications (Slack if MARSAD_SLACK_TOKEN is set)")
    s.add_argument("--db")
    s.set_defaults(fn=cmd_deliver)

    s = sub.add_parser("silence", help="hold back alerts of an indicator or rule for a while (with a reason)")
    s.add_argument("--db")
    ss = s.add_subparsers(dest="silence_command", required=True)
    a = ss.add_parser("add")
    who = a.add_mutually_exclusive_group(required=True)
    who.add_argument("--indicator")
    who.add_argument("--rule")
    a.add_argument("--for", dest="duration", required=True, help="how long, e.g. 6h, 2d")
    a.add_argument("--reason", required=True)
    a.add_argument("--by", help="who (default $MARSAD_USER or the login name)")
    a = ss.add_parser("list")
    a.add_argument("--all", action="store_true", help="include expired silences")
    a = ss.add_parser("expire")
    a.add_argument("silence_id")
    s.set_defaults(fn=cmd_silence)

    s = sub.add_parser("ack", help="acknowledge a firing alert (stops its repeats)")
    s.add_argument("alert_id")
    s.add_argument("--by")
    s.add_argument("--note")
    s.add_argument("--db")
    s.set_defaults(fn=cmd_ack)

    s = sub.add_parser("alerts", help="list alerts")
    s.add_argument("--firing", action="store_true")
    s.add_argument("--limit", type=int, default=50)
    s.add_argument("--db")
    s.set_defaults(fn=cmd_alerts)

    s = sub.add_parser("rules", help="the rule pack: whether each rule can fire now")
    rs = s.add_subparsers(dest="rules_command", required=True)
    c = rs.add_parser("status", help="per rule: armed, not armed (and when it will be), firing, silenced or disabled, and why")
    c.add_argument("--db")
    c.add_argument("--json", action="store_true", help="one JSON object per rule")
    c.set_defaults(fn=cmd_rules_status)

    s = sub.add_parser("feedback", help="events flagged 'not an event' (Slack's button, or here): list, flag, undo, export")
    s.add_argument("--db")
    fs = s.add_subparsers(dest="feedback_command", required=True)
    c = fs.add_parser("list", help="flagged events, newest first")
    c.add_argument("--all", action="store_true", help="include flags that were undone")
    c = fs.add_parser("flag", help="flag an event as not an event of its indicator (rules stop counting it)")
    c.add_argument("event_id")
    c.add_argument("--note")
    c.add_argument("--by", help="who (default $MARSAD_USER or the login name)")
    c = fs.add_parser("undo", help="withdraw a flag: the event counts again")
    c.add_argument("event_id")
    c.add_argument("--by", help="who (default $MARSAD_USER or the login name)")
    c = fs.add_parser("export", help="the flagged reports as labelled JSON lines for `marsad eval` (label: not <indicator>)")
    c.add_argument("file", metavar="FILE.jsonl")
    for c in fs.choices.values():
        c.add_argument("--db", default=argparse.SUPPRESS)
    s.set_defaults(fn=cmd_feedback)

    s = sub.add_parser("backfill", help="load past items into the warehouse (history for the rules); nothing is sent")
    s.add_argument("file", metavar="FILE.jsonl|DIR", help="replay-format JSON lines, or a directory of captured feed files")
    s.add_argument("--db", help="warehouse file (default: paths.warehouse in marsad/settings.yaml, $MARSAD_WAREHOUSE)")
    s.add_argument("--poll-interval", default="15m", help="simulated polling interval (default 15m)")
    s.set_defaults(fn=cmd_backfill)

    s = sub.add_parser("digest", help="queue and send the daily digest now")
    s.add_argument("--db")
    s.set_defaults(fn=cmd_digest)

    s = sub.add_parser("config", help="configuration")
    cs = s.add_subparsers(dest="config_command", required=True)
    c = cs.add_parser("check", help="validate settings, variables, feeds, gazetteers, indicators and rules; errors name file, line and field")
    c.set_defaults(fn=cmd_config_check)
    c = cs.add_parser("env", help="print the settings as the MARSAD_* variables Airflow gets (variable > settings.yaml > default)")
    c.set_defaults(fn=cmd_config_env)
    c = cs.add_parser("show", help="print every setting in effect and where it came from (variable, file:line, make run, default)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_config_show)

    s = sub.add_parser("slack", help="Slack: test the setup; receive button presses (listen: Socket Mode; serve: HTTP request URL)")
    ss = s.add_subparsers(dest="slack_command", required=True)
    from marsad.slack_listener import add_commands as add_slack_listener_commands

    add_slack_listener_commands(ss)
    c = ss.add_parser("test", help="send one test message through the configured Slack setup; say exactly what fails")
    c.add_argument("--channel", help="channel to post to (default: ops.channel in marsad/settings.yaml)")
    c.set_defaults(fn=cmd_slack_test)

    s = sub.add_parser("sources", help="feed sources: health, OPML import and export")
    ss = s.add_subparsers(dest="sources_command", required=True)
    c = ss.add_parser("status", help="per-source health table; unhealthy sources are marked !!")
    c.add_argument("--db", help="warehouse file (default: paths.warehouse in marsad/settings.yaml, $MARSAD_WAREHOUSE)")
    c.set_defaults(fn=cmd_sources_status)
    c = ss.add_parser("import", help="append the feeds of an OPML file to feeds.yaml (validated; comments kept)")
    c.add_argument("file", metavar="FILE.opml")
    c.add_argument("--lang", choices=["ar", "en"], help="language of feeds whose outline does not say")
    c.set_defaults(fn=cmd_sources_import)
    c = ss.add_parser("export", help="write the registry as OPML 2.0")
    c.add_argument("-o", "--output", help="file to write (default: standard output)")
    c.add_argument("--all", action="store_true", help="include disabled feeds")
    c.set_defaults(fn=cmd_sources_export)

    s = sub.add_parser("judgements", help="key judgements of the assessments: status, track record")
    js = s.add_subparsers(dest="judgements_command", required=True)
    for name, what in (("status", "each judgement: holding, under pressure, contradicted or expired; window left, last evidence"),
                       ("report", "track record of expired judgements per likelihood band: how many held, Brier score")):
        c = js.add_parser(name, help=what)
        c.add_argument("--db", help="warehouse file (default: paths.warehouse in marsad/settings.yaml, $MARSAD_WAREHOUSE)")
        c.add_argument("--json", action="store_true", help="the same as JSON")
        c.set_defaults(fn=cmd_judgements)

    from marsad.warehouse_cli import add_commands

    add_commands(sub)  # search, query, publish, prune, export

    # Slack button presses: Socket Mode listener and HTTP request URL (marsad/slack_listener.py)
    return p


def _note_make_run() -> None:
    """Say once, on stderr, when the settings of a running make run are in effect."""
    from marsad.settings import ENV, resolved_snapshot

    snap = resolved_snapshot()
    if snap is not None and not all(var in os.environ for var in ENV.values()):
        print(f"marsad: using the settings the running make run resolved ({snap[0]}); `marsad config show` lists them",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("MARSAD_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    _note_make_run()
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a clean one-line error, never a traceback, for the CLI contract
        from sources.configfile import ConfigError

        if isinstance(exc, ConfigError):
            return _die(f"configuration error:\n{exc}")
        if os.environ.get("MARSAD_DEBUG"):
            raise
        return _die(f"{type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    sys.exit(main())
