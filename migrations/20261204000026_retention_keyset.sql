-- Retention (billing::retention) walks outbox events and probe runs in primary-key order
-- — their time order: ids are handed out as rows are written — from where its last batch
-- stopped. The BRIN indexes migration 22 gave them are no longer read: a bitmap over them
-- re-read every page earlier batches had emptied (measured: 34,000 pages for a batch of
-- 1,000 events after 300,000 were pruned), and once freed space is reused their ranges
-- cover the whole table. Dropped, so writes no longer maintain them. The view days' BRIN
-- stays: their key does not start with the day.
DROP INDEX IF EXISTS outbox_events_created_brin;
DROP INDEX IF EXISTS job_probe_runs_ran_brin;
