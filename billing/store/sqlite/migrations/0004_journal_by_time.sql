-- Spend over a time window (runway, alerts) reads the journal by time.
CREATE INDEX journal_by_time ON journal (created_at);
