-- Per-source health: source_health_at(t) is the table as of time t (replay and tests pass
-- their clock); the view source_health is the same as of now.
-- failing_since: the first failed attempt after the last success (NULL when healthy).
-- items_*: articles first seen in the last 24 h / 7 / 30 days; first_item_30d / last_item_at
-- give the source's usual rate. median_lag_s: median publish-to-fetch delay over 7 days
-- (articles with a real publish date only).
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
    FROM fetch_log fl JOIN source_state ss USING (source_id)
    WHERE fl.status = 'error' AND ss.consecutive_failures > 0 AND fl.started_at <= t
      AND (ss.last_success_at IS NULL OR fl.started_at > ss.last_success_at)
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
WHERE s.url NOT LIKE 'replay:%';

CREATE VIEW source_health AS SELECT * FROM source_health_at(now());
