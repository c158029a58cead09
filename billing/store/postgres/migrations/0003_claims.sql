-- Sweep work claimed by one replica at a time (expired invoices, open payouts): the row's
-- kind and key, the replica holding it, and until when; an expired claim is free again.
CREATE TABLE claims (
    kind       text NOT NULL,
    key        text NOT NULL,
    owner      text NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (kind, key)
);
