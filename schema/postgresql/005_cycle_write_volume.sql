-- Version 5: less write-ahead log for the large writes of Detox and Dealer cycles.
--
-- Room on every page for a row's next version, so that a replica's or an item's state change
-- (complete -> deleting, READY -> EXPIRED) is a HOT update: the new version stays on its page
-- and no index gets a new entry. A 10M-replica Detox cycle marks ~257k random replicas
-- deleting: with full pages, each of those updates also wrote both replica indexes.
-- Applies to pages written from now on; `VACUUM FULL replica` rewrites the existing ones.
ALTER TABLE replica SET (fillfactor = 85);
ALTER TABLE data_item SET (fillfactor = 90);

-- An operation's item is checked against the inventory by the writer before the operation is
-- written, and items are never deleted (DELETED is a tombstone row), so this foreign key only
-- guarded against a bug, at the price of a row lock (write-ahead logged, with a full-page image)
-- on the item of every operation: ~4 s of a 257k-deletion commit at 10M replicas.
ALTER TABLE operation DROP CONSTRAINT IF EXISTS operation_oid_fkey;
