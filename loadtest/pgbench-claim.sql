-- The physical reference: claim a batch of 20 due tasks and delete them, one statement.
WITH c AS (
    SELECT id FROM fang_tasks
    WHERE state IN ('new', 'retried') AND scheduled_at <= now()
    ORDER BY scheduled_at
    LIMIT 20
    FOR UPDATE SKIP LOCKED
)
DELETE FROM fang_tasks t USING c WHERE t.id = c.id;
