-- Outgoing payments (withdrawals): one row each, its life in billing/payouts.py. A payout whose
-- outcome is unknown stays `in_flight` (its money in escrow) until the backend says how it ended.
CREATE TABLE payouts (
    payment_hash   TEXT PRIMARY KEY,
    ref            TEXT NOT NULL UNIQUE,   -- the ledger ref (escrow account and entry keys)
    agent          TEXT NOT NULL,
    bolt11         TEXT NOT NULL,
    amount_msat    INTEGER NOT NULL,
    fee_limit_msat INTEGER NOT NULL,
    state          TEXT NOT NULL,          -- reserved | in_flight | succeeded | failed
    fee_msat       INTEGER,                -- what the route really cost, once succeeded
    preimage       TEXT,
    error          TEXT,
    created_at     REAL NOT NULL,
    attempted_at   REAL,                   -- when it was handed to the backend
    updated_at     REAL NOT NULL
);
CREATE INDEX payouts_by_state ON payouts (state);
CREATE INDEX payouts_by_agent ON payouts (agent, created_at);
