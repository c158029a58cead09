-- Margin reports read tasks by when they last changed.
CREATE INDEX tasks_by_updated ON tasks (updated_at);
