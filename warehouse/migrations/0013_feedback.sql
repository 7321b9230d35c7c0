-- Analyst feedback on events: "this is not an event" (of its indicator), from Slack or the CLI.
-- A flagged event leaves every rule's counts (alerts/evaluate.py) until the flag is undone.
-- Rows are never deleted: undo stamps undone_at/undone_by, and flagging again adds a row,
-- so the history says who said what when. At most one row per event is active (undone_at
-- IS NULL); alerts/feedback.py keeps it so inside a transaction.
CREATE TABLE event_feedback (
    feedback_id TEXT PRIMARY KEY,          -- sha1(event_id, how many flags it had before)
    event_id    TEXT NOT NULL,
    indicator   TEXT NOT NULL,             -- the event's indicator when flagged: the label is "not <indicator>"
    verdict     TEXT NOT NULL DEFAULT 'not_event',
    alert_id    TEXT,                      -- the alert whose message carried the button, if any
    flagged_by  TEXT NOT NULL,             -- Slack user id (U...) or login name
    flagged_at  TIMESTAMPTZ NOT NULL,
    note        TEXT,
    undone_at   TIMESTAMPTZ,
    undone_by   TEXT
);
CREATE INDEX event_feedback_event ON event_feedback (event_id);
