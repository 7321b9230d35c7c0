-- The article's publication time on the rows that hang off an article (#17 item 1):
-- article_indicators, article_entities, article_sketches and event_articles carry
-- `article_published_at`, a copy of articles.published_at (which never changes: corrections
-- replace an article's text, not its time; warehouse.load._CORRECTABLE).
--
-- A load reads these tables for a few articles: the pairs it classified (its own pending
-- pairs, warehouse.events._pending_sql), the members of the events the rules can still
-- reach (37 days: warehouse.events._read_events), their entities and sketches, its own
-- matches (warehouse.matches). They had no column but the article's id, a random hex
-- digest that zone maps cannot prune, so every such read scanned the whole history's ids
-- (at 2M articles, 100k-300k rows a table, 20-60 ms of CPU each). The articles of those
-- reads lie in a known span of publication times, so a bound on this column, implied by the
-- bound the reads already put on articles.published_at, lets DuckDB skip the row groups of
-- other times (min/max per row group): rows are appended as articles arrive, in about the
-- order of their times.
--
-- Every writer fills it (NOT NULL): warehouse.matches (insert_staged, insert_verdicts),
-- alerts.entities.tag_articles, warehouse.events (write_sketches, _write_links). Rows whose
-- article is not stored (none is ever deleted; hand-made rows) take -infinity, which no
-- bound admits: no read of a load joins them to an article anyway.
--
-- DuckDB adds a NOT NULL column only empty, and cannot constrain it after an UPDATE in the
-- same transaction: each table is created again with it and its rows copied in their order
-- (as 0018 did), the time looked up once per row.

CREATE TABLE article_indicators_0029 (
    article_id  TEXT NOT NULL,              -- unique with indicator (warehouse.matches)
    indicator   TEXT NOT NULL,
    clause      INTEGER,
    hits        JSON,
    refs        JSON,
    frame       JSON,
    article_published_at TIMESTAMPTZ NOT NULL  -- articles.published_at of article_id
);
INSERT INTO article_indicators_0029
SELECT t.article_id, t.indicator, t.clause, t.hits, t.refs, t.frame, coalesce(a.published_at, '-infinity'::TIMESTAMPTZ)
FROM article_indicators t LEFT JOIN (SELECT article_id, published_at FROM articles) a USING (article_id) ORDER BY t.rowid;
DROP TABLE article_indicators;
ALTER TABLE article_indicators_0029 RENAME TO article_indicators;

CREATE TABLE article_entities_0029 (
    article_id TEXT NOT NULL,               -- unique with gazetteer, entity_id (alerts.entities)
    gazetteer  TEXT NOT NULL,
    entity_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    role       TEXT,
    article_published_at TIMESTAMPTZ NOT NULL  -- articles.published_at of article_id
);
INSERT INTO article_entities_0029
SELECT t.article_id, t.gazetteer, t.entity_id, t.kind, t.role, coalesce(a.published_at, '-infinity'::TIMESTAMPTZ)
FROM article_entities t LEFT JOIN (SELECT article_id, published_at FROM articles) a USING (article_id) ORDER BY t.rowid;
DROP TABLE article_entities;
ALTER TABLE article_entities_0029 RENAME TO article_entities;

CREATE TABLE article_sketches_0029 (
    article_id TEXT NOT NULL,               -- unique (warehouse.events.write_sketches)
    minhash    UINTEGER[128] NOT NULL,
    article_published_at TIMESTAMPTZ NOT NULL  -- articles.published_at of article_id
);
INSERT INTO article_sketches_0029
SELECT t.article_id, t.minhash, coalesce(a.published_at, '-infinity'::TIMESTAMPTZ)
FROM article_sketches t LEFT JOIN (SELECT article_id, published_at FROM articles) a USING (article_id) ORDER BY t.rowid;
DROP TABLE article_sketches;
ALTER TABLE article_sketches_0029 RENAME TO article_sketches;

CREATE TABLE event_articles_0029 (
    event_id   TEXT NOT NULL,               -- unique with article_id (warehouse.events)
    article_id TEXT NOT NULL,
    how        TEXT NOT NULL,
    article_published_at TIMESTAMPTZ NOT NULL  -- articles.published_at of article_id
);
INSERT INTO event_articles_0029
SELECT t.event_id, t.article_id, t.how, coalesce(a.published_at, '-infinity'::TIMESTAMPTZ)
FROM event_articles t LEFT JOIN (SELECT article_id, published_at FROM articles) a USING (article_id) ORDER BY t.rowid;
DROP TABLE event_articles;
ALTER TABLE event_articles_0029 RENAME TO event_articles;
