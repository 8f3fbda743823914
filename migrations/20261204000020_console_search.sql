-- The operator console's searches (issue 19): a status filter of subscriptions and of
-- orders reads its page newest first and counts its matches from an index, and a phone
-- number finds its account whatever the account's status (the unique index covers active
-- accounts only; operators look up withdrawn customers' subscriptions too).
CREATE INDEX subscriptions_status_idx ON subscriptions (status, id DESC);
CREATE INDEX orders_status_idx ON orders (status, id DESC);
CREATE INDEX IF NOT EXISTS users_phone_idx ON users (phone);
