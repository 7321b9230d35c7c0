-- Alert lifecycle: silences (time-boxed, by indicator or rule, with a reason) and
-- acknowledgements (stop repeats of an alert someone is handling).

CREATE TABLE silences (
    silence_id  TEXT PRIMARY KEY,
    matcher     TEXT NOT NULL,             -- indicator | rule
    value       TEXT NOT NULL,             -- the indicator id or rule id silenced
    starts_at   TIMESTAMPTZ NOT NULL,
    ends_at     TIMESTAMPTZ NOT NULL,
    reason      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

ALTER TABLE alerts ADD COLUMN acked_at TIMESTAMPTZ;
ALTER TABLE alerts ADD COLUMN acked_by TEXT;
ALTER TABLE alerts ADD COLUMN ack_note TEXT;
-- Whether the first Slack message of a resolved alert has been edited to say so.
ALTER TABLE notifications ADD COLUMN parent_updated BOOLEAN;
