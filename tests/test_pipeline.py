"""Ingest against feeds served on loopback, into a real DuckDB file."""
from datetime import datetime, timedelta, timezone

import pytest

from conftest import rss, write_feeds_yaml
from marsad import pipeline
from warehouse import db

NOW = datetime.now(timezone.utc).replace(microsecond=0)
ITEMS_AT = NOW  # the feed items' pubDates count back from here (import time)


@pytest.fixture(autouse=True)
def _now_is_the_clock():
    """Fetches stamp the real clock, so each test's NOW starts from it, not from import time
    (minutes earlier when other tests ran first: then nothing was due at NOW + 6 min)."""
    global NOW
    NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _pub(minutes_ago: int) -> str:
    return (ITEMS_AT - timedelta(minutes=minutes_ago)).strftime("%a, %d %b %Y %H:%M:%S +0000")


AR_ITEMS = [
    {"title": "هجوم بطائرة مسيّرة على قاعدة عين الأسد غربي العراق", "link": "https://ar.example/n/1?utm_source=rss",
     "guid": "ar-1", "description": "<p>استهدفت طائرة مسيرة قاعدة عين الأسد التي تضم قوات أمريكية</p>", "pubDate": _pub(50)},
    {"title": "افتتاح معرض الكتاب في بغداد", "link": "https://ar.example/n/2", "guid": "ar-2",
     "description": "معرض", "pubDate": _pub(40)},
]
EN_ITEMS = [
    {"title": "Rockets target US forces at Harir base in Iraq's Kurdistan region", "link": "https://en.example/a/1",
     "guid": "en-1", "description": "No group claimed the attack on the base hosting US troops.", "pubDate": _pub(30)},
    {"title": "Football results", "link": "https://en.example/a/2", "guid": "en-2", "description": "scores", "pubDate": _pub(20)},
]


def setup_feeds(tmp_path, feed_server, extra=()):
    feeds = [
        {"id": "test-ar", "name": "Test Arabic", "lang": "ar", "url": feed_server.serve("/ar.xml", rss(AR_ITEMS, "ar")), "interval": "5m"},
        {"id": "test-en", "name": "Test English", "lang": "en", "url": feed_server.serve("/en.xml", rss(EN_ITEMS)), "interval": "5m"},
        *extra,
    ]
    return write_feeds_yaml(tmp_path / "feeds.yaml", feeds)


def counts(settings):
    with db.connect(settings.warehouse, read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("articles", "fetch_log", "events", "article_indicators")}


def test_poll_twice_and_reload_add_no_duplicates(tmp_path, feed_server, settings):
    settings.feeds = setup_feeds(tmp_path, feed_server)
    # Fetches record the real clock, so poll times count from now, not from import time.
    T = datetime.now(timezone.utc)
    due = pipeline.due_sources(settings, T)
    assert {d["source_id"] for d in due} == {"test-ar", "test-en"}
    pipeline.fetch_stage(settings, due)
    rep = pipeline.load(settings, T)
    assert rep.new_articles == 4 and rep.fetches == 2
    first = counts(settings)
    assert first["articles"] == 4

    # Nothing is due again before the interval (fetch times are wall-clock); then both are,
    # and they are re-read with their validators (304).
    fetched = datetime.now(timezone.utc)
    assert pipeline.due_sources(settings, fetched + timedelta(minutes=1)) == []
    due = pipeline.due_sources(settings, fetched + timedelta(minutes=6))
    assert {d["source_id"] for d in due} == {"test-ar", "test-en"}
    assert all(d["etag"] for d in due)
    pipeline.fetch_stage(settings, due)
    assert feed_server.hits_for("/ar.xml")[-1].get("if-none-match")
    assert pipeline.load(settings, T + timedelta(minutes=6)).new_articles == 0
    with db.connect(settings.warehouse, read_only=True) as con:
        statuses = [r[0] for r in con.execute("SELECT status FROM fetch_log ORDER BY started_at").fetchall()]
    assert statuses[-2:] == ["not_modified", "not_modified"]

    # A changed feed fetched in full again still adds only what is new.
    feed_server.serve("/en.xml", rss(EN_ITEMS + [{"title": "New item", "guid": "en-3", "link": "https://en.example/a/3", "description": "x", "pubDate": _pub(5)}]))
    due = pipeline.due_sources(settings, datetime.now(timezone.utc) + timedelta(minutes=12))
    assert "test-en" in {d["source_id"] for d in due}
    pipeline.fetch_stage(settings, due)
    assert pipeline.load(settings, T + timedelta(minutes=12)).new_articles == 1
    assert counts(settings)["articles"] == 5


