-- OpenRouter credit top-ups: one row each, a small state machine (see billing/topup.py).
CREATE TABLE topups (
    id          TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    amount_msat INTEGER NOT NULL,   -- sats it may spend (0 for manual top-ups)
    usd_nusd    INTEGER NOT NULL,   -- credits it is meant to buy
    data        TEXT NOT NULL,      -- JSON: executor, invoice, payment hash, credits before, ...
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX topups_by_state ON topups (state);
