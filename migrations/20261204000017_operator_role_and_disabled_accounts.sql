-- Operators (issue 19): a read-only `operator` role beside `admin` (it sees what admins
-- see and acts on nothing), and accounts an admin disables. A disabled account keeps its
-- e-mail, phone and display name (the unique indexes count active accounts, and it stays
-- `active`): it cannot log in, and its sessions end when it is disabled.
ALTER TABLE users DROP CONSTRAINT users_role_check,
    ADD CONSTRAINT users_role_check CHECK (role IN ('user', 'operator', 'admin')) NOT VALID;
ALTER TABLE users VALIDATE CONSTRAINT users_role_check;
ALTER TABLE users ADD COLUMN disabled_at TIMESTAMPTZ;
