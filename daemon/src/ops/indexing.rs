//! The index's background work: the catch-up from the database at start, periodic
//! flushes (durability) and the optimiser (HNSW build, segment merges), each off the
//! request path.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;

pub fn spawn(app: Arc<App>) {
    let catch_up = app.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        match catch_up.kb().catch_up().await {
            Ok(r) => tracing::info!(
                indexed = r.indexed,
                removed = r.removed,
                seconds = started.elapsed().as_secs_f64(),
                "index caught up with the database"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "index catch-up failed; `confidantctl kb reindex` retries it"
            ),
        }
    });
    let flush = app.clone();
    tokio::spawn(async move {
        loop {
            let every = flush.config().index.flush_interval_seconds.max(1);
            tokio::time::sleep(Duration::from_secs(every)).await;
            if let Err(e) = flush.kb().flush_if_dirty().await {
                tracing::error!(error = %e, "index flush failed");
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let every = app.config().index.optimize_interval_seconds.max(1);
            tokio::time::sleep(Duration::from_secs(every)).await;
            let index = app.kb().index().clone();
            let started = std::time::Instant::now();
            match tokio::task::spawn_blocking(move || index.optimize()).await {
                Ok(Ok(true)) => {
                    let seconds = started.elapsed().as_secs_f64();
                    metrics::histogram!("confidant_index_optimize_seconds").record(seconds);
                    tracing::info!(seconds, "index optimised");
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "index optimisation failed"),
                Err(e) => tracing::error!(error = %e, "index optimisation task failed"),
            }
        }
    });
}
