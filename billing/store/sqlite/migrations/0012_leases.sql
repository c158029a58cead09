-- Running work is leased to the replica running it; recovery takes over only expired leases.
CREATE TABLE leases (
    task_id    TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX leases_by_owner ON leases (owner);
