-- The earliest time the server allows the next poll of a source (Retry-After on 429/503,
-- Cache-Control max-age), kept apart from next_due_at: a feed may be polled at the ingest run
-- nearest its due time, a little before it (warehouse/sources.py: due), but never before this.
ALTER TABLE source_state ADD COLUMN not_before TIMESTAMPTZ;
