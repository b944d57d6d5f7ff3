-- Version 8: one file per replica (issue 15).
--
-- Until version 7 a replica without a uri lived at the bare item name, whatever its version, so
-- versions 1 and 2 of a name on one storage shared one file. From version 8 on, version N >= 2
-- lives at "name@vN" (inventory/storage/paths.py). So that nothing moves or looks missing:
--  * a live replica of version >= 2 without a uri is pinned where it is (uri = root + name);
--  * where two live replicas name one file (a NULL uri counts as root + name), the most recently
--    created keeps it; each other one is given its new default path (for version 1, whose
--    default path is the shared one, "name@v1") and, unless an operation is working on it,
--    state 'missing', so consistency and Dealer copy it again. Each such replica is listed in
--    path_repair, which the server logs (item, storage, paths) and empties at start.
-- Then a partial unique index makes (storage, uri) belong to at most one live replica.
-- Only the (storage, file) keys a uri or a version >= 2 names are ranked: at 10M replicas of
-- mostly version 1 the window runs over a few rows, not over every replica.

CREATE TABLE path_repair (
    oid          text NOT NULL,
    storage_id   integer NOT NULL,
    item_name    text NOT NULL,
    item_version integer NOT NULL,
    old_uri      text,
    new_uri      text,
    state        text NOT NULL
);

CREATE TABLE m008_claim AS
SELECT c.uid, c.oid, c.storage_id, c.uri, c.state, c.item_name, c.item_version, c.prefix, c.eff,
       row_number() OVER (PARTITION BY c.storage_id, c.eff
                          ORDER BY c.created DESC, c.uid DESC) AS rank
FROM (SELECT r.uid, r.oid, r.storage_id, r.uri, r.state, r.created, d.item_name,
             d.item_version, p.prefix, coalesce(r.uri, p.prefix || d.item_name) AS eff
      FROM replica r
      JOIN data_item d ON d.oid = r.oid
      JOIN (SELECT id, CASE WHEN kind = 's3' THEN 's3://' || rtrim(root, '/') || '/'
                            ELSE rtrim(root, '/') || '/' END AS prefix
            FROM storage) p ON p.id = r.storage_id
      WHERE r.state <> 'deleted') c
WHERE (c.storage_id, c.eff) IN (
      SELECT r.storage_id, coalesce(r.uri, p.prefix || d.item_name)
      FROM replica r
      JOIN data_item d ON d.oid = r.oid
      JOIN (SELECT id, CASE WHEN kind = 's3' THEN 's3://' || rtrim(root, '/') || '/'
                            ELSE rtrim(root, '/') || '/' END AS prefix
            FROM storage) p ON p.id = r.storage_id
      WHERE r.state <> 'deleted' AND (r.uri IS NOT NULL OR d.item_version >= 2));

ALTER TABLE m008_claim ADD COLUMN new_uri text;
UPDATE m008_claim SET new_uri = CASE
    WHEN rank = 1 THEN eff
    WHEN item_version = 1 AND eff = prefix || item_name THEN prefix || item_name || '@v1'
    ELSE NULL END;

INSERT INTO path_repair (oid, storage_id, item_name, item_version, old_uri, new_uri, state)
SELECT oid, storage_id, item_name, item_version, eff,
       coalesce(new_uri, CASE WHEN item_version = 1 THEN prefix || item_name
                              ELSE prefix || item_name || '@v' || item_version END),
       CASE WHEN state IN ('pending', 'copying', 'deleting') THEN state ELSE 'missing' END
FROM m008_claim WHERE rank > 1;

-- the keepers of version >= 2 without a uri: pinned where they are
UPDATE replica SET uri = (SELECT c.eff FROM m008_claim c WHERE c.uid = replica.uid)
WHERE uid IN (SELECT uid FROM m008_claim
              WHERE rank = 1 AND uri IS NULL AND item_version >= 2);

-- the others: their new path, and missing (unless an operation is on them)
UPDATE replica SET
    uri = (SELECT c.new_uri FROM m008_claim c WHERE c.uid = replica.uid),
    state = CASE WHEN state IN ('pending', 'copying', 'deleting') THEN state ELSE 'missing' END
WHERE uid IN (SELECT uid FROM m008_claim WHERE rank > 1);

DROP TABLE m008_claim;

CREATE UNIQUE INDEX replica_storage_uri ON replica (storage_id, uri)
    WHERE uri IS NOT NULL AND state <> 'deleted';
