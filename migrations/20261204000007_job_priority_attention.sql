-- Queue priorities: buyers' approvals, refunds and reconciliation are claimed ahead of
-- bulk work (charge bursts, sales counting, view flushes). 2 urgent, 1 normal, 0 bulk;
-- rows queued before this migration are normal.
ALTER TABLE fang_tasks ADD COLUMN priority SMALLINT NOT NULL DEFAULT 1
    CONSTRAINT fang_tasks_priority_check CHECK (priority BETWEEN 0 AND 2);
CREATE INDEX fang_tasks_ready_priority_idx ON fang_tasks (priority DESC, scheduled_at)
    INCLUDE (task_type) WHERE state IN ('new', 'retried');

-- A recurring charge the PG refused as a request (not a decline): the cycle stays due and
-- the subscription needs an operator. Cleared by the cycle's successful charge.
ALTER TABLE subscriptions
    ADD COLUMN attention_code TEXT,
    ADD COLUMN attention_message TEXT,
    ADD COLUMN attention_since TIMESTAMPTZ;
CREATE INDEX subscriptions_attention_idx ON subscriptions (attention_since)
    WHERE attention_since IS NOT NULL;
