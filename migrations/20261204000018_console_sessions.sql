-- Operator console sessions (issue 19): a console sign-in is a session like an API
-- login's, so whatever ends an account's sessions (disabling it, a password change,
-- "sign out everywhere") ends its console sessions too. It is held by an HttpOnly cookie
-- whose SHA-256 is `cookie_hash`, carries the CSRF token its forms must send back, and
-- ends after `console.idle_timeout_secs` without a request (`last_used_at`).
ALTER TABLE sessions
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'api',
    ADD COLUMN cookie_hash TEXT,
    ADD COLUMN csrf_token TEXT,
    ADD CONSTRAINT sessions_kind_check CHECK (kind IN ('api', 'console')),
    ADD CONSTRAINT sessions_console_check CHECK (
        (kind = 'console') = (cookie_hash IS NOT NULL AND csrf_token IS NOT NULL));
CREATE UNIQUE INDEX sessions_cookie_hash_key ON sessions (cookie_hash) WHERE cookie_hash IS NOT NULL;

ALTER TABLE sessions DROP CONSTRAINT sessions_revoke_reason_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_revoke_reason_check CHECK (revoke_reason IN
    ('logout', 'ended_by_user', 'sign_out_everywhere', 'password_changed', 'withdrawn',
     'refresh_token_reused', 'account_inactive', 'idle_timeout'));
