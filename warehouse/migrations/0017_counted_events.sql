-- The events that count: every event except those an analyst has flagged "not an event"
-- (event_feedback, migration 0013) and not undone. Rules, rule status, judgements, the digest
-- and the board's counts and timeline read this view, so a flag is defined in one place.
CREATE VIEW counted_events AS
SELECT * FROM events
WHERE event_id NOT IN (SELECT event_id FROM event_feedback WHERE undone_at IS NULL);
