-- A compact key of each article's id (#17 item 1): the first 64 bits of md5(article_id), as
-- UBIGINT (warehouse.load.id_key_sql; md5, not DuckDB's hash(), whose values may change with
-- DuckDB's version: stored keys would then match nothing and every entry would look new).
--
-- A load finds the stored articles among the 10k it stages (load_articles, `_marsad_known`).
-- The ids are random hex digests, FSST-compressed strings that zone maps cannot prune: the
-- whole column was decompressed and hashed at every load (~0.15 s of CPU at 2M articles).
-- The key is 8 bytes, compared as an integer; the few candidates it finds are confirmed on
-- the id itself. The key is derived data: NULL where a writer did not fill it (an insert by
-- column list that omits it); the next load fills it before it looks (load_articles).
ALTER TABLE articles ADD COLUMN id_key UBIGINT;
UPDATE articles SET id_key = CAST('0x' || left(md5(article_id), 16) AS UBIGINT);
