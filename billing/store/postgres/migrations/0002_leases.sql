-- Running work is leased to the replica running it; recovery takes over only expired leases.
CREATE TABLE leases (
    task_id    text PRIMARY KEY,
    owner      text NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX leases_by_owner ON leases (owner);
