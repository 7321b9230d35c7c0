-- Key judgements (alerts/judgements.py): every change of a judgement's status, with the
-- evidence (the events that contradicted it, put it under pressure or support it) and the
-- likelihood the analysts stated, so that the track record survives edits of the files.
CREATE TABLE judgement_history (
    assessment_id TEXT NOT NULL,            -- alerts/assessments/<file>.yaml: id
    judgement_id  TEXT NOT NULL,
    changed_at    TIMESTAMPTZ NOT NULL,     -- the evaluation that saw the change
    status        TEXT NOT NULL,            -- holding | under_pressure | contradicted | expired
    previous      TEXT,                     -- the status before (NULL: first evaluation)
    outcome       TEXT,                     -- expired only: held | failed | unobserved
    likelihood    TEXT NOT NULL,            -- ICD 203 term, e.g. unlikely
    probability   DOUBLE NOT NULL,          -- the term's midpoint (Brier score)
    window_end    TIMESTAMPTZ NOT NULL,
    event_ids     TEXT[],                   -- the evidence: events behind this status
    facts         JSON,                     -- what held: conditions, counts, when contradicted
    alert_id      TEXT,                     -- the alert (and Slack thread) that told of it
    PRIMARY KEY (assessment_id, judgement_id, changed_at)
);

-- The current status of each judgement: its latest change.
CREATE VIEW judgement_status_v AS
SELECT assessment_id, judgement_id,
       arg_max(status, changed_at)      AS status,
       arg_max(outcome, changed_at)     AS outcome,
       max(changed_at)                  AS changed_at,
       arg_max(event_ids, changed_at)   AS event_ids,
       arg_max(facts, changed_at)       AS facts,
       arg_max(alert_id, changed_at)    AS alert_id,
       arg_max(likelihood, changed_at)  AS likelihood,
       arg_max(probability, changed_at) AS probability,
       arg_max(window_end, changed_at)  AS window_end
FROM judgement_history
GROUP BY assessment_id, judgement_id;
