-- satrouter schema on PostgreSQL, version 1: the SQLite schema (billing/store/sqlite/migrations,
-- through its 0011) in PostgreSQL's dialect. Amounts are bigint (msat or nano-USD), times are
-- Unix seconds in double precision, JSON documents are text (kept byte for byte as written; jsonb
-- would refuse the \u0000 escapes a prompt may carry). Text keys that are ordered or matched by
-- prefix use the "C" collation, so their order is bytewise as on SQLite whatever the cluster's
-- locale.

CREATE TABLE accounts (
    code         text COLLATE "C" PRIMARY KEY,
    currency     text NOT NULL,
    type         text NOT NULL,
    no_overdraft boolean NOT NULL DEFAULT false,
    balance      bigint NOT NULL DEFAULT 0,   -- debits minus credits; always its postings' sum
    created_at   double precision NOT NULL
);

CREATE TABLE journal (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    kind            text NOT NULL,
    ref             text,
    memo            text,
    digest          text NOT NULL,
    created_at      double precision NOT NULL
);
CREATE INDEX journal_by_ref ON journal (ref);
CREATE INDEX journal_by_time ON journal (created_at);

CREATE TABLE postings (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- keeps an entry's order
    journal_id bigint NOT NULL REFERENCES journal (id),
    account    text COLLATE "C" NOT NULL REFERENCES accounts (code),
    currency   text NOT NULL,
    amount     bigint NOT NULL CHECK (amount != 0)
);
CREATE INDEX postings_by_account ON postings (account);
CREATE INDEX postings_by_journal ON postings (journal_id);

CREATE TABLE invoices (
    payment_hash text PRIMARY KEY,
    bolt11       text NOT NULL,
    amount_msat  bigint NOT NULL CHECK (amount_msat > 0),
    purpose      text NOT NULL,
    ref          text NOT NULL,
    status       text NOT NULL,
    created_at   double precision NOT NULL,
    expires_at   double precision NOT NULL,
    settled_at   double precision
);
CREATE INDEX invoices_open ON invoices (status) WHERE status = 'open';
CREATE INDEX invoices_open_by_expiry ON invoices (expires_at) WHERE status = 'open';
CREATE INDEX invoices_expired_by_expiry ON invoices (expires_at) WHERE status = 'expired';

CREATE TABLE outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    text NOT NULL,
    created_at double precision NOT NULL
);
CREATE INDEX outbox_by_key ON outbox (key);

CREATE TABLE cursors (
    consumer text PRIMARY KEY,
    position bigint NOT NULL
);

CREATE TABLE tasks (
    seq        bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- breaks ties in time order
    id         text PRIMARY KEY,
    state      text NOT NULL,
    agent      text,
    data       text NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);
CREATE INDEX tasks_by_state ON tasks (state);
CREATE INDEX tasks_by_updated ON tasks (updated_at);

CREATE TABLE api_accounts (
    id         text PRIMARY KEY,
    key_hash   text NOT NULL UNIQUE,
    created_at double precision NOT NULL
);

CREATE TABLE l402_root_keys (
    id_hash    text PRIMARY KEY,
    root_key   bytea NOT NULL,
    created_at double precision NOT NULL
);

CREATE TABLE kv (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE audit (
    seq       bigint PRIMARY KEY,
    at        double precision NOT NULL,
    kind      text NOT NULL,
    data      text NOT NULL,   -- canonical JSON, hashed as stored
    prev_hash text NOT NULL,
    hash      text NOT NULL
);

CREATE TABLE topups (
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id          text PRIMARY KEY,
    state       text NOT NULL,
    amount_msat bigint NOT NULL,
    usd_nusd    bigint NOT NULL,
    data        text NOT NULL,
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL
);
CREATE INDEX topups_by_state ON topups (state);

CREATE TABLE budget_usage (
    scope      text NOT NULL,
    period     text NOT NULL,
    spent_msat bigint NOT NULL DEFAULT 0,
    spent_nusd bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, period)
);

CREATE TABLE bench_results (
    run_id            text NOT NULL,
    at                double precision NOT NULL,
    model             text NOT NULL,
    prompt_id         text COLLATE "C" NOT NULL,
    ttft_ms           double precision,
    latency_ms        double precision NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cost_nusd         bigint NOT NULL,
    score             double precision NOT NULL,
    error             text,
    PRIMARY KEY (run_id, model, prompt_id)
);
CREATE INDEX bench_by_model ON bench_results (model, at);

CREATE TABLE payouts (
    seq            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    payment_hash   text PRIMARY KEY,
    ref            text NOT NULL UNIQUE,
    agent          text NOT NULL,
    bolt11         text NOT NULL,
    amount_msat    bigint NOT NULL,
    fee_limit_msat bigint NOT NULL,
    state          text NOT NULL,
    fee_msat       bigint,
    preimage       text,
    error          text,
    created_at     double precision NOT NULL,
    attempted_at   double precision,
    updated_at     double precision NOT NULL
);
CREATE INDEX payouts_by_state ON payouts (state);
CREATE INDEX payouts_by_agent ON payouts (agent, created_at);

CREATE TABLE deliveries (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    bigint NOT NULL,
    task_id     text NOT NULL,
    destination text NOT NULL,
    state       text NOT NULL DEFAULT 'pending',
    attempts    integer NOT NULL DEFAULT 0,
    error       text,
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL
);
CREATE INDEX deliveries_pending ON deliveries (state, destination, id);
CREATE INDEX deliveries_by_task ON deliveries (task_id);
