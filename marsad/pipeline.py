"""The pipeline steps. The Airflow DAGs and the ``marsad`` CLI call these, nothing else.

    due_sources   which feeds are due (per-source interval, backoff)       [warehouse read]
    fetch_stage   fetch + parse feeds, stage articles as files              [no warehouse]
    load          staged files -> articles, classify, events, source state  [single writer]
    evaluate      rules -> alerts + outbox                                  [single writer]
    deliver       outbox -> Slack (or the local sink)     [short writes; none during Slack calls]

Every step takes ``now`` so that ``marsad replay`` runs the very same code in simulated time.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from alerts.delivery import DEFAULT_BUDGET_S, DeliveryReport, LocalSink, Sink, deliver as deliver_outbox
from alerts.entities import EntityTagger, tag_articles
from alerts.places import PlaceHierarchy
from alerts.evaluate import evaluate as evaluate_rules, indicator_names
from alerts.matching import Classifier
from alerts.ops import evaluate_source_health, report_config_errors
from alerts.judgements import Assessment, assessments_dir, evaluate_judgements, load_assessments
from alerts.rules import RuleDefaults, RulePack, indicators_dir, load_rules, rules_path
from marsad.configguard import Guard
from sources.fetch import FetchRequest, FetchResult, fetch_sync, wait_hint
from sources.parse import Article, FeedError, parse_feed
from sources.registry import HealthSettings, Registry, feeds_path, load_registry
from warehouse import db, matches as match_rows, sources as source_rows
from warehouse.events import assign_events, indicators_with_events
from warehouse.load import bulk_insert, load_articles, unlink_unmatched, write_jsonl_atomic, write_text_atomic
from warehouse.publish import publish, read_copy_path
from warehouse.retention import fetch_log_retention, prune_fetch_log

log = logging.getLogger("marsad.pipeline")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _ops_channel() -> str:
    from marsad.settings import current

    return current("ops.channel").get("ops.channel")


@dataclass
class Settings:
    """Where things are, as marsad.settings resolves them (the one owner of settings: a variable
    > what a running make run resolved > marsad/settings.yaml > the default)."""

    warehouse: Path
    staging: Path
    feeds: Path = field(default_factory=feeds_path)
    rules: Path = field(default_factory=rules_path)
    indicators: Path = field(default_factory=indicators_dir)
    assessments: Path = field(default_factory=assessments_dir)  # key judgements (alerts/judgements.py)
    read_copy: Path | None = None  # the analysts' copy published after load and evaluate; None: no publishing
    fetch_log_retention: int = field(default_factory=fetch_log_retention)  # seconds
    deliver_budget: int = DEFAULT_BUDGET_S  # seconds a delivery run may spend calling Slack
    ops_channel: str = field(default_factory=_ops_channel)
    allow_private: str | None = None  # polling.allow_private (MARSAD_ALLOW_PRIVATE_FEEDS); None: the variable
    fetch_tasks: int = 4  # ingest.fetch_tasks
    fetch_batch: int = 50  # ingest.fetch_batch
    handover: str = "files"  # ingest.handover

    # The settings the tasks need: make run exports each as its variable, so a task never reads
    # the settings file (a half-edited file cannot break a running pipeline).
    NEEDED = ("paths.warehouse", "paths.staging", "paths.feeds", "paths.rules", "paths.indicators", "paths.assessments", "paths.read_copy",
              "warehouse.fetch_log_retention", "delivery.budget", "ops.channel", "polling.allow_private",
              "ingest.fetch_tasks", "ingest.fetch_batch", "ingest.handover")

    @classmethod
    def from_env(cls, warehouse: str | Path | None = None) -> "Settings":
        """marsad.settings (variables > make run's snapshot > settings file > defaults); ``warehouse`` (``--db``) wins over all."""
        from marsad.settings import current

        d = current(*cls.NEEDED)
        wh = Path(warehouse).absolute() if warehouse else d.path("paths.warehouse")
        return cls(
            warehouse=wh,
            staging=d.path("paths.staging") or wh.parent / "staging",
            feeds=d.path("paths.feeds"),
            rules=d.path("paths.rules"),
            indicators=d.path("paths.indicators"),
            assessments=d.path("paths.assessments"),
            read_copy=d.path("paths.read_copy") or wh.with_name(f"{wh.stem}-read{wh.suffix or '.duckdb'}"),
            fetch_log_retention=d.get("warehouse.fetch_log_retention"),
            deliver_budget=d.get("delivery.budget"),
            ops_channel=d.get("ops.channel"),
            # From the file or make run's snapshot; a variable is read at fetch time (sources.safety).
            allow_private=d.get("polling.allow_private") if d.source["polling.allow_private"][0] in ("file", "make-run") else None,
            fetch_tasks=d.get("ingest.fetch_tasks"),
            fetch_batch=d.get("ingest.fetch_batch"),
            handover=d.get("ingest.handover"),
        )

    def registry(self) -> Registry:
        return load_registry(self.feeds)

    def classifier(self) -> Classifier:
        return _classifier(self.indicators, _mtimes(self.indicators, self.indicators.parent / "gazetteers"))

    def rule_pack(self) -> RulePack:
        return load_rules(self.rules, indicator_ids=self.classifier().ids)

    # The pipeline steps read the files through a Guard (marsad.configguard): a file that does
    # not validate is reported and the step goes on with the last good copy, or without it.

    def guard(self) -> Guard:
        return Guard(self.warehouse.parent / "last-good")

    def guarded_registry(self, guard: Guard) -> Registry | None:
        return guard.read("feeds", self.feeds, load_registry, "the feeds of the last good sync stay in force")

    def guarded_classifier(self, guard: Guard) -> Classifier | None:
        return guard.read(
            "indicators", self.indicators, lambda d: _classifier(d, _mtimes(d, d.parent / "gazetteers")),
            "articles are loaded and wait unclassified for a valid indicator pack",
        )

    def guarded_rule_pack(self, guard: Guard) -> RulePack | None:
        classifier = self.guarded_classifier(guard)
        ids = classifier.ids if classifier is not None else None
        return guard.read("rules", self.rules, lambda p: load_rules(p, indicator_ids=ids), "no rule is evaluated; queued alerts are still delivered")

    def guarded_assessments(self, guard: Guard) -> list[Assessment]:
        if not self.assessments.is_dir():
            return []  # no assessments directory: no judgements to watch
        classifier = self.guarded_classifier(guard)
        ids = classifier.ids if classifier is not None else None
        return guard.read("assessments", self.assessments, lambda d: load_assessments(d, indicator_ids=ids),
                          "no judgement is evaluated") or []


@contextlib.contextmanager
def _collect_young_only():
    """Within a step, the cyclic garbage collector skips the objects that were alive when the
    step began (modules, the compiled classifier and its caches, the settings): they go to the
    permanent generation (``gc.freeze``) and come back at the end (``gc.unfreeze``). A step
    makes tens of thousands of objects that survive a while (articles, verdicts, rows), which
    set off full collections, and each re-scanned the whole heap (~0.1 s of a 10k load). The
    step's own cyclic garbage is still collected, and what was frozen is collected again
    afterwards. In a process whose heap someone else froze (Airflow's executor freezes before
    it forks a worker) nothing is changed: unfreezing would undo their freeze too."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def report_config(con, settings: Settings, guard: Guard, now: datetime) -> list[dict]:
    """Ops hear of the config files a step could not read (once per file and error)."""
    return report_config_errors(con, now, guard.problems, guard.fine, settings.ops_channel)


def _mtimes(*dirs: Path) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns) for d in dirs if d.is_dir() for p in sorted(d.glob("*.yaml")))


@functools.lru_cache(maxsize=4)
def _classifier(directory: Path, mtimes: tuple) -> Classifier:
    """One compiled pack per process, rebuilt when an indicator or gazetteer file changes."""
    return Classifier.load(directory)


# ----------------------------------------------------------------------------- sources


def sync_sources(con, registry: Registry, now: datetime) -> None:
    """Mirror the registry into the ``sources`` table (``warehouse.sources.sync``)."""
    source_rows.sync(con, [
        dict(source_id=f.id, name=f.name, lang=f.lang, url=f.url, interval_s=f.interval, reliability=f.reliability, enabled=f.enabled)
        for f in registry.feeds
    ], now)


def due_sources(settings: Settings, now: datetime | None = None, schedule: str | None = None) -> list[dict]:
    """Feeds whose interval (or error backoff) has elapsed, with their conditional-GET validators.

    ``schedule``: the schedule this run belongs to (schedules.ingest, as the DAG was parsed with
    it). A feed is then polled at the run nearest its due time: it is due now if its time comes
    before the middle of the wait for the next scheduled run (``warehouse.sources.due``), so a
    poll off the grid (a triggered run, the run Airflow starts on unpause) does not make the feed
    skip a run. Without one (``none``, ``marsad run-once``), a feed is due once its time came."""
    from marsad.settings import next_run

    now = now or utcnow()
    upcoming = next_run(schedule, now) if schedule else None
    ahead_s = max((upcoming - now).total_seconds() / 2, 0) if upcoming else 0
    guard = settings.guard()
    registry = settings.guarded_registry(guard)
    with db.connect(settings.warehouse) as con:
        if registry is not None:  # else the sources table keeps the last sync
            with db.transaction(con):
                sync_sources(con, registry, now)
        report_config(con, settings, guard, now)
        return source_rows.due(con, now, ahead_s)


def fetch_batches(sources: list[dict], max_batch: int | None = None, min_batches: int | None = None) -> list[list[dict]]:
    """Due sources split into the batches that the mapped fetch tasks take, one each.

    A task per feed cost more in Airflow task start-up (seconds each) than the fetch itself;
    a batch is fetched concurrently by ``fetch_stage``. ``min_batches`` batches at least (so
    the work spreads over workers), more when a batch would exceed ``max_batch`` feeds.
    The feeds of one host stay in one batch, so its per-host politeness limit holds, unless
    there are fewer hosts than batches: then the largest hosts are split. Groups are dealt to
    the least-loaded batch, largest first. Defaults: ingest.fetch_batch (50 feeds) and
    ingest.fetch_tasks (4), as marsad.settings resolves them."""
    if not sources:
        return []
    if not (max_batch and min_batches):
        from marsad.settings import current

        d = current("ingest.fetch_batch", "ingest.fetch_tasks")
        max_batch = max_batch or d.get("ingest.fetch_batch")
        min_batches = min_batches or d.get("ingest.fetch_tasks")
    k = min(len(sources), max(min_batches, -(-len(sources) // max_batch)))
    by_host: dict[str, list[dict]] = {}
    for s in sources:
        by_host.setdefault(urlsplit(s["url"]).hostname or "", []).append(s)
    groups = sorted(by_host.values(), key=lambda g: (-len(g), g[0]["source_id"]))
    while len(groups) < k:  # fewer hosts than batches: halve the largest host
        big = groups.pop(0)
        groups += [big[: len(big) // 2], big[len(big) // 2 :]]
        groups.sort(key=lambda g: (-len(g), g[0]["source_id"]))
    batches: list[list[dict]] = [[] for _ in range(k)]
    for g in groups:
        min(batches, key=len).extend(g)
    return [b for b in batches if b]


# ----------------------------------------------------------------------------- staging


def _verdicts(classifier: Classifier, text_folded: str, title_folded: str | None) -> list[dict]:
    """An article's matches as the rows of ``article_indicators`` (without ``article_id``): the
    fetch tasks stage them, the loader inserts them, and both classify the same way."""
    return [
        dict(indicator=v.indicator, clause=v.clause, hits=[{"group": h.group, "text": h.text} for h in v.hits], refs=v.refs,
             frame=v.frame.to_dict() if v.frame else None)
        for v in classifier.classify_folded(text_folded, title_words=len((title_folded or "").split()))
    ]


def stage(settings: Settings, meta: dict, articles: list[Article], classifier: Classifier | None = None) -> Path:
    """Write one fetch's articles and its manifest; the manifest is renamed into place last.

    With a classifier, each article is staged with its indicator verdicts: classification
    is per-article work, done here in the parallel fetch tasks rather than in the single
    writer. Articles staged without verdicts are classified by ``load``.
    """
    settings.staging.mkdir(parents=True, exist_ok=True)
    fetch_id = meta.setdefault("fetch_id", f"{meta['started_at'][:19].replace(':', '')}-{meta['source_id']}-{uuid.uuid4().hex[:8]}")
    data = settings.staging / f"{fetch_id}.jsonl"
    meta["entries"] = len(articles)
    meta["articles_file"] = data.name if articles else None
    meta["classified"] = classifier is not None
    # Both files go through a temporary name: a full disk leaves nothing half-written behind,
    # and the error names the file.
    if articles:
        if classifier is None:
            write_jsonl_atomic(data, (a.to_dict() for a in articles))
        else:
            write_jsonl_atomic(data, ({**a.to_dict(), "matches": _verdicts(classifier, a.text_folded, a.title_folded)} for a in articles))
    manifest = settings.staging / f"{fetch_id}.json"
    try:
        write_text_atomic(manifest, json.dumps(meta, ensure_ascii=False))
    except BaseException:
        data.unlink(missing_ok=True)  # no manifest: nothing would ever load or remove it
        raise
    return manifest


def _fetch_meta(res: FetchResult, error: str | None = None, status: str | None = None) -> dict:
    return dict(
        source_id=res.source_id,
        url=res.url,
        status=status or res.status,
        http_status=res.http_status,
        started_at=res.started_at.isoformat(),
        finished_at=res.finished_at.isoformat(),
        etag=res.etag,
        last_modified=res.last_modified,
        bytes=len(res.body) if res.body else None,
        error=error or res.error,
        wait_s=wait_hint(res),  # Retry-After / Cache-Control max-age: the server's wish for the next poll
    )


def fetch_stage(settings: Settings, sources: list[dict], classifier: Classifier | None = None, **fetch_kw) -> list[str]:
    """Fetch, parse and classify feeds, staging each result (errors too) for the loader."""
    reqs = [FetchRequest(s["source_id"], s["url"], s.get("etag"), s.get("last_modified")) for s in sources]
    langs = {s["source_id"]: s.get("lang") for s in sources}
    manifests = []
    guard = settings.guard()
    if settings.allow_private and "policy" not in fetch_kw:
        from sources.safety import AddressPolicy

        fetch_kw["policy"] = AddressPolicy.from_env(settings.allow_private)
    with _collect_young_only():
        for res in fetch_sync(reqs, **fetch_kw):
            articles: list[Article] = []
            meta = _fetch_meta(res)
            if res.status == "ok":
                try:
                    parsed = parse_feed(
                        res.body, res.source_id, langs.get(res.source_id), res.finished_at, res.headers.get("content-type"), res.final_url
                    )
                    articles = parsed.articles
                    if articles and classifier is None and not guard.problems:
                        classifier = settings.guarded_classifier(guard)  # None: staged unclassified, load reports it
                    if parsed.bozo:
                        meta["warning"] = parsed.bozo[:500]
                except FeedError as exc:
                    meta = _fetch_meta(res, error=str(exc), status="error")
            if meta["status"] == "error":
                log.warning("source %s: %s", res.source_id, meta["error"])
            manifests.append(str(stage(settings, meta, articles, classifier)))
    return manifests


def hand_over(manifest: str | Path) -> dict:
    """One staged fetch as a self-contained value (manifest + articles), and its local files removed.

    A fetch task returns this so that the loader can run on another host: the scaled
    deployment (MARSAD_HANDOVER=xcom) hands it over through Airflow's XCom (the metadata
    DB), not a shared disk. Otherwise only the staged file's path is returned.
    """
    from marsad.settings import current

    if current("ingest.handover").get("ingest.handover") != "xcom":
        # Embedded default: the loader runs on this host and reads the staging folder; only
        # the path goes through XCom, so article text never piles up in the metadata DB.
        return {"staged": str(manifest)}
    manifest = Path(manifest)
    meta = json.loads(manifest.read_text(encoding="utf-8"))
    data = manifest.with_suffix(".jsonl")
    articles = data.read_text(encoding="utf-8") if meta.get("articles_file") else None
    data.unlink(missing_ok=True)
    manifest.unlink()
    return {"manifest": meta, "articles": articles}


def take_over(settings: Settings, handed: list[dict | None]) -> int:
    """Write fetches handed over by ``hand_over`` into this host's staging (the articles first,
    the manifest renamed into place last, as ``stage`` does); ``load`` then picks them up."""
    settings.staging.mkdir(parents=True, exist_ok=True)
    n = 0
    for item in handed:
        if not item or "manifest" not in item:  # failed fetch (retried next run), or staged locally already
            continue
        meta = item["manifest"]
        fetch_id = meta["fetch_id"]
        data = settings.staging / meta["articles_file"] if meta.get("articles_file") else None
        if data is not None:
            write_text_atomic(data, item["articles"] or "")
        try:
            write_text_atomic(settings.staging / f"{fetch_id}.json", json.dumps(meta, ensure_ascii=False))
        except BaseException:
            if data is not None:
                data.unlink(missing_ok=True)
            raise
        n += 1
    return n


# ----------------------------------------------------------------------------- load


@dataclass
class LoadReport:
    fetches: int = 0
    new_articles: int = 0
    corrected: int = 0  # stored articles whose entry came again with other content (re-classified)
    classified: int = 0
    matches: int = 0
    new_events: int = 0

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def load(settings: Settings, now: datetime | None = None, classifier: Classifier | None = None) -> LoadReport:
    """Load everything staged (this run's fetches and any left by a failed run), then classify
    new articles and assign them to events. One transaction; staged files are removed after it.
    Publishing the analysts' read copy is a step of its own (``publish_read_copy``, after
    delivery): it brings the copy and its search index up to date (``warehouse.publish``), work
    that stays out of the time from a feed item to an alert."""
    now = now or utcnow()
    guard = settings.guard()
    classifier = classifier or settings.guarded_classifier(guard)
    with _collect_young_only(), db.connect(settings.warehouse) as con:
        # The staged files are listed under the warehouse lock and removed before it is released:
        # a concurrent loader (two `marsad run-once`) that waited for the lock finds only what
        # is still to load, never files the other one has loaded and removed.
        manifests, metas = _staged(settings.staging)
        report = _load_staged(settings, con, manifests, metas, now, classifier)
        report_config(con, settings, guard, now)
        for p in manifests:  # committed: the staged files are no longer needed
            for f in (p, p.with_suffix(".jsonl")):
                f.unlink(missing_ok=True)
        _sweep_staging(settings.staging)
    return report


STALE_STAGING_S = 3600  # a temporary or orphaned staging file this old was left by a crash


def _staged(staging: Path) -> tuple[list[Path], list[dict]]:
    manifests, metas = [], []
    for p in sorted(staging.glob("*.json")) if staging.is_dir() else []:
        try:
            meta = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:  # handed over (xcom) or removed meanwhile
            continue
        if meta.get("articles_file") and not (staging / meta["articles_file"]).exists():
            log.warning("staged fetch %s: its articles file %s is missing; recording the fetch without articles", p.name, meta["articles_file"])
            meta["articles_file"] = None
        manifests.append(p)
        metas.append(meta)
    return manifests, metas


def _sweep_staging(staging: Path) -> None:
    """Remove what a killed fetch left: temporary files, and article files without a manifest."""
    if not staging.is_dir():
        return
    cutoff = time.time() - STALE_STAGING_S
    for p in staging.iterdir():
        orphan = p.suffix == ".tmp" or (p.suffix == ".jsonl" and not p.with_suffix(".json").exists())
        try:
            if orphan and p.stat().st_mtime < cutoff:
                log.warning("removing %s: left in staging by an interrupted fetch", p)
                p.unlink()
        except FileNotFoundError:
            pass


def _load_staged(settings: Settings, con, manifests: list[Path], metas: list[dict], now: datetime, classifier: Classifier | None) -> LoadReport:
    report = LoadReport(fetches=len(metas))
    with db.transaction(con):
        data_files = [settings.staging / m["articles_file"] for m in metas if m.get("articles_file")]
        new, corrected = load_articles(con, data_files)
        report.new_articles, report.corrected = len(new), len(corrected)
        # Staged verdicts are taken only when this load can assign them to events (it has an
        # indicator pack): every article classified in a load is assigned in that load, so
        # event assignment reads this load's articles only (``assign_events(this_load=True)``).
        # Without a pack, the articles wait unclassified and a later load classifies them.
        classified = [settings.staging / m["articles_file"] for m in metas if m.get("articles_file") and m.get("classified")]
        report.matches = match_rows.insert_staged(con, classified, now) if classifier is not None else 0
        per_source: dict[str, int] = {}
        for _, source_id in new:
            per_source[source_id] = per_source.get(source_id, 0) + 1
        source_rows.record_fetches(con, metas, per_source)
        if classifier is not None:  # else the articles wait, unclassified, for a valid pack
            report.classified, late = classify_pending(con, classifier, now)
            report.matches += late
            tag_new_matches(con, classifier, now)
            unlink_unmatched(con, corrected)
            report.new_events = assign_events(con, now, PlaceHierarchy.from_gazetteers(classifier.gazetteers), this_load=True)
        prune_fetch_log(con, now, settings.fetch_log_retention)
    return report


def tag_new_matches(con, classifier: Classifier, now: datetime) -> int:
    """Places, actors, weapons and cue words named in the articles that matched an indicator in
    this load (however they were classified): what event assignment compares."""
    rows = match_rows.matched_in_load(con, now)
    if not rows:
        return 0
    if getattr(classifier, "_entity_tagger", None) is None:
        classifier._entity_tagger = EntityTagger(classifier.gazetteers)
    return tag_articles(con, classifier._entity_tagger, rows)


def classify_pending(con, classifier: Classifier, now: datetime) -> tuple[int, int]:
    """Run the indicator classifier over articles not classified yet."""
    rows = match_rows.unclassified(con)
    if not rows:
        return 0, 0
    matches = [
        {"article_id": article_id, **m, "article_published_at": published}
        for article_id, folded, title_folded, published in rows
        for m in _verdicts(classifier, folded, title_folded)
    ]
    match_rows.insert_verdicts(con, matches, now)
    return len(rows), len(matches)


# ----------------------------------------------------------------------------- alerts


def evaluate(settings: Settings, now: datetime | None = None, pack: RulePack | None = None) -> list[dict]:
    """Rules -> alerts + outbox. A rule pack or registry that does not validate is reported to
    ops and replaced by its last good copy (no rules, default health settings, when there is
    none): the step never fails on a config file, so delivery always follows."""
    now = now or utcnow()
    guard = settings.guard()
    pack = pack or settings.guarded_rule_pack(guard)

    def health():
        registry = settings.guarded_registry(guard)
        return registry.health if registry is not None else HealthSettings()

    with db.connect(settings.warehouse) as con:
        queued = evaluate_rules(con, pack, now, _indicator_names(settings, guard)) if pack is not None else []
        # Key judgements: their indicators through the same evaluator, their changes through the same outbox.
        queued = queued + evaluate_judgements(con, settings.guarded_assessments(guard), now)
        # Sources that are down or silent page ops through the same outbox.
        queued = queued + evaluate_source_health(con, now, health)
        queued = queued + report_config(con, settings, guard, now)
    return queued


def _indicator_names(settings: Settings, guard) -> dict[str, str]:
    """Indicator id -> name for messages, from the indicator pack in force (the last good copy
    when a file does not validate)."""
    classifier = settings.guarded_classifier(guard)
    if classifier is None:
        return indicator_names(settings.indicators)
    return {i.id: i.spec.name for i in classifier.indicators}


def publish_read_copy(settings: Settings) -> dict | None:
    """Publish the analysts' read copy (warehouse.publish). Runs after the step committed;
    a failure is logged and never fails the step: analysts keep the previous copy."""
    if settings.read_copy is None:
        return None
    try:
        return publish(settings.warehouse, settings.read_copy).as_dict()
    except Exception:
        log.exception("publishing the read copy %s failed; the previous copy stays in place", settings.read_copy)
        return None


def deliver(settings: Settings, sink: Sink | None = None) -> DeliveryReport:
    """The outbox to Slack. It holds the warehouse only for short transactions, never while
    Slack is called, and stops starting Slack calls after ``delivery.budget``."""
    return deliver_outbox(settings.warehouse, sink or LocalSink(), budget_s=settings.deliver_budget)


def queue_digest(settings: Settings, now: datetime | None = None, channel: str | None = None) -> dict:
    """Queue today's digest in the outbox, once per day and only once Marsad has polled:
    ``{"status": queued | already | not watching, "summary", "payload"}`` (``alerts.digest.queue``)."""
    from alerts.digest import queue

    now = now or utcnow()
    guard = settings.guard()
    pack = settings.guarded_rule_pack(guard)
    defaults = pack.defaults if pack is not None else RuleDefaults()
    channel = channel or defaults.digest_channel or defaults.channel
    classifier = settings.guarded_classifier(guard)
    with db.connect(settings.warehouse) as con:
        ids = classifier.ids if classifier is not None else indicators_with_events(con)
        result = queue(con, now, ids, channel, _indicator_names(settings, guard))
        report_config(con, settings, guard, now)
    return result


def run_once(settings: Settings, sink: Sink | None = None, now: datetime | None = None) -> dict:
    """One whole cycle, as the two DAGs run it: due -> fetch -> load -> evaluate -> deliver -> publish."""
    now = now or utcnow()
    try:
        due = due_sources(settings, now)
        fetch_stage(settings, due)
        loaded = load(settings, utcnow())
        queued = evaluate(settings, utcnow())
    except BaseException:
        # Whatever stopped the cycle (a full disk, a corrupt warehouse), what is queued still goes out.
        try:
            deliver(settings, sink)
        except Exception:
            log.exception("delivering the queued alerts after a failed cycle failed too")
        raise
    delivered = deliver(settings, sink)
    publish_read_copy(settings)
    return {"due": len(due), "load": loaded.as_dict(), "notifications": len(queued), "delivery": delivered.as_dict()}
