-- Sources that leave the feeds file, and feed ids given a new URL.
-- removed_at: when the source left the registry (its articles stay; status and the board stop
-- listing it; NULL again if it comes back). url_since: when the source got its current URL;
-- polls of an earlier URL no longer count towards its failures (marsad/pipeline.sync_sources
-- also drops the old URL's validators, backoff and error).
ALTER TABLE sources ADD COLUMN removed_at TIMESTAMPTZ;
ALTER TABLE sources ADD COLUMN url_since TIMESTAMPTZ;

DROP VIEW IF EXISTS source_health;
DROP MACRO TABLE IF EXISTS source_health_at;
CREATE MACRO source_health_at(t) AS TABLE
SELECT
    s.source_id, s.name, s.lang, s.url, s.enabled, s.interval_s,
    st.last_attempt_at, st.last_success_at, st.last_status, st.last_http_status, st.last_error,
    coalesce(st.consecutive_failures, 0) AS consecutive_failures,
    st.next_due_at,
    f.failing_since,
    coalesce(a.items_24h, 0) AS items_24h,
    coalesce(a.items_7d, 0) AS items_7d,
    coalesce(a.items_30d, 0) AS items_30d,
    a.first_item_30d,
    a.last_item_at,
    a.median_lag_s
FROM sources s
LEFT JOIN source_state st USING (source_id)
LEFT JOIN (
    SELECT fl.source_id, min(fl.started_at) AS failing_since
    FROM fetch_log fl JOIN source_state ss USING (source_id) JOIN sources so USING (source_id)
    WHERE fl.status = 'error' AND ss.consecutive_failures > 0 AND fl.started_at <= t
      AND (ss.last_success_at IS NULL OR fl.started_at > ss.last_success_at)
      AND (so.url_since IS NULL OR fl.started_at >= so.url_since)
    GROUP BY fl.source_id
) f USING (source_id)
LEFT JOIN (
    SELECT source_id,
           count(*) FILTER (WHERE fetched_at > t - INTERVAL 24 HOUR) AS items_24h,
           count(*) FILTER (WHERE fetched_at > t - INTERVAL 7 DAY) AS items_7d,
           count(*) FILTER (WHERE fetched_at > t - INTERVAL 30 DAY) AS items_30d,
           min(fetched_at) FILTER (WHERE fetched_at > t - INTERVAL 30 DAY) AS first_item_30d,
           max(fetched_at) AS last_item_at,
           median(epoch(fetched_at) - epoch(published_at))
               FILTER (WHERE fetched_at > t - INTERVAL 7 DAY AND published_flag IS NULL) AS median_lag_s
    FROM articles WHERE fetched_at <= t
    GROUP BY source_id
) a USING (source_id)
WHERE s.url NOT LIKE 'replay:%' AND s.removed_at IS NULL;

-- The analysts' view as 0005 defines it, over the new macro (removed sources left out).
CREATE VIEW source_health AS
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
