-- Version 6: PostgreSQL's version 6 drops replica's second unique index (on oid, storage_id:
-- implied by the uid primary key) and its foreign keys, which locked the item and the storage
-- of every replica inserted. SQLite's foreign-key checks only read, and rebuilding the table to
-- drop them would rewrite every replica of an existing inventory, so nothing changes here. Kept
-- so both dialects number alike.
SELECT 1;
