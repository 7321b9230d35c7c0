-- Tables designed for append (#17): a load's cost follows the load, not the history.
--
-- DuckDB writes every ART index whole at each checkpoint, and a checkpoint follows every
-- commit that leaves a WAL at close: with the primary keys of articles and of the link tables
-- and three secondary indexes on articles (and events' two), closing the warehouse after a load of 10k new
-- articles took seconds at 1M articles and grew with them (bench/history.py). No query uses
-- the secondary indexes (DuckDB scans with zone maps; EXPLAIN shows no index scan), and the
-- keys are kept by their one writer each, which inserts only the keys not stored yet (an
-- anti-join of this batch's keys): warehouse.load.bulk_insert (APPEND_KEYS),
-- warehouse.load.load_articles, warehouse.matches, warehouse.events, alerts.entities.
-- events: one row per event, 1/80 of the articles, yet its primary key and its
-- (indicator, first_report_at) index cost 0.5 s per checkpoint at 1M articles; the rules read
-- events by indicator and time with a scan, and new events have new ids (warehouse.cluster).
--
-- DuckDB cannot drop a primary key in place: each table is created again without it and its
-- rows copied (articles in the order they were seen, so that the zone maps of fetched_at,
-- published_at and classified_at skip the past); views name tables, so they keep working.

DROP INDEX IF EXISTS articles_published;
DROP INDEX IF EXISTS articles_canonical;
DROP INDEX IF EXISTS articles_hash;
DROP INDEX IF EXISTS events_indicator_time;

CREATE TABLE articles_0018 (
    article_id     TEXT NOT NULL,           -- sha1(source_id, guid or canonical url); unique (warehouse.load)
    source_id      TEXT NOT NULL,
    guid           TEXT,
    url            TEXT,
    canonical_url  TEXT,
    title          TEXT NOT NULL,
    summary        TEXT NOT NULL,
    lang           TEXT NOT NULL,
    published_at   TIMESTAMPTZ NOT NULL,
    published_flag TEXT,
    fetched_at     TIMESTAMPTZ NOT NULL,
    title_folded   TEXT NOT NULL,
    text_folded    TEXT NOT NULL,
    content_hash   TEXT NOT NULL,
    classified_at  TIMESTAMPTZ
);
INSERT INTO articles_0018
SELECT article_id, source_id, guid, url, canonical_url, title, summary, lang, published_at, published_flag,
       fetched_at, title_folded, text_folded, content_hash, classified_at
FROM articles ORDER BY fetched_at, article_id;
DROP TABLE articles;
ALTER TABLE articles_0018 RENAME TO articles;

CREATE TABLE article_indicators_0018 (
    article_id  TEXT NOT NULL,              -- unique with indicator (warehouse.matches)
    indicator   TEXT NOT NULL,
    clause      INTEGER,
    hits        JSON,
    refs        JSON,
    frame       JSON
);
INSERT INTO article_indicators_0018 SELECT article_id, indicator, clause, hits, refs, frame FROM article_indicators;
DROP TABLE article_indicators;
ALTER TABLE article_indicators_0018 RENAME TO article_indicators;

CREATE TABLE event_articles_0018 (
    event_id   TEXT NOT NULL,               -- unique with article_id (warehouse.events)
    article_id TEXT NOT NULL,
    how        TEXT NOT NULL
);
INSERT INTO event_articles_0018 SELECT event_id, article_id, how FROM event_articles;
DROP TABLE event_articles;
ALTER TABLE event_articles_0018 RENAME TO event_articles;

CREATE TABLE article_entities_0018 (
    article_id TEXT NOT NULL,               -- unique with gazetteer, entity_id (alerts.entities)
    gazetteer  TEXT NOT NULL,
    entity_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    role       TEXT
);
INSERT INTO article_entities_0018 SELECT article_id, gazetteer, entity_id, kind, role FROM article_entities;
DROP TABLE article_entities;
ALTER TABLE article_entities_0018 RENAME TO article_entities;

CREATE TABLE article_sketches_0018 (
    article_id TEXT NOT NULL,               -- unique (warehouse.events.write_sketches)
    minhash    UBIGINT[] NOT NULL
);
INSERT INTO article_sketches_0018 SELECT article_id, minhash FROM article_sketches;
DROP TABLE article_sketches;
ALTER TABLE article_sketches_0018 RENAME TO article_sketches;

CREATE TABLE events_0018 (
    event_id        TEXT NOT NULL,          -- unique (warehouse.events)
    indicator       TEXT NOT NULL,
    first_report_at TIMESTAMPTZ NOT NULL,
    first_seen_at   TIMESTAMPTZ NOT NULL,
    title           TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
INSERT INTO events_0018 SELECT event_id, indicator, first_report_at, first_seen_at, title, created_at FROM events ORDER BY created_at, event_id;
DROP TABLE events;
ALTER TABLE events_0018 RENAME TO events;
