"""``marsad replay``: run the pipeline over captured items in simulated time.

Polls happen every ``poll_interval`` on the wall-clock grid (like a cron schedule); an
item becomes visible at the first poll at or after its ``published`` time. Each poll
stages what became visible, then runs the DAGs' own ``load``, ``evaluate`` and
``deliver`` with ``now`` set to the poll time.

A rule's verdict only changes when events appear or when a time boundary passes (an
event leaving a window, a repeat falling due, enough history accumulating), so polls
with neither are skipped unless ``exhaustive`` is set; a test checks both give the
same alert stream.

``backfill`` (``marsad backfill``) polls past items the same way into the live warehouse,
so that a new install starts with history; what it would have notified is recorded as
``backfilled`` and never sent.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

from alerts import judgements
from alerts.delivery import JsonLinesSink
from marsad import pipeline
from warehouse import sources as source_rows
from sources.parse import Article, make_article
from warehouse import db

REQUIRED = ("id", "source", "published", "title")


class ReplayError(ValueError):
    pass


@dataclass
class Item:
    id: str
    source: str
    lang: str | None
    published: datetime
    title: str
    summary: str
    url: str | None


FEED_SUFFIXES = {".xml", ".rss", ".atom", ".rdf", ".feed"}


def read_feed_dir(directory: Path) -> list[Item]:
    """Items from a directory of captured feed files; each file's name (stem) is its source.

    Entries without a usable date cannot be placed in time and are left out (counted on stderr).
    """
    from sources.parse import FeedError, parse_feed

    items: list[Item] = []
    skipped = 0
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in FEED_SUFFIXES)
    if not files:
        raise ReplayError(f"{directory}: no feed files ({', '.join(sorted(FEED_SUFFIXES))})")
    for path in files:
        source = path.stem.split(".")[0] or path.stem
        try:
            feed = parse_feed(path.read_bytes(), source)
        except FeedError as exc:
            print(f"marsad: {path}: {exc} (skipped)", file=sys.stderr)
            continue
        for a in feed.articles:
            if a.published_flag:
                skipped += 1
                continue
            items.append(Item(a.guid or a.article_id, source, a.lang, parse_time(a.published_at), a.title, a.summary, a.url))
    if skipped:
        print(f"marsad: {skipped} entries without a usable date left out", file=sys.stderr)
    return items


def parse_time(value: str) -> datetime:
    dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def read_items(path: Path) -> list[Item]:
    items = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReplayError(f"{path}:{n}: not JSON: {exc.msg}") from None
            missing = [k for k in REQUIRED if not obj.get(k)]
            if missing:
                raise ReplayError(f"{path}:{n}: missing {', '.join(missing)}")
            try:
                published = parse_time(str(obj["published"]))
            except ValueError:
                raise ReplayError(f"{path}:{n}: published: not an ISO 8601 time: {obj['published']!r}") from None
            items.append(
                Item(str(obj["id"]), str(obj["source"]), obj.get("lang"), published, obj["title"], obj.get("summary") or "", obj.get("url"))
            )
    return items


def _grid(t: datetime, step: int) -> datetime:
    """The first poll at or after ``t``."""
    ts = math.ceil(t.timestamp() / step) * step
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def prepare_db(path: Path) -> None:
    """Replays write their own warehouse; never clobber a real one."""
    if path.exists() and path.stat().st_size == 0:
        path.unlink()
    if path.exists():
        with db.connect(path) as con:
            purpose = con.execute("SELECT value FROM marsad_meta WHERE key = 'purpose'").fetchone()
            articles = con.execute("SELECT count(*) FROM articles").fetchone()[0]
        if articles and (purpose is None or purpose[0] != "replay"):
            raise ReplayError(f"{path} is a warehouse with data, not a replay database: give replay a new --db path")
        path.unlink()
        Path(str(path) + ".wal").unlink(missing_ok=True)
    with db.connect(path) as con:
        con.execute("INSERT INTO marsad_meta VALUES ('purpose', 'replay')")


def _boundaries(con, pack, horizon_end: datetime, assessments: list = ()) -> list[datetime]:
    """Times at which a verdict can change without a new event (see module docstring); the
    key judgements' conditions and window ends (alerts.judgements) too."""
    out: list[datetime] = judgements.window_ends(assessments, horizon_end)
    watched = con.execute("SELECT min(started_at) FROM fetch_log").fetchone()[0]
    for rule in [*pack.active(), *judgements.condition_rules(assessments)]:
        w = timedelta(seconds=rule.window_s)
        extra = [timedelta(0)]
        if rule.kind == "spike":
            extra.append(timedelta(seconds=rule.baseline))
        for (t,) in con.execute("SELECT first_report_at FROM events WHERE indicator = ?", [rule.indicator]).fetchall():
            out.extend(t + w + e for e in extra)
        if watched is not None:
            hist = w + (timedelta(seconds=rule.baseline) if rule.kind == "spike" else timedelta(0))
            out.append(watched + hist)
    for (t, rule_id) in con.execute("SELECT last_notified_at, rule_id FROM alerts WHERE state = 'firing'").fetchall():
        rule = next((r for r in pack.rules if r.id == rule_id), None)
        if rule is not None:
            out.append(t + timedelta(seconds=rule.repeat))
    return [t for t in out if t <= horizon_end]


