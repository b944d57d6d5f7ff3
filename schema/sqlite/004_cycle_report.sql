-- Version 4: every decision of a cycle, compressed (zlib'd msgpack columns), one row per cycle.
CREATE TABLE cycle_report (
    cycle_id  integer PRIMARY KEY REFERENCES cycle (id),
    decisions blob NOT NULL
);
