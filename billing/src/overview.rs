//! The operators' overview: the figures the console's first page shows and refreshes —
//! the queue, the workers, today's charges and what waits for a person — read in a few
//! indexed queries so the page stays cheap to refresh every few seconds.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::jobs::QueueStat;
use crate::workers::WorkerStatus;
use crate::Ctx;

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub at: DateTime<Utc>,
    /// By task type and state, with the lag of the waiting ones.
    pub queue: Vec<QueueStat>,
    /// Jobs that ran out of retries in the last hour (they stay, failed, for operators).
    pub jobs_failed_last_hour: i64,
    /// Jobs that succeeded in the last hour, as the workers report them (finished rows
    /// are usually deleted, so only the workers know).
    pub jobs_finished_last_hour: i64,
    /// The worker processes that reported in the last hour: breaker, PG calls/s, load.
    pub workers: Vec<WorkerStatus>,
    /// Subscription charge attempts begun since local midnight, by outcome.
    pub charges_today: ChargesToday,
    pub subscriptions_past_due: i64,
    pub deliveries_dead: i64,
    /// Charges sent with no answer yet, and those past the review window.
    pub charges_unknown: i64,
    pub charges_review_required: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChargesToday {
    pub succeeded: i64,
    pub declined: i64,
    pub unknown: i64,
    pub in_flight: i64,
}

pub async fn overview(ctx: &Ctx) -> Result<Overview> {
    let now = ctx.clock.now();
    let tz = ctx.settings.subscriptions.time_zone.tz();
    let midnight = ctx
        .settings
        .subscriptions
        .time_zone
        .local_date(now)
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(tz).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now - Duration::hours(24));
    let queue = crate::jobs::stats(ctx).await?;
    let mut conn = ctx.db.acquire().await?;
    let c = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE status = 'succeeded') AS "succeeded!",
                  count(*) FILTER (WHERE status = 'declined') AS "declined!",
                  count(*) FILTER (WHERE status = 'unknown') AS "unknown!",
                  count(*) FILTER (WHERE status = 'in_flight') AS "in_flight!"
           FROM charge_attempts WHERE started_at >= $1"#,
        midnight
    )
    .fetch_one(&mut *conn)
    .await?;
    let r = sqlx::query!(
        r#"SELECT
             (SELECT count(*) FROM fang_tasks WHERE state = 'failed' AND updated_at >= $1)
                AS "failed!",
             (SELECT count(*) FROM subscriptions WHERE status = 'past_due') AS "past_due!",
             (SELECT count(*) FROM webhook_deliveries WHERE state = 'dead') AS "dead!",
             (SELECT count(*) FROM charge_attempts WHERE status = 'unknown') AS "unknown!",
             (SELECT count(*) FROM charge_attempts
               WHERE status = 'unknown' AND review_required_at IS NOT NULL) AS "review!""#,
        now - Duration::hours(1)
    )
    .fetch_one(&mut *conn)
    .await?;
    let (workers, jobs_finished_last_hour) = crate::workers::statuses(&mut conn, now).await?;
    Ok(Overview {
        at: now,
        queue,
        jobs_failed_last_hour: r.failed,
        jobs_finished_last_hour,
        workers,
        charges_today: ChargesToday {
            succeeded: c.succeeded,
            declined: c.declined,
            unknown: c.unknown,
            in_flight: c.in_flight,
        },
        subscriptions_past_due: r.past_due,
        deliveries_dead: r.dead,
        charges_unknown: r.unknown,
        charges_review_required: r.review,
    })
}
