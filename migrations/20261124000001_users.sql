-- Accounts. Uniqueness of e-mail, phone and display name holds among active accounts only,
-- so a withdrawn customer's identifiers can be registered again. The index names are
-- part of the API: billing maps each one to the field a 409 names.
CREATE TABLE users (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email           TEXT        NOT NULL,
    password_hash   TEXT,
    display_name    TEXT        NOT NULL,
    real_name       TEXT,
    phone           TEXT        NOT NULL,
    city            TEXT        NOT NULL,
    detail_address  TEXT        NOT NULL,
    oauth_provider  TEXT,
    oauth_subject   TEXT,
    role            TEXT        NOT NULL DEFAULT 'user',
    status          TEXT        NOT NULL DEFAULT 'active',
    withdrawn_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT users_role_check CHECK (role IN ('user', 'admin')),
    CONSTRAINT users_status_check CHECK (status IN ('active', 'withdrawn')),
    CONSTRAINT users_email_lower_check CHECK (email = lower(email)),
    CONSTRAINT users_oauth_pair_check CHECK ((oauth_provider IS NULL) = (oauth_subject IS NULL)),
    CONSTRAINT users_credentials_check CHECK (password_hash IS NOT NULL OR oauth_provider IS NOT NULL),
    CONSTRAINT users_withdrawn_at_check CHECK ((status = 'withdrawn') = (withdrawn_at IS NOT NULL))
);

CREATE UNIQUE INDEX users_email_key ON users (email) WHERE status = 'active';
CREATE UNIQUE INDEX users_phone_key ON users (phone) WHERE status = 'active';
CREATE UNIQUE INDEX users_display_name_key ON users (display_name) WHERE status = 'active';
CREATE UNIQUE INDEX users_oauth_key ON users (oauth_provider, oauth_subject) WHERE status = 'active';
-- Login looks up withdrawn accounts too (to answer `account_withdrawn`).
CREATE INDEX users_email_idx ON users (email);

-- Keeps updated_at honest for every table that has one.
CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
