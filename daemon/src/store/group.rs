//! Group commit of bot turns on SQLite. Every bot answer records its turn and decision;
//! one transaction each meant a commit (WAL frames written, the write lock taken and
//! released, an fsync with `synchronous = FULL`) and two extra round trips to the
//! connection's thread per answer. A turn that finds SQLite busy is handed to one task
//! instead, which writes every turn waiting when it starts in one transaction: under load
//! a commit carries several answers. A turn that finds SQLite free is written by its own
//! call (`Store::conversation_record`): handing it over would only add the task's
//! scheduling to its latency. A caller gets its answer only once its turn is committed.
//!
//! PostgreSQL takes concurrent writers and groups their WAL flushes itself, so its turns
//! are written directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::conversations::TurnRecord;
use super::{Conversation, Store, StoreError};

/// Turns written in one transaction at most: bounds the time the write lock is held.
const MAX_BATCH: usize = 64;
/// Turns waiting for the writer before callers wait to hand theirs over.
const QUEUE: usize = 1024;

struct Job {
    record: TurnRecord,
    reply: oneshot::Sender<Result<Conversation, StoreError>>,
}

#[derive(Clone)]
pub(crate) struct Recorder {
    jobs: mpsc::Sender<Job>,
    /// Transactions the writer task committed (what tests check grouping by).
    commits: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the writer task on the current runtime. `store` must not hold a recorder
    /// itself (the task would keep its own queue open and never end); the task ends when
    /// the last [`Recorder`] is dropped, after writing what is queued.
    pub(crate) fn spawn(store: Store) -> Self {
        debug_assert!(store.recorder.is_none());
        let (jobs, rx) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(store, rx, commits.clone()));
        Self { jobs, commits }
    }

    pub(crate) async fn record(&self, record: TurnRecord) -> Result<Conversation, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { record, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

/// `confidant_store_turns_per_commit`: every commit of bot turns, grouped or not.
pub(crate) fn turns_committed(n: usize) {
    metrics::histogram!("confidant_store_turns_per_commit").record(n as f64);
}

fn closed() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>, commits: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let records: Vec<&TurnRecord> = batch.iter().map(|j| &j.record).collect();
        match write(&store, &records).await {
            Ok(convs) => {
                commits.fetch_add(1, Ordering::Relaxed);
                turns_committed(batch.len());
                for (job, c) in batch.drain(..).zip(convs) {
                    // A caller that went away (its call cancelled) still has its turn stored.
                    let _ = job.reply.send(Ok(c));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    let _ = job.reply.send(Err(e));
                }
            }
            Err(e) => {
                // One bad turn must not fail the others: each is tried alone, so every
                // caller gets its own outcome.
                tracing::warn!(turns = batch.len(), error = %e, "group commit failed; writing the turns one by one");
                for job in batch.drain(..) {
                    let r = write(&store, &[&job.record]).await;
                    if r.is_ok() {
                        commits.fetch_add(1, Ordering::Relaxed);
                        turns_committed(1);
                    }
                    let r = r.and_then(|v| v.into_iter().next().ok_or_else(closed));
                    let _ = job.reply.send(r);
                }
            }
        }
    }
}

async fn write(store: &Store, records: &[&TurnRecord]) -> Result<Vec<Conversation>, StoreError> {
    let mut tx = store.write_tx().await?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        out.push(r.write(&mut tx).await?);
    }
    tx.commit().await?;
    Ok(out)
}
