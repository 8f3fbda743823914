//! Renewal reminders: `subscription.renewal_upcoming`, once per cycle,
//! `subscriptions.renewal_reminder_days` before the cycle's charge, for the store's
//! notification service to turn into an e-mail or a KakaoTalk message.

use super::*;

/// Subscriptions marked per transaction: a billing-day's worth of reminders is written in
/// short transactions, each holding few row locks.
const BATCH: i64 = 500;

/// Task `subscriptions.remind_renewals` (periodic): writes the event for every active
/// subscription whose next charge is due within the lead and whose cycle has not been
/// reminded. A paused subscription has no next charge; one skipped past the window is
/// reminded when its new date comes within it — unless that cycle was reminded already:
/// however often a cycle is rescheduled, it is reminded at most once. Returns how many.
pub async fn remind_renewals(ctx: &Ctx) -> Result<usize> {
    let days = ctx.settings.subscriptions.renewal_reminder_days;
    if days == 0 {
        return Ok(0);
    }
    let now = ctx.clock.now();
    let until = now + chrono::Duration::days(i64::from(days));
    let mut reminded = 0;
    loop {
        let mut tx = ctx.db.begin().await?;
        let due = store::subscriptions::mark_reminded(&mut tx, now, until, BATCH).await?;
        for r in &due {
            record_event(
                &mut tx,
                r.id,
                "subscription.renewal_upcoming",
                EventExtra {
                    amount: Some(r.amount),
                    ..Default::default()
                },
            )
            .await?;
            tracing::debug!(
                subscription_id = r.id.0,
                cycle = r.cycle,
                "renewal reminded"
            );
        }
        tx.commit().await?;
        reminded += due.len();
        if (due.len() as i64) < BATCH {
            break;
        }
    }
    if reminded > 0 {
        metrics::counter!("subscription_renewal_reminders_total").increment(reminded as u64);
        tracing::info!(reminded, "renewal reminders written");
    }
    Ok(reminded)
}
