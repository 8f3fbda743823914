-- Outbox delivery to webhook endpoints (DESIGN §7): the operators' endpoints, one delivery
-- per (event, endpoint) with its retry state, and every attempt for operators and tests.

-- Events not dispatched yet (their deliveries created and first jobs queued): a narrow
-- queue written in the same statement as each event and emptied by the dispatcher. A
-- flag column on outbox_events would make the dispatcher rewrite every event row and all
-- its indexes (measured: ~7 % of a billing-day burst). No foreign key: events are never
-- deleted, and the check would cost every event a lookup. Nothing recorded before this
-- migration is owed to anyone (no endpoint existed).
CREATE TABLE outbox_pending (
    event_id BIGINT PRIMARY KEY
);

CREATE TABLE webhook_endpoints (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url             TEXT        NOT NULL,
    description     TEXT        NOT NULL DEFAULT '',
    -- Event types the endpoint receives; `*` stands for every type.
    event_types     TEXT[]      NOT NULL,
    -- HMAC-SHA256 key of the `Pillivery-Signature` header; shown only on create/rotate.
    secret          TEXT        NOT NULL,
    enabled         BOOLEAN     NOT NULL DEFAULT true,
    disabled_at     TIMESTAMPTZ,
    -- `failing` (disabled by the system) or `operator`.
    disabled_reason TEXT,
    -- Start of the current run of failed attempts (cleared by any success).
    failing_since   TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_url_check CHECK (url ~ '^https?://'),
    CONSTRAINT webhook_endpoints_event_types_check CHECK (cardinality(event_types) > 0),
    CONSTRAINT webhook_endpoints_disabled_check
        CHECK (enabled = (disabled_at IS NULL) AND enabled = (disabled_reason IS NULL))
);

CREATE TABLE webhook_deliveries (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         BIGINT      NOT NULL REFERENCES outbox_events (id),
    endpoint_id      BIGINT      NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    state            TEXT        NOT NULL DEFAULT 'pending',
    -- Each redelivery starts a new round with a fresh schedule; jobs of an older round
    -- (or an older attempt) find themselves stale and do nothing.
    round            INTEGER     NOT NULL DEFAULT 1,
    -- Attempts made in the current round.
    attempts         INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    last_attempt_at  TIMESTAMPTZ,
    last_status_code INTEGER,
    last_error       TEXT,
    delivered_at     TIMESTAMPTZ,
    dead_at          TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_state_check CHECK (state IN ('pending', 'delivered', 'dead')),
    CONSTRAINT webhook_deliveries_event_endpoint_key UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_state_idx ON webhook_deliveries (state, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_endpoint_idx
    ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
-- The oldest undelivered delivery (the age gauge).
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (created_at)
    WHERE state = 'pending';
-- "Redeliver everything dead since T".
CREATE INDEX webhook_deliveries_dead_idx ON webhook_deliveries (dead_at) WHERE state = 'dead';

CREATE TABLE webhook_attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id BIGINT      NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    round       INTEGER     NOT NULL,
    attempt     INTEGER     NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    duration_ms INTEGER     NOT NULL,
    -- The receiver's HTTP status, if it answered at all.
    status_code INTEGER,
    -- Why the attempt failed (non-2xx, timeout, connection error); NULL when delivered.
    error       TEXT,
    CONSTRAINT webhook_attempts_delivery_round_attempt_key UNIQUE (delivery_id, round, attempt)
);
