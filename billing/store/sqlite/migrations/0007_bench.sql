-- Model benchmark results: one row per model, prompt and run.
CREATE TABLE bench_results (
    run_id            TEXT NOT NULL,
    at                REAL NOT NULL,
    model             TEXT NOT NULL,
    prompt_id         TEXT NOT NULL,
    ttft_ms           REAL,
    latency_ms        REAL NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_nusd         INTEGER NOT NULL,
    score             REAL NOT NULL,
    error             TEXT,
    PRIMARY KEY (run_id, model, prompt_id)
);
CREATE INDEX bench_by_model ON bench_results (model, at);
