-- Version 10: finished operations leave memory after a retention period and are read from
-- here (GET /v1/operations?state=done, dlm ops --state done): a page by state in id order,
-- and the start-up load of the recent ones, each in time proportional to what it returns.
CREATE INDEX operation_state_id ON operation (state, id);
CREATE INDEX operation_finished ON operation (updated) WHERE state IN ('done', 'failed', 'cancelled');
