-- What each alert's first Slack message last showed of what ops did to it (acknowledged by,
-- silenced until, events flagged "not an event"): alerts/lifecycle.py compares it with the
-- warehouse, and delivery edits the messages that fell behind (an acknowledgement from the
-- CLI, a silence that ran out, a flag undone), so Slack never shows a state that is over.
-- The number leaves 0018-0020 to work in progress on other branches (gaps are allowed).
CREATE TABLE message_draws (
    alert_id  TEXT PRIMARY KEY,
    drawn_at  TIMESTAMPTZ NOT NULL,
    state     JSON NOT NULL             -- alerts.render.MessageState as drawn
);
