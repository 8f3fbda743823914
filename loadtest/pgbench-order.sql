-- The physical reference of order placement: the statements `billing::orders::place`
-- sends for a one-time order of 1–3 explicit lines, in one transaction, in the same order
-- (prepared, like sqlx: run with `pgbench -M prepared`):
--   price the lines (SELECT items by id), INSERT orders … ON CONFLICT … RETURNING id,
--   INSERT order_items from unnest(arrays), INSERT payments … RETURNING id, and the
--   `payment.ready` job: INSERT fang_tasks … ON CONFLICT (uniq_hash). The API wakes the
--   workers after the commit, from another session; `-D notify=1` puts the pg_notify
--   inside the transaction instead, as the API did before (Postgres' notify lock is then
--   held through each commit's WAL flush).
-- Random users in 1..:users and items in 1..:items (every item must be on sale). Prices
-- and names come from pgbench, not from the SELECT (the API copies them from it; the rows
-- written are the same size). With `-D readback=1` it also reads the order back after the
-- commit as the API's answer does (order ⋈ payment, then its lines).
--
--   pgbench -n -M prepared -c 32 -j 2 -T 10 -D users=10000 -D items=40000 -D readback=0 -D notify=0 \
--       -f loadtest/pgbench-order.sql DATABASE_URL
\set uid random(1, :users)
\set n random(1, 3)
\set i1 random(1, :items)
\set i2 random(1, :items)
\set i3 random(1, :items)
\set q1 random(1, 3)
\set q2 random(1, 3)
\set q3 random(1, 3)
\set p1 random(50, 1500) * 100
\set p2 random(50, 1500) * 100
\set p3 random(50, 1500) * 100
\set d1 random(0, 30) * 100
\set d2 random(0, 30) * 100
\set d3 random(0, 30) * 100
\set total :p1 * :q1 + case when :n >= 2 then :p2 * :q2 else 0 end + case when :n >= 3 then :p3 * :q3 else 0 end
\set discount :d1 * :q1 + case when :n >= 2 then :d2 * :q2 else 0 end + case when :n >= 3 then :d3 * :q3 else 0 end
\set count :q1 + case when :n >= 2 then :q2 else 0 end + case when :n >= 3 then :q3 else 0 end
BEGIN;
SELECT id, title, real_price, discount_price, (selling AND deleted_at IS NULL) AS available
FROM items
WHERE id = ANY((ARRAY[:i1::bigint, :i2::bigint, :i3::bigint])[1:(:n)::int]);
INSERT INTO orders (user_id, kind, receiver_name, receiver_phone, receiver_city,
                    receiver_address, total_amount, total_discount, item_count,
                    period_days, idempotency_key, idempotency_hash, from_cart)
VALUES (:uid::bigint, 'one_time', '홍길동', '01012345678', 'Seoul', '1 Sejong-daero',
        :total::bigint, :discount::bigint, :count::int, NULL, NULL, NULL, false)
ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id AS order_id \gset
INSERT INTO order_items (order_id, item_id, item_name, unit_price, unit_discount, quantity)
SELECT :order_id::bigint, * FROM unnest(
    (ARRAY[:i1::bigint, :i2::bigint, :i3::bigint])[1:(:n)::int],
    (ARRAY['프리미엄 루테인 지아잔틴 30캡슐', '6년근 홍삼정 골드 240g', '알티지 오메가3 1200 60캡슐'])[1:(:n)::int],
    (ARRAY[:p1::bigint, :p2::bigint, :p3::bigint])[1:(:n)::int],
    (ARRAY[:d1::bigint, :d2::bigint, :d3::bigint])[1:(:n)::int],
    (ARRAY[:q1::int, :q2::int, :q3::int])[1:(:n)::int]);
INSERT INTO payments (order_id, cid_kind, token, partner_order_id, partner_user_id, amount)
VALUES (:order_id::bigint, 'one_time', md5(random()::text) || substr(md5(random()::text), 1, 11),
        'pv-order-' || (:order_id::bigint)::text, 'pv-user-' || (:uid::bigint)::text,
        :total::bigint)
RETURNING id AS payment_id \gset
WITH ins AS (
    INSERT INTO fang_tasks (metadata, task_type, uniq_hash, scheduled_at, max_retries)
    VALUES (jsonb_build_object('type', 'payment.ready', 'payment_id', :payment_id::bigint), 'pg',
            encode(sha256(convert_to('{"payment_id":' || (:payment_id::bigint)::text
                                     || ',"type":"payment.ready"}', 'UTF8')), 'hex'),
            COALESCE(NULL::timestamptz, now()), 1500)
    ON CONFLICT (uniq_hash)
        WHERE uniq_hash IS NOT NULL AND state IN ('new', 'retried', 'in_progress')
        DO NOTHING
    RETURNING id
)
SELECT id, CASE WHEN :notify = 1 THEN pg_notify('pillivery_jobs', 'pg') IS NOT NULL
                ELSE false END AS notified
FROM ins;
COMMIT;
\if :readback
SELECT o.id, o.kind, o.status, o.total_amount, o.total_discount, o.item_count, o.period_days,
       o.subscription_id, o.cycle, o.receiver_name, o.receiver_phone, o.receiver_city,
       o.receiver_address, o.created_at, o.updated_at, o.paid_at, o.canceled_at, o.refunded_at,
       p.status, p.redirect_pc_url, p.redirect_mobile_url, p.redirect_app_url, p.failure_code,
       p.failure_message, p.approved_at, p.canceled_amount
FROM orders o LEFT JOIN payments p ON p.order_id = o.id
WHERE o.id = ANY(ARRAY[:order_id::bigint]) AND (:uid::bigint IS NULL OR o.user_id = :uid::bigint)
ORDER BY o.id DESC;
SELECT order_id, item_id, item_name, unit_price, unit_discount, quantity
FROM order_items WHERE order_id = ANY(ARRAY[:order_id::bigint]) ORDER BY order_id, id;
\endif
