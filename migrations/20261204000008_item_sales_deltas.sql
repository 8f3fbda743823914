-- Sales are counted off the hot `items` row: a paid order appends one row per item here in
-- its paying transaction, and a periodic fold adds them to `items.sales` and deletes them.
-- Each `items` update rewrites 21 index entries (sales is in every listing index) and took
-- the item's row lock against every concurrent order of the same product; an append is one
-- small insert with no shared row to wait for. No foreign keys: a key-share lock on the
-- item from each insert would meet the fold's update of the same row. Items are only ever
-- soft-deleted, so the fold always finds its row.
CREATE TABLE item_sales_deltas (
    id          BIGSERIAL   PRIMARY KEY,
    item_id     BIGINT      NOT NULL,
    order_id    BIGINT      NOT NULL,
    quantity    BIGINT      NOT NULL CONSTRAINT item_sales_deltas_quantity_check CHECK (quantity > 0),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
