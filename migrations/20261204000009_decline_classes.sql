-- Decline classes (issue 17): a hard decline of a recurring charge (a SID KakaoPay no
-- longer accepts, or one issued to another partner user) cancels the subscription at
-- once with its own reason, `hard_decline`. Added NOT VALID, then validated: the check
-- only widens, and validating under a weaker lock keeps the table writable meanwhile.
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_cancel_reason_check,
    ADD CONSTRAINT subscriptions_cancel_reason_check
        CHECK (cancel_reason IN ('customer', 'payment_failed', 'sid_unusable',
                                 'items_unavailable', 'hard_decline')) NOT VALID;
ALTER TABLE subscriptions VALIDATE CONSTRAINT subscriptions_cancel_reason_check;
