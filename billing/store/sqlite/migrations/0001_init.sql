-- satrouter schema, version 1. Amounts are integers (msat or nano-USD, per the currency column).

CREATE TABLE accounts (
    code         TEXT PRIMARY KEY,           -- e.g. assets:lightning, liabilities:agent:<id>
    currency     TEXT NOT NULL,              -- msat | nusd
    type         TEXT NOT NULL,              -- asset | liability | income | expense | equity
    no_overdraft INTEGER NOT NULL DEFAULT 0, -- its normal-side balance may never go below zero
    balance      INTEGER NOT NULL DEFAULT 0, -- debits minus credits; always equals its postings' sum
    created_at   REAL NOT NULL
);

CREATE TABLE journal (
    id              INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    ref             TEXT,
    memo            TEXT,
    digest          TEXT NOT NULL,           -- sha256 of the postings: a replay must match it
    created_at      REAL NOT NULL
);

CREATE TABLE postings (
    journal_id INTEGER NOT NULL REFERENCES journal (id),
    account    TEXT NOT NULL REFERENCES accounts (code),
    currency   TEXT NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount != 0)  -- debit > 0, credit < 0
);
CREATE INDEX postings_by_account ON postings (account);
CREATE INDEX postings_by_journal ON postings (journal_id);
CREATE INDEX journal_by_ref ON journal (ref);

CREATE TABLE invoices (
    payment_hash TEXT PRIMARY KEY,
    bolt11       TEXT NOT NULL,
    amount_msat  INTEGER NOT NULL CHECK (amount_msat > 0),
    purpose      TEXT NOT NULL,              -- task | deposit | l402 | ...
    ref          TEXT NOT NULL,              -- what it pays for
    status       TEXT NOT NULL,              -- open | settled | expired | cancelled
    created_at   REAL NOT NULL,
    expires_at   REAL NOT NULL,
    settled_at   REAL
);
CREATE INDEX invoices_open ON invoices (status) WHERE status = 'open';

CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT NOT NULL,
    key        TEXT NOT NULL,
    payload    TEXT NOT NULL,                -- JSON
    created_at REAL NOT NULL
);
CREATE INDEX outbox_by_key ON outbox (key);

CREATE TABLE cursors (
    consumer TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);

CREATE TABLE tasks (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    agent      TEXT,
    data       TEXT NOT NULL,                -- JSON
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX tasks_by_state ON tasks (state);

CREATE TABLE api_accounts (
    id         TEXT PRIMARY KEY,
    key_hash   TEXT NOT NULL UNIQUE,         -- sha256 of the API key; the key itself is never stored
    created_at REAL NOT NULL
);

CREATE TABLE l402_root_keys (
    id_hash    TEXT PRIMARY KEY,             -- sha256 of the macaroon identifier
    root_key   BLOB NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
