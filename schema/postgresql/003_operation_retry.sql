-- Version 3: when a failed operation may be tried again (retries with backoff).
ALTER TABLE operation ADD COLUMN not_before double precision;
CREATE INDEX operation_open ON operation (state) WHERE state IN ('queued', 'running');
