-- The audit log (issue 19, item 8): every operator action — through the JSON admin
-- routes, the operator console or the operators' CLI — written in the same transaction as
-- the action, so a row here means the action happened and an action cannot happen
-- without its row. Append-only: nothing updates or deletes these rows.
CREATE TABLE audit_log (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL for the CLI, which runs with the database's own credentials.
    actor_user_id BIGINT      REFERENCES users (id),
    channel       TEXT        NOT NULL,
    action        TEXT        NOT NULL,
    target_type   TEXT        NOT NULL,
    target_id     TEXT,
    -- What the action changed or asked for, without secrets.
    details       JSONB       NOT NULL DEFAULT '{}',
    request_id    TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT audit_log_channel_check CHECK (channel IN ('api', 'console', 'cli'))
);
CREATE INDEX audit_log_created_idx ON audit_log (created_at DESC, id DESC);
CREATE INDEX audit_log_target_idx ON audit_log (target_type, target_id, created_at DESC);
