-- Version 2: API tokens (hashes only) and users' copy requests.

CREATE TABLE token (
    name       text PRIMARY KEY,
    role       text NOT NULL CHECK (role IN ('reader', 'producer', 'operator')),
    sha256     text NOT NULL UNIQUE,
    created    real NOT NULL,
    expires_at real
);

CREATE TABLE copy_request (
    id         integer PRIMARY KEY,
    oid        text NOT NULL REFERENCES data_item (oid),
    storage_id integer NOT NULL REFERENCES storage (id),
    state      text NOT NULL CHECK (state IN ('pending', 'done', 'failed', 'cancelled')),
    pin_until  real,
    created    real NOT NULL,
    updated    real NOT NULL,
    requester  text,
    comment    text
);
CREATE INDEX copy_request_open ON copy_request (state) WHERE state = 'pending';
