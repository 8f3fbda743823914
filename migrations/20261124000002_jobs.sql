-- The job queue. `fang_tasks` keeps fang 0.11's columns and state type (so fang's task
-- model, and stock fang for benchmarks, read and write it), plus what our runtime adds:
-- leases, a per-task retry limit and the uniqueness index fang lacks.
CREATE TYPE fang_task_state AS ENUM ('new', 'in_progress', 'failed', 'finished', 'retried');

CREATE TABLE fang_tasks (
    id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    metadata         JSONB NOT NULL,
    error_message    TEXT,
    state            fang_task_state NOT NULL DEFAULT 'new',
    task_type        TEXT NOT NULL DEFAULT 'common',
    uniq_hash        TEXT,
    retries          INTEGER NOT NULL DEFAULT 0,
    scheduled_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- ours
    max_retries      INTEGER NOT NULL DEFAULT 20,
    locked_by        TEXT,
    -- A fresh token per claim: only the holder of the current claim may finish the task.
    lease_token      UUID,
    lease_expires_at TIMESTAMPTZ,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ
);

-- Claims: the ready rows in due order, and nothing else.
CREATE INDEX fang_tasks_ready_idx ON fang_tasks (scheduled_at)
    INCLUDE (task_type) WHERE state IN ('new', 'retried');
-- Reaping: leases that ran out.
CREATE INDEX fang_tasks_lease_idx ON fang_tasks (lease_expires_at) WHERE state = 'in_progress';
-- Operators: failed tasks, newest first.
CREATE INDEX fang_tasks_failed_idx ON fang_tasks (updated_at) WHERE state = 'failed';
-- At most one live task per uniqueness key, whatever the number of concurrent inserters.
CREATE UNIQUE INDEX fang_tasks_uniq_live_key ON fang_tasks (uniq_hash)
    WHERE uniq_hash IS NOT NULL AND state IN ('new', 'retried', 'in_progress');

-- Runs of the `diag.probe` task: operators' end-to-end check of the fleet, and the
-- runtime's own tests count executions here (deliberately not unique).
CREATE TABLE job_probe_runs (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    probe_key  TEXT NOT NULL,
    worker     TEXT NOT NULL,
    ran_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX job_probe_runs_key_idx ON job_probe_runs (probe_key);