def test_same_staged_files_loaded_twice_add_nothing(tmp_path, feed_server, settings):
    """A load task retried after it committed but before it cleaned up."""
    settings.feeds = setup_feeds(tmp_path, feed_server)
    manifests = pipeline.fetch_stage(settings, pipeline.due_sources(settings, NOW))
    saved = {p: open(p, "rb").read() for m in manifests for p in (m, m.replace(".json", ".jsonl"))}
    pipeline.load(settings, NOW)
    before = counts(settings)
    for p, data in saved.items():
        open(p, "wb").write(data)
    pipeline.load(settings, NOW)
    assert counts(settings) == before


def test_articles_are_normalised(tmp_path, feed_server, settings):
    settings.feeds = setup_feeds(tmp_path, feed_server)
    pipeline.fetch_stage(settings, pipeline.due_sources(settings, NOW))
    pipeline.load(settings, NOW)
    with db.connect(settings.warehouse, read_only=True) as con:
        row = con.execute(
            "SELECT title, summary, canonical_url, lang, published_at, source_id FROM articles WHERE guid = 'ar-1'"
        ).fetchone()
    title, summary, canon, lang, published, source = row
    assert title == AR_ITEMS[0]["title"]  # display text kept as written
    assert summary.startswith("استهدفت طائرة") and "<p>" not in summary
    assert canon == "https://ar.example/n/1"
    assert lang == "ar" and source == "test-ar"
    assert published == ITEMS_AT - timedelta(minutes=50)


def test_broken_and_slow_sources_do_not_stop_the_others(tmp_path, feed_server, settings):
    extra = [
        {"id": "gone", "name": "Gone", "lang": "en", "url": feed_server.url("/missing.xml")},
        {"id": "html", "name": "HTML page", "lang": "en", "url": feed_server.serve("/page.html", "<html><body>hi</body></html>", content_type="text/html")},
        {"id": "slow", "name": "Slow", "lang": "en", "url": feed_server.serve("/slow.xml", rss(EN_ITEMS), delay=3)},
        {"id": "dead-port", "name": "Dead", "lang": "en", "url": "http://127.0.0.1:9/feed.xml"},
    ]
    settings.feeds = setup_feeds(tmp_path, feed_server, extra)
    due = pipeline.due_sources(settings, NOW)
    pipeline.fetch_stage(settings, due, total_timeout=1.0)
    rep = pipeline.load(settings, NOW)
    assert rep.new_articles == 4  # both good feeds landed
    with db.connect(settings.warehouse, read_only=True) as con:
        state = dict(con.execute("SELECT source_id, last_status FROM source_state").fetchall())
        errors = dict(con.execute("SELECT source_id, error FROM fetch_log WHERE status = 'error'").fetchall())
        failures = dict(con.execute("SELECT source_id, consecutive_failures FROM source_state").fetchall())
    assert state["test-ar"] == state["test-en"] == "ok"
    assert set(errors) == {"gone", "html", "slow", "dead-port"}
    assert "HTTP 404" in errors["gone"] and "not a feed" in errors["html"] and "timed out" in errors["slow"]
    assert failures["gone"] == 1 and failures["test-en"] == 0


def test_failing_source_backs_off(tmp_path, feed_server, settings):
    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [{"id": "gone", "name": "Gone", "lang": "en", "url": feed_server.url("/nope"), "interval": "5m"}])
    t = NOW
    for _ in range(3):
        due = pipeline.due_sources(settings, t)
        assert [d["source_id"] for d in due] == ["gone"]
        pipeline.fetch_stage(settings, due)
        pipeline.load(settings, t)
        with db.connect(settings.warehouse, read_only=True) as con:
            next_due, failures, attempted = con.execute("SELECT next_due_at, consecutive_failures, last_attempt_at FROM source_state").fetchone()
        t = next_due
    # 3rd failure waits about 4 x the interval (with +-20 % jitter)
    assert failures == 3
    assert timedelta(minutes=15) < next_due - attempted < timedelta(minutes=25)


