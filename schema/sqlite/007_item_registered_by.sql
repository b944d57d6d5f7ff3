-- Version 7: who registered each item (the name of the token that created it; NULL for items
-- registered before version 7 or without tokens). A producer may expire or shorten the life of
-- only the items it registered; operators may change any (inventory/writes.py).
ALTER TABLE data_item ADD COLUMN registered_by text;
