//! Dynamic batching like a server: callers from anywhere enqueue texts in a bounded queue;
//! a worker thread takes what has arrived within a short wait (up to a token budget),
//! sorts the inputs by length so that similar lengths share a padded batch, runs them and
//! answers each caller. A full queue is refused at once, never waited on.
//!
//! On a CPU, several workers share the queue and the cores: a worker alone splits its
//! batch over all of them, workers busy together take a share each. Small batches split
//! over threads spend much of their time handing work over (on 2 cores, one thread a
//! batch embeds ~1.5x more texts per second than two threads on one batch), and the rest
//! of a request (searches, the database) needs a core too.

use flume::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::model::{Embedding, EmbeddingModel};
use crate::tokenize::{Encoded, InputKind};
use crate::{InferenceError, Result};

/// What the batcher needs of a model; [`EmbeddingModel`] is the real one.
pub trait BatchEncoder: Send + Sync + 'static {
    fn tokenize(&self, text: &str, kind: InputKind) -> Result<Encoded>;
    /// Runs one batch, splitting the work over at most `threads` CPU threads.
    fn forward(&self, batch: &[&Encoded], threads: usize) -> Result<Vec<Vec<f32>>>;
}

impl BatchEncoder for EmbeddingModel {
    fn tokenize(&self, text: &str, kind: InputKind) -> Result<Encoded> {
        EmbeddingModel::tokenize(self, text, kind)
    }

    fn forward(&self, batch: &[&Encoded], threads: usize) -> Result<Vec<Vec<f32>>> {
        EmbeddingModel::forward_threads(self, batch, threads)
    }
}

#[derive(Debug, Clone)]
pub struct BatcherConfig {
    /// Requests (not texts) that may wait; one more is refused with `Overloaded`.
    pub queue_capacity: usize,
    /// Padded tokens (batch size × longest input) per forward pass.
    pub max_batch_tokens: usize,
    /// Inputs per forward pass; also what a worker takes from the queue at a time (at
    /// least one request), the rest waiting for the next free worker.
    pub max_batch_size: usize,
    /// How long a worker waits for more requests once one has arrived; no wait while
    /// another worker is idle.
    pub max_wait: Duration,
    /// Worker threads taking batches from the queue (1 for a GPU).
    pub workers: usize,
    /// CPU threads the workers share: a worker alone uses all, busy workers a share each.
    pub threads: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 256,
            max_batch_tokens: 8192,
            max_batch_size: 64,
            max_wait: Duration::from_millis(2),
            workers: 1,
            threads: crate::cpu_threads(),
        }
    }
}

/// A point-in-time view of the batcher, for `status` and health checks.
#[derive(Debug, Clone, Default)]
pub struct BatcherStats {
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub batches: u64,
    pub texts: u64,
    pub rejected: u64,
    pub cancelled: u64,
    pub worker_alive: bool,
    pub workers: usize,
}

#[derive(Default)]
struct Counters {
    depth: AtomicUsize,
    batches: AtomicU64,
    texts: AtomicU64,
    rejected: AtomicU64,
    cancelled: AtomicU64,
    /// Workers inside a forward pass now.
    running: AtomicUsize,
    /// Requests admitted at the door (`Batcher::admit`) and not yet queued.
    admitted: AtomicUsize,
    /// Workers waiting for a request with none in hand.
    idle: AtomicUsize,
}

struct Job<E> {
    model: Arc<E>,
    items: Vec<Encoded>,
    reply: oneshot::Sender<Result<Vec<Embedding>>>,
}

/// One worker thread and its last sign of life.
struct Worker {
    thread: JoinHandle<()>,
    heartbeat_ms: Arc<AtomicU64>,
}

pub struct Batcher<E: BatchEncoder = EmbeddingModel> {
    tx: Sender<Job<E>>,
    model: RwLock<Arc<E>>,
    counters: Arc<Counters>,
    capacity: usize,
    started: Instant,
    workers: Vec<Worker>,
}