def replay(
    items_path: Path,
    db_path: Path,
    poll_interval: int = 900,
    start: datetime | None = None,
    end: datetime | None = None,
    out: IO[str] = sys.stdout,
    exhaustive: bool = False,
) -> dict:
    items = read_feed_dir(items_path) if Path(items_path).is_dir() else read_items(items_path)
    if start:
        items = [i for i in items if i.published >= start]
    if end:
        items = [i for i in items if i.published <= end]
    if not items:
        raise ReplayError(f"{items_path}: no items to replay" + (" in that range" if start or end else ""))
    items.sort(key=lambda i: (i.published, i.id))
    db_path = Path(db_path)
    prepare_db(db_path)
    settings = pipeline.Settings.from_env(db_path)
    settings.staging = db_path.parent / f".{db_path.name}.staging"
    settings.read_copy = None  # a simulation publishes no analysts' copy
    classifier = settings.classifier()
    pack = settings.rule_pack()
    assessments = judgements.load_assessments(settings.assessments, settings.classifier().ids)
    sink = JsonLinesSink(out)

    first = _grid(start or items[0].published, poll_interval)
    last = _grid(end or items[-1].published, poll_interval)
    by_poll: dict[datetime, list[Item]] = {}
    for it in items:
        by_poll.setdefault(_grid(it.published, poll_interval), []).append(it)
    # One connection held for the whole replay: the steps' own opens (four or five a poll that
    # has news, as in a deployment) then join this process's open database instead of starting
    # DuckDB afresh and checkpointing at each close (~30 ms of CPU each, 562 opens in a year's
    # replay). The steps run the same SQL on the same data; only a read-only open (the summary
    # below) needs the keeper closed first.
    keeper = db.open_db(db_path)
    try:
        sources = sorted({(i.source, i.lang) for i in items})
        with db.connect(db_path) as con:
            source_rows.upsert(
                con,
                [dict(source_id=s, name=s, lang=lang or "en", url=f"replay:{s}", interval_s=poll_interval, reliability="F", enabled=True, updated_at=first) for s, lang in sources],
            )

        stats = {"polls": 0, "evaluations": 0, "items": len(items), "notifications": 0}
        step = timedelta(seconds=poll_interval)
        t = first
        pending: list[datetime] = []
        prev_t = first - step
        source_ids = sorted({s for s, _ in sources})
        while t <= last:
            stats["polls"] += 1
            visible = by_poll.get(t, [])
            due_boundary = any(prev_t < b <= t for b in pending)
            if visible or t == first:
                # The first poll records every source as watched (resumption needs that history).
                for source_id in source_ids if t == first else sorted({i.source for i in visible}):
                    arts = [_article(i, t) for i in visible if i.source == source_id]
                    meta = dict(source_id=source_id, url=f"replay:{source_id}", status="ok", http_status=200,
                                started_at=t.isoformat(), finished_at=t.isoformat())
                    pipeline.stage(settings, meta, arts, classifier)
                pipeline.load(settings, t, classifier)
            if visible or due_boundary or exhaustive:
                stats["evaluations"] += 1
                stats["notifications"] += len(pipeline.evaluate(settings, t, pack))
                pipeline.deliver(settings, sink)
                with db.connect(db_path) as con:
                    pending = _boundaries(con, pack, last, assessments)
            prev_t = t
            t += step
    finally:
        keeper.close()
    with db.connect(db_path, read_only=True) as con:
        stats["rules"] = summary(con)
    return stats


