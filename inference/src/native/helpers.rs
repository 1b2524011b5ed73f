//! Threads kept for the life of an encoder that compute a share of one text's linear
//! layer, so that a lone caller's model pass uses every core the batcher gave it.
//!
//! Spawning a thread per layer (what batches split by rows do) costs its stack's mapping
//! and unmapping each time; inside the daemon that measured ~0.7 ms per spawn on a 2-core
//! VM, as much as the share it was to save. A kept thread is handed its share over a
//! channel instead, and spins briefly before it sleeps: a pass hands over a layer every
//! few hundred µs, and waking a sleeping thread costs tens of µs there.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Linear;

/// How long a thread looks for more work before it sleeps: a little more than the gap
/// between two layers of a pass (attention, layer norm) on a slow core.
const SPIN: Duration = Duration::from_micros(200);

/// One share: outputs `cols` of `linear` over `rows` rows of `input`, GELU after if asked.
pub(super) struct Job {
    pub linear: Arc<Linear>,
    /// The layer's input rows.
    pub input: Arc<[f32]>,
    pub rows: usize,
    pub cols: Range<usize>,
    pub gelu: bool,
    /// The share's index and its outputs, `None` where computing it panicked.
    pub reply: flume::Sender<(usize, Option<Vec<f32>>)>,
    pub index: usize,
}

impl Job {
    fn run(&self) -> Vec<f32> {
        share(
            &self.linear,
            &self.input,
            self.rows,
            self.cols.clone(),
            self.gelu,
        )
    }
}

/// Outputs `cols` of `linear` over `rows` rows of `input`, GELU after if asked.
pub(super) fn share(
    linear: &Linear,
    input: &[f32],
    rows: usize,
    cols: Range<usize>,
    gelu: bool,
) -> Vec<f32> {
    let mut part = vec![0f32; rows * cols.len()];
    linear.apply_cols(input, rows, cols, &mut part);
    if gelu {
        super::math::gelu_in_place(&mut part);
    }
    part
}

pub(super) struct Helpers {
    tx: flume::Sender<Job>,
    rx: flume::Receiver<Job>,
    /// Threads started so far and, of them, those waiting for work.
    started: AtomicUsize,
    idle: Arc<AtomicUsize>,
    max: usize,
}

impl Helpers {
    /// Up to `max` threads, started on first need.
    pub(super) fn new(max: usize) -> Self {
        let (tx, rx) = flume::unbounded();
        Self {
            tx,
            rx,
            started: AtomicUsize::new(0),
            idle: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// How many shares other threads can take now (up to `wanted`), starting threads up
    /// to the limit; a caller that finds none free computes every share itself.
    pub(super) fn available(&self, wanted: usize) -> usize {
        let idle = self.idle.load(Ordering::Acquire);
        if idle >= wanted {
            return wanted;
        }
        let mut have = idle;
        while have < wanted {
            let started = self.started.load(Ordering::Acquire);
            if started >= self.max
                || self
                    .started
                    .compare_exchange(started, started + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                break;
            }
            if self.spawn(started).is_err() {
                self.started.fetch_sub(1, Ordering::AcqRel);
                break;
            }
            have += 1;
        }
        have
    }

    fn spawn(&self, n: usize) -> std::io::Result<()> {
        let rx = self.rx.clone();
        let idle = Arc::clone(&self.idle);
        // Counted idle from the start, so that the caller that started it hands it work.
        idle.fetch_add(1, Ordering::AcqRel);
        let started = std::thread::Builder::new()
            .name(format!("encoder-share-{n}"))
            .spawn(move || serve(&rx, &idle));
        if started.is_err() {
            self.idle.fetch_sub(1, Ordering::AcqRel);
        }
        started.map(|_| ())
    }

    pub(super) fn send(&self, job: Job) {
        // The receiver lives in `self`, so sending cannot fail while we are here; if it
        // ever did, the caller sees the share's reply missing.
        let _ = self.tx.send(job);
    }
}

/// A kept thread's life: take a share, compute it, send it back; ends when the encoder
/// (the channel's last sender) is dropped.
fn serve(rx: &flume::Receiver<Job>, idle: &AtomicUsize) {
    while let Some(job) = next(rx) {
        idle.fetch_sub(1, Ordering::AcqRel);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run())).ok();
        idle.fetch_add(1, Ordering::AcqRel);
        let _ = job.reply.send((job.index, out));
    }
}

/// The next item, spinning for [`SPIN`] before sleeping; `None` once every sender is gone.
pub(super) fn next<T>(rx: &flume::Receiver<T>) -> Option<T> {
    let t0 = Instant::now();
    while t0.elapsed() < SPIN {
        match rx.try_recv() {
            Ok(item) => return Some(item),
            Err(flume::TryRecvError::Disconnected) => return None,
            Err(flume::TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
    rx.recv().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::Precision;

    #[test]
    fn a_kept_thread_computes_the_share_it_is_handed() {
        let (out, inp, rows) = (48, 16, 3);
        let w: Vec<f32> = (0..out * inp).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..out).map(|i| i as f32 / 8.0).collect();
        let linear = Arc::new(Linear::new(w, b, out, inp, Precision::F32));
        let input: Arc<[f32]> = (0..rows * inp).map(|i| (i % 5) as f32 / 4.0).collect();

        let none = Helpers::new(0);
        assert_eq!(none.available(1), 0, "no thread beyond the limit");
        let helpers = Helpers::new(1);
        assert_eq!(
            helpers.available(3),
            1,
            "one thread started, up to the limit"
        );
        assert_eq!(helpers.available(1), 1, "the same thread, idle again");

        let (reply, replies) = flume::bounded(1);
        helpers.send(Job {
            linear: Arc::clone(&linear),
            input: Arc::clone(&input),
            rows,
            cols: 16..48,
            gelu: true,
            reply,
            index: 1,
        });
        let (index, part) = next(&replies).unwrap_or_default();
        assert_eq!(index, 1);
        let here = share(&linear, &input, rows, 16..48, true);
        assert_eq!(part, Some(here.clone()));
        // And the share is the layer's own outputs 16..48, GELU applied.
        let mut whole = vec![0f32; rows * out];
        linear.apply(&input, rows, &mut whole);
        crate::native::math::gelu_in_place(&mut whole);
        for r in 0..rows {
            assert_eq!(here[r * 32..][..32], whole[r * out + 16..][..32]);
        }
    }
}
