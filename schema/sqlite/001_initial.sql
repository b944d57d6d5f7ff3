-- DLM schema, version 1 (SQLite).
-- Times are epoch seconds (real): loading millions of rows and COPY stay fast;
-- read them with to_timestamp(created). States and phases are their names, as in the API.

CREATE TABLE inventory_state (
    id      integer PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL          -- inventory version of the last committed transaction
);
INSERT INTO inventory_state (id, version) VALUES (1, 0);

CREATE TABLE storage (
    id         integer PRIMARY KEY CHECK (id BETWEEN 1 AND 65535),
    name       text NOT NULL UNIQUE,
    kind       text NOT NULL CHECK (kind IN ('posix', 's3', 'tape')),
    root       text NOT NULL,
    capacity   integer NOT NULL CHECK (capacity >= 0),
    phase      text NOT NULL CHECK (phase IN ('PLASMA', 'GAS', 'LIQUID', 'SOLID')),
    status     text NOT NULL CHECK (status IN ('online', 'draining', 'offline', 'retired')),
    attributes text NOT NULL DEFAULT '{}',
    config     text NOT NULL DEFAULT '{}',
    created    real NOT NULL
);

CREATE TABLE data_item (
    oid             text PRIMARY KEY,
    item_name       text NOT NULL,
    item_version    integer NOT NULL CHECK (item_version >= 1),
    item_type       text NOT NULL CHECK (item_type IN ('file', 'container')),
    item_state      text NOT NULL
                    CHECK (item_state IN ('INITIALISED', 'READY', 'EXPIRED', 'DELETED', 'CORRUPTED')),
    target_phase    text NOT NULL CHECK (target_phase IN ('PLASMA', 'GAS', 'LIQUID', 'SOLID')),
    size            integer CHECK (size >= 0),
    checksum        text,
    checksum_method text,
    metadata        text,
    parent_oid      text REFERENCES data_item (oid),
    created         real NOT NULL,
    expire_at       real,
    access_count    integer NOT NULL DEFAULT 0,
    last_access     real,
    owner           text,
    "group"         text,
    UNIQUE (item_name, item_version)
);
CREATE INDEX data_item_parent ON data_item (parent_oid) WHERE parent_oid IS NOT NULL;

CREATE TABLE replica (
    uid           text PRIMARY KEY,   -- the item's oid with the storage id in its low 16 bits
    oid           text NOT NULL REFERENCES data_item (oid),
    storage_id    integer NOT NULL REFERENCES storage (id),
    uri           text,               -- NULL: the storage's default location for the item name
    state         text NOT NULL CHECK (state IN ('pending', 'copying', 'complete', 'deleting',
                                                 'deleted', 'missing', 'corrupt')),
    size          integer,
    checksum      text,
    created       real NOT NULL,
    expire_at     real,
    last_verified real,
    UNIQUE (oid, storage_id)
);
CREATE INDEX replica_storage ON replica (storage_id);

CREATE TABLE operation (
    id          integer PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('copy', 'delete')),
    oid         text NOT NULL REFERENCES data_item (oid),
    source_id   integer REFERENCES storage (id),
    target_id   integer NOT NULL REFERENCES storage (id),
    origin      text NOT NULL CHECK (origin IN ('user', 'detox', 'dealer', 'consistency')),
    state       text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    created     real NOT NULL,
    updated     real NOT NULL
);

CREATE TABLE cycle (
    id        integer PRIMARY KEY,
    kind      text NOT NULL CHECK (kind IN ('detox', 'dealer', 'consistency')),
    started   real NOT NULL,
    ended     real,
    policy    text,
    summary   text NOT NULL DEFAULT '{}'
);
