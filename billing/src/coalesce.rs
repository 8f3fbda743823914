//! Coalescing concurrent calls into batches: requests that arrive while batches run wait
//! together and are served by the next batch, so a worker's hundreds of concurrent charges
//! share a few transactions' statements instead of each paying for its own. Idle, a call
//! runs at once as a batch of one: nothing waits for a batch to fill.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Semaphore};

/// Batches requests of one kind; `max_batch` requests per batch, at most `concurrent`
/// batches at a time.
pub struct Coalescer<Req, Resp> {
    waiting: Mutex<VecDeque<Waiting<Req, Resp>>>,
    slots: Arc<Semaphore>,
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
        Self {
            waiting: Mutex::new(VecDeque::new()),
            slots: Arc::new(Semaphore::new(concurrent.max(1))),
            max_batch: max_batch.max(1),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting<Req, Resp>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `req`'s answer from `run`, which gets a batch (oldest first) and answers each of its
    /// requests in order. Whoever gets a free slot runs the next batch, its own request in
    /// it or not; the batch runs as its own task, so a caller dropped meanwhile (a job's
    /// timeout) cuts nobody else's answer short. `None` when `run` answered fewer
    /// requests than it was given, or panicked.
    pub async fn call<F, Fut>(&self, req: Req, run: F) -> Option<Resp>
    where
        F: Fn(Vec<Req>) -> Fut,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let (reply, mut answer) = oneshot::channel();
        self.queue().push_back(Waiting { req, reply });
        loop {
            tokio::select! {
                biased;
                r = &mut answer => return r.ok(),
                permit = self.slots.clone().acquire_owned() => {
                    let Ok(permit) = permit else { return answer.await.ok() };
                    let batch: Vec<Waiting<Req, Resp>> = {
                        let mut q = self.queue();
                        let n = q.len().min(self.max_batch);
                        // A caller that gave up (dropped its answer) is not run for nobody.
                        q.drain(..n).filter(|w| !w.reply.is_closed()).collect()
                    };
                    if batch.is_empty() {
                        // Ours was taken by a batch running now: it answers.
                        drop(permit);
                        return answer.await.ok();
                    }
                    let (reqs, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) =
                        batch.into_iter().map(|w| (w.req, w.reply)).unzip();
                    let work = run(reqs);
                    let task = tokio::spawn(async move {
                        let answers = work.await;
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(answer);
                        }
                        drop(permit);
                    });
                    // A panic in `run` dropped its replies: their callers get `None`.
                    let _ = task.await;
                }
            }
        }
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

    #[tokio::test]
    async fn a_short_answer_leaves_the_rest_without_one() {
        let c = Coalescer::<u32, u32>::new(4, 1);
        let got = c.call(7, |_reqs| async { Vec::new() }).await;
        assert_eq!(got, None);
    }
}
