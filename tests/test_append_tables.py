"""Tables designed for append (migration 0018) and loads whose work is their own articles (#17)."""
from datetime import datetime, timedelta, timezone

from conftest import rss, write_feeds_yaml
from marsad import pipeline
from warehouse import db
from warehouse.events import assign_events, pending_pairs

APPEND = ("articles", "article_indicators", "event_articles", "article_entities", "article_sketches", "events")
ALL = APPEND + ("fetch_log", "sources", "source_state")
T1 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def _article(con, aid: str, text: str, at: datetime, classified: datetime | None) -> None:
    con.execute(
        """INSERT INTO articles (article_id, source_id, guid, url, canonical_url, title, summary, lang, published_at, fetched_at,
                                 title_folded, text_folded, content_hash, classified_at)
           VALUES (?, 'src', ?, ?, ?, ?, '', 'en', ?, ?, ?, ?, md5(?), ?)""",
        [aid, aid, f"https://x.example/{aid}", f"https://x.example/{aid}", text, at, at, text, text, text, classified],
    )


def _fingerprints(con) -> dict[str, tuple[int, str]]:
    """Per table: rows and an md5 of all of them, in a fixed order (articles' ``id_key``, derived
    from the id by migration 0026 and the loads, and the link rows' ``article_published_at``,
    copied from the article by migration 0029 and the writers, aside)."""
    return {t: con.execute(f"SELECT count(*), md5(coalesce(string_agg(CAST(x AS VARCHAR), '|' ORDER BY CAST(x AS VARCHAR)), '')) "
                           f"FROM (SELECT COLUMNS(c -> c NOT IN ('id_key', 'article_published_at')) FROM {t}) x").fetchone()
            for t in ALL}


