-- OAuth login attempts (issue 18): one row per `GET /api/auth/oauth/{provider}/authorize`.
-- The callback redeems a row once, and only from the browser that started it (the hash of
-- the random binding in its HttpOnly cookie must match), which closes login CSRF and
-- replay. Rows live in Postgres, not Redis, so a login in progress survives a Redis
-- restart. Expired rows are pruned by later `authorize` calls (a few at a time, oldest
-- first), so the table holds about (authorize rate × TTL) rows.
CREATE TABLE oauth_states (
    -- SHA-256 (hex) of the opaque `state` sent to the provider; the state itself is not
    -- kept, so a copy of this table cannot redeem anything.
    state_hash    TEXT        NOT NULL,
    provider      TEXT        NOT NULL,
    -- The RFC 7636 code_verifier (S256): sent once, to the provider's token endpoint at the
    -- callback. Kept in clear because only this server knows it; it is useless without
    -- the code, which only the provider's redirect carries, and it dies with the row.
    code_verifier TEXT        NOT NULL,
    -- SHA-256 (hex) of the browser binding (the cookie's value).
    binding_hash  TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    -- Set when the callback redeemed it; a second callback with the same state is refused.
    used_at       TIMESTAMPTZ,
    CONSTRAINT oauth_states_pkey PRIMARY KEY (state_hash),
    CONSTRAINT oauth_states_state_hash_check CHECK (state_hash ~ '^[0-9a-f]{64}$'),
    CONSTRAINT oauth_states_binding_hash_check CHECK (binding_hash ~ '^[0-9a-f]{64}$'),
    CONSTRAINT oauth_states_code_verifier_check
        CHECK (code_verifier ~ '^[A-Za-z0-9._~-]{43,128}$'),
    CONSTRAINT oauth_states_provider_check CHECK (length(provider) BETWEEN 1 AND 100),
    CONSTRAINT oauth_states_expiry_check CHECK (expires_at > created_at),
    CONSTRAINT oauth_states_used_check CHECK (used_at IS NULL OR used_at >= created_at)
);
-- Pruning reads the oldest expired rows first.
CREATE INDEX oauth_states_expires_at_idx ON oauth_states (expires_at);
