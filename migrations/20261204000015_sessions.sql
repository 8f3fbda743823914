-- Durable sessions (issue 18): a login's refresh-token family lives in Postgres, so losing
-- Redis logs nobody out. `id` is the family (the access token's `sid`). A family lasts
-- `auth.refresh_ttl_secs` from the login (using it does not extend it); it ends when
-- revoked (logout, "sign out everywhere", a password change, withdrawal, a reused refresh
-- token) — every access token of it stops working at once.
CREATE TABLE sessions (
    id             UUID        PRIMARY KEY,
    user_id        BIGINT      NOT NULL REFERENCES users (id),
    expires_at     TIMESTAMPTZ NOT NULL,
    last_used_at   TIMESTAMPTZ NOT NULL,
    -- What the customer sees in the session list: where and from what it was last used.
    ip             TEXT,
    user_agent     TEXT,
    revoked_at     TIMESTAMPTZ,
    revoke_reason  TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT sessions_revoke_reason_check CHECK (revoke_reason IN
        ('logout', 'ended_by_user', 'sign_out_everywhere', 'password_changed', 'withdrawn',
         'refresh_token_reused', 'account_inactive'))
);
CREATE TRIGGER sessions_set_updated_at BEFORE UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
-- A user's live sessions (the list, and revoking them all).
CREATE INDEX sessions_user_idx ON sessions (user_id, created_at DESC) WHERE revoked_at IS NULL;

-- Every refresh token a family issued, by SHA-256: the live one (`used_at` NULL) and the
-- consumed ones, kept so a consumed token presented again is recognised as reuse (the
-- family is then revoked). Deleted with their family.
CREATE TABLE session_refresh_tokens (
    token_hash  TEXT        PRIMARY KEY,
    session_id  UUID        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    used_at     TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX session_refresh_tokens_session_idx ON session_refresh_tokens (session_id);
