-- MinHash sketches as fixed-size arrays of 32-bit values (warehouse/neardup.py: 128
-- permutations, datasketch's affine32 scheme, every value below 2^32) instead of a list of
-- 64-bit values: half the bytes that event assignment writes (and DuckDB logs and checkpoints)
-- and reads back, and no per-row list offsets. The cast refuses a value of 32 bits or more, or
-- a sketch of another length, rather than store it changed; the values themselves, and so
-- every near-duplicate decision, stay the same.
CREATE TABLE article_sketches_0028 (
    article_id TEXT NOT NULL,               -- unique (warehouse.events.write_sketches)
    minhash    UINTEGER[128] NOT NULL
);
INSERT INTO article_sketches_0028 SELECT article_id, CAST(minhash AS UINTEGER[128]) FROM article_sketches;
DROP TABLE article_sketches;
ALTER TABLE article_sketches_0028 RENAME TO article_sketches;
