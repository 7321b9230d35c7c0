-- What Marsad last judged of each source (sources/health.py, at every evaluation): the view
-- source_health said 'ok' for a source that ops had been paged about as silent, because the
-- silent threshold (health.* in feeds.yaml) is not in the warehouse. Each evaluation now records
-- its verdict here, and the view's `health` reads it: 'silent' until a new item arrives after
-- the verdict. judged_at says how old the verdict is. (0019 and 0020 stay free for other branches.)
CREATE TABLE source_verdicts (
    source_id  TEXT PRIMARY KEY,
    problem    TEXT,                    -- NULL | 'down' | 'silent' (what ops alerts fire on)
    detail     TEXT NOT NULL,           -- the sentence the ops alert gives, '' when no problem
    judged_at  TIMESTAMPTZ NOT NULL
);

DROP VIEW IF EXISTS source_health;
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
       -- The same order as sources.health.assess (marsad sources status, the board).
       CASE
           WHEN NOT h.enabled THEN 'disabled'
           WHEN h.last_attempt_at IS NULL THEN 'never_polled'
           WHEN h.consecutive_failures > 0 THEN 'failing'
           WHEN v.problem = 'silent' AND (h.last_item_at IS NULL OR h.last_item_at <= v.judged_at) THEN 'silent'
           WHEN h.last_success_at < now() - to_seconds(3 * h.interval_s) THEN 'stale'
           ELSE 'ok'
       END AS health,
       v.problem AS judged_problem, v.detail AS judged_detail, v.judged_at
FROM source_health_at(now()) h
JOIN sources s USING (source_id)
LEFT JOIN recent r USING (source_id)
LEFT JOIN source_verdicts v USING (source_id);
