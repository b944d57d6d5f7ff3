-- Version 5: PostgreSQL's version 5 gives replica and item pages room for HOT updates and drops
-- the operation table's foreign key to data_item, both to cut the write-ahead log of a cycle's
-- large commit. Neither applies here: SQLite has no fillfactor, and its foreign-key check reads
-- a row without writing anything, so the key stays. Kept so both dialects number alike.
SELECT 1;
