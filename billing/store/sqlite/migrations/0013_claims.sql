-- Sweep work claimed by one replica at a time (expired invoices, open payouts): the row's
-- kind and key, the replica holding it, and until when; an expired claim is free again.
CREATE TABLE claims (
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
