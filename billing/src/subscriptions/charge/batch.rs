//! Charges run at once share transactions: a worker's concurrent charges are started
//! (decided and their attempts recorded) and finished (their orders written) in batches
//! through this process's [`Batches`]. A batch is one transaction under the locks of all
//! its subscriptions, taken in id order; a subscription twice in one batch goes to a later
//! round; a batch that fails is retried one charge at a time, so one bad row costs only
//! its own charge. The guarantees are the single charge's: each decision is made under
//! the subscription's lock, and the attempt commits before KakaoPay is called.

use std::future::Future;
use std::pin::Pin;

use super::*;
use crate::coalesce::{rounds_by_key, Coalescer};
use crate::db::Db;

/// A charge job's question: may cycle `cycle` of subscription `id` be charged now, under
/// schedule sequence `seq`?
#[derive(Debug, Clone, Copy)]
pub(crate) struct Due {
    pub id: SubscriptionId,
    pub cycle: i32,
    pub seq: i32,
}

/// What starting a charge decided.
#[derive(Debug)]
pub(crate) enum Started {
    /// The attempt is recorded and committed: call KakaoPay with the SID.
    Charge {
        s: Row,
        sid: String,
        attempt: Attempt,
    },
    /// Nothing to send (not due, not billable, settled otherwise): the job's outcome.
    Finished(Outcome),
}

/// A charge KakaoPay approved, to finish.
#[derive(Debug)]
pub(crate) struct Charged {
    pub attempt: Attempt,
    pub approval: Approval,
    pub charged_at: DateTime<Utc>,
}

/// A request with the handles of the job that made it (its transactions are counted in
/// that job's runner).
pub(crate) struct Req<T> {
    ctx: Ctx,
    body: T,
}

/// This process's charge batches: one coalescer to start charges, one to finish them.
pub struct Batches {
    start: Coalescer<Req<Due>, Result<Started>>,
    finish: Coalescer<Req<Charged>, Result<()>>,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("start", &self.start)
            .field("finish", &self.finish)
            .finish()
    }
}

impl Batches {
    pub fn new(settings: &crate::settings::SubscriptionsSettings) -> Self {
        Self {
            start: Coalescer::new(settings.charge_batch_size, settings.charge_batches),
            finish: Coalescer::new(settings.charge_batch_size, settings.charge_batches),
        }
    }
}

/// Starts `due` in a batch with the charges starting alongside it.
pub(crate) async fn start(ctx: &Ctx, due: Due) -> Result<Started> {
    batched(ctx, &ctx.charges.start, due, START, start_batch).await
}

/// Finishes an approved charge in a batch with the charges finishing alongside it.
pub(crate) async fn finish(ctx: &Ctx, charged: Charged) -> Result<()> {
    batched(ctx, &ctx.charges.finish, charged, FINISH, finish_batch).await
}

/// What a batch does: its requests' subscription, and its metrics' label.
struct Step<B> {
    key: fn(&B) -> i64,
    label: &'static str,
}

// Copied whatever `B` is (derive would ask `B: Copy`).
impl<B> Clone for Step<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for Step<B> {}

const START: Step<Due> = Step {
    key: |d| d.id.0,
    label: "start",
};

const FINISH: Step<Charged> = Step {
    key: |c| c.attempt.subscription_id.0,
    label: "finish",
};

/// `body`'s answer from the batch of `coalescer` it joins.
async fn batched<B, T>(
    ctx: &Ctx,
    coalescer: &Coalescer<Req<B>, Result<T>>,
    body: B,
    step: Step<B>,
    batch: BatchFn<B, T>,
) -> Result<T>
where
    B: Send + Sync + 'static,
    T: Send + 'static,
{
    let req = Req {
        ctx: ctx.clone(),
        body,
    };
    coalescer
        .call(req, |reqs| run(reqs, step, batch))
        .await
        .unwrap_or_else(|| Err(abandoned()))
}

fn abandoned() -> Error {
    Error::Internal("the charge batch ended without an answer".into())
}

type BatchFuture<'a, T> = Pin<Box<dyn Future<Output = Result<Vec<T>>> + Send + 'a>>;

/// One batch's work: the requests' bodies in, one answer per body out, in order.
type BatchFn<B, T> = for<'a> fn(&'a Ctx, &'a [Db], &'a Policy, &'a [&'a B]) -> BatchFuture<'a, T>;