def summary(con) -> list[dict]:
    """Per rule: notifications by state, first and last firing, events counted."""
    rows = con.execute(
        """SELECT a.rule_id, a.indicator, a.kind,
                  count(DISTINCT a.alert_id) AS alerts,
                  count(n.notification_id) AS notifications,
                  min(a.started_at) AS first_firing, max(a.started_at) AS last_firing,
                  (SELECT count(DISTINCT ae.event_id) FROM alert_events ae JOIN alerts x USING (alert_id) WHERE x.rule_id = a.rule_id) AS events
           FROM alerts a LEFT JOIN notifications n USING (alert_id)
           GROUP BY ALL ORDER BY first_firing"""
    ).fetchall()
    keys = ("rule", "indicator", "kind", "alerts", "notifications", "first_firing", "last_firing", "events")
    return [dict(zip(keys, r)) for r in rows]


def print_summary(rules: list[dict], out: IO[str]) -> None:
    out.write(f"\n{'rule':<30} {'kind':<10} {'alerts':>6} {'notes':>5} {'events':>6}  {'first firing':<20} {'last firing':<20}\n")
    for r in rules:
        first = r["first_firing"].strftime("%Y-%m-%d %H:%M") if r["first_firing"] else "-"
        last = r["last_firing"].strftime("%Y-%m-%d %H:%M") if r["last_firing"] else "-"
        out.write(f"{r['rule']:<30} {r['kind']:<10} {r['alerts']:>6} {r['notifications']:>5} {r['events']:>6}  {first:<20} {last:<20}\n")
    if not rules:
        out.write("(no alerts)\n")


def _article(item: Item, polled_at: datetime) -> Article:
    return make_article(item.source, item.lang, item.title, item.summary, item.url, item.id, item.published, None, polled_at)


# ----------------------------------------------------------------------------- backfill

BACKFILLED = "backfilled"  # outbox status of notifications a backfill created: never delivered


