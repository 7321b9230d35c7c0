-- The event frame that decided each match (alerts/frames.py): who did what to whom, where,
-- and whether it is new. NULL for matches made before frames, or decided by keywords alone.
ALTER TABLE article_indicators ADD COLUMN frame JSON;

-- events_v shows the frame of the event's first report that has one.
DROP VIEW IF EXISTS events_v;
CREATE VIEW events_v AS
SELECT e.event_id, e.indicator, e.first_report_at, e.first_seen_at, e.title,
       count(*)                               AS n_articles,
       count(DISTINCT a.source_id)            AS n_outlets,
       list_sort(list_distinct(list(a.lang))) AS languages,
       list_sort(list_distinct(list(a.source_id))) AS outlets,
       max(a.published_at)                    AS last_report_at,
       list_sort(list_distinct(list(ea.how))) AS joined_by,
       arg_min(ai.frame, a.published_at) FILTER (WHERE ai.frame IS NOT NULL) AS frame
FROM events e JOIN event_articles ea USING (event_id) JOIN articles a USING (article_id)
LEFT JOIN article_indicators ai ON ai.article_id = ea.article_id AND ai.indicator = e.indicator
GROUP BY ALL;