/// Runs a coalesced batch: in rounds without a repeated subscription, each round one
/// call of `batch`; a round that fails (and so rolled back) is retried one request at a
/// time. Answers in the requests' order.
async fn run<B, T>(reqs: Vec<Req<B>>, step: Step<B>, batch: BatchFn<B, T>) -> Vec<Result<T>>
where
    B: Send + Sync + 'static,
    T: Send + 'static,
{
    let n = reqs.len();
    let Some(ctx) = reqs.first().map(|r| r.ctx.clone()) else {
        return Vec::new();
    };
    let mut answers: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
    let policy = match policy(&ctx) {
        Ok(p) => p,
        Err(e) => {
            let msg = e.to_string();
            return (0..n).map(|_| Err(Error::Internal(msg.clone()))).collect();
        }
    };
    let indexed: Vec<(usize, &Req<B>)> = reqs.iter().enumerate().collect();
    for round in rounds_by_key(indexed, |(_, r)| (step.key)(&r.body)) {
        let dbs: Vec<Db> = round.iter().map(|(_, r)| r.ctx.db.clone()).collect();
        let bodies: Vec<&B> = round.iter().map(|(_, r)| &r.body).collect();
        let began = std::time::Instant::now();
        let outcome = batch(&ctx, &dbs, &policy, &bodies).await;
        metrics::histogram!("charge_batch_size", "step" => step.label).record(round.len() as f64);
        metrics::histogram!("charge_batch_seconds", "step" => step.label)
            .record(began.elapsed().as_secs_f64());
        match outcome {
            Ok(outs) if outs.len() == round.len() => {
                for ((i, _), out) in round.iter().zip(outs) {
                    answers[*i] = Some(Ok(out));
                }
            }
            // Cannot happen (a batch answers each body); nothing is run twice.
            Ok(_) => {}
            Err(e) if round.len() == 1 => answers[round[0].0] = Some(Err(e)),
            Err(e) => {
                // Rolled back: each runs again alone, so a bad row fails only itself.
                tracing::warn!(error = %e, charges = round.len(),
                    "a charge batch failed; running its charges one by one");
                for ((i, r), db) in round.iter().zip(&dbs) {
                    let one = batch(&ctx, std::slice::from_ref(db), &policy, &[&r.body])
                        .await
                        .and_then(|mut v| v.pop().ok_or_else(abandoned));
                    answers[*i] = Some(one);
                }
            }
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(abandoned())))
        .collect()
}

fn start_batch<'a>(
    ctx: &'a Ctx,
    dbs: &'a [Db],
    policy: &'a Policy,
    dues: &'a [&'a Due],
) -> BatchFuture<'a, Started> {
    Box::pin(start_all(ctx, dbs, policy, dues))
}

fn finish_batch<'a>(
    ctx: &'a Ctx,
    dbs: &'a [Db],
    policy: &'a Policy,
    charged: &'a [&'a Charged],
) -> BatchFuture<'a, ()> {
    Box::pin(async move {
        let items: Vec<Success<'_>> = charged
            .iter()
            .map(|c| Success {
                attempt: &c.attempt,
                approval: &c.approval,
                charged_at: c.charged_at,
                via: None,
            })
            .collect();
        apply_successes(ctx, dbs, policy, &items).await?;
        Ok(vec![(); charged.len()])
    })
}

/// What the charge's decision under the lock is, before anything is written.
enum Plan {
    /// Nothing to do for this job (gone, not billable, superseded, already charged).
    Nothing,
    /// A recovery checkout of the cycle is at KakaoPay: its outcome decides.
    WaitForCheckout,
    /// An attempt left `in_flight` by a worker that stopped: only the SID may decide.
    Orphaned(i64),
    /// Woken before the charge is due (a clock step back, an edit that forgot to
    /// reschedule): run again at the right time rather than lose the charge.
    Early(Next),
    /// It would be the second charge of a local day: moved to the next day.
    SecondToday(Next),
    /// No SID to charge: canceled, with a recovery link.
    NoSid,
    /// Record the attempt and call KakaoPay.
    Charge(String),
}