def backfill(items_path: Path, settings: "pipeline.Settings", poll_interval: int = 900, now: datetime | None = None) -> dict:
    """Load past items into a live warehouse, so that a new install starts with history.

    The items (the replay format, or a directory of captured feed files) go through the
    pipeline's own ``stage`` and ``load`` in simulated time, polled as ``replay`` polls them,
    and the rules are evaluated (``alerts.evaluate.evaluate``, as ``pipeline.evaluate`` does)
    at each poll, at each time boundary, and once at ``now``: the alert history is the one
    the pipeline would have written. What that queues is recorded in the outbox with the
    status ``backfilled``, which delivery never sends: nobody is paged about the past.
    Source health is not judged in simulated time, and the feeds' polling state
    (``source_state``: validators, next poll, last success) is left as the poller had it.

    Idempotent: items already in the warehouse are skipped (a second run adds nothing), and
    rules are evaluated only after the warehouse's last evaluation: the past of an alert
    history is not rewritten.
    """
    import dataclasses

    from alerts.evaluate import evaluate as evaluate_rules
    from sources.registry import load_registry

    now = now or datetime.now(timezone.utc)
    items = read_feed_dir(items_path) if Path(items_path).is_dir() else read_items(items_path)
    future = [i for i in items if i.published > now]
    items = sorted((i for i in items if i.published <= now), key=lambda i: (i.published, i.id))
    if not items:
        raise ReplayError(f"{items_path}: no past items to backfill" + (f" ({len(future)} in the future)" if future else ""))
    # A staging directory of its own: the live fetch tasks' staged files are not ours to load.
    settings = dataclasses.replace(settings, staging=settings.warehouse.parent / f".{settings.warehouse.name}.backfill")
    classifier = settings.classifier()
    pack = settings.rule_pack()
    polls: dict[datetime, list] = {}
    for it in items:
        t = min(_grid(it.published, poll_interval), now)
        polls.setdefault(t, []).append(_article(it, t))
    stats = {"items": len(items), "future_skipped": len(future), "known": 0, "new_articles": 0, "polls": 0,
             "evaluations": 0, "backfilled_notifications": 0}
    with db.connect(settings.warehouse) as con:
        ids = [a.article_id for arts in polls.values() for a in arts]
        known = {r[0] for r in con.execute("SELECT article_id FROM articles WHERE list_contains(?, article_id)", [ids]).fetchall()}
        stats["known"] = len(known)
        polls = {t: [a for a in arts if a.article_id not in known] for t, arts in polls.items()}
        polls = {t: arts for t, arts in polls.items() if arts}
        sources = sorted({a.source_id for arts in polls.values() for a in arts})
        try:
            registered = {f.id for f in load_registry(settings.feeds).feeds}
        except Exception:  # an unreadable registry: the backfill's sources are recorded as its own
            registered = set()
        have = {r[0] for r in con.execute("SELECT source_id FROM sources").fetchall()}
        langs = {a.source_id: a.lang for arts in polls.values() for a in arts}
        first = min(polls) if polls else now
        # Sources the warehouse does not know yet are recorded, disabled (never polled, never
        # judged by source health), under a ``backfill:`` URL; registered feeds keep their row.
        source_rows.upsert(con, [
            dict(source_id=s, name=s, lang=langs[s] or "en", url=f"backfill:{s}", interval_s=poll_interval, reliability="F",
                 enabled=False, updated_at=first)
            for s in sources if s not in have and s not in registered])
        saved_state = con.execute("SELECT * FROM source_state WHERE list_contains(?, source_id)", [sources]).fetchall()
        clock = con.execute(
            "SELECT max(t) FROM (SELECT max(created_at) AS t FROM notifications UNION ALL SELECT max(last_notified_at) FROM alerts)"
        ).fetchone()[0]
    if not polls:
        return stats

    times = sorted(polls)
    pending: list[datetime] = []
    t_prev = None
    step = timedelta(seconds=poll_interval)
    grid = []
    t = times[0]
    while t < now:  # every poll from the first item to now, skipping the empty ones below
        grid.append(t)
        t += step
    grid.append(now)

    def evaluate_at(t: datetime) -> None:
        if clock is not None and t <= clock:
            return
        with db.connect(settings.warehouse) as con:
            evaluate_rules(con, pack, t)
            n = con.execute(
                f"UPDATE notifications SET status = '{BACKFILLED}' WHERE status = 'pending' AND created_at = ? RETURNING 1", [t]
            ).fetchall()
            stats["backfilled_notifications"] += len(n)
            stats["evaluations"] += 1
            nonlocal pending
            pending = _boundaries(con, pack, now)

    try:
        for t in grid:
            arts = polls.get(t)
            if arts:
                stats["polls"] += 1
                for source_id in sorted({a.source_id for a in arts}):
                    mine = [a for a in arts if a.source_id == source_id]
                    meta = dict(source_id=source_id, url=f"backfill:{source_id}", status="ok", http_status=200,
                                fetch_id=f"backfill-{t:%Y%m%dT%H%M%S}-{source_id}", started_at=t.isoformat(), finished_at=t.isoformat())
                    pipeline.stage(settings, meta, mine, classifier)
                stats["new_articles"] += pipeline.load(settings, t, classifier).new_articles
            due = t_prev is not None and any(t_prev < b <= t for b in pending)
            if arts or due or t == now:
                evaluate_at(t)
            t_prev = t
    finally:
        with db.connect(settings.warehouse) as con, db.transaction(con):
            # The poller's state of these feeds is what it was: a backfill polled nothing.
            con.execute("DELETE FROM source_state WHERE list_contains(?, source_id)", [sources])
            if saved_state:
                cols = [d[0] for d in con.execute("SELECT * FROM source_state LIMIT 0").description]
                con.executemany(f"INSERT INTO source_state ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", saved_state)
    pipeline.publish_read_copy(settings)
    return stats
