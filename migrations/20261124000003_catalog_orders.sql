-- The shopping side: items, carts, orders and their lines, subscriptions (their billing
-- columns arrive with the billing issues), reviews, and the per-day view ledger.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Character bigrams of a text. Trigram indexes cannot serve two-character keywords, and
-- two-syllable Korean searches (홍삼, 칼슘, 아연) are common, so those use these.
CREATE FUNCTION text_bigrams(t TEXT) RETURNS TEXT[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT substr(lower(t), i, 2)), '{}')
    FROM generate_series(1, char_length(t) - 1) AS i
$$;

CREATE TABLE items (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    brand                 TEXT        NOT NULL,
    title                 TEXT        NOT NULL,
    description           TEXT        NOT NULL DEFAULT '',
    main_function         TEXT        NOT NULL DEFAULT '',
    intake                TEXT        NOT NULL DEFAULT '',
    precautions           TEXT        NOT NULL DEFAULT '',
    serving_use           TEXT        NOT NULL DEFAULT '',
    preservation          TEXT        NOT NULL DEFAULT '',
    distribution_period   TEXT        NOT NULL DEFAULT '',
    standard              TEXT        NOT NULL DEFAULT '',
    capacity              TEXT        NOT NULL DEFAULT '',
    thumbnail_url         TEXT,
    description_image_url TEXT,
    -- KRW. The discount and the real price are derived, never written:
    -- discount = round_half_up(origin × rate / 100), real = origin − discount.
    origin_price          BIGINT      NOT NULL,
    discount_rate         INTEGER     NOT NULL DEFAULT 0,
    discount_price        BIGINT      GENERATED ALWAYS AS ((origin_price * discount_rate + 50) / 100) STORED,
    real_price            BIGINT      GENERATED ALWAYS AS (origin_price - (origin_price * discount_rate + 50) / 100) STORED,
    categories            TEXT[]      NOT NULL DEFAULT '{ETC}',
    search_bigrams        TEXT[]      GENERATED ALWAYS AS (text_bigrams(title || ' ' || brand)) STORED,
    -- false: taken off sale (still shown in carts and orders, as unavailable).
    selling               BOOLEAN     NOT NULL DEFAULT true,
    sales                 BIGINT      NOT NULL DEFAULT 0,
    view_count            BIGINT      NOT NULL DEFAULT 0,
    -- Recomputed from the active reviews in the transaction that changes them.
    star_avg              NUMERIC(3,2) NOT NULL DEFAULT 0,
    review_count          INTEGER     NOT NULL DEFAULT 0,
    deleted_at            TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT items_origin_price_check CHECK (origin_price BETWEEN 0 AND 100000000),
    CONSTRAINT items_discount_rate_check CHECK (discount_rate BETWEEN 0 AND 90),
    CONSTRAINT items_categories_check CHECK (
        cardinality(categories) >= 1 AND categories <@ ARRAY['EYE','BONE','BRAIN','INTESTINE','LIVER','SKIN','ANTIOXIDANT','FATIGUE','ETC']),
    CONSTRAINT items_counts_check CHECK (sales >= 0 AND view_count >= 0 AND review_count >= 0)
);
CREATE TRIGGER items_set_updated_at BEFORE UPDATE ON items
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Listing indexes cover the storefront (selling, not deleted) in each sort order; ties
-- are always broken by id ascending, so every order is stable across pages.
CREATE INDEX items_sales_idx ON items (sales DESC, id) WHERE selling AND deleted_at IS NULL;
CREATE INDEX items_price_asc_idx ON items (real_price, id) WHERE selling AND deleted_at IS NULL;
CREATE INDEX items_price_desc_idx ON items (real_price DESC, id) WHERE selling AND deleted_at IS NULL;
CREATE INDEX items_discount_asc_idx ON items (discount_rate, id) WHERE selling AND deleted_at IS NULL;
CREATE INDEX items_discount_desc_idx ON items (discount_rate DESC, id) WHERE selling AND deleted_at IS NULL;
CREATE INDEX items_reviews_idx ON items (review_count DESC, id) WHERE selling AND deleted_at IS NULL;
CREATE INDEX items_newest_idx ON items (created_at DESC, id) WHERE selling AND deleted_at IS NULL;
-- Category pages in the default order: one index per category, read in order, so a
-- page costs its offset plus its size whatever the category's share of the catalog.
CREATE INDEX items_cat_eye_sales_idx ON items (sales DESC, id)
    WHERE selling AND deleted_at IS NULL AND categories @> '{EYE}';
