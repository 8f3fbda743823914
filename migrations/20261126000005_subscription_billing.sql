-- Recurring billing: what a subscription needs to be charged on schedule exactly once per
-- cycle (its charge attempts, its pending-job sequence, its dunning state), and the
-- database-enforced guarantees behind "never two successful charges for one cycle".

ALTER TABLE subscriptions
    -- Bumped by every change others see; outbox events carry it.
    ADD COLUMN version            INTEGER     NOT NULL DEFAULT 1,
    -- Bumped whenever the pending charge is rescheduled: a charge job carries the value it
    -- was enqueued with, so a superseded job finds a newer one and does nothing.
    ADD COLUMN schedule_seq       INTEGER     NOT NULL DEFAULT 0,
    -- The store-local date the next cycle is scheduled for (anchor + k × period); the
    -- charge itself may run later while dunning retries are pending.
    ADD COLUMN due_on             DATE,
    ADD COLUMN paused_at          TIMESTAMPTZ,
    ADD COLUMN sid_inactivated_at TIMESTAMPTZ,
    ADD CONSTRAINT subscriptions_sid_key UNIQUE (sid),
    ADD CONSTRAINT subscriptions_cancel_reason_check
        CHECK (cancel_reason IN ('customer', 'payment_failed', 'sid_unusable', 'items_unavailable')),
    ADD CONSTRAINT subscriptions_cycle_check CHECK (current_cycle >= 1);

-- Rows written before this migration (fixtures, the reference data set) were scheduled in
-- the default store time zone.
UPDATE subscriptions SET due_on = (next_charge_at AT TIME ZONE 'Asia/Seoul')::date
WHERE due_on IS NULL AND next_charge_at IS NOT NULL;

-- One order per (subscription, cycle), whoever writes it.
CREATE UNIQUE INDEX orders_subscription_cycle_key ON orders (subscription_id, cycle)
    WHERE subscription_id IS NOT NULL AND cycle IS NOT NULL;

CREATE TABLE charge_attempts (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id    BIGINT      NOT NULL REFERENCES subscriptions (id),
    cycle              INTEGER     NOT NULL,
    attempt            INTEGER     NOT NULL,
    -- in_flight: recorded before the PG call; succeeded / declined: the PG's answer;
    -- unknown: sent, no answer (reconciled from the SID's last approval time);
    -- not_charged: nothing reached the PG, or reconciliation proved it did not land —
    -- never counted as a dunning attempt.
    status             TEXT        NOT NULL DEFAULT 'in_flight',
    -- Fresh per attempt: KakaoPay does not reject a duplicate, so ours must never repeat.
    partner_order_id   TEXT        NOT NULL,
    amount             BIGINT      NOT NULL,
    -- The lines as priced when the attempt started: the cycle's order is written from
    -- them, so it always matches what was charged.
    lines              JSONB       NOT NULL,
    started_at         TIMESTAMPTZ NOT NULL,
    finished_at        TIMESTAMPTZ,
    tid                TEXT,
    aid                TEXT,
    order_id           BIGINT      REFERENCES orders (id),
    failure_code       TEXT,
    failure_message    TEXT,
    reconcile_rounds   INTEGER     NOT NULL DEFAULT 0,
    -- Set when reconciliation could not decide within its window: operators review these.
    review_required_at TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT charge_attempts_key UNIQUE (subscription_id, cycle, attempt),
    CONSTRAINT charge_attempts_partner_order_id_key UNIQUE (partner_order_id),
    CONSTRAINT charge_attempts_status_check
        CHECK (status IN ('in_flight', 'succeeded', 'declined', 'unknown', 'not_charged')),
    CONSTRAINT charge_attempts_amount_check CHECK (amount > 0),
    CONSTRAINT charge_attempts_numbers_check CHECK (cycle >= 2 AND attempt >= 1)
);
CREATE TRIGGER charge_attempts_set_updated_at BEFORE UPDATE ON charge_attempts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
-- Exactly once per cycle: at most one successful charge.
CREATE UNIQUE INDEX charge_attempts_one_success ON charge_attempts (subscription_id, cycle)
    WHERE status = 'succeeded';
-- Nothing new is sent for a subscription while an attempt may still be in the PG's hands.
CREATE UNIQUE INDEX charge_attempts_one_open ON charge_attempts (subscription_id)
    WHERE status IN ('in_flight', 'unknown');
-- The operators' review list.
CREATE INDEX charge_attempts_unknown_idx ON charge_attempts (started_at) WHERE status = 'unknown';
