-- Callback deliveries: one row per event to send, queued by destination (scheme://host:port) so
-- that a slow or dead destination holds back only its own. A row is deleted once delivered;
-- one whose retries ran out (or that was refused) stays as 'failed' for the operator.
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    INTEGER NOT NULL,
    task_id     TEXT NOT NULL,
    destination TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX deliveries_pending ON deliveries (state, destination, id);