CREATE INDEX items_cat_bone_sales_idx ON items (sales DESC, id)
    WHERE selling AND deleted_at IS NULL AND categories @> '{BONE}';
CREATE INDEX items_cat_brain_sales_idx ON items (sales DESC, id)
    WHERE selling AND deleted_at IS NULL AND categories @> '{BRAIN}';
CREATE INDEX items_cat_intestine_sales_idx ON items (sales DESC, id)
    WHERE selling AND deleted_at IS NULL AND categories @> '{INTESTINE}';
CREATE INDEX items_cat_liver_sales_idx ON items (sales DESC, id)
    WHERE selling AND deleted_at IS NULL AND categories @> '{LIVER}';
CREATE INDEX items_cat_skin_sales_idx ON items (sales DESC, id)
    WHERE selling AND deleted_at IS NULL AND categories @> '{SKIN}';
CREATE INDEX items_cat_antioxidant_sales_idx ON items (sales DESC, id)
    WHERE selling AND deleted_at IS NULL AND categories @> '{ANTIOXIDANT}';
CREATE INDEX items_cat_fatigue_sales_idx ON items (sales DESC, id)
    WHERE selling AND deleted_at IS NULL AND categories @> '{FATIGUE}';
CREATE INDEX items_cat_etc_sales_idx ON items (sales DESC, id)
    WHERE selling AND deleted_at IS NULL AND categories @> '{ETC}';
CREATE INDEX items_categories_idx ON items USING gin (categories) WHERE selling AND deleted_at IS NULL;
CREATE INDEX items_search_idx ON items USING gin ((title || ' ' || brand) gin_trgm_ops)
    WHERE selling AND deleted_at IS NULL;
CREATE INDEX items_bigrams_idx ON items USING gin (search_bigrams)
    WHERE selling AND deleted_at IS NULL;
CREATE INDEX items_brand_idx ON items (brand) WHERE selling AND deleted_at IS NULL;

-- Views already added into items.view_count, per item and day, so a flush that re-reads
-- the same HyperLogLog count adds nothing (idempotent across crashes).
CREATE TABLE item_view_days (
    item_id    BIGINT      NOT NULL REFERENCES items (id),
    day        DATE        NOT NULL,
    counted    BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (item_id, day)
);

CREATE TABLE carts (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    BIGINT      NOT NULL REFERENCES users (id),
    kind       TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT carts_kind_check CHECK (kind IN ('normal', 'subscription')),
    CONSTRAINT carts_user_kind_key UNIQUE (user_id, kind)
);

CREATE TABLE cart_items (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cart_id     BIGINT      NOT NULL REFERENCES carts (id) ON DELETE CASCADE,
    item_id     BIGINT      NOT NULL REFERENCES items (id),
    quantity    INTEGER     NOT NULL,
    -- Subscription carts only: how often the line ships.
    period_days INTEGER,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT cart_items_quantity_check CHECK (quantity BETWEEN 1 AND 99),
    CONSTRAINT cart_items_period_check CHECK (period_days IS NULL OR period_days BETWEEN 7 AND 365),
    CONSTRAINT cart_items_cart_item_key UNIQUE (cart_id, item_id)
);
CREATE TRIGGER cart_items_set_updated_at BEFORE UPDATE ON cart_items
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE orders (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id          BIGINT      NOT NULL REFERENCES users (id),
    kind             TEXT        NOT NULL,
    status           TEXT        NOT NULL DEFAULT 'pending_payment',
    receiver_name    TEXT        NOT NULL,
    receiver_phone   TEXT        NOT NULL,
    receiver_city    TEXT        NOT NULL,
    receiver_address TEXT        NOT NULL,
    total_amount     BIGINT      NOT NULL,
    total_discount   BIGINT      NOT NULL DEFAULT 0,
    item_count       INTEGER     NOT NULL,
    period_days      INTEGER,
    subscription_id  BIGINT,
    cycle            INTEGER,
    idempotency_key  TEXT,
    paid_at          TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT orders_kind_check CHECK (kind IN ('one_time', 'subscription')),
    CONSTRAINT orders_status_check CHECK (status IN ('pending_payment', 'payment_ready',
        'approving', 'paid', 'payment_failed', 'canceled', 'refund_requested', 'refunded')),
    CONSTRAINT orders_amount_check CHECK (total_amount >= 0 AND total_discount >= 0),
    CONSTRAINT orders_period_check CHECK ((kind = 'subscription') = (period_days IS NOT NULL))
);
CREATE TRIGGER orders_set_updated_at BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX orders_user_idx ON orders (user_id, id DESC);

