-- Budget usage per scope and period, counted from reservations and corrected at settlement.
CREATE TABLE budget_usage (
    scope        TEXT NOT NULL,     -- global | agent:<payer>
    period       TEXT NOT NULL,     -- day:2026-11-21 | month:2026-11 (in the budget's time zone)
    spent_msat   INTEGER NOT NULL DEFAULT 0,
    spent_nusd   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, period)
);
