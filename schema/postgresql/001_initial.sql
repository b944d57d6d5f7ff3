-- DLM schema, version 1 (PostgreSQL).
-- Times are epoch seconds (double precision): loading millions of rows and COPY stay fast;
-- read them with to_timestamp(created). States and phases are their names, as in the API.

CREATE TABLE inventory_state (
    id      smallint PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL          -- inventory version of the last committed transaction
);
INSERT INTO inventory_state (id, version) VALUES (1, 0);

CREATE TABLE storage (
    id         integer PRIMARY KEY CHECK (id BETWEEN 1 AND 65535),
    name       text NOT NULL UNIQUE,
    kind       text NOT NULL CHECK (kind IN ('posix', 's3', 'tape')),
    root       text NOT NULL,
    capacity   bigint NOT NULL CHECK (capacity >= 0),
    phase      text NOT NULL CHECK (phase IN ('PLASMA', 'GAS', 'LIQUID', 'SOLID')),
    status     text NOT NULL CHECK (status IN ('online', 'draining', 'offline', 'retired')),
    attributes jsonb NOT NULL DEFAULT '{}',
    config     jsonb NOT NULL DEFAULT '{}',
    created    double precision NOT NULL
);

CREATE TABLE data_item (
    oid             uuid PRIMARY KEY,
    item_name       text NOT NULL,
    item_version    integer NOT NULL CHECK (item_version >= 1),
    item_type       text NOT NULL CHECK (item_type IN ('file', 'container')),
    item_state      text NOT NULL
                    CHECK (item_state IN ('INITIALISED', 'READY', 'EXPIRED', 'DELETED', 'CORRUPTED')),
    target_phase    text NOT NULL CHECK (target_phase IN ('PLASMA', 'GAS', 'LIQUID', 'SOLID')),
    size            bigint CHECK (size >= 0),
    checksum        text,
    checksum_method text,
    metadata        jsonb,
    parent_oid      uuid REFERENCES data_item (oid),
    created         double precision NOT NULL,
    expire_at       double precision,
    access_count    bigint NOT NULL DEFAULT 0,
    last_access     double precision,
    owner           text,
    "group"         text,
    UNIQUE (item_name, item_version)
);
CREATE INDEX data_item_parent ON data_item (parent_oid) WHERE parent_oid IS NOT NULL;

CREATE TABLE replica (
    uid           uuid PRIMARY KEY,   -- the item's oid with the storage id in its low 16 bits
    oid           uuid NOT NULL REFERENCES data_item (oid),
    storage_id    integer NOT NULL REFERENCES storage (id),
    uri           text,               -- NULL: the storage's default location for the item name
    state         text NOT NULL CHECK (state IN ('pending', 'copying', 'complete', 'deleting',
                                                 'deleted', 'missing', 'corrupt')),
    size          bigint,
    checksum      text,
    created       double precision NOT NULL,
    expire_at     double precision,
    last_verified double precision,
    UNIQUE (oid, storage_id)
);
CREATE INDEX replica_storage ON replica (storage_id);

CREATE TABLE operation (
    id          bigint PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('copy', 'delete')),
    oid         uuid NOT NULL REFERENCES data_item (oid),
    source_id   integer REFERENCES storage (id),
    target_id   integer NOT NULL REFERENCES storage (id),
    origin      text NOT NULL CHECK (origin IN ('user', 'detox', 'dealer', 'consistency')),
    state       text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    created     double precision NOT NULL,
    updated     double precision NOT NULL
);

CREATE TABLE cycle (
    id        bigint PRIMARY KEY,
    kind      text NOT NULL CHECK (kind IN ('detox', 'dealer', 'consistency')),
    started   double precision NOT NULL,
    ended     double precision,
    policy    text,
    summary   jsonb NOT NULL DEFAULT '{}'
);
