-- Operators' delivery list (the console's deliveries page, GET /api/admin/deliveries):
-- newest first across every state and endpoint, a page at a time. The state and endpoint
-- indexes lead with their column, so the unfiltered list sorted every delivery ever made.
CREATE INDEX webhook_deliveries_created_idx ON webhook_deliveries (created_at DESC, id DESC);