impl<E: BatchEncoder> Batcher<E> {
    pub fn new(model: Arc<E>, config: BatcherConfig) -> Result<Self> {
        let capacity = config.queue_capacity.max(1);
        let (tx, rx) = flume::bounded::<Job<E>>(capacity);
        let counters = Arc::new(Counters::default());
        let started = Instant::now();
        let mut workers = Vec::new();
        for n in 0..config.workers.max(1) {
            let (rx, config, counters) = (rx.clone(), config.clone(), counters.clone());
            let heartbeat_ms = Arc::new(AtomicU64::new(0));
            let beat = heartbeat_ms.clone();
            let thread = std::thread::Builder::new()
                .name(format!("inference-{n}"))
                .spawn(move || worker_loop(rx, config, counters, beat, started))
                .map_err(|e| {
                    InferenceError::Device(format!("cannot start an inference worker: {e}"))
                })?;
            workers.push(Worker {
                thread,
                heartbeat_ms,
            });
        }
        Ok(Self {
            tx,
            model: RwLock::new(model),
            counters,
            capacity,
            started,
            workers,
        })
    }

    /// The model new requests are served with.
    pub fn current(&self) -> Arc<E> {
        match self.model.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Serves new requests with `model`; requests already queued finish on the old one.
    pub fn swap(&self, model: Arc<E>) {
        match self.model.write() {
            Ok(mut m) => *m = model,
            Err(poisoned) => *poisoned.into_inner() = model,
        }
    }

    /// Holds a place for a request that has work to do before it reaches the queue (a bot
    /// turn reads its conversation first), or refuses it with `Overloaded` when the requests
    /// queued and those already admitted fill the queue. Under overload a call is then
    /// refused before it costs a storage read, instead of after. Drop the admission just
    /// before embedding: the queue counts the request from then on.
    pub fn admit(&self) -> Result<Admission> {
        let c = &self.counters;
        let ahead = c.admitted.fetch_add(1, Ordering::SeqCst);
        if ahead + c.depth.load(Ordering::SeqCst) >= self.capacity {
            c.admitted.fetch_sub(1, Ordering::SeqCst);
            c.rejected.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("confidant_inference_rejected_total").increment(1);
            return Err(InferenceError::Overloaded {
                capacity: self.capacity,
            });
        }
        Ok(Admission {
            counters: self.counters.clone(),
        })
    }

    /// Embeds `texts`, waiting for a slot in a batch. Errors name the offending `texts[i]`.
    pub async fn embed(&self, texts: &[String], kind: InputKind) -> Result<Vec<Embedding>> {
        self.embed_with(self.current(), texts, kind).await
    }

    /// Embeds `texts` with another model than the one served (a classifier's fine-tuned
    /// encoder), through the same queue and worker: one device, one place that says
    /// RESOURCE_EXHAUSTED. Its inputs are batched apart from the served model's.
    pub async fn embed_with(
        &self,
        model: Arc<E>,
        texts: &[String],
        kind: InputKind,
    ) -> Result<Vec<Embedding>> {
        if texts.is_empty() {
            return Err(InferenceError::invalid(
                "texts",
                "at least one text is required",
            ));
        }
        let items = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                model.tokenize(t, kind).map_err(|e| match e {
                    InferenceError::InvalidInput { message, .. } => {
                        InferenceError::invalid(&format!("texts[{i}]"), message)
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (reply, rx) = oneshot::channel();
        // Count before sending so the worker's decrement can never run first.
        self.counters.depth.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(Job {
            model,
            items,
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.depth.fetch_sub(1, Ordering::SeqCst);
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("confidant_inference_rejected_total").increment(1);
                return Err(InferenceError::Overloaded {
                    capacity: self.capacity,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.depth.fetch_sub(1, Ordering::SeqCst);
                return Err(InferenceError::WorkerStopped);
            }
        }
        metrics::gauge!("confidant_inference_queue_depth")
            .set(self.counters.depth.load(Ordering::Relaxed) as f64);
        rx.await.map_err(|_| InferenceError::WorkerStopped)?
    }

    /// True while every worker thread runs and has shown a sign of life in the last
    /// `within` (a worker stuck in one forward pass for longer does not).
    pub fn worker_alive(&self, within: Duration) -> bool {
        let now = self.started.elapsed();
        self.workers.iter().all(|w| {
            let beat = Duration::from_millis(w.heartbeat_ms.load(Ordering::Relaxed));
            !w.thread.is_finished() && now.saturating_sub(beat) <= within
        })
    }

    pub fn stats(&self) -> BatcherStats {
        let c = &self.counters;
        BatcherStats {
            queue_depth: c.depth.load(Ordering::Relaxed),
            queue_capacity: self.capacity,
            batches: c.batches.load(Ordering::Relaxed),
            texts: c.texts.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            worker_alive: self.worker_alive(Duration::from_secs(30)),
            workers: self.workers.len(),
        }
    }
}

/// A place held by [`Batcher::admit`]; given back when dropped.
pub struct Admission {
    counters: Arc<Counters>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.counters.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

const IDLE_TICK: Duration = Duration::from_millis(500);

fn worker_loop<E: BatchEncoder>(
    rx: Receiver<Job<E>>,
    config: BatcherConfig,
    counters: Arc<Counters>,
    heartbeat_ms: Arc<AtomicU64>,
    started: Instant,
) {
    let beat = || heartbeat_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    loop {
        counters.idle.fetch_add(1, Ordering::SeqCst);
        let first = loop {
            beat();
            match rx.recv_timeout(IDLE_TICK) {
                Ok(job) => break Some(job),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break None,
            }
        };
        counters.idle.fetch_sub(1, Ordering::SeqCst);
        let Some(first) = first else { return };
        let mut jobs = vec![first];
        let mut tokens: usize = jobs[0].items.iter().map(Encoded::len).sum();
        let mut texts = jobs[0].items.len();
        // While another worker waits idle, the next request goes to it at once: waiting
        // for company here would only delay this one (on 2 cores, ~2 ms added to every
        // answer at moderate load). What is already queued still joins the batch.
        let wait = if counters.idle.load(Ordering::SeqCst) > 0 {
            Duration::ZERO
        } else {
            config.max_wait
        };
        let deadline = Instant::now() + wait;
        // At most one pass's worth: a round answers its callers only when all of it is
        // done, and what it holds is out of the queue's count, so under a 10x overload
        // rounds of ~250 texts (8,192 tokens of short texts) kept accepted answers waiting
        // ~3.8 s, not the ~1.2 s the queue's capacity stands for.
        while tokens < config.max_batch_tokens && texts < config.max_batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = if left.is_zero() {
                rx.try_recv().ok()
            } else {
                rx.recv_timeout(left).ok()
            };
            let Some(job) = next else { break };
            tokens += job.items.iter().map(Encoded::len).sum::<usize>();
            texts += job.items.len();
            jobs.push(job);
        }
        let depth = counters.depth.fetch_sub(jobs.len(), Ordering::SeqCst) - jobs.len();
        metrics::gauge!("confidant_inference_queue_depth").set(depth as f64);

        // A caller that went away (timeout, cancelled RPC) costs no batch slot.
        let before = jobs.len();
        jobs.retain(|j| !j.reply.is_closed());
        let cancelled = (before - jobs.len()) as u64;
        if cancelled > 0 {
            counters.cancelled.fetch_add(cancelled, Ordering::Relaxed);
            metrics::counter!("confidant_inference_cancelled_total").increment(cancelled);
        }
        // Requests tokenised before a model swap finish on the model they were tokenised for.
        while !jobs.is_empty() {
            let model = jobs[0].model.clone();
            let (same, rest): (Vec<_>, Vec<_>) = jobs
                .into_iter()
                .partition(|j| Arc::ptr_eq(&j.model, &model));
            run_round(&*model, same, &config, &counters);
            jobs = rest;
        }
    }
}

/// Runs every input of `jobs`, shortest first, in batches within the token budget, then
/// answers each job.
fn run_round<E: BatchEncoder>(
    model: &E,
    jobs: Vec<Job<E>>,
    config: &BatcherConfig,
    counters: &Counters,
) {
    let mut order: Vec<(usize, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| (0..job.items.len()).map(move |i| (j, i)))
        .collect();
    order.sort_by_key(|&(j, i)| jobs[j].items[i].len());

    let mut results: Vec<Vec<Option<Vec<f32>>>> =
        jobs.iter().map(|j| vec![None; j.items.len()]).collect();
    let mut failures: Vec<Option<String>> = vec![None; jobs.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && end - start < config.max_batch_size {
            let (j, i) = order[end];
            // Sorted ascending, so the newcomer is the longest.
            if (end - start + 1) * jobs[j].items[i].len() > config.max_batch_tokens {
                break;
            }
            end += 1;
        }
        let slice = &order[start..end];
        let batch: Vec<&Encoded> = slice.iter().map(|&(j, i)| &jobs[j].items[i]).collect();
        let padded = batch.len() * batch.last().map_or(0, |e| e.len());
        let t0 = Instant::now();
        // Workers already busy keep their threads; this one takes an equal share.
        let busy = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
        let threads = (config.threads / busy).max(1);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| model.forward(&batch, threads)));
        counters.running.fetch_sub(1, Ordering::SeqCst);
        let secs = t0.elapsed().as_secs_f64();
        metrics::histogram!("confidant_inference_batch_size").record(batch.len() as f64);
        metrics::histogram!("confidant_inference_batch_tokens").record(padded as f64);
        metrics::histogram!("confidant_inference_seconds").record(secs);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .texts
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        match outcome {
            Ok(Ok(vectors)) if vectors.len() == slice.len() => {
                for (&(j, i), v) in slice.iter().zip(vectors) {
                    results[j][i] = Some(v);
                }
            }
            other => {
                let why = match other {
                    Ok(Ok(_)) => "model returned the wrong number of vectors".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "model computation panicked".to_string(),
                };
                tracing::error!(error = %why, batch = batch.len(), "inference batch failed");
                for &(j, _) in slice {
                    failures[j] = Some(why.clone());
                }
            }
        }
        start = end;
    }

    for ((job, res), failure) in jobs.into_iter().zip(results).zip(failures) {
        let answer = match failure {
            Some(why) => Err(InferenceError::Device(why)),
            None => Ok(job
                .items
                .iter()
                .zip(res)
                .map(|(e, v)| Embedding {
                    vector: v.unwrap_or_default(),
                    tokens: e.len(),
                    truncated: e.truncated,
                })
                .collect()),
        };
        // The caller may have gone away meanwhile; nothing to do then.
        let _ = job.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc::{self, Receiver};

    /// A model whose "embedding" is the token count, recording each batch it sees, and
    /// optionally blocking until released so tests can fill the queue deterministically.
    struct Fake {
        batches: Mutex<Vec<Vec<usize>>>,
        threads: Mutex<Vec<usize>>,
        gate: Mutex<Option<Receiver<()>>>,
        /// Forward passes started and not finished, and the most seen at once.
        inside: AtomicUsize,
        most_inside: AtomicUsize,
    }

    impl Fake {
        fn new(gate: Option<Receiver<()>>) -> Arc<Self> {
            Arc::new(Self {
                batches: Mutex::new(Vec::new()),
                threads: Mutex::new(Vec::new()),
                gate: Mutex::new(gate),
                inside: AtomicUsize::new(0),
                most_inside: AtomicUsize::new(0),
            })
        }
    }

    impl BatchEncoder for Fake {
        fn tokenize(&self, text: &str, _: InputKind) -> Result<Encoded> {
            if text.is_empty() {
                return Err(InferenceError::invalid("text", "must not be empty"));
            }
            let n = text.split_whitespace().count();
            Ok(Encoded {
                ids: vec![1; n],
                type_ids: vec![0; n],
                truncated: false,
            })
        }

        fn forward(&self, batch: &[&Encoded], threads: usize) -> Result<Vec<Vec<f32>>> {
            let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_inside.fetch_max(now, Ordering::SeqCst);
            self.threads.lock().unwrap().push(threads);
            // A shared gate: workers take turns waiting on it (the lock), each released
            // by one send.
            if let Some(gate) = self.gate.lock().unwrap().as_ref() {
                let _ = gate.recv();
            }
            self.inside.fetch_sub(1, Ordering::SeqCst);
            self.batches
                .lock()
                .unwrap()
                .push(batch.iter().map(|e| e.len()).collect());
            Ok(batch.iter().map(|e| vec![e.len() as f32]).collect())
        }
    }

    fn words(n: usize) -> String {
        vec!["w"; n].join(" ")
    }

    fn config(capacity: usize) -> BatcherConfig {
        BatcherConfig {
            queue_capacity: capacity,
            max_batch_tokens: 64,
            max_batch_size: 8,
            max_wait: Duration::from_millis(20),
            workers: 1,
            threads: 2,
        }
    }

    /// A batcher over a gated fake: each forward pass waits for one send on the sender.
    fn gated(config: BatcherConfig) -> (mpsc::Sender<()>, Arc<Fake>, Arc<Batcher<Fake>>) {
        let (release, gate) = mpsc::channel();
        let fake = Fake::new(Some(gate));
        let b = Arc::new(Batcher::new(fake.clone(), config).unwrap());
        (release, fake, b)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_caller_gets_its_own_answers_in_order() {
        let fake = Fake::new(None);
        let b = Arc::new(Batcher::new(fake.clone(), config(64)).unwrap());
        let mut handles = Vec::new();
        for c in 0..20usize {
            let b = b.clone();
            handles.push(tokio::spawn(async move {
                let texts: Vec<String> = (1..=3).map(|k| words(c % 5 + k)).collect();
                let out = b.embed(&texts, InputKind::Query).await.unwrap();
                let got: Vec<f32> = out.iter().map(|e| e.vector[0]).collect();
                let want: Vec<f32> = (1..=3).map(|k| (c % 5 + k) as f32).collect();
                assert_eq!(got, want, "caller {c}");
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        for batch in fake.batches.lock().unwrap().iter() {
            assert!(batch.len() <= 8);
            let longest = *batch.iter().max().unwrap();
            assert!(
                batch.len() == 1 || batch.len() * longest <= 64,
                "{batch:?} over budget"
            );
            assert!(
                batch.windows(2).all(|w| w[0] <= w[1]),
                "{batch:?} not length-sorted"
            );
        }
        assert_eq!(b.stats().texts, 60);
    }

    /// `n` requests sent 60 ms apart, each left to wait: with a gated fake the first
    /// occupies the worker and the rest queue.
    async fn occupy(
        b: &Arc<Batcher<Fake>>,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<Vec<Embedding>>>> {
        let mut waiting = Vec::new();
        for _ in 0..n {
            let b = b.clone();
            waiting.push(tokio::spawn(async move {
                b.embed(&[words(2)], InputKind::Query).await
            }));
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        waiting
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn full_queue_is_refused_at_once_and_recovers() {
        let (release, gate) = mpsc::channel();
        let fake = Fake::new(Some(gate));
        let b = Arc::new(Batcher::new(fake.clone(), config(2)).unwrap());
        // The first request occupies the worker (blocked in forward); two more fill the queue.
        let waiting = occupy(&b, 3).await;
        let refused = b.embed(&[words(2)], InputKind::Query).await;
        assert!(
            matches!(refused, Err(InferenceError::Overloaded { capacity: 2 })),
            "{refused:?}"
        );
        assert_eq!(b.stats().rejected, 1);
        for _ in 0..10 {
            let _ = release.send(());
        }
        for w in waiting {
            assert!(w.await.unwrap().is_ok());
        }
        drop(release);
        assert!(b.embed(&[words(2)], InputKind::Query).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_door_counts_admitted_requests_against_the_queue() {
        let (release, gate) = mpsc::channel();
        let fake = Fake::new(Some(gate));
        let b = Arc::new(Batcher::new(fake.clone(), config(2)).unwrap());
        // One request in the worker (blocked in forward), one queued behind it.
        let waiting = occupy(&b, 2).await;
        assert_eq!(b.stats().queue_depth, 1);
        // One place left: the first admission takes it, the second is refused at the door.
        let held = b.admit().expect("a place is left");
        let refused = b.admit();
        assert!(
            matches!(refused, Err(InferenceError::Overloaded { capacity: 2 })),
            "{:?}",
            refused.err()
        );
        assert_eq!(b.stats().rejected, 1);
        // Given back, the place admits again.
        drop(held);
        let again = b.admit().expect("the place was given back");
        drop(again);
        for _ in 0..10 {
            let _ = release.send(());
        }
        for w in waiting {
            assert!(w.await.unwrap().is_ok());
        }
        drop(release);
        assert_eq!(b.stats().queue_depth, 0);
        let _both = [b.admit().unwrap(), b.admit().unwrap()];
        assert!(b.admit().is_err(), "two admitted fill a queue of two");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn cancelled_callers_take_no_batch_slot() {
        let (release, gate) = mpsc::channel();
        let fake = Fake::new(Some(gate));
        let b = Arc::new(Batcher::new(fake.clone(), config(8)).unwrap());
        let b1 = b.clone();
        let first = tokio::spawn(async move { b1.embed(&[words(1)], InputKind::Query).await });
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Queued behind the blocked worker, then abandoned by its caller.
        let b2 = b.clone();
        let abandoned = tokio::spawn(async move { b2.embed(&[words(7)], InputKind::Query).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        abandoned.abort();
        let _ = abandoned.await;
        let b3 = b.clone();
        let third = tokio::spawn(async move { b3.embed(&[words(3)], InputKind::Query).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Dropping the sender opens the gate for good (recv fails from then on).
        drop(release);
        first.await.unwrap().unwrap();
        assert_eq!(third.await.unwrap().unwrap()[0].vector, vec![3.0]);
        let seen: Vec<usize> = fake
            .batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .copied()
            .collect();
        assert!(!seen.contains(&7), "abandoned request was run: {seen:?}");
        assert_eq!(b.stats().cancelled, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn earlier_callers_are_never_overtaken_by_a_later_flood() {
        let (release, gate) = mpsc::channel();
        let fake = Fake::new(Some(gate));
        let b = Arc::new(Batcher::new(fake.clone(), config(32)).unwrap());
        let spawn = |texts: Vec<String>| {
            let b = b.clone();
            tokio::spawn(async move { b.embed(&texts, InputKind::Query).await })
        };
        // The worker is held on a first request while the queue fills in this order:
        // a big request, a small one, then a flood of big ones with longer texts.
        let first = spawn(vec![words(1)]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let big = spawn(vec![words(5); 12]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let small = spawn(vec![words(3)]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let flood: Vec<_> = (0..6).map(|_| spawn(vec![words(9); 12])).collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(release);
        first.await.unwrap().unwrap();
        big.await.unwrap().unwrap();
        small.await.unwrap().unwrap();
        for f in flood {
            f.await.unwrap().unwrap();
        }
        let batches = fake.batches.lock().unwrap().clone();
        let pos = |len: usize| batches.iter().position(|b| b.contains(&len)).unwrap();
        // Each round takes requests in arrival order up to one pass (texts or tokens), so
        // the small request is served after the big one before it (a round of its own)
        // and no later than the flood's first.
        assert!(pos(5) <= pos(3), "{batches:?}");
        assert!(pos(3) <= pos(9), "{batches:?}");
        assert!(pos(5) < pos(9), "{batches:?}");
        let flood_batches = batches.iter().filter(|b| b.contains(&9)).count();
        assert!(
            flood_batches >= 6,
            "the flood was not spread over budgeted batches: {batches:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn workers_run_batches_side_by_side_and_share_the_threads() {
        let (release, fake, b) = gated(BatcherConfig {
            workers: 2,
            threads: 2,
            ..config(8)
        });
        assert_eq!(b.stats().workers, 2);
        let spawn = |n: usize| {
            let b = b.clone();
            tokio::spawn(async move { b.embed(&[words(n)], InputKind::Query).await })
        };
        // The first worker is held in a forward pass; the second request is not queued
        // behind it but taken by the other worker.
        let first = spawn(1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let second = spawn(2);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(fake.most_inside.load(Ordering::SeqCst), 2);
        assert_eq!(b.stats().queue_depth, 0);
        release.send(()).unwrap();
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap()[0].vector, vec![1.0]);
        assert_eq!(second.await.unwrap().unwrap()[0].vector, vec![2.0]);
        // A worker alone has both threads; one starting beside a busy one has one.
        let third = spawn(3);
        tokio::time::sleep(Duration::from_millis(80)).await;
        drop(release);
        third.await.unwrap().unwrap();
        assert_eq!(*fake.threads.lock().unwrap(), vec![2, 1, 2]);
        assert!(b.worker_alive(Duration::from_secs(5)));
    }

    /// Until every worker of `b` is waiting for a request.
    async fn settled(b: &Batcher<Fake>) {
        while b.counters.idle.load(Ordering::SeqCst) < b.workers.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_round_takes_one_pass_and_answers_it_at_once() {
        let (release, fake, b) = gated(BatcherConfig {
            max_batch_tokens: 1024,
            max_batch_size: 2,
            max_wait: Duration::ZERO,
            ..config(64)
        });
        // One request in the worker (blocked in forward), four queued behind it.
        let mut waiting = occupy(&b, 5).await;
        assert_eq!(b.stats().queue_depth, 4);
        release.send(()).unwrap();
        assert!(waiting.remove(0).await.unwrap().is_ok());
        // The next round holds one pass (two texts); the other two stay queued, counted
        // against the queue's capacity.
        while fake.inside.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(b.stats().queue_depth, 2);
        // Its callers are answered when their pass is done, not after the rest.
        release.send(()).unwrap();
        for w in waiting.drain(..2) {
            let answered = tokio::time::timeout(Duration::from_secs(10), w).await;
            assert!(matches!(answered, Ok(Ok(Ok(_)))), "{answered:?}");
        }
        release.send(()).unwrap();
        for w in waiting {
            assert!(w.await.unwrap().is_ok());
        }
        assert_eq!(fake.batches.lock().unwrap().len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_wait_for_company_while_another_worker_is_idle() {
        // A minute's wait for a batch to fill: a lone request that paid it would time out.
        let long = |workers| BatcherConfig {
            max_wait: Duration::from_secs(60),
            workers,
            ..config(8)
        };
        let b = Batcher::new(Fake::new(None), long(2)).unwrap();
        settled(&b).await;
        let lone = tokio::time::timeout(
            Duration::from_secs(10),
            b.embed(&[words(2)], InputKind::Query),
        )
        .await;
        assert_eq!(
            lone.expect("waited for company").unwrap()[0].vector,
            vec![2.0]
        );
        // A worker alone (a GPU) still waits for company, and the company shares its batch.
        let fake = Fake::new(None);
        let b = Arc::new(
            Batcher::new(
                fake.clone(),
                BatcherConfig {
                    max_wait: Duration::from_millis(300),
                    ..long(1)
                },
            )
            .unwrap(),
        );
        settled(&b).await;
        let first = {
            let b = b.clone();
            tokio::spawn(async move { b.embed(&[words(1)], InputKind::Query).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.embed(&[words(3)], InputKind::Query).await.unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(*fake.batches.lock().unwrap(), vec![vec![1, 3]]);
    }

    #[tokio::test]
    async fn empty_inputs_name_the_field() {
        let b = Batcher::new(Fake::new(None), config(4)).unwrap();
        let err = b
            .embed(&["a".into(), String::new()], InputKind::Query)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "texts[1]: must not be empty");
        let err = b.embed(&[], InputKind::Query).await.unwrap_err();
        assert!(err.to_string().starts_with("texts:"));
    }

    #[tokio::test]
    async fn swap_serves_new_requests_with_the_new_model() {
        let old = Fake::new(None);
        let new = Fake::new(None);
        let b = Batcher::new(old.clone(), config(4)).unwrap();
        b.embed(&[words(2)], InputKind::Query).await.unwrap();
        b.swap(new.clone());
        b.embed(&[words(2)], InputKind::Query).await.unwrap();
        assert_eq!(old.batches.lock().unwrap().len(), 1);
        assert_eq!(new.batches.lock().unwrap().len(), 1);
        assert!(b.worker_alive(Duration::from_secs(5)));
    }
}
