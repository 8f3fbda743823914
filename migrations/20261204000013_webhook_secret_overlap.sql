-- Webhook secret rotation with an overlap window (issue 18). A rotation keeps the secret
-- it replaced in previous_secret: deliveries carry a signature with it, beside the new
-- one, until previous_secret_expires_at (webhooks.secret_rotation_overlap_secs after the
-- rotation), so a receiver can switch secrets without refusing anything. Afterwards only
-- the current secret signs; the next rotation overwrites (or a delivery clears) it.
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secret            TEXT,
    ADD COLUMN previous_secret_expires_at TIMESTAMPTZ,
    ADD CONSTRAINT webhook_endpoints_previous_secret_check
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL));
