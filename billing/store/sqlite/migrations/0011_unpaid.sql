-- Unpaid state is found by index and pruned: open invoices by their expiry, expired ones by age.
CREATE INDEX invoices_open_by_expiry ON invoices (expires_at) WHERE status = 'open';
CREATE INDEX invoices_expired_by_expiry ON invoices (expires_at) WHERE status = 'expired';
CREATE INDEX deliveries_by_task ON deliveries (task_id);
