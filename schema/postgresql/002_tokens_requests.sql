-- Version 2: API tokens (hashes only) and users' copy requests.

CREATE TABLE token (
    name       text PRIMARY KEY,
    role       text NOT NULL CHECK (role IN ('reader', 'producer', 'operator')),
    sha256     text NOT NULL UNIQUE,
    created    double precision NOT NULL,
    expires_at double precision
);

CREATE TABLE copy_request (
    id         bigint PRIMARY KEY,
    oid        uuid NOT NULL REFERENCES data_item (oid),
    storage_id integer NOT NULL REFERENCES storage (id),
    state      text NOT NULL CHECK (state IN ('pending', 'done', 'failed', 'cancelled')),
    pin_until  double precision,
    created    double precision NOT NULL,
    updated    double precision NOT NULL,
    requester  text,
    comment    text
);
CREATE INDEX copy_request_open ON copy_request (state) WHERE state = 'pending';