def test_full_cycle_alerts_locally_without_slack(tmp_path, feed_server, settings):
    settings.feeds = setup_feeds(tmp_path, feed_server)
    out = pipeline.run_once(settings)
    assert out["load"]["new_articles"] == 4
    with db.connect(settings.warehouse, read_only=True) as con:
        matched = {r[0] for r in con.execute("SELECT a.guid FROM article_indicators JOIN articles a USING (article_id) WHERE indicator = 'militia_attack_us_forces'").fetchall()}
        alerts = con.execute("SELECT rule_id, state FROM alerts").fetchall()
        sent = con.execute("SELECT sink, status FROM notifications").fetchall()
        # every row the load hung off an article carries the article's time (migration 0029)
        times = {t: con.execute(f"SELECT count(*), count(*) FILTER (WHERE l.article_published_at = a.published_at) "
                                f"FROM {t} l JOIN articles a USING (article_id)").fetchone()
                 for t in ("article_indicators", "article_entities", "article_sketches", "event_articles")}
    assert all(n > 0 and same == n for n, same in times.values()), times
    assert matched == {"ar-1", "en-1"}
    # Two attacks in the last hour: no threshold (needs 3) and no resumption (no 14 days of history).
    assert all(rule != "militia-attack-campaign" for rule, _ in alerts)
    assert all(s == ("local", "sent") for s in sent)


def test_fetches_handed_over_to_another_hosts_staging_load_completely(tmp_path, feed_server, settings, monkeypatch):
    """The scaled deployment: fetch workers hand their staged results over as values (XCom);
    the loader's host writes them into its own staging. Nothing stays behind, nothing is lost."""
    monkeypatch.setenv("MARSAD_HANDOVER", "xcom")
    settings.feeds = setup_feeds(tmp_path, feed_server, extra=[{"id": "gone", "name": "Gone", "lang": "en", "url": feed_server.url("/404.xml")}])
    due = pipeline.due_sources(settings, NOW)
    handed = [pipeline.hand_over(m) for m in pipeline.fetch_stage(settings, due)]
    assert list(settings.staging.iterdir()) == [], "the fetch host keeps no staged file"
    import json

    handed = json.loads(json.dumps(handed))  # what survives XCom's JSON round trip
    loader = pipeline.Settings(warehouse=settings.warehouse, staging=tmp_path / "loader-staging")
    loader.feeds = settings.feeds
    assert pipeline.take_over(loader, [*handed, None]) == 3  # None: a fetch task that failed
    rep = pipeline.load(loader, NOW)
    assert rep.new_articles == 4 and rep.fetches == 3
    assert list(loader.staging.iterdir()) == []
    with db.connect(settings.warehouse, read_only=True) as con:
        assert dict(con.execute("SELECT source_id, last_status FROM source_state").fetchall()) == {"test-ar": "ok", "test-en": "ok", "gone": "error"}
        assert con.execute("SELECT count(*) FROM article_indicators").fetchone()[0] >= 2  # verdicts staged by the fetch survive


def test_embedded_default_hands_over_only_paths(tmp_path, feed_server, settings, monkeypatch):
    """Same host: article text stays in the staging folder, never in XCom (the metadata DB)."""
    monkeypatch.delenv("MARSAD_HANDOVER", raising=False)
    settings.feeds = setup_feeds(tmp_path, feed_server)
    handed = [pipeline.hand_over(m) for m in pipeline.fetch_stage(settings, pipeline.due_sources(settings, NOW))]
    assert all(set(h) == {"staged"} for h in handed) and len(handed) == 2
    assert pipeline.take_over(settings, handed) == 0
    assert pipeline.load(settings, NOW).new_articles == 4


