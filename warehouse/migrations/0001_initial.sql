-- Marsad warehouse, first schema. Times are UTC (TIMESTAMPTZ).

-- Facts about this warehouse file (e.g. purpose = 'replay' for a simulation).
CREATE TABLE marsad_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE sources (
    source_id    TEXT PRIMARY KEY,          -- id from sources/feeds.yaml
    name         TEXT NOT NULL,
    lang         TEXT NOT NULL,             -- ar | en
    url          TEXT NOT NULL,
    interval_s   INTEGER NOT NULL,          -- poll interval
    reliability  TEXT NOT NULL,             -- Admiralty grade A-F
    enabled      BOOLEAN NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

-- Polling state per source: conditional-GET validators, backoff, health.
CREATE TABLE source_state (
    source_id            TEXT PRIMARY KEY,
    etag                 TEXT,
    last_modified        TEXT,
    last_attempt_at      TIMESTAMPTZ,
    last_success_at      TIMESTAMPTZ,
    last_status          TEXT,              -- ok | not_modified | error
    last_http_status     INTEGER,
    last_error           TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    next_due_at          TIMESTAMPTZ
);

-- One row per fetch attempt (pruned by retention later; articles are kept).
CREATE TABLE fetch_log (
    fetch_id     TEXT PRIMARY KEY,          -- id of the staged fetch (a re-run load adds nothing)
    source_id    TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ NOT NULL,
    status       TEXT NOT NULL,             -- ok | not_modified | error
    http_status  INTEGER,
    entries      INTEGER NOT NULL DEFAULT 0,
    new_articles INTEGER NOT NULL DEFAULT 0,
    bytes        BIGINT,
    error        TEXT,
    staged_file  TEXT
);

-- One row per report: an entry of one source's feed. The same story from two outlets is
-- two articles (and one event, see events).
CREATE TABLE articles (
    article_id     TEXT PRIMARY KEY,        -- sha1(source_id, guid or canonical url)
    source_id      TEXT NOT NULL,
    guid           TEXT,                    -- the feed's entry id (or the replay input id)
    url            TEXT,
    canonical_url  TEXT,
    title          TEXT NOT NULL,           -- display text, as the outlet wrote it
    summary        TEXT NOT NULL,           -- plain text
    lang           TEXT NOT NULL,
    published_at   TIMESTAMPTZ NOT NULL,    -- UTC; the fetch time when the feed gave none
    published_flag TEXT,                    -- NULL, 'missing', 'unparseable' or 'future' (clamped)
    fetched_at     TIMESTAMPTZ NOT NULL,    -- first time Marsad saw it
    title_folded   TEXT NOT NULL,           -- matching key (sources.normalize.fold)
    text_folded    TEXT NOT NULL,
    content_hash   TEXT NOT NULL,
    classified_at  TIMESTAMPTZ              -- NULL until the classifier has run on it
);
CREATE INDEX articles_published ON articles (published_at);
CREATE INDEX articles_canonical ON articles (canonical_url);
CREATE INDEX articles_hash ON articles (content_hash);

-- Which indicators an article matches, and why (matched terms, gazetteer refs).
CREATE TABLE article_indicators (
    article_id  TEXT NOT NULL,
    indicator   TEXT NOT NULL,
    clause      INTEGER,
    hits        JSON,
    refs        JSON,
    PRIMARY KEY (article_id, indicator)
);

-- An event is one real-world occurrence of an indicator; its time is its first report.
CREATE TABLE events (
    event_id        TEXT PRIMARY KEY,
    indicator       TEXT NOT NULL,
    first_report_at TIMESTAMPTZ NOT NULL,   -- earliest published_at among its articles
    first_seen_at   TIMESTAMPTZ NOT NULL,   -- when Marsad first saw any of them
    title           TEXT NOT NULL,          -- title of the first report
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_indicator_time ON events (indicator, first_report_at);

CREATE TABLE event_articles (
    event_id   TEXT NOT NULL,
    article_id TEXT NOT NULL,
    how        TEXT NOT NULL,               -- first | same_url | same_content | ...
    PRIMARY KEY (event_id, article_id)
);

-- Alerts: one row per firing episode of a rule (Alertmanager-style firing -> resolved).
CREATE TABLE alerts (
    alert_id         TEXT PRIMARY KEY,
    rule_id          TEXT NOT NULL,
    indicator        TEXT NOT NULL,
    kind             TEXT NOT NULL,
    severity         TEXT NOT NULL,
    channel          TEXT NOT NULL,
    state            TEXT NOT NULL,         -- firing | resolved
    started_at       TIMESTAMPTZ NOT NULL,
    resolved_at      TIMESTAMPTZ,
    last_notified_at TIMESTAMPTZ NOT NULL,
    summary          TEXT NOT NULL
);
CREATE INDEX alerts_rule_state ON alerts (rule_id, state);

-- Which events an alert has told ops about (so follow-ups carry only new evidence).
CREATE TABLE alert_events (
    alert_id    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    notified_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (alert_id, event_id)
);

-- Transactional outbox: written in the same transaction as the alert change, delivered
-- afterwards; a notification is posted at most once (see alerts/delivery.py).
CREATE TABLE notifications (
    notification_id TEXT PRIMARY KEY,       -- alert_id:seq, deterministic
    alert_id        TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    state           TEXT NOT NULL,          -- firing | update | repeat | resolved
    created_at      TIMESTAMPTZ NOT NULL,
    channel         TEXT NOT NULL,
    payload         JSON NOT NULL,          -- text, blocks, evidence
    status          TEXT NOT NULL DEFAULT 'pending',  -- pending | sending | sent
    sink            TEXT,                   -- slack | local
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    sent_at         TIMESTAMPTZ,
    slack_channel   TEXT,                   -- channel id Slack answered with
    slack_ts        TEXT,
    thread_ts       TEXT
);
CREATE INDEX notifications_status ON notifications (status, created_at);
