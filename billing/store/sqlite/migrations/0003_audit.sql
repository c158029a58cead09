-- The audit trail: append-only, each entry chained to the one before by sha256.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        REAL NOT NULL,
    kind      TEXT NOT NULL,     -- money | model_call | admin
    data      TEXT NOT NULL,     -- canonical JSON
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
