-- Version 9: the highest id a table ever gave, where rows holding it were removed (a storage's
-- removal takes its finished operations and copy requests along): ids are never given twice.
CREATE TABLE IF NOT EXISTS id_floor (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);
