-- A subscription's own shipping receiver, set when the customer changes where future
-- cycles ship. Nullable and not backfilled: until a customer changes it, a subscription
-- ships where its first order went (the cycle order's insert falls back to that order),
-- which is also what subscriptions written without these columns (imports, the load-test
-- data set) need. Not backfilling means no rewrite of a table that every charge updates
-- (adding nullable columns without a default is a catalog change; the check only scans)
-- and no second copy of every first order's address to keep in step.
-- All four are set together or none: a cycle order never mixes two receivers.
ALTER TABLE subscriptions
    ADD COLUMN receiver_name    TEXT,
    ADD COLUMN receiver_phone   TEXT,
    ADD COLUMN receiver_city    TEXT,
    ADD COLUMN receiver_address TEXT,
    ADD CONSTRAINT subscriptions_receiver_check CHECK (
        num_nulls(receiver_name, receiver_phone, receiver_city, receiver_address) IN (0, 4)
    );
