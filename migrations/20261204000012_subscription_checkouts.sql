-- Recovery and resubscribe checkouts (issue 17). A subscription whose renewal is being
-- declined (`past_due`), or that was canceled, can be paid through a fresh KakaoPay
-- subscription checkout: ready → the buyer at KakaoPay → approve, every call a job. The
-- approval pays the subscription's next unpaid cycle (the overdue one), brings a new SID
-- and returns the subscription to `active`; the old SID is inactivated.
--
-- status: created (the ready job is queued) → ready (the buyer's redirect URL is known)
-- → approving (the buyer approved; the approve job is queued) → succeeded | failed;
-- abandoned: the buyer canceled at KakaoPay; superseded: the cycle was paid another way
-- (a dunning retry, another checkout) before this one was approved, so it never was.
CREATE TABLE subscription_checkouts (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id     BIGINT      NOT NULL REFERENCES subscriptions (id),
    -- recovery: of a past_due subscription (its calendar continues); resubscribe: of a
    -- canceled one (anchored again on the day it is paid).
    kind                TEXT        NOT NULL,
    -- The cycle this checkout pays: the subscription's first unpaid cycle when it started.
    cycle               INTEGER     NOT NULL,
    status              TEXT        NOT NULL DEFAULT 'created',
    -- Unguessable: the PG's return URLs and the buyer's status URL carry it.
    token               TEXT        NOT NULL,
    partner_order_id    TEXT        NOT NULL,
    partner_user_id     TEXT        NOT NULL,
    amount              BIGINT      NOT NULL,
    -- The lines as priced when the checkout started: the buyer approves this amount, and
    -- the cycle's order is written from them.
    lines               JSONB       NOT NULL,
    -- A resubscribe may change the period; NULL keeps the subscription's.
    period_days         INTEGER,
    tid                 TEXT,
    redirect_pc_url     TEXT,
    redirect_mobile_url TEXT,
    redirect_app_url    TEXT,
    pg_token            TEXT,
    -- The SID the approval issued, and the one it replaced (inactivated by a job).
    sid                 TEXT,
    old_sid             TEXT,
    old_sid_inactivated_at TIMESTAMPTZ,
    order_id            BIGINT      REFERENCES orders (id),
    failure_code        TEXT,
    failure_message     TEXT,
    reconcile_rounds    INTEGER     NOT NULL DEFAULT 0,
    -- Set when it was started through a recovery link (no login).
    via_link            BOOLEAN     NOT NULL DEFAULT false,
    finished_at         TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT subscription_checkouts_token_key UNIQUE (token),
    CONSTRAINT subscription_checkouts_partner_order_id_key UNIQUE (partner_order_id),
    CONSTRAINT subscription_checkouts_kind_check CHECK (kind IN ('recovery', 'resubscribe')),
    CONSTRAINT subscription_checkouts_status_check CHECK (status IN
        ('created', 'ready', 'approving', 'succeeded', 'failed', 'abandoned', 'superseded')),
    CONSTRAINT subscription_checkouts_amount_check CHECK (amount > 0),
    CONSTRAINT subscription_checkouts_period_check CHECK (period_days BETWEEN 7 AND 365)
);
CREATE TRIGGER subscription_checkouts_set_updated_at BEFORE UPDATE ON subscription_checkouts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX subscription_checkouts_subscription_idx
    ON subscription_checkouts (subscription_id, id DESC);

-- The approval of a checkout is a charge attempt of its cycle like any other: it holds the
-- subscription's one open attempt while KakaoPay has it (so no dunning retry is sent
-- meanwhile), and at most one attempt of a cycle succeeds, whichever path it took.
ALTER TABLE charge_attempts
    ADD COLUMN checkout_id BIGINT REFERENCES subscription_checkouts (id),
    ADD CONSTRAINT charge_attempts_checkout_key UNIQUE (checkout_id);

-- Recovery links: the `recovery_url` in `subscription.past_due` and in a dunning
-- cancellation's `subscription.canceled`, which the store e-mails. Only a hash is kept:
-- the link itself travels in the event. Usable once (starting a checkout), and only
-- until it expires or the cycle it was issued for is paid.
CREATE TABLE subscription_recovery_links (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id BIGINT      NOT NULL REFERENCES subscriptions (id),
    token_hash      TEXT        NOT NULL,
    cycle           INTEGER     NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    used_at         TIMESTAMPTZ,
    checkout_id     BIGINT      REFERENCES subscription_checkouts (id),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT subscription_recovery_links_token_hash_key UNIQUE (token_hash)
);
CREATE TRIGGER subscription_recovery_links_set_updated_at
    BEFORE UPDATE ON subscription_recovery_links
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX subscription_recovery_links_subscription_idx
    ON subscription_recovery_links (subscription_id);

-- What the next charge of a subscription would be, at today's prices: the products still
-- on sale, the total and the lines as a charge attempt (and a checkout) records them — one
-- definition for both, so a checkout can never price a cycle differently from a retry.
-- Grouped by subscription: a query for one subscription reads only its rows.
CREATE VIEW subscription_charge_lines AS
SELECT si.subscription_id,
       sum(i.real_price * si.quantity)::bigint AS amount,
       jsonb_agg(jsonb_build_object('item_id', si.item_id, 'name', i.title,
                                    'unit_price', i.real_price,
                                    'unit_discount', i.discount_price,
                                    'quantity', si.quantity)
                 ORDER BY si.item_id) AS lines
FROM subscription_items si JOIN items i ON i.id = si.item_id
WHERE i.selling AND i.deleted_at IS NULL
GROUP BY si.subscription_id;
