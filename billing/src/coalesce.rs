//! Coalescing concurrent calls into batches: requests that arrive while a batch runs wait
//! together and are served by the next batch, so a worker's hundreds of concurrent charges
//! share a few transactions' statements instead of each paying for its own. Idle, a call
//! runs at once as a batch of one: nothing waits for a batch to fill.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};

/// Batches requests of one kind; `max_batch` requests per batch. One batch runs at a
/// time, and up to `concurrent` only while a full batch is waiting: a second batch
/// started for the few requests that arrived meanwhile would split them into more,
/// smaller transactions, each costing Postgres a plan and a commit, while the one running
/// finishes soon enough to take them all (measured: loadtest/REPORT.md, issue 20).
pub struct Coalescer<Req, Resp> {
    waiting: Mutex<VecDeque<Waiting<Req, Resp>>>,
    slots: Arc<Semaphore>,
    concurrent: usize,
    /// Signalled when a batch ends or a full batch is waiting: who waits may start one.
    changed: Arc<Notify>,
    max_batch: usize,
}

struct Waiting<Req, Resp> {
    req: Req,
    reply: oneshot::Sender<Resp>,
}

impl<Req, Resp> std::fmt::Debug for Coalescer<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("max_batch", &self.max_batch)
            .field("free_slots", &self.slots.available_permits())
            .finish()
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Coalescer<Req, Resp> {
    pub fn new(max_batch: usize, concurrent: usize) -> Self {
        let concurrent = concurrent.max(1);
        Self {
            waiting: Mutex::new(VecDeque::new()),
            slots: Arc::new(Semaphore::new(concurrent)),
            concurrent,
            changed: Arc::new(Notify::new()),
            max_batch: max_batch.max(1),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting<Req, Resp>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for the next batch, if one may start now: none is running, or a full
    /// batch is waiting and a slot is free.
    fn may_start(&self) -> Option<OwnedSemaphorePermit> {
        let running = self.concurrent - self.slots.available_permits();
        if running > 0 && self.queue().len() < self.max_batch {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// `req`'s answer from `run`, which gets a batch (oldest first) and answers each of its
    /// requests in order. Whoever may start the next batch runs it, its own request in
    /// it or not; the batch runs as its own task, so a caller dropped meanwhile (a job's
    /// timeout) cuts nobody else's answer short. `None` when `run` answered fewer
    /// requests than it was given, or panicked.
    pub async fn call<F, Fut>(&self, req: Req, run: F) -> Option<Resp>
    where
        F: Fn(Vec<Req>) -> Fut,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let (reply, mut answer) = oneshot::channel();
        let full = {
            let mut q = self.queue();
            q.push_back(Waiting { req, reply });
            q.len() >= self.max_batch
        };
        if full {
            self.changed.notify_waiters();
        }
        loop {
            // Registered before looking, so a batch ending meanwhile is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match answer.try_recv() {
                Ok(r) => return Some(r),
                Err(oneshot::error::TryRecvError::Closed) => return None,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if let Some(permit) = self.may_start() {
                let batch: Vec<Waiting<Req, Resp>> = {
                    let mut q = self.queue();
                    let n = q.len().min(self.max_batch);
                    // A caller that gave up (dropped its answer) is not run for nobody.
                    q.drain(..n).filter(|w| !w.reply.is_closed()).collect()
                };
                if batch.is_empty() {
                    // Ours was taken by a batch running now: it answers.
                    drop(permit);
                    self.changed.notify_waiters();
                    return answer.await.ok();
                }
                let (reqs, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) =
                    batch.into_iter().map(|w| (w.req, w.reply)).unzip();
                let work = run(reqs);
                let running = Running {
                    permit: Some(permit),
                    changed: self.changed.clone(),
                };
                let task = tokio::spawn(async move {
                    let _running = running;
                    let answers = work.await;
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                });
                // A panic in `run` dropped its replies: their callers get `None`.
                let _ = task.await;
                continue;
            }
            tokio::select! {
                biased;
                r = &mut answer => return r.ok(),
                _ = changed => {}
            }
        }
    }
}

/// A running batch's slot. Dropped when the batch ends, however it ends (a panic in
/// `run` included, with its caller gone): the slot frees and the waiting callers look
/// again, so none sleeps with nothing running.
struct Running {
    permit: Option<OwnedSemaphorePermit>,
    changed: Arc<Notify>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The slot first: a caller woken before it is free would find it taken and sleep
        // through the only wake-up.
        drop(self.permit.take());
        self.changed.notify_waiters();
    }
}

/// Splits items into rounds in which no key repeats, each item in the earliest round
/// after its key's previous one: a batch that locks rows by key sees each row once, and
/// a later round sees what the earlier one changed.
pub fn rounds_by_key<T, K: Eq + std::hash::Hash>(
    items: Vec<T>,
    key: impl Fn(&T) -> K,
) -> Vec<Vec<T>> {
    let mut rounds: Vec<Vec<T>> = Vec::new();
    let mut seen: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    for item in items {
        let k = key(&item);
        let round = seen.get(&k).map_or(0, |r| r + 1);
        seen.insert(k, round);
        if rounds.len() <= round {
            rounds.push(Vec::new());
        }
        rounds[round].push(item);
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn rounds_never_repeat_a_key_and_keep_order_within_a_key() {
        let rounds = rounds_by_key(
            vec![(1, 'a'), (2, 'b'), (1, 'c'), (1, 'd'), (3, 'e')],
            |x| x.0,
        );
        assert_eq!(
            rounds,
            vec![
                vec![(1, 'a'), (2, 'b'), (3, 'e')],
                vec![(1, 'c')],
                vec![(1, 'd')]
            ]
        );
    }

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_each_gets_its_own_answer() {
        let c = Arc::new(Coalescer::<u32, u32>::new(16, 1));
        let batches = Arc::new(AtomicUsize::new(0));
        let mut calls = Vec::new();
        for i in 0..64u32 {
            let (c, batches) = (c.clone(), batches.clone());
            calls.push(tokio::spawn(async move {
                c.call(i, move |reqs| {
                    let batches = batches.clone();
                    async move {
                        batches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        reqs.into_iter().map(|r| r * 10).collect()
                    }
                })
                .await
            }));
        }
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), Some(i as u32 * 10));
        }
        let n = batches.load(Ordering::SeqCst);
        assert!(n < 64, "{n} batches for 64 concurrent calls");
        assert!(
            n >= 4,
            "at most 16 per batch, so at least 4 batches, got {n}"
        );
    }

    /// Calls that arrive while a batch runs wait for it and go together in the next one;
    /// a second batch runs beside the first only for a full batch.
    #[tokio::test]
    async fn a_second_batch_runs_at_once_only_when_a_full_batch_waits() {
        let c = Arc::new(Coalescer::<u32, u32>::new(4, 2));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let call = |i: u32| {
            let (c, sizes, gate) = (c.clone(), sizes.clone(), gate.clone());
            tokio::spawn(async move {
                c.call(i, move |reqs| {
                    let (sizes, gate) = (sizes.clone(), gate.clone());
                    async move {
                        sizes.lock().unwrap().push(reqs.len());
                        // Each batch holds its slot until the test lets one end (the
                        // semaphore is fair: the oldest batch ends first).
                        gate.acquire().await.unwrap().forget();
                        reqs
                    }
                })
                .await
            })
        };
        let batches = || sizes.lock().unwrap().clone();
        let first = call(0);
        until(|| batches().len() == 1).await;
        let mut calls: Vec<_> = (1..4).map(call).collect();
        until(|| c.queue().len() == 3).await;
        // Three waiting, fewer than a batch: nothing runs beside the first.
        assert_eq!(batches(), vec![1]);
        calls.push(call(4));
        until(|| batches().len() == 2).await;
        // Four waiting, a full batch: it runs in the second slot.
        assert_eq!(batches(), vec![1, 4]);
        calls.extend((5..7).map(call));
        until(|| c.queue().len() == 2).await;
        // The first batch ends, the full one still runs: two waiting are fewer than a
        // batch, so they wait for it rather than run beside it.
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(0));
        assert_eq!(batches(), vec![1, 4]);
        assert_eq!(c.queue().len(), 2);
        gate.add_permits(1);
        until(|| batches().len() == 3).await;
        assert_eq!(batches(), vec![1, 4, 2]);
        gate.add_permits(1);
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), Some(i as u32 + 1));
        }
        assert_eq!(batches(), vec![1, 4, 2]);
    }

    /// A batch that panics after its caller gave up still frees its slot for the
    /// callers waiting behind it.
    #[tokio::test]
    async fn a_batch_that_panics_without_its_caller_lets_the_next_one_run() {
        let c = Arc::new(Coalescer::<u32, u32>::new(4, 1));
        let gate = Arc::new(Semaphore::new(0));
        let call = |i: u32| {
            let (c, gate) = (c.clone(), gate.clone());
            tokio::spawn(async move {
                c.call(i, move |reqs| {
                    let gate = gate.clone();
                    async move {
                        if reqs.contains(&0) {
                            gate.acquire().await.unwrap().forget();
                            panic!("the batch fails");
                        }
                        reqs
                    }
                })
                .await
            })
        };
        let first = call(0);
        until(|| c.slots.available_permits() == 0).await;
        let second = call(1);
        until(|| c.queue().len() == 1).await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        gate.add_permits(1);
        let answer = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the waiting call was served");
        assert_eq!(answer.unwrap(), Some(1));
    }

    /// Waits (up to 5 s) until `cond` holds.
    async fn until(cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not reached"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_short_answer_leaves_the_rest_without_one() {
        let c = Coalescer::<u32, u32>::new(4, 1);
        let got = c.call(7, |_reqs| async { Vec::new() }).await;
        assert_eq!(got, None);
    }
}
