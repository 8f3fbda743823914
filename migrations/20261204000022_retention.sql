-- Retention (issue 20, item 6): a periodic job prunes what is only history, in small
-- batches. BRIN indexes find the old rows of these append-mostly tables by time at almost
-- no cost to the writes (a B-tree here would be one more index write per order event).
CREATE INDEX outbox_events_created_brin ON outbox_events USING brin (created_at);
CREATE INDEX job_probe_runs_ran_brin ON job_probe_runs USING brin (ran_at);
CREATE INDEX item_view_days_day_brin ON item_view_days USING brin (day);
