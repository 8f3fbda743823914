-- Worker reports (issue 19, the overview's worker figures): the API process cannot see a
-- worker's memory, so every `pillivery-worker` process writes what it knows about itself
-- here every `worker.report_interval_secs`: its circuit breaker's state and counters
-- cumulative since it started (PG calls sent, jobs finished and failed). The console
-- derives rates and last-hour totals from consecutive rows of one worker. A restarted
-- process is a new `worker_id` (host:pid:random), so a counter never goes backwards
-- within one id. Rows older than two hours are pruned by the workers as they report.
CREATE TABLE worker_reports (
    worker_id     TEXT        NOT NULL,
    at            TIMESTAMPTZ NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    host          TEXT        NOT NULL,
    pid           INTEGER     NOT NULL,
    -- running; stopping (SIGTERM, draining); stopped (its last report, after a clean exit)
    state         TEXT        NOT NULL,
    -- The interval this worker reports at: it is missing after three without a report.
    interval_ms   INTEGER     NOT NULL,
    breaker       TEXT        NOT NULL,
    pg_calls      BIGINT      NOT NULL,
    jobs_finished BIGINT      NOT NULL,
    jobs_failed   BIGINT      NOT NULL,
    in_flight     INTEGER     NOT NULL,
    PRIMARY KEY (worker_id, at),
    CONSTRAINT worker_reports_state_check CHECK (state IN ('running', 'stopping', 'stopped')),
    CONSTRAINT worker_reports_breaker_check CHECK (breaker IN ('closed', 'open', 'half_open')),
    CONSTRAINT worker_reports_counters_check
        CHECK (pg_calls >= 0 AND jobs_finished >= 0 AND jobs_failed >= 0 AND in_flight >= 0
               AND interval_ms > 0)
);
-- Pruning (oldest first) and the workers seen in the last hour.
CREATE INDEX worker_reports_at_idx ON worker_reports (at);

-- The overview's other figures, index-backed on the reference data set (100,000 orders,
-- 20,000 subscriptions, a billing day's 20,000 charge attempts):
-- today's charges by outcome, read from the index alone;
CREATE INDEX charge_attempts_started_idx ON charge_attempts (started_at) INCLUDE (status);
-- subscriptions past due (a handful among 20,000).
CREATE INDEX subscriptions_past_due_idx ON subscriptions (id) WHERE status = 'past_due';