def test_fetch_batches_spread_feeds_and_keep_each_host_in_one_batch():
    feeds = [dict(source_id=f"s{i}", url=f"https://host{i % 7}.example/feed{i}.xml") for i in range(40)]
    feeds += [dict(source_id=f"big{i}", url=f"https://big.example/{i}.xml") for i in range(12)]
    batches = pipeline.fetch_batches(feeds, max_batch=10, min_batches=4)
    assert sorted(s["source_id"] for b in batches for s in b) == sorted(s["source_id"] for s in feeds)  # each once
    assert len(batches) == 6  # ceil(52 / 10); one host's 12 feeds stay together although that passes 10
    hosts = [{s["url"].split("/")[2] for s in b} for b in batches]
    assert all(not (a & b) for i, a in enumerate(hosts) for b in hosts[i + 1:])  # a host in one batch only
    assert any(len(b) == 12 for b in batches)
    assert pipeline.fetch_batches(feeds[:3], max_batch=10, min_batches=4) and len(pipeline.fetch_batches(feeds[:3], 10, 4)) == 3
    assert pipeline.fetch_batches([], 10, 4) == []


def test_fetch_batches_split_one_host_when_there_are_fewer_hosts_than_batches():
    feeds = [dict(source_id=f"s{i}", url=f"http://127.0.0.1:8080/feed{i}.xml") for i in range(9)]
    batches = pipeline.fetch_batches(feeds, max_batch=50, min_batches=4)
    assert sorted(len(b) for b in batches) == [2, 2, 2, 3]
    assert sorted(s["source_id"] for b in batches for s in b) == sorted(s["source_id"] for s in feeds)


def test_a_feed_whose_interval_is_the_schedule_period_is_due_at_every_run(tmp_path, feed_server, settings):
    """The fetch starts some seconds into a run: with a 5-minute interval on a 5-minute schedule
    the feed must be due at the next run, not only at the one after it."""
    settings.feeds = setup_feeds(tmp_path, feed_server)
    run = datetime.now(timezone.utc)
    pipeline.fetch_stage(settings, pipeline.due_sources(settings, run))
    pipeline.load(settings, run)
    with db.connect(settings.warehouse, read_only=True) as con:
        attempted = max(r[0] for r in con.execute("SELECT last_attempt_at FROM source_state").fetchall())
    assert attempted > run
    # the next run starts 5 minutes after this one; say its fetch task took 40 s to start
    next_run = run + timedelta(minutes=5)
    assert attempted - run < timedelta(seconds=40)
    assert {d["source_id"] for d in pipeline.due_sources(settings, next_run)} == {"test-ar", "test-en"}
    assert pipeline.due_sources(settings, run + timedelta(minutes=3)) == []  # still not before 4 minutes


# A run of the */5 schedule. The polls below are written as the load records a fetch
# (warehouse.sources.record_fetches), at chosen times, into the real warehouse file.
GRID = datetime(2026, 12, 7, 14, 0, tzinfo=timezone.utc)
EVERY_5 = "*/5 * * * *"


def _polled(settings, after_s: float, status: str = "ok", wait_s: int | None = None) -> None:
    """test-en (interval 5m) polled ``after_s`` seconds after the run at GRID."""
    from warehouse import sources as source_rows

    at = GRID + timedelta(seconds=after_s)
    meta = dict(fetch_id=f"f{after_s}", source_id="test-en", started_at=at, finished_at=at + timedelta(seconds=1), status=status,
                http_status=503 if status == "error" else 200, entries=0, bytes=0, wait_s=wait_s, error="HTTP 503" if status == "error" else None)
    with db.connect(settings.warehouse) as con:
        source_rows.record_fetches(con, [meta], {})


def _due_en(settings, after_s: float, schedule: str | None = EVERY_5) -> bool:
    at = GRID + timedelta(seconds=after_s)
    return "test-en" in {d["source_id"] for d in pipeline.due_sources(settings, at, schedule=schedule)}


