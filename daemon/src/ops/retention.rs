//! Data lifecycle: deletes what has outlived its retention window, on a timer.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::store::now_ms;

const DAY_MS: i64 = 86_400_000;

/// One pass: returns how many records were deleted.
pub async fn enforce(app: &App) -> Result<u64, crate::store::StoreError> {
    let cfg = app.config().retention.clone();
    let mut total = 0;
    if cfg.audit_days > 0 {
        let before = now_ms() - cfg.audit_days as i64 * DAY_MS;
        let deleted = app.store().purge_audit_before(before).await?;
        count("audit", deleted);
        total += deleted;
    }
    if cfg.conversation_days > 0 {
        let before = now_ms() - cfg.conversation_days as i64 * DAY_MS;
        let e = app.store().erase_conversations_before(before).await?;
        count("conversations", e.conversations);
        count("conversation_turns", e.turns);
        count("bot_decisions", e.decisions);
        count("routing_decisions", e.routes);
        total += e.conversations + e.turns + e.decisions + e.routes;
    }
    if cfg.qa_days > 0 {
        let before = now_ms() - cfg.qa_days as i64 * DAY_MS;
        let n = app.store().erase_qa_before(before).await?;
        count("qa_results", n);
        total += n;
    }
    if total > 0 {
        tracing::info!(deleted = total, "retention: expired records deleted");
    }
    Ok(total)
}

fn count(kind: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("confidant_retention_deleted_total", "kind" => kind).increment(n);
    }
}

pub fn spawn(app: Arc<App>) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = enforce(&app).await {
                tracing::warn!(error = %e, "retention pass failed; will retry");
            }
            let every = app.config().retention.interval_seconds.max(1);
            tokio::time::sleep(Duration::from_secs(every)).await;
        }
    });
}