fn plan(
    policy: &Policy,
    s: &Row,
    open: Option<&OpenAttempt>,
    due: &Due,
    now: DateTime<Utc>,
) -> Plan {
    if !s.status.is_billable() || s.schedule_seq != due.seq || s.current_cycle + 1 != due.cycle {
        return Plan::Nothing;
    }
    if let Some(open) = open {
        if open.checkout_id.is_some() {
            return Plan::WaitForCheckout;
        }
        if open.status == super::AttemptStatus::InFlight {
            return Plan::Orphaned(open.id);
        }
        return Plan::Nothing;
    }
    let Some(next) = s.next(policy) else {
        return Plan::Nothing;
    };
    if next.at > now {
        return Plan::Early(next);
    }
    if let Some(last) = s.last_charged_at {
        if policy.local_date(now) <= policy.local_date(last) {
            return Plan::SecondToday(policy.not_before(next.due_on, now, Some(last)));
        }
    }
    match &s.sid {
        Some(sid) => Plan::Charge(sid.clone()),
        None => Plan::NoSid,
    }
}

/// Decides every due charge under its subscription's lock, carries out what is not a
/// charge, and records the attempts of those that are, in one statement — all in one
/// transaction, committed before any is sent.
async fn start_all(ctx: &Ctx, dbs: &[Db], policy: &Policy, dues: &[&Due]) -> Result<Vec<Started>> {
    let now = ctx.clock.now();
    let ids: Vec<i64> = dues.iter().map(|d| d.id.0).collect();
    let mut tx = Db::begin_for(dbs).await?;
    let rows: std::collections::HashMap<i64, Row> = store::subscriptions::lock_many(&mut tx, &ids)
        .await?
        .into_iter()
        .map(|r| (r.id.0, r))
        .collect();
    let open = open_attempts_of(&mut tx, &ids).await?;
    let mut answers: Vec<Option<Started>> = (0..dues.len()).map(|_| None).collect();
    let mut to_record: Vec<(usize, String)> = Vec::new();
    for (i, due) in dues.iter().enumerate() {
        let Some(s) = rows.get(&due.id.0) else {
            answers[i] = Some(Started::Finished(Outcome::Done));
            continue;
        };
        let finished = match plan(policy, s, open.get(&due.id.0), due, now) {
            Plan::Charge(sid) => {
                to_record.push((i, sid));
                continue;
            }
            Plan::Nothing => Outcome::Done,
            Plan::WaitForCheckout => Outcome::Defer {
                after: std::time::Duration::from_secs(30),
                reason: "a recovery checkout of the cycle is at KakaoPay".into(),
            },
            Plan::Orphaned(attempt) => {
                mark_unknown(
                    &mut tx,
                    attempt,
                    "the worker stopped before the answer was recorded",
                )
                .await?;
                enqueue_reconcile(ctx, &mut tx, attempt, 1, now, None).await?;
                Outcome::Done
            }
            Plan::Early(next) => {
                reschedule(&mut tx, s, Some(next), due.cycle, now).await?;
                Outcome::Done
            }
            Plan::SecondToday(moved) => {
                tracing::warn!(subscription_id = s.id.0, next_charge_at = %moved.at,
                    "a second charge on one local day refused; moved to the next day");
                reschedule(&mut tx, s, Some(moved), due.cycle, now).await?;
                Outcome::Done
            }
            Plan::NoSid => {
                let url = crate::subscriptions::checkout::issue_link(ctx, &mut tx, s, now).await?;
                cancel_locked_with_code(&mut tx, s, "sid_unusable", None, Some(&url), now).await?;
                Outcome::Done
            }
        };
        answers[i] = Some(Started::Finished(finished));
    }
    let wanted: Vec<(SubscriptionId, i32)> = to_record
        .iter()
        .map(|(i, _)| (dues[*i].id, dues[*i].cycle))
        .collect();
    let mut recorded = record_attempts(&mut tx, &wanted, now).await?;
    for (i, sid) in to_record {
        let s = &rows[&dues[i].id.0];
        answers[i] = Some(match recorded.remove(&s.id.0) {
            Some(attempt) => Started::Charge {
                s: s.clone(),
                sid,
                attempt,
            },
            None => {
                // Nothing left to charge: no product on sale, or a zero total.
                cancel_locked(&mut tx, s, "items_unavailable", now).await?;
                Started::Finished(Outcome::Done)
            }
        });
    }
    tx.commit().await?;
    answers
        .into_iter()
        .map(|a| a.ok_or_else(abandoned))
        .collect()
}
