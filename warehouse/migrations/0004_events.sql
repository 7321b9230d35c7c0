-- Events, part 2: what near-duplicate and cross-lingual event assignment needs, and the
-- analysts' view of events with their corroboration (see warehouse/events.py).

-- Gazetteer entries named anywhere in a classified article (places, actors, weapons, and
-- cue words such as follow-up vocabulary), found on folded text in either language. Unlike
-- article_indicators.refs (the entries that made an indicator match), this is the whole text.
CREATE TABLE article_entities (
    article_id TEXT NOT NULL,
    gazetteer  TEXT NOT NULL,                -- places | actors | weapons | cues
    entity_id  TEXT NOT NULL,                -- stable id, the same in both languages
    kind       TEXT NOT NULL,                -- the entry's kind (us_base, militia, country, followup, ...)
    PRIMARY KEY (article_id, gazetteer, entity_id)
);

-- MinHash signature of the folded title and summary (warehouse/neardup.py), computed once.
CREATE TABLE article_sketches (
    article_id TEXT PRIMARY KEY,
    minhash    UBIGINT[] NOT NULL
);

-- One row per event with its corroboration: how many reports, outlets and languages.
CREATE VIEW events_v AS
SELECT e.event_id, e.indicator, e.first_report_at, e.first_seen_at, e.title,
       count(*)                               AS n_articles,
       count(DISTINCT a.source_id)            AS n_outlets,
       list_sort(list_distinct(list(a.lang))) AS languages,
       list_sort(list_distinct(list(a.source_id))) AS outlets,
       max(a.published_at)                    AS last_report_at,
       list_sort(list_distinct(list(ea.how))) AS joined_by
FROM events e JOIN event_articles ea USING (event_id) JOIN articles a USING (article_id)
GROUP BY ALL;
