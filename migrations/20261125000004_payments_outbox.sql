-- Payments (one row per PG transaction of an order), the transactional outbox, and what
-- orders need for idempotent creation, change notification and their follow-up jobs.

ALTER TABLE orders
    -- Bumped by every status change; outbox events carry it so receivers drop stale ones.
    ADD COLUMN version          INTEGER     NOT NULL DEFAULT 1,
    ADD COLUMN from_cart        BOOLEAN     NOT NULL DEFAULT false,
    -- SHA-256 of the canonical request body an Idempotency-Key was first used with.
    ADD COLUMN idempotency_hash TEXT,
    -- Follow-up jobs mark their one-time effects here, so a re-run adds nothing twice.
    ADD COLUMN sales_counted_at TIMESTAMPTZ,
    ADD COLUMN cart_cleared_at  TIMESTAMPTZ,
    ADD COLUMN canceled_at      TIMESTAMPTZ,
    ADD COLUMN refunded_at      TIMESTAMPTZ;
CREATE UNIQUE INDEX orders_idempotency_key ON orders (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX orders_user_status_idx ON orders (user_id, status, id DESC);

CREATE TABLE payments (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id            BIGINT      NOT NULL REFERENCES orders (id),
    pg                  TEXT        NOT NULL DEFAULT 'kakaopay',
    cid_kind            TEXT        NOT NULL,
    -- Unguessable; the only key the PG redirect routes accept.
    token               TEXT        NOT NULL,
    partner_order_id    TEXT        NOT NULL,
    partner_user_id     TEXT        NOT NULL,
    amount              BIGINT      NOT NULL,
    status              TEXT        NOT NULL DEFAULT 'created',
    tid                 TEXT,
    sid                 TEXT,
    aid                 TEXT,
    pg_token            TEXT,
    redirect_pc_url     TEXT,
    redirect_mobile_url TEXT,
    redirect_app_url    TEXT,
    ready_at            TIMESTAMPTZ,
    approving_at        TIMESTAMPTZ,
    approved_at         TIMESTAMPTZ,
    failed_at           TIMESTAMPTZ,
    canceled_amount     BIGINT      NOT NULL DEFAULT 0,
    refunded_at         TIMESTAMPTZ,
    failure_code        TEXT,
    failure_message     TEXT,
    -- Inquiries made for this payment so far (their backoff grows with it).
    reconcile_attempts  INTEGER     NOT NULL DEFAULT 0,
    -- SHA-256 of the PG's last successful response, for disputes.
    response_digest     TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT payments_token_key UNIQUE (token),
    CONSTRAINT payments_order_key UNIQUE (order_id),
    CONSTRAINT payments_tid_key UNIQUE (tid),
    CONSTRAINT payments_cid_kind_check CHECK (cid_kind IN ('one_time', 'subscription')),
    CONSTRAINT payments_status_check CHECK (status IN ('created', 'ready', 'approving',
        'approved', 'failed', 'abandoned', 'refund_requested', 'refunded')),
    CONSTRAINT payments_amount_check CHECK (amount > 0 AND canceled_amount BETWEEN 0 AND amount)
);
CREATE TRIGGER payments_set_updated_at BEFORE UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Written in the same transaction as the state change it announces; delivered by workers.
CREATE TABLE outbox_events (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id          UUID        NOT NULL DEFAULT gen_random_uuid(),
    event_type        TEXT        NOT NULL,
    aggregate_type    TEXT        NOT NULL,
    aggregate_id      BIGINT      NOT NULL,
    aggregate_version INTEGER     NOT NULL,
    data              JSONB       NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT outbox_events_event_id_key UNIQUE (event_id),
    CONSTRAINT outbox_events_aggregate_key
        UNIQUE (aggregate_type, aggregate_id, aggregate_version, event_type)
);
CREATE INDEX outbox_events_aggregate_idx ON outbox_events (aggregate_type, aggregate_id, id);

-- The API request that enqueued a job (X-Request-Id), so one id follows an order from the
-- request through every job it causes; jobs enqueued by a job inherit it.
ALTER TABLE fang_tasks ADD COLUMN request_id TEXT;
