-- Renewal reminders: `subscription.renewal_upcoming` is written once per cycle, N days
-- before the cycle's charge, by a periodic sweep. The last cycle reminded stays on the row
-- so that no reschedule (a skip, a period change, a pause and resume) reminds one cycle
-- twice. 0: none yet.
ALTER TABLE subscriptions ADD COLUMN reminded_cycle INT NOT NULL DEFAULT 0;