def test_a_warehouse_of_the_previous_schema_keeps_every_row_and_a_double_load_still_adds_nothing(tmp_path, feed_server, settings):
    with db.connect(settings.warehouse, migrate_schema=False) as con:
        db.migrate(con, upto=17)
        assert con.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'article_indicators' AND constraint_type = 'PRIMARY KEY'").fetchone()[0] == 1
        for k in range(3):
            _article(con, f"a{k}", f"drone attack on base number {k}", T1 + timedelta(minutes=k), T1 if k < 2 else None)
        con.execute("""INSERT INTO article_indicators (article_id, indicator, clause, hits, refs, frame)
                       VALUES ('a0', 'ind', 0, '[]', '["p"]', '{"x": 1}'), ('a1', 'ind', 1, '[{"group": "g"}]', '[]', NULL)""")
        con.execute("INSERT INTO events VALUES ('e0', 'ind', ?, ?, 'drone attack', ?)", [T1, T1, T1])
        con.execute("INSERT INTO event_articles VALUES ('e0', 'a0', 'first'), ('e0', 'a1', 'same_place')")
        con.execute("INSERT INTO article_entities VALUES ('a0', 'places', 'base', 'us_base', 'target'), ('a1', 'actors', 'm', 'militia', NULL)")
        con.execute("INSERT INTO article_sketches SELECT 'a' || i, list_transform(range(128), k -> hash(i, k) % 4294967296)::UBIGINT[] FROM range(2) t(i)")  # 32-bit, as MinHash values are (warehouse.neardup)
        before = _fingerprints(con)
        sums = con.execute("SELECT list_sum(minhash) FROM article_sketches ORDER BY article_id").fetchall()
        views = {v: con.execute(f"SELECT count(*) FROM {v}").fetchone()[0] for v in ("events_v", "counted_events", "event_corroboration")}
        assert db.migrate(con)[0] == 18  # and the later ones
        assert _fingerprints(con) == before
        assert {v: con.execute(f"SELECT count(*) FROM {v}").fetchone()[0] for v in views} == views
        assert con.execute(f"""SELECT count(*) FROM duckdb_constraints() WHERE list_contains({list(APPEND)}, table_name)
                               AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')""").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM duckdb_indexes() WHERE table_name IN ('articles', 'events')").fetchone()[0] == 0
        # 0028: sketches as fixed arrays of 32-bit values, the same values (the fingerprints above print both types alike)
        assert con.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'article_sketches' "
                           "AND column_name = 'minhash'").fetchone()[0] == "UINTEGER[128]"
        assert con.execute("SELECT list_sum(CAST(minhash AS UBIGINT[])) FROM article_sketches ORDER BY article_id").fetchall() == sums

    # The same staged files loaded twice (a load retried after it committed) add nothing to any table.
    now = datetime.now(timezone.utc).replace(microsecond=0)
    pub = (now - timedelta(minutes=20)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    items = [{"title": "Rockets target US forces at Harir base in Iraq's Kurdistan region", "link": "https://en.example/a/1", "guid": "en-1",
              "description": "No group claimed the attack on the base hosting US troops.", "pubDate": pub},
             {"title": "Football results", "link": "https://en.example/a/2", "guid": "en-2", "description": "scores", "pubDate": pub}]
    settings.feeds = write_feeds_yaml(tmp_path / "feeds.yaml", [
        {"id": "test-en", "name": "Test English", "lang": "en", "url": feed_server.serve("/en.xml", rss(items)), "interval": "5m"}])
    manifests = pipeline.fetch_stage(settings, pipeline.due_sources(settings, now))
    saved = {p: open(p, "rb").read() for m in manifests for p in (m, m.replace(".json", ".jsonl"))}
    rep = pipeline.load(settings, now)
    assert rep.new_articles == 2 and rep.matches >= 1 and rep.new_events >= 1
    with db.connect(settings.warehouse, read_only=True) as con:
        once = _fingerprints(con)
    assert once["articles"][0] == before["articles"][0] + 2 and once["event_articles"][0] > before["event_articles"][0]
    assert once["article_sketches"][0] > before["article_sketches"][0] and once["article_entities"][0] > before["article_entities"][0]
    for p, data in saved.items():
        open(p, "wb").write(data)
    again = pipeline.load(settings, now + timedelta(minutes=1))
    assert (again.new_articles, again.matches, again.new_events) == (0, 0, 0)
    with db.connect(settings.warehouse, read_only=True) as con:
        twice = _fingerprints(con)
    assert {t: twice[t] for t in APPEND} == {t: once[t] for t in APPEND}


def test_the_pending_set_of_a_load_is_the_articles_it_classified(tmp_path):
    """A load assigns the pairs of the articles it classified; an article classified and assigned
    in an earlier load is not read again, nor is an older pair that no load of ours left."""
    t2 = T1 + timedelta(minutes=5)
    with db.connect(tmp_path / "wh.duckdb") as con:
        _article(con, "old", "drone attack on ain al asad base", T1, T1)  # an earlier load: classified and assigned
        _article(con, "stray", "rocket attack on harir base", T1, T1)  # classified earlier, never assigned
        _article(con, "new", "drone attack on ain al asad base again", t2, t2)  # this load's
        _article(con, "quiet", "football results", t2, t2)  # this load's, no match
        con.execute("INSERT INTO article_indicators (article_id, indicator, article_published_at) SELECT x.a, x.i, published_at "
                    "FROM (VALUES ('old', 'ind'), ('stray', 'ind'), ('new', 'ind'), ('new', 'other')) x(a, i) JOIN articles ON article_id = x.a")
        assign_events(con, T1, this_load=True)  # the first load: 'old' and 'stray' (both classified at T1)
        assert pending_pairs(con, T1) == [] and pending_pairs(con) == [("new", "ind"), ("new", "other")]
        con.execute("DELETE FROM event_articles WHERE article_id = 'stray'")  # as an older Marsad could leave it
        assert pending_pairs(con, t2) == [("new", "ind"), ("new", "other")]
        assert pending_pairs(con, T1) == [("stray", "ind")]
        assert pending_pairs(con) == [("new", "ind"), ("new", "other"), ("stray", "ind")]
        sketched = con.execute("SELECT count(*) FROM article_sketches").fetchone()[0]

        assign_events(con, t2, this_load=True)
        assert con.execute("SELECT count(*) FROM article_sketches").fetchone()[0] == sketched + 1  # only 'new' was sketched
        assert pending_pairs(con, t2) == [] and pending_pairs(con) == [("stray", "ind")]  # 'stray' was not read
        assert con.execute("SELECT count(*) FROM event_articles WHERE article_id = 'new'").fetchone()[0] == 2
        assert assign_events(con, t2 + timedelta(minutes=5), this_load=True) == 0 and pending_pairs(con) == [("stray", "ind")]
        assign_events(con, t2 + timedelta(minutes=5))  # the whole-history repair
        assert pending_pairs(con) == []