def test_a_poll_off_the_grid_does_not_make_the_feed_skip_the_next_run(tmp_path, feed_server, settings):
    """Airflow starts a run on unpause (and on a trigger) off the */5 grid. A 5-minute feed polled
    170 s into the period is due 4 minutes later, 110 s after the next run: it is polled at that
    run, the one nearest its due time, not 5 minutes later at the run after it."""
    settings.feeds = setup_feeds(tmp_path, feed_server)
    assert _due_en(settings, -1)  # registers the feeds: never polled, due
    _polled(settings, 170)
    assert not _due_en(settings, 303, schedule=None)  # without a schedule: as before, it waits for its time
    assert not _due_en(settings, 303, schedule="none")
    assert _due_en(settings, 303)  # the next run of the grid polls it, 133 s after the last poll

    # Polled 250 s into the period, the following run is the nearer one: this one skips it.
    _polled(settings, 250)
    assert not _due_en(settings, 303)
    assert _due_en(settings, 603)

    # On the grid, a triggered run a minute after a poll polls nothing: the next run is nearer.
    _polled(settings, 3)
    assert not _due_en(settings, 63) and not _due_en(settings, 180)
    assert _due_en(settings, 303)
    # Nor on an hourly schedule: the look-ahead is at most half the feed's interval.
    assert not _due_en(settings, 63, schedule="@hourly")
    assert _due_en(settings, 183, schedule="@hourly")


def test_the_look_ahead_never_comes_before_the_server_asked(tmp_path, feed_server, settings):
    """Retry-After (an error, backing off), max-age and the backoff itself still hold at a run
    that would poll the feed early: at 603 s a poll due at 670 s (Retry-After 500 s) waits, and so
    does one due at 410 s whose max-age (200 s) ends at 370 s, at the run at 303 s."""
    settings.feeds = setup_feeds(tmp_path, feed_server)
    _due_en(settings, -1)
    _polled(settings, 170, status="error", wait_s=500)  # a 503 with Retry-After: 500
    assert not _due_en(settings, 603)
    assert _due_en(settings, 903)
    _polled(settings, 170, wait_s=200)  # 200 with Cache-Control: max-age=200
    assert not _due_en(settings, 303)
    assert _due_en(settings, 603)
    _polled(settings, 170, wait_s=100)  # a max-age that ends before the run: the look-ahead holds
    assert _due_en(settings, 303)
    # An error's backoff (here 240-360 s, ending within the run's look-ahead) is not shortened.
    _polled(settings, 80, status="error")
    assert not _due_en(settings, 303)
    assert _due_en(settings, 603)


def test_steps_keep_their_older_heap_from_the_collector_and_give_it_back(tmp_path, feed_server, settings):
    """fetch_stage and load move the objects alive when they start (modules, the classifier) to
    the collector's permanent generation, so the full collections their new objects set off do
    not re-scan them, and move them back after; a heap that someone else froze stays frozen."""
    import gc

    settings.feeds = setup_feeds(tmp_path, feed_server)
    due = pipeline.due_sources(settings, NOW)
    assert gc.get_freeze_count() == 0
    frozen_during: list[int] = []

    def watch(phase, info):
        if phase == "start":
            frozen_during.append(gc.get_freeze_count())

    thresholds = gc.get_threshold()
    gc.set_threshold(50)  # a collection within each step for sure, whatever earlier tests left in the young generation
    gc.callbacks.append(watch)
    try:
        pipeline.fetch_stage(settings, due)
        assert max(frozen_during, default=0) > 0, frozen_during  # collections ran with the older heap frozen
        assert gc.get_freeze_count() == 0
        frozen_during.clear()
        assert pipeline.load(settings, NOW).new_articles == 4
        assert max(frozen_during, default=0) > 0, frozen_during  # collections ran with the older heap frozen
        assert gc.get_freeze_count() == 0
    finally:
        gc.callbacks.remove(watch)
        gc.set_threshold(*thresholds)

    gc.freeze()  # as Airflow's executor does before it forks a worker
    try:
        theirs = gc.get_freeze_count()
        pipeline.load(settings, NOW + timedelta(minutes=6))
        # Left frozen: an unfreeze would empty the permanent generation, a freeze of our own would
        # grow it. It may shrink by a few objects: a frozen object whose last reference the load
        # drops (a replaced cache entry) is freed by its reference count like any other.
        assert theirs * 0.9 < gc.get_freeze_count() <= theirs
    finally:
        gc.unfreeze()
