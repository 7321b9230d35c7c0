-- Analyst views over the tables of 0001 (documented in docs/warehouse.md).
-- Views only: nothing is stored, so they always agree with the tables they read.

-- One row per event, with how well it is corroborated: how many reports, from how many
-- outlets, in which languages, and how long after the first report the last one came.
CREATE VIEW event_corroboration AS
SELECT e.event_id,
       e.indicator,
       e.first_report_at,
       e.first_seen_at,
       e.title,
       count(DISTINCT ea.article_id)                        AS n_articles,
       count(DISTINCT a.source_id)                          AS n_outlets,
       list_sort(list_distinct(list(a.lang)))               AS languages,
       list_sort(list_distinct(list(a.source_id)))          AS outlets,
       max(a.published_at)                                  AS last_report_at
FROM events e
LEFT JOIN event_articles ea USING (event_id)
LEFT JOIN articles a USING (article_id)
GROUP BY ALL;

-- Per indicator and UTC day: matching articles (by published_at) and new events
-- (by first_report_at). Days with neither are absent.
CREATE VIEW indicator_daily AS
WITH art AS (
    SELECT ai.indicator, CAST(date_trunc('day', a.published_at AT TIME ZONE 'UTC') AS DATE) AS day,
           count(*) AS n_articles, count(DISTINCT a.source_id) AS n_outlets
    FROM article_indicators ai JOIN articles a USING (article_id)
    GROUP BY ALL
), ev AS (
    SELECT indicator, CAST(date_trunc('day', first_report_at AT TIME ZONE 'UTC') AS DATE) AS day, count(*) AS n_events
    FROM events
    GROUP BY ALL
)
SELECT indicator, day,
       coalesce(art.n_articles, 0) AS n_articles,
       coalesce(art.n_outlets, 0)  AS n_outlets,
       coalesce(ev.n_events, 0)    AS n_events
FROM art FULL OUTER JOIN ev USING (indicator, day);

-- One row per alert episode (firing -> resolved), with what ops were told about it.
CREATE VIEW alert_history AS
SELECT al.alert_id, al.rule_id, al.indicator, al.kind, al.severity, al.channel, al.state,
       al.started_at, al.resolved_at,
       coalesce(al.resolved_at, now()) - al.started_at                AS open_for,
       (SELECT count(*) FROM alert_events ae WHERE ae.alert_id = al.alert_id) AS n_events,
       count(n.notification_id)                                      AS n_notifications,
       count(n.notification_id) FILTER (WHERE n.status = 'sent')     AS n_sent,
       max(n.sent_at)                                                AS last_sent_at,
       al.summary
FROM alerts al
LEFT JOIN notifications n USING (alert_id)
GROUP BY ALL;

-- One row per source: is it healthy? Fetch counts cover the last 24 hours of fetch_log.
-- Source health: 0003's view (failures, items per 24 h / 7 d / 30 d, publish-to-fetch lag)
-- widened with the last 24 hours of fetches and a one-word health label.
CREATE OR REPLACE VIEW source_health AS
WITH recent AS (
    SELECT source_id,
           count(*)                                        AS fetches_24h,
           count(*) FILTER (WHERE status = 'error')        AS errors_24h,
           coalesce(sum(new_articles), 0)                  AS new_articles_24h,
           max(started_at)                                 AS last_fetch_at
    FROM fetch_log
    WHERE started_at >= now() - INTERVAL 24 HOURS
    GROUP BY source_id
)
SELECT h.*, s.reliability,
       coalesce(r.fetches_24h, 0)      AS fetches_24h,
       coalesce(r.errors_24h, 0)       AS errors_24h,
       coalesce(r.new_articles_24h, 0) AS new_articles_24h,
       CASE
           WHEN NOT h.enabled THEN 'disabled'
           WHEN h.last_attempt_at IS NULL THEN 'never_polled'
           WHEN h.consecutive_failures > 0 THEN 'failing'
           WHEN h.last_success_at < now() - to_seconds(3 * h.interval_s) THEN 'stale'
           ELSE 'ok'
       END AS health
FROM source_health_at(now()) h
JOIN sources s USING (source_id)
LEFT JOIN recent r USING (source_id);