CREATE TABLE order_items (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    BIGINT      NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    item_id     BIGINT      NOT NULL REFERENCES items (id),
    -- Snapshot at order time.
    item_name   TEXT        NOT NULL,
    unit_price  BIGINT      NOT NULL,
    unit_discount BIGINT    NOT NULL DEFAULT 0,
    quantity    INTEGER     NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT order_items_quantity_check CHECK (quantity BETWEEN 1 AND 99),
    CONSTRAINT order_items_price_check CHECK (unit_price >= 0 AND unit_discount >= 0)
);
CREATE INDEX order_items_order_idx ON order_items (order_id);
CREATE INDEX order_items_item_idx ON order_items (item_id, order_id);

CREATE TABLE subscriptions (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         BIGINT      NOT NULL REFERENCES users (id),
    status          TEXT        NOT NULL DEFAULT 'active',
    period_days     INTEGER     NOT NULL,
    sid             TEXT,
    first_order_id  BIGINT      REFERENCES orders (id),
    anchor_at       TIMESTAMPTZ NOT NULL,
    next_charge_at  TIMESTAMPTZ,
    current_cycle   INTEGER     NOT NULL DEFAULT 1,
    last_charged_at TIMESTAMPTZ,
    cancel_reason   TEXT,
    canceled_at     TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_status_check CHECK (status IN ('active', 'paused', 'past_due', 'canceled')),
    CONSTRAINT subscriptions_period_check CHECK (period_days BETWEEN 7 AND 365)
);
CREATE TRIGGER subscriptions_set_updated_at BEFORE UPDATE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX subscriptions_user_idx ON subscriptions (user_id, id DESC);
CREATE INDEX subscriptions_due_idx ON subscriptions (next_charge_at)
    WHERE status IN ('active', 'past_due');
ALTER TABLE orders ADD CONSTRAINT orders_subscription_fkey
    FOREIGN KEY (subscription_id) REFERENCES subscriptions (id);

CREATE TABLE subscription_items (
    subscription_id BIGINT      NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    item_id         BIGINT      NOT NULL REFERENCES items (id),
    quantity        INTEGER     NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, item_id),
    CONSTRAINT subscription_items_quantity_check CHECK (quantity BETWEEN 1 AND 99)
);

CREATE TABLE reviews (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    BIGINT      NOT NULL REFERENCES users (id),
    item_id    BIGINT      NOT NULL REFERENCES items (id),
    star       SMALLINT    NOT NULL,
    content    TEXT        NOT NULL,
    deleted_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT reviews_star_check CHECK (star BETWEEN 1 AND 5)
);
CREATE TRIGGER reviews_set_updated_at BEFORE UPDATE ON reviews
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
-- One active review per customer and item.
CREATE UNIQUE INDEX reviews_user_item_key ON reviews (user_id, item_id) WHERE deleted_at IS NULL;
CREATE INDEX reviews_item_idx ON reviews (item_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX reviews_user_idx ON reviews (user_id, id DESC) WHERE deleted_at IS NULL;
